"""Attention, and rotary position embeddings (in attention or on their own)."""
from __future__ import annotations

from .. import dims as D
from .base import INTS, Attr, LayerKind, ShapeError, features, floating, module_call, rank, register

_SCALING = Attr("scaling", "struct", "longer contexts from the same weights (default: none)", None, fields=(
    Attr("kind", "str", "linear (position interpolation) or llama3 (Llama 3.1's frequency-dependent scaling)",
         choices=("linear", "llama3")),
    Attr("factor", "float", "how many times longer the context gets", minimum=1.0),
    Attr("low_freq_factor", "float", "llama3: wavelengths above original_context / this are scaled fully", 1.0),
    Attr("high_freq_factor", "float", "llama3: wavelengths below original_context / this are not scaled", 4.0),
    Attr("original_context", "int", "llama3: the context length the model was trained at", 8192, minimum=1),
))
_ROPE_FIELDS = (
    Attr("theta", "float", "base of the rotation frequencies", 10000.0, minimum=1.0),
    Attr("fraction", "float", "fraction of each head's dims that rotate (the rest pass through)", 1.0),
    _SCALING,
)


def _check_rope(rope: dict, head_dim: int, attr: str) -> None:
    if not 0 < rope["fraction"] <= 1:
        raise ShapeError(f"rope fraction must be in (0, 1], got {rope['fraction']}", attr=attr)
    if int(head_dim * rope["fraction"]) // 2 < 1:
        raise ShapeError(f"rope rotates no dims: {rope['fraction']} of the head dim {head_dim} is less than 2",
                         attr=attr, hint="raise fraction, or use larger heads")
    scaling = rope["scaling"]
    if scaling and scaling["kind"] == "llama3" and not scaling["low_freq_factor"] < scaling["high_freq_factor"]:
        raise ShapeError("rope scaling needs low_freq_factor < high_freq_factor", attr=attr)


def _rope_source(rope: dict, head_dim: int) -> str:
    args = [str(head_dim)]
    if rope["theta"] != 10000.0:
        args.append(f"theta={rope['theta']!r}")
    if rope["fraction"] != 1.0:
        args.append(f"fraction={rope['fraction']!r}")
    if rope["scaling"]:
        args.append(f"scaling={dict(rope['scaling'])!r}")
    return f"RotaryEmbedding({', '.join(args)})"

# Each layout's projections by role, in the order they are built; `names` renames the fused and separate
# layouts' modules (role -> module name). The torch layout keeps nn.MultiheadAttention's names.
_ROLES = {"fused": ("qkv", "out"), "cross": ("q", "kv", "out"), "separate": ("q", "k", "v", "out"),
          "torch": ("qkv", "out")}
_ALL_ROLES = ("qkv", "q", "k", "v", "kv", "out")
_NAMES = Attr("names", "struct", "module names of the projections, by role (fused and separate layouts): "
              "`{q: q_proj, k: k_proj, v: v_proj, out: o_proj}` (Hugging Face Llama)", None,
              fields=tuple(Attr(role, "str", f"the {role} projection's name (default: {role})", None) for role in _ALL_ROLES))


def _roles(a) -> tuple[str, ...]:
    return _ROLES["cross" if a["layout"] == "fused" and a["memory"] else a["layout"]]


def _names(a) -> dict[str, str]:
    """The renamed projections (role -> module name), only those that differ from their role."""
    given = a["names"] or {}
    return {role: given[role] for role in _roles(a) if given.get(role) not in (None, role)}


def _has_bias(a, role: str) -> bool:
    return a["bias"] if isinstance(a["bias"], bool) else role in a["bias"]


