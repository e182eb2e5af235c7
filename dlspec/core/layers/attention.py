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

def _attention_params(a) -> dict:
    dim, heads = a["dim"], a["heads"]
    kv_heads = a["kv_heads"] or heads
    head = dim // heads
    kv_out = 2 * kv_heads * head
    b = a["bias"]
    out = {}
    if a["memory"]:
        out["q.weight"] = (dim, dim)
        if b:
            out["q.bias"] = (dim,)
        out["kv.weight"] = (kv_out, a["kv_dim"] or dim)
        if b:
            out["kv.bias"] = (kv_out,)
    else:
        out["qkv.weight"] = (dim + kv_out, dim)
        if b:
            out["qkv.bias"] = (dim + kv_out,)
    out["out.weight"] = (dim, dim)
    if b:
        out["out.bias"] = (dim,)
    return out


def _attention_rule(a, ins):
    x = ins[0]
    floating(x)
    rank(x, (3,))
    features(x, -1, a["dim"], "dim")
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
    if not a["bias"]:
        args.append("bias=False")
    if a["memory"]:
        args.append("cross=True")
        if a["kv_dim"] and a["kv_dim"] != a["dim"]:
            args.append(f"kv_dim={a['kv_dim']}")
    if a["rope"] is not None:
        args.append(f"rope={_rope_source(a['rope'], a['dim'] // a['heads'])}")
    return f"MultiHeadAttention({', '.join(args)})"


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
     Attr("bias", "bool", "biases on the projections", True),
     Attr("memory", "ref", "node whose output is attended to (cross-attention); default: self-attention", None),
     Attr("kv_dim", "int", "width of memory (default: dim)", None),
     Attr("mask", "ref", "node giving a [batch, keys] padding mask, true (or 1) = attend", None),
     Attr("rope", "struct", "rotary position embeddings on queries and keys, Llama's layout: `rope: {theta: 500000}` "
                            "(`{}` for the defaults)", None, fields=_ROPE_FIELDS)),
    _attention_rule, _attention_call, _attention_construct, _attention_params, _attention_macs,
    module_classes=("MultiHeadAttention", "RotaryEmbedding"),
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