def _attention_params(a) -> dict:
    dim, heads = a["dim"], a["heads"]
    kv_width = (a["kv_heads"] or heads) * (dim // heads)
    source = a["kv_dim"] or dim
    shapes = {"qkv": (dim + 2 * kv_width, dim), "q": (dim, dim), "k": (kv_width, source), "v": (kv_width, source),
              "kv": (2 * kv_width, source), "out": (dim, dim)}
    if a["layout"] == "torch":
        names = {"qkv": ("in_proj_weight", "in_proj_bias"), "out": ("out_proj.weight", "out_proj.bias")}
    else:
        module = {role: a["names"] and a["names"].get(role) or role for role in _roles(a)}
        names = {role: (f"{module[role]}.weight", f"{module[role]}.bias") for role in _roles(a)}
    out = {}
    for role in _roles(a):
        out[names[role][0]] = shapes[role]
        if _has_bias(a, role):
            out[names[role][1]] = shapes[role][:1]
    return out


def _check_layout(a) -> None:
    roles = _roles(a)
    for role, name in (a["names"] or {}).items():
        if name is None:
            continue
        if a["layout"] == "torch":
            raise ShapeError("the torch layout keeps nn.MultiheadAttention's names (in_proj_weight, out_proj)",
                             attr="names", hint="rename with layout: fused or separate")
        if role not in roles:
            raise ShapeError(f"the {a['layout']}{' cross-attention' if a['memory'] else ''} layout has no '{role}' "
                             f"projection", attr="names", expected=f"names of {', '.join(roles)}")
        if not name.isidentifier() or name in _RESERVED_NAMES:
            raise ShapeError(f"'{name}' cannot name a projection", attr="names",
                             expected="a Python identifier that is not an attribute of the attention module")
    taken = [n for n in (a["names"] or {}).values() if n is not None]
    if len(set(taken)) != len(taken):
        raise ShapeError("two projections have the same name", attr="names")
    for role in a["bias"] if not isinstance(a["bias"], bool) else ():
        if role not in roles:
            raise ShapeError(f"the {a['layout']} layout has no '{role}' projection to give a bias", attr="bias",
                             expected=f"some of {', '.join(roles)}")
    if a["layout"] == "torch" and a["memory"] and (a["kv_dim"] or a["dim"]) != a["dim"]:
        raise ShapeError("the torch layout projects memory with in_proj_weight, so kv_dim must equal dim",
                         attr="kv_dim", hint="use layout: separate for memory of another width")


# attributes and methods of the attention module a projection's name would hide
_RESERVED_NAMES = frozenset({"heads", "kv_heads", "head_dim", "kv_width", "dim", "causal", "dropout", "cross",
                             "rope", "project", "output"})


def _attention_rule(a, ins):
    x = ins[0]
    floating(x)
    rank(x, (3,))
    features(x, -1, a["dim"], "dim")
    _check_layout(a)
    heads, kv_heads = a["heads"], a["kv_heads"] or a["heads"]
    if a["dim"] % heads:
        raise ShapeError(f"dim ({a['dim']}) must be divisible by heads ({heads})", attr="heads")
    if heads % kv_heads:
        raise ShapeError(f"heads ({heads}) must be a multiple of kv_heads ({kv_heads})", attr="kv_heads")
    if a["rope"] is not None:
        if a["memory"]:
            raise ShapeError("rope needs the queries and keys to share positions; cross-attention has two sequences",
                             attr="rope")
        _check_rope(a["rope"], a["dim"] // heads, "rope")
    rest = list(ins[1:])
    keys = x
    if a["memory"]:
        memory = rest.pop(0)
        rank(memory, (3,))
        features(memory, -1, a["kv_dim"] or a["dim"], "kv_dim")
        if memory.dtype != x.dtype:
            raise ShapeError(f"memory is {memory.dtype} but the queries are {x.dtype}", attr="memory")
        if D.equal(memory.shape[0], x.shape[0]) is False:
            raise ShapeError(f"memory batch {memory.shape[0]} differs from query batch {x.shape[0]}", attr="memory")
        keys = memory
    if a["mask"]:
        mask = rest.pop(0)
        if mask.rank != 2 or D.equal(mask.shape[0], x.shape[0]) is not True or D.equal(mask.shape[1], keys.shape[1]) is not True:
            raise ShapeError(f"mask must be [batch, keys] = [{x.shape[0]}, {keys.shape[1]}], got {mask}", attr="mask")
        if mask.dtype not in ("bool",) + INTS:
            raise ShapeError(f"mask must be bool (true = attend) or integer 0/1, got {mask.dtype}", attr="mask")
    return [x]


def _attention_construct(a) -> str:
    args = [str(a["dim"]), str(a["heads"])]
    if a["kv_heads"] and a["kv_heads"] != a["heads"]:
        args.append(f"kv_heads={a['kv_heads']}")
    if a["causal"]:
        args.append("causal=True")
    if a["dropout"]:
        args.append(f"dropout={a['dropout']!r}")
    if a["bias"] is False:
        args.append("bias=False")
    elif a["bias"] is not True:
        args.append(f"bias={tuple(a['bias'])!r}")
    if a["memory"]:
        args.append("cross=True")
        if a["kv_dim"] and a["kv_dim"] != a["dim"]:
            args.append(f"kv_dim={a['kv_dim']}")
    if _names(a):
        args.append(f"names={_names(a)!r}")
    if a["rope"] is not None:
        args.append(f"rope={_rope_source(a['rope'], a['dim'] // a['heads'])}")
    return f"{_CLASSES[a['layout']]}({', '.join(args)})"


_CLASSES = {"fused": "MultiHeadAttention", "separate": "SeparateAttention", "torch": "InProjAttention"}


def _attention_helper(a) -> str | None:
    """With renamed projections, `project` and `output` call them by name, as a person writes them (and as
    TorchScript needs: it compiles attribute names, not strings)."""
    names = _names(a)
    if not names:
        return None
    call = {role: f"self.{names.get(role, role)}" for role in _roles(a)}
    split = "split([self.kv_width, self.kv_width], dim=-1)"
    if a["layout"] == "separate":
        body = [f"return {call['q']}(x), {call['k']}(source), {call['v']}(source)"]
    elif a["memory"]:
        body = [f"k, v = {call['kv']}(source).{split}", f"return {call['q']}(x), k, v"]
    else:
        body = [f"q, k, v = {call['qkv']}(x).split([self.dim, self.kv_width, self.kv_width], dim=-1)",
                "return q, k, v"]
    named = ", ".join(names.get(role, role) for role in _roles(a))
    lines = [f'"""MultiHeadAttention with its projections named {named}."""', "",
             "def project(self, x: torch.Tensor, source: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:"]
    lines += ["    " + line for line in body]
    lines += ["", "def output(self, y: torch.Tensor) -> torch.Tensor:", f"    return {call['out']}(y)"]
    return "\n".join(lines)


def _attention_call(a, args, mod, ins) -> str:
    rest = list(args[1:])
    memory = rest.pop(0) if a["memory"] else None
    mask = rest.pop(0) if a["mask"] else None
    if memory is None and mask is None:
        return f"{mod}({args[0]})"
    if memory is None:
        return f"{mod}({args[0]}, mask={mask})"
    return f"{mod}({args[0]}, {memory}{'' if mask is None else ', mask=' + mask})"


def _attention_macs(a, i, o):
    x = i[0]
    keys = i[1] if a["memory"] else x
    projections = sum(D.product(s) for s in _attention_params(a).values() if len(s) == 2)
    tokens = D.product(x.shape[:-1])
    return tokens * projections + 2 * x.shape[0] * x.shape[1] * keys.shape[1] * a["dim"]


register(LayerKind(
    "attention", "Multi-head attention on F.scaled_dot_product_attention (flash/efficient kernels on CUDA): self-attention, "
                 "or cross-attention with `memory`; causal and padding masks; grouped-query with kv_heads.",
    (Attr("dim", "int", "model width (last dim of the input)", minimum=1),
     Attr("heads", "int", "number of query heads", minimum=1),
     Attr("kv_heads", "int", "number of key/value heads (grouped-query attention; default: heads)", None),
     Attr("causal", "bool", "each position attends only to earlier ones", False),
     Attr("dropout", "float", "dropout on attention weights while training", 0.0),
     Attr("bias", "flags", "biases on the projections: true, false, or the roles that have one (`[q, v, out]`)",
          True, choices=_ALL_ROLES),
     Attr("layout", "str", "the projections' parameters: fused (one `qkv` Linear; `q` and `kv` for cross-attention), "
          "separate (`q`, `k`, `v`), or torch (nn.MultiheadAttention's `in_proj_weight`, `in_proj_bias`, "
          "`out_proj`); then `out`", "fused", choices=("fused", "separate", "torch")),
     _NAMES,
     Attr("memory", "ref", "node whose output is attended to (cross-attention); default: self-attention", None),
     Attr("kv_dim", "int", "width of memory (default: dim)", None),
     Attr("mask", "ref", "node giving a [batch, keys] padding mask, true (or 1) = attend", None),
     Attr("rope", "struct", "rotary position embeddings on queries and keys, Llama's layout: `rope: {theta: 500000}` "
                            "(`{}` for the defaults)", None, fields=_ROPE_FIELDS)),
    _attention_rule, _attention_call, _attention_construct, _attention_params, _attention_macs,
    module_classes=("MultiHeadAttention", "SeparateAttention", "InProjAttention", "RotaryEmbedding"),
    helper=_attention_helper,
))


def _rope_rule(a, ins):
    x = ins[0]
    floating(x)
    rank(x, (3, 4))
    features(x, -1, a["head_dim"], "head_dim", hint="rope works per head: (B, heads, T, head_dim) or (B, T, head_dim)")
    _check_rope(a, a["head_dim"], "fraction")
    if len(ins) == 2:
        positions = ins[1]
        seq = x.shape[-2]
        if positions.dtype not in INTS:
            raise ShapeError(f"positions must be integers, got {positions.dtype}")
        ok = (positions.rank == 1 and D.equal(positions.shape[0], seq)) or (
            positions.rank == 2 and x.rank in (3, 4) and D.equal(positions.shape[0], x.shape[0])
            and D.equal(positions.shape[1], seq))
        if not ok:
            raise ShapeError(f"positions must be [T] or [B, T] for the input {x}, got {positions}")
    return [x]


register(LayerKind(
    "rope", "Rotary position embedding on (B, heads, T, head_dim) or (B, T, head_dim), rotating the first "
            "`fraction` of each head by its position (0..T-1, or a second input of [T] or [B, T] positions); "
            "Hugging Face Llama's rotate-half layout.",
    (Attr("head_dim", "int", "size of the last dim", minimum=2),) + _ROPE_FIELDS,
    _rope_rule, module_call, construct=lambda a: _rope_source(a, a["head_dim"]),
    arity=(1, 2), module_classes=("RotaryEmbedding",)))
