"""The layer registry: every layer kind is defined here, once.

A `LayerKind` holds the kind's attributes (with types, defaults and docs), its
shape rule, its parameter shapes (which give parameter counts and check weight
ties), the Python expression that constructs its module, and the expression
that calls it in the generated forward. The JSON Schema, the reference docs
and the builder are all derived from this table; nothing else in dlspec
branches on a layer kind.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

from . import dims as D
from .ir import TensorType

REQUIRED = object()
FLOATS = ("float32", "float16", "bfloat16", "float64")
INTS = ("int64", "int32", "int16", "int8", "uint8")
DTYPES = FLOATS + INTS + ("bool",)


class ShapeError(Exception):
    """Raised by a shape rule; the shape pass turns it into a located Problem."""

    def __init__(self, message: str, attr: str | None = None, expected: str | None = None, hint: str | None = None):
        super().__init__(message)
        self.attr, self.expected, self.hint = attr, expected, hint


@dataclass(frozen=True)
class Attr:
    name: str
    type: str  # int | float | bool | str | ints | dims | padding | ref
    doc: str
    default: Any = REQUIRED
    choices: tuple = ()
    minimum: float | None = None

    @property
    def required(self) -> bool:
        return self.default is REQUIRED


@dataclass(frozen=True)
class LayerKind:
    name: str
    doc: str
    attrs: tuple[Attr, ...]
    rule: Callable[[dict, list[TensorType]], list[TensorType]]
    call: Callable[[dict, list[str], str | None, list[TensorType]], str]
    construct: Callable[[dict], str] | None = None  # None: a function call, no module, no parameters
    params: Callable[[dict], dict[str, tuple[int, ...]]] = lambda a: {}
    macs: Callable[[dict, list[TensorType], list[TensorType]], Any] = lambda a, i, o: 0
    arity: tuple[int, int | None] = (1, 1)  # number of `from` inputs (min, max); refs come after
    outputs: Callable[[dict], int] = lambda a: 1
    module_classes: tuple[str, ...] = ()  # custom classes from dlspec.core.modules it needs
    # input dims an attribute bounds, as (dim, bound, attribute): checked against the dims' declared max,
    # since a symbolic dim passes the shape rule whatever its size
    limits: Callable[[dict, list[TensorType]], list[tuple[Any, int, str]]] = lambda a, ins: []
    # the valid [lo, hi) of integer ids fed to its first input (an embedding's vocabulary), when it has one
    id_range: Callable[[dict], tuple[int, int]] | None = None

    def attr(self, name: str) -> Attr | None:
        return next((a for a in self.attrs if a.name == name), None)

    def param_count(self, a: dict) -> int:
        return sum(D.product(shape) for shape in self.params(a).values())


REGISTRY: dict[str, LayerKind] = {}


def register(kind: LayerKind) -> LayerKind:
    assert kind.name not in REGISTRY, kind.name
    REGISTRY[kind.name] = kind
    return kind


# ---------------------------------------------------------------- helpers for rules

def _rank(t: TensorType, ranks: Sequence[int], what: str) -> None:
    if t.rank not in ranks:
        want = " or ".join(str(r) for r in ranks)
        raise ShapeError(f"expects a rank-{want} input, got {t}", expected=f"rank {want}")


def _float(t: TensorType, what: str) -> None:
    if t.dtype not in FLOATS:
        raise ShapeError(f"expects a floating-point input, got {t.dtype}",
                         hint="integer inputs go through an embedding first")


def _features(t: TensorType, axis: int, want: int, attr: str, what: str, hint: str | None = None) -> None:
    have = t.shape[axis]
    same = D.equal(have, want)
    if same is None:
        raise ShapeError(f"{attr} must match dim {axis} of the input, which is the symbolic '{have}' (input {t})",
                         attr=attr, expected=str(want), hint=hint)
    if not same:
        raise ShapeError(f"{attr} is {want} but the input has {have} at dim {axis} (input {t})",
                         attr=attr, expected=f"{attr}: {have}", hint=hint)


def _pair(value, n: int) -> tuple:
    if isinstance(value, (list, tuple)) and len(value) != n:
        raise ShapeError(f"a list of sizes here has one value per spatial dim: {n}, got {list(value)}",
                         expected=f"one int, or a list of {n}")
    return tuple(value) if isinstance(value, (list, tuple)) else (value,) * n


def _axis(dim: int, rank: int, attr: str = "dim") -> int:
    if not -rank <= dim < rank:
        raise ShapeError(f"dim {dim} is out of range for a rank-{rank} input", attr=attr,
                         expected=f"{-rank} <= {attr} < {rank}")
    return dim % rank


def _literal(value) -> str:
    """An attribute as Python source: lists become tuples, as torch's size arguments are written."""
    return repr(tuple(value) if isinstance(value, list) else value)


def _module_call(a, args, mod, ins) -> str:
    return f"{mod}({', '.join(args)})"


def _ident(name: str, doc: str, fn: str, attrs: tuple[Attr, ...] = (), extra: Callable[[dict], str] = lambda a: "",
           dtype_rule: Callable[[TensorType], str] | None = None) -> LayerKind:
    """An element-wise function: same shape out as in."""
    def rule(a, ins):
        _float(ins[0], name)
        return [ins[0]]

    def call(a, args, mod, ins):
        more = extra(a)
        return f"{fn}({args[0]}{', ' + more if more else ''})"

    return register(LayerKind(name, doc, attrs, rule, call))


# ---------------------------------------------------------------- dense and convolution

def _linear_rule(a, ins):
    t = ins[0]
    _float(t, "linear")
    if t.rank < 1:
        raise ShapeError("linear expects at least a rank-1 input")
    _features(t, -1, a["in"], "in", "linear", hint="the previous layer's output size is the last dim shown")
    return [TensorType(t.shape[:-1] + (a["out"],), t.dtype)]


register(LayerKind(
    "linear", "Affine map y = x W^T + b over the last dim (nn.Linear).",
    (Attr("in", "int", "input features (size of the last dim)", minimum=1),
     Attr("out", "int", "output features", minimum=1),
     Attr("bias", "bool", "learn an additive bias", True)),
    _linear_rule, _module_call,
    construct=lambda a: f"nn.Linear({a['in']}, {a['out']}{'' if a['bias'] else ', bias=False'})",
    params=lambda a: {"weight": (a["out"], a["in"]), **({"bias": (a["out"],)} if a["bias"] else {})},
    macs=lambda a, i, o: D.product(o[0].shape[:-1]) * a["in"] * a["out"],
))


def _conv_attrs(transposed: bool = False) -> tuple[Attr, ...]:
    attrs = [
        Attr("in", "int", "input channels", minimum=1),
        Attr("out", "int", "output channels", minimum=1),
        Attr("kernel", "ints", "kernel size (one int, or one per spatial dim)"),
        Attr("stride", "ints", "stride", 1),
        Attr("padding", "padding", "zero padding: an int, one per spatial dim, 'same' or 'valid'", 0),
    ]
    if transposed:
        attrs.append(Attr("output_padding", "ints", "extra size added to one side of the output", 0))
    attrs += [Attr("dilation", "ints", "spacing between kernel elements", 1),
              Attr("groups", "int", "blocked connections from input to output channels", 1, minimum=1),
              Attr("bias", "bool", "learn an additive bias", True)]
    return tuple(attrs)


def _conv_kind(n: int, transposed: bool = False) -> LayerKind:
    name = f"conv_transpose{n}d" if transposed else f"conv{n}d"
    torch_name = f"nn.ConvTranspose{n}d" if transposed else f"nn.Conv{n}d"

    def rule(a, ins):
        t = ins[0]
        _float(t, name)
        _rank(t, (n + 2,), name)
        _features(t, 1, a["in"], "in", name, hint="channels are dim 1 (N, C, ...)")
        for attr in ("in", "out"):
            if a[attr] % a["groups"]:
                raise ShapeError(f"{attr} ({a[attr]}) must be divisible by groups ({a['groups']})", attr="groups")
        k, s, d = _pair(a["kernel"], n), _pair(a["stride"], n), _pair(a["dilation"], n)
        if a["padding"] in ("same", "valid"):
            if transposed:
                raise ShapeError(f"takes integer padding, not '{a['padding']}'", attr="padding")
            if a["padding"] == "same" and any(x != 1 for x in s):
                raise ShapeError("padding 'same' needs stride 1 (PyTorch refuses it otherwise)", attr="padding",
                                 hint="use an integer padding, e.g. kernel // 2")
            spatial = t.shape[2:] if a["padding"] == "same" else tuple(
                D.window_out(size, k[i], s[i], 0, d[i]) for i, size in enumerate(t.shape[2:]))
        elif transposed:
            p, op = _pair(a["padding"], n), _pair(a["output_padding"], n)
            spatial = tuple(D.normalize((size - 1) * s[i] - 2 * p[i] + d[i] * (k[i] - 1) + op[i] + 1)
                            for i, size in enumerate(t.shape[2:]))
        else:
            p = _pair(a["padding"], n)
            spatial = tuple(D.window_out(size, k[i], s[i], p[i], d[i]) for i, size in enumerate(t.shape[2:]))
        for size in spatial:
            if D.is_static(size) and size < 1:
                raise ShapeError(f"output would be empty: spatial size {size} for input {t}",
                                 attr="kernel",
                                 hint="the input is smaller than the kernel; pad it or use a smaller kernel/stride")
        return [TensorType((t.shape[0], a["out"]) + tuple(spatial), t.dtype)]

    def construct(a):
        k = a["kernel"]
        args = [str(a["in"]), str(a["out"]), repr(tuple(k) if isinstance(k, list) else k)]
        for key, default in (("stride", 1), ("padding", 0), ("output_padding", 0), ("dilation", 1), ("groups", 1)):
            if key in a and a[key] != default:
                v = a[key]
                args.append(f"{key}={tuple(v) if isinstance(v, list) else v!r}")
        if not a["bias"]:
            args.append("bias=False")
        return f"{torch_name}({', '.join(args)})"

    def params(a):
        k = _pair(a["kernel"], n)
        w = (a["in"], a["out"] // a["groups"]) if transposed else (a["out"], a["in"] // a["groups"])
        return {"weight": w + tuple(k), **({"bias": (a["out"],)} if a["bias"] else {})}

    def macs(a, i, o):
        k = D.product(_pair(a["kernel"], n))
        return D.product(o[0].shape) * (a["in"] // a["groups"]) * k if not transposed else \
            D.product(i[0].shape) * (a["out"] // a["groups"]) * k

    doc = (f"{n}-D transposed convolution ({torch_name})." if transposed else
           f"{n}-D convolution over (N, C, {'L' if n == 1 else 'H, W'}) ({torch_name}).")
    return register(LayerKind(name, doc, _conv_attrs(transposed), rule, _module_call, construct, params, macs))


_conv_kind(1)
_conv_kind(2)
_conv_kind(2, transposed=True)


def _pool_kind(kind: str, n: int) -> LayerKind:
    name = f"{kind}_pool{n}d"
    torch_name = f"F.{kind}_pool{n}d"

    def rule(a, ins):
        t = ins[0]
        _rank(t, (n + 1, n + 2), name)
        k = _pair(a["kernel"], n)
        s = _pair(a["stride"] if a["stride"] is not None else a["kernel"], n)
        p = _pair(a["padding"], n)
        for i in range(n):
            if p[i] * 2 > k[i]:
                raise ShapeError(f"padding {p[i]} is more than half the kernel {k[i]}", attr="padding")
        lead = t.shape[:-n]
        spatial = tuple(D.window_out(size, k[i], s[i], p[i], 1, a["ceil_mode"]) for i, size in enumerate(t.shape[-n:]))
        for size in spatial:
            if D.is_static(size) and size < 1:
                raise ShapeError(f"output would be empty for input {t}", attr="kernel",
                                 hint="the input is smaller than the pooling window")
        return [TensorType(lead + spatial, t.dtype)]

    def call(a, args, mod, ins):
        extra = ""
        if a["stride"] is not None:
            extra += f", stride={a['stride']!r}"
        if a["padding"]:
            extra += f", padding={a['padding']!r}"
        if a["ceil_mode"]:
            extra += ", ceil_mode=True"
        k = a["kernel"]
        return f"{torch_name}({args[0]}, {tuple(k) if isinstance(k, list) else k!r}{extra})"

    return register(LayerKind(
        name, f"{n}-D {kind} pooling ({torch_name}).",
        (Attr("kernel", "ints", "window size"), Attr("stride", "ints", "stride (default: the kernel size)", None),
         Attr("padding", "ints", "implicit padding on both sides", 0),
         Attr("ceil_mode", "bool", "round output sizes up instead of down", False)),
        rule, call))


for _k in ("max", "avg"):
    for _n in (1, 2):
        _pool_kind(_k, _n)


def _adaptive_kind(n: int) -> LayerKind:
    name = f"adaptive_avg_pool{n}d"

    def rule(a, ins):
        t = ins[0]
        _rank(t, (n + 1, n + 2), name)
        return [TensorType(t.shape[:-n] + _pair(a["size"], n), t.dtype)]

    return register(LayerKind(
        name, f"{n}-D adaptive average pooling to a fixed output size.",
        (Attr("size", "ints", "output size (one int, or one per spatial dim)"),),
        rule, lambda a, args, mod, ins: f"F.adaptive_avg_pool{n}d({args[0]}, {_literal(a['size'])})"))


_adaptive_kind(1)
_adaptive_kind(2)


# ---------------------------------------------------------------- normalization, dropout

def _norm_kind(name: str, doc: str, ranks: tuple[int, ...], axis: int, attrs: tuple[Attr, ...],
               construct: Callable[[dict], str], params: Callable[[dict], dict], extra_check=None) -> LayerKind:
    def rule(a, ins):
        t = ins[0]
        _float(t, name)
        if ranks:
            _rank(t, ranks, name)
        _features(t, axis, a["dim"], "dim", name)
        if extra_check:
            extra_check(a)
        return [t]

    return register(LayerKind(name, doc, attrs, rule, _module_call, construct, params,
                              macs=lambda a, i, o: 0))


def _affine(a):
    return {"weight": (a["dim"],), "bias": (a["dim"],)} if a["affine"] else {}


for _n, _ranks in ((1, (2, 3)), (2, (4,))):
    _norm_kind(f"batch_norm{_n}d", f"Batch normalization over channels (nn.BatchNorm{_n}d); running stats in eval mode.",
               _ranks, 1,
               (Attr("dim", "int", "channels (dim 1)", minimum=1), Attr("eps", "float", "added to the variance", 1e-5),
                Attr("momentum", "float", "running-stat update factor", 0.1),
                Attr("affine", "bool", "learn scale and shift", True)),
               lambda a, n=_n: f"nn.BatchNorm{n}d({a['dim']}{_opt(a, eps=1e-5, momentum=0.1, affine=True)})", _affine)


def _opt(a: dict, **defaults) -> str:
    parts = [f"{k}={a[k]!r}" for k, v in defaults.items() if a[k] != v]
    return (", " + ", ".join(parts)) if parts else ""


_norm_kind("layer_norm", "Layer normalization over the last dim (nn.LayerNorm).", (), -1,
           (Attr("dim", "int", "size of the last dim", minimum=1), Attr("eps", "float", "added to the variance", 1e-5),
            Attr("bias", "bool", "learn an additive bias", True)),
           lambda a: f"nn.LayerNorm({a['dim']}{_opt(a, eps=1e-5, bias=True)})",
           lambda a: {"weight": (a["dim"],), **({"bias": (a["dim"],)} if a["bias"] else {})})


def _group_check(a):
    if a["dim"] % a["groups"]:
        raise ShapeError(f"dim ({a['dim']}) must be divisible by groups ({a['groups']})", attr="groups")


_norm_kind("group_norm", "Group normalization over channels in groups (nn.GroupNorm).", (), 1,
           (Attr("groups", "int", "number of channel groups", minimum=1), Attr("dim", "int", "channels (dim 1)", minimum=1),
            Attr("eps", "float", "added to the variance", 1e-5), Attr("affine", "bool", "learn scale and shift", True)),
           lambda a: f"nn.GroupNorm({a['groups']}, {a['dim']}{_opt(a, eps=1e-5, affine=True)})", _affine, _group_check)
_norm_kind("rms_norm", "Root-mean-square normalization over the last dim (nn.RMSNorm).", (), -1,
           (Attr("dim", "int", "size of the last dim", minimum=1),
            Attr("eps", "float", "added to the mean square (default: dtype eps)", None)),
           lambda a: f"nn.RMSNorm({a['dim']}{_opt(a, eps=None)})", lambda a: {"weight": (a["dim"],)})


def _dropout_rule(a, ins):
    if not 0 <= a["p"] < 1:
        raise ShapeError(f"dropout p must be in [0, 1), got {a['p']}", attr="p")
    return [ins[0]]


register(LayerKind("dropout", "Randomly zeroes elements with probability p during training (nn.Dropout).",
                   (Attr("p", "float", "probability of zeroing an element", 0.5),),
                   _dropout_rule, _module_call, construct=lambda a: f"nn.Dropout({a['p']!r})"))


# ---------------------------------------------------------------- embeddings

def _embedding_rule(a, ins):
    t = ins[0]
    if t.dtype not in INTS:
        raise ShapeError(f"expects integer indices, got {t.dtype}", expected="an int64 input",
                         hint="declare the input with dtype: int64")
    return [TensorType(t.shape + (a["dim"],), "float32")]


register(LayerKind(
    "embedding", "Lookup table from integer ids in [0, num) to vectors (nn.Embedding).",
    (Attr("num", "int", "number of ids (vocabulary size)", minimum=1), Attr("dim", "int", "vector size", minimum=1),
     Attr("padding_idx", "int", "an id whose vector stays zero and gets no gradient", None)),
    _embedding_rule, _module_call,
    construct=lambda a: f"nn.Embedding({a['num']}, {a['dim']}{_opt(a, padding_idx=None)})",
    params=lambda a: {"weight": (a["num"], a["dim"])},
    id_range=lambda a: (0, a["num"]),
))


def _pos_rule(a, ins):
    t = ins[0]
    _float(t, "pos_embedding")
    _rank(t, (3,), "pos_embedding")
    _features(t, -1, a["dim"], "dim", "pos_embedding")
    if D.is_static(t.shape[1]) and t.shape[1] > a["max_len"]:
        raise ShapeError(f"sequence length {t.shape[1]} exceeds max_len {a['max_len']}", attr="max_len")
    return [t]


register(LayerKind(
    "pos_embedding", "Adds position embeddings to a (B, T, D) sequence: learned (a [max_len, D] table) or sinusoidal (fixed).",
    (Attr("max_len", "int", "longest sequence supported", minimum=1), Attr("dim", "int", "model width D", minimum=1),
     Attr("kind", "str", "learned or sinusoidal", "learned", choices=("learned", "sinusoidal"))),
    _pos_rule, _module_call,
    construct=lambda a: f"PositionalEmbedding({a['max_len']}, {a['dim']}, {a['kind']!r})",
    params=lambda a: {"weight": (a["max_len"], a["dim"])} if a["kind"] == "learned" else {},
    module_classes=("PositionalEmbedding",),
    limits=lambda a, ins: [(ins[0].shape[1], a["max_len"], "max_len")],
))


def _cls_rule(a, ins):
    t = ins[0]
    _rank(t, (3,), "class_token")
    _features(t, -1, a["dim"], "dim", "class_token")
    return [TensorType((t.shape[0], D.normalize(t.shape[1] + 1), t.shape[2]), t.dtype)]


register(LayerKind(
    "class_token", "Prepends a learned token to a (B, T, D) sequence, giving (B, T+1, D) (ViT, BERT-style [CLS]).",
    (Attr("dim", "int", "model width D", minimum=1),),
    _cls_rule, _module_call, construct=lambda a: f"ClassToken({a['dim']})",
    params=lambda a: {"token": (1, 1, a["dim"])}, module_classes=("ClassToken",),
))


# ---------------------------------------------------------------- activations

_ident("relu", "max(x, 0).", "F.relu")
_ident("gelu", "Gaussian error linear unit; approximate: tanh gives the GPT-2 form.", "F.gelu",
       (Attr("approximate", "str", "none or tanh", "none", choices=("none", "tanh")),),
       lambda a: "" if a["approximate"] == "none" else "approximate='tanh'")
_ident("silu", "x * sigmoid(x) (swish).", "F.silu")
_ident("tanh", "Hyperbolic tangent.", "torch.tanh")
_ident("sigmoid", "Logistic sigmoid.", "torch.sigmoid")
_ident("leaky_relu", "max(x, 0) + slope * min(x, 0).", "F.leaky_relu",
       (Attr("slope", "float", "slope for negative inputs", 0.01),), lambda a: f"{a['slope']!r}")


def _softmax_kind(name: str) -> LayerKind:
    def rule(a, ins):
        _float(ins[0], name)
        _axis(a["dim"], ins[0].rank)
        return [ins[0]]

    return register(LayerKind(name, f"{name.replace('_', ' ')} over one dim.",
                              (Attr("dim", "int", "the dim to normalise over", -1),),
                              rule, lambda a, args, mod, ins: f"F.{name}({args[0]}, dim={a['dim']})"))


_softmax_kind("softmax")
_softmax_kind("log_softmax")
register(LayerKind("identity", "Passes its input through unchanged.", (), lambda a, ins: [ins[0]],
                   lambda a, args, mod, ins: args[0]))


# ---------------------------------------------------------------- shape manipulation

def _flatten_rule(a, ins):
    t = ins[0]
    start, end = _axis(a["start"], t.rank, "start"), _axis(a["end"], t.rank, "end")
    if start > end:
        raise ShapeError(f"start ({a['start']}) comes after end ({a['end']})", attr="start")
    if start == 0 and end > 0 and not D.is_static(t.shape[0]):
        raise ShapeError(f"flattening from dim 0 folds the batch dim '{t.shape[0]}' into the features (input {t})",
                         attr="start", expected="start: 1", hint="flatten keeps dim 0 (the batch) when start is 1")
    return [TensorType(t.shape[:start] + (D.product(t.shape[start:end + 1]),) + t.shape[end + 1:], t.dtype)]


register(LayerKind("flatten", "Merges dims start..end into one (torch.flatten); keeps the batch dim by default.",
                   (Attr("start", "int", "first dim to merge", 1), Attr("end", "int", "last dim to merge", -1)),
                   _flatten_rule,
                   lambda a, args, mod, ins:
                   f"torch.flatten({args[0]}, {a['start']}{'' if a['end'] == -1 else ', ' + str(a['end'])})"))


def _reshape_rule(a, ins):
    t = ins[0]
    target = list(a["shape"])
    if sum(1 for d in target if isinstance(d, int) and d == -1) > 1:
        raise ShapeError("reshape allows at most one -1", attr="shape")
    total = D.product(t.shape)
    known = D.product(d for d in target if not (isinstance(d, int) and d == -1))
    if any(isinstance(d, int) and d == -1 for d in target):
        rest = D.normalize(total / known) if not (isinstance(total, int) and isinstance(known, int)) else None
        if isinstance(total, int) and isinstance(known, int):
            if known == 0 or total % known:
                raise ShapeError(f"cannot reshape {t} ({total} elements) to {a['shape']}: {total} is not divisible by {known}",
                                 attr="shape")
            rest = total // known
        elif rest is not None and hasattr(rest, "is_polynomial") and not _is_integral(rest):
            raise ShapeError(f"cannot reshape {t} to {a['shape']}: the -1 dim would be {rest}", attr="shape")
        target = [rest if isinstance(d, int) and d == -1 else d for d in target]
    elif D.equal(total, known) is not True:
        raise ShapeError(f"cannot reshape {t} ({total} elements) to {a['shape']} ({known} elements)", attr="shape",
                         hint="the element count must stay the same; use -1 for one dim to infer it")
    for d in a["shape"]:
        if not isinstance(d, int) and not any(D.equal(d, s) for s in t.shape):
            raise ShapeError(f"reshape dim '{d}' does not match any dim of the input {t}", attr="shape",
                             hint="symbolic dims in a reshape must be dims of its input; use -1 for a derived one")
    return [TensorType(tuple(D.normalize(d) for d in target), t.dtype)]


def _is_integral(expr) -> bool:
    import sympy
    num, den = sympy.fraction(sympy.together(expr))
    return den == 1 or den.is_Number and den == 1


def _reshape_call(a, args, mod, ins):
    t = ins[0]
    parts = []
    for d in a["shape"]:
        if isinstance(d, int):
            parts.append(str(d))
        else:
            index = next(i for i, s in enumerate(t.shape) if D.equal(d, s))
            parts.append(f"{args[0]}.size({index})")
    return f"{args[0]}.reshape({', '.join(parts)})"


register(LayerKind("reshape", "Gives the tensor a new shape with the same number of elements; -1 infers one dim, "
                   "symbolic dims (B, T) keep the input's sizes.",
                   (Attr("shape", "dims", "the new shape: ints, -1, or symbolic dims of the input"),),
                   _reshape_rule, _reshape_call))


def _permute_rule(a, ins):
    t = ins[0]
    order = [_axis(d, t.rank, "dims") for d in a["dims"]]
    if sorted(order) != list(range(t.rank)):
        raise ShapeError(f"dims {a['dims']} is not a permutation of the {t.rank} dims of {t}", attr="dims")
    return [TensorType(tuple(t.shape[i] for i in order), t.dtype)]


register(LayerKind("permute", "Reorders dims (Tensor.permute).", (Attr("dims", "ints", "the new order of the dims"),),
                   _permute_rule, lambda a, args, mod, ins: f"{args[0]}.permute({', '.join(map(str, a['dims']))})"))


def _transpose_rule(a, ins):
    t = ins[0]
    i, j = _axis(a["dim0"], t.rank, "dim0"), _axis(a["dim1"], t.rank, "dim1")
    shape = list(t.shape)
    shape[i], shape[j] = shape[j], shape[i]
    return [TensorType(tuple(shape), t.dtype)]


register(LayerKind("transpose", "Swaps two dims.", (Attr("dim0", "int", "first dim"), Attr("dim1", "int", "second dim")),
                   _transpose_rule, lambda a, args, mod, ins: f"{args[0]}.transpose({a['dim0']}, {a['dim1']})"))


def _squeeze_rule(a, ins):
    t = ins[0]
    i = _axis(a["dim"], t.rank)
    if t.shape[i] != 1:
        raise ShapeError(f"squeeze: dim {a['dim']} of {t} has size {t.shape[i]}, not 1", attr="dim")
    return [TensorType(t.shape[:i] + t.shape[i + 1:], t.dtype)]


def _unsqueeze_rule(a, ins):
    t = ins[0]
    i = _axis(a["dim"], t.rank + 1)
    return [TensorType(t.shape[:i] + (1,) + t.shape[i:], t.dtype)]


register(LayerKind("squeeze", "Removes a dim of size 1.", (Attr("dim", "int", "the dim to remove"),), _squeeze_rule,
                   lambda a, args, mod, ins: f"{args[0]}.squeeze({a['dim']})"))
register(LayerKind("unsqueeze", "Inserts a dim of size 1.", (Attr("dim", "int", "where the new dim goes"),), _unsqueeze_rule,
                   lambda a, args, mod, ins: f"{args[0]}.unsqueeze({a['dim']})"))


def _select_rule(a, ins):
    t = ins[0]
    i = _axis(a["dim"], t.rank)
    if D.is_static(t.shape[i]) and not -t.shape[i] <= a["index"] < t.shape[i]:
        raise ShapeError(f"index {a['index']} is out of range for dim {a['dim']} of size {t.shape[i]}", attr="index")
    return [TensorType(t.shape[:i] + t.shape[i + 1:], t.dtype)]


register(LayerKind("select", "Takes one index along a dim, removing it (x[:, 0] takes the class token).",
                   (Attr("dim", "int", "the dim"), Attr("index", "int", "the index taken")), _select_rule,
                   lambda a, args, mod, ins: f"{args[0]}.select({a['dim']}, {a['index']})"))


def _slice_rule(a, ins):
    t = ins[0]
    i = _axis(a["dim"], t.rank)
    size, start, end, step = t.shape[i], a["start"], a["end"], a["step"]
    if step < 1:
        raise ShapeError("slice step must be positive", attr="step")
    if D.is_static(size):
        length = len(range(size)[start:end:step])
    elif start >= 0 and (end is None or end >= 0):
        span = (size if end is None else end) - start
        length = D.normalize(span if step == 1 else -(-span // step))
    else:
        raise ShapeError(f"negative slice bounds on the symbolic dim '{size}' are not supported", attr="start")
    if D.is_static(length) and length < 1:
        raise ShapeError(f"slice [{start}:{end}:{step}] of dim {a['dim']} (size {size}) is empty", attr="end")
    return [TensorType(t.shape[:i] + (length,) + t.shape[i + 1:], t.dtype)]


def _slice_call(a, args, mod, ins):
    index = ", ".join([":"] * _axis(a["dim"], ins[0].rank) + [
        f"{a['start'] or ''}:{'' if a['end'] is None else a['end']}{'' if a['step'] == 1 else ':' + str(a['step'])}"])
    return f"{args[0]}[{index}]"


register(LayerKind("slice", "Takes a range along one dim (x[:, start:end:step]).",
                   (Attr("dim", "int", "the dim"), Attr("start", "int", "first index", 0),
                    Attr("end", "int", "stop before this index (default: the end)", None), Attr("step", "int", "step", 1)),
                   _slice_rule, _slice_call))


def _reduce_kind(name: str) -> LayerKind:
    def rule(a, ins):
        t = ins[0]
        axes = sorted({_axis(d, t.rank, "dims") for d in (a["dims"] if isinstance(a["dims"], list) else [a["dims"]])})
        shape = tuple(1 if i in axes else s for i, s in enumerate(t.shape)) if a["keepdim"] else \
            tuple(s for i, s in enumerate(t.shape) if i not in axes)
        return [TensorType(shape, t.dtype)]

    def call(a, args, mod, ins):
        d = a["dims"]
        return f"{args[0]}.{name}({tuple(d) if isinstance(d, list) else d}{', keepdim=True' if a['keepdim'] else ''})"

    return register(LayerKind(name, f"{name.title()} over one or more dims.",
                              (Attr("dims", "ints", "dim or dims to reduce"),
                               Attr("keepdim", "bool", "keep reduced dims as size 1", False)),
                              rule, call))


_reduce_kind("mean")
_reduce_kind("sum")


# ---------------------------------------------------------------- multi-input ops

def broadcast(a: TensorType, b: TensorType) -> TensorType:
    shape = []
    for i in range(1, max(a.rank, b.rank) + 1):
        x = a.shape[-i] if i <= a.rank else 1
        y = b.shape[-i] if i <= b.rank else 1
        if x == 1:
            shape.append(y)
        elif y == 1 or D.equal(x, y):
            shape.append(x)
        else:
            raise ShapeError(f"shapes {a} and {b} do not broadcast: {x} vs {y} at dim -{i}",
                             hint="element-wise ops need equal dims, or 1 where one side broadcasts")
    dtype = a.dtype if a.dtype in FLOATS else b.dtype
    return TensorType(tuple(reversed(shape)), dtype)


def _elementwise_kind(name: str, op: str, doc: str) -> LayerKind:
    def rule(a, ins):
        out = ins[0]
        for t in ins[1:]:
            out = broadcast(out, t)
        return [out]

    return register(LayerKind(name, doc, (), rule, lambda a, args, mod, ins: f" {op} ".join(args), arity=(2, None)))


_elementwise_kind("add", "+", "Element-wise sum of two or more inputs (with broadcasting).")
_elementwise_kind("mul", "*", "Element-wise product of two or more inputs (with broadcasting).")


def _concat_rule(a, ins):
    first = ins[0]
    i = _axis(a["dim"], first.rank)
    total = 0
    for t in ins:
        if t.rank != first.rank:
            raise ShapeError(f"concat of different ranks: {first} and {t}")
        for j, (x, y) in enumerate(zip(first.shape, t.shape)):
            if j != i and D.equal(x, y) is not True:
                raise ShapeError(f"concat along dim {a['dim']}: inputs differ at dim {j}: {first} vs {t}",
                                 hint="all dims except the concat dim must match")
        total = total + t.shape[i]
    return [TensorType(first.shape[:i] + (D.normalize(total),) + first.shape[i + 1:], first.dtype)]


register(LayerKind("concat", "Joins two or more inputs along a dim (torch.cat).",
                   (Attr("dim", "int", "the dim to join along", -1),),
                   _concat_rule, lambda a, args, mod, ins: f"torch.cat([{', '.join(args)}], dim={a['dim']})", arity=(2, None)))


def _split_rule(a, ins):
    t = ins[0]
    i = _axis(a["dim"], t.rank)
    if D.is_static(t.shape[i]) and sum(a["sizes"]) != t.shape[i]:
        raise ShapeError(f"split sizes {a['sizes']} add up to {sum(a['sizes'])}, but dim {a['dim']} has size {t.shape[i]}",
                         attr="sizes")
    return [TensorType(t.shape[:i] + (s,) + t.shape[i + 1:], t.dtype) for s in a["sizes"]]


register(LayerKind("split", "Splits along a dim into pieces of the given sizes; name them with `outputs: [a, b]`.",
                   (Attr("sizes", "ints", "size of each piece"), Attr("dim", "int", "the dim to split", -1)),
                   _split_rule, lambda a, args, mod, ins: f"torch.split({args[0]}, {list(a['sizes'])!r}, dim={a['dim']})",
                   outputs=lambda a: len(a["sizes"]) if isinstance(a["sizes"], list) else 1))


def _chunk_rule(a, ins):
    t = ins[0]
    i = _axis(a["dim"], t.rank)
    size = t.shape[i]
    if D.is_static(size):
        if size % a["chunks"]:
            raise ShapeError(f"dim {a['dim']} of size {size} does not divide into {a['chunks']} equal chunks", attr="chunks")
        piece = size // a["chunks"]
    else:
        piece = D.normalize(size / a["chunks"])
    return [TensorType(t.shape[:i] + (piece,) + t.shape[i + 1:], t.dtype)] * a["chunks"]


register(LayerKind("chunk", "Splits along a dim into equal chunks; name them with `outputs: [q, k, v]`.",
                   (Attr("chunks", "int", "number of chunks", minimum=1), Attr("dim", "int", "the dim to split", -1)),
                   _chunk_rule, lambda a, args, mod, ins: f"torch.chunk({args[0]}, {a['chunks']}, dim={a['dim']})",
                   outputs=lambda a: a["chunks"]))


def _matmul_rule(a, ins):
    x, y = ins
    if x.rank < 2 or y.rank < 2:
        raise ShapeError(f"matmul expects rank >= 2 inputs, got {x} and {y}")
    if D.equal(x.shape[-1], y.shape[-2]) is not True:
        raise ShapeError(f"inner dims differ: {x} @ {y} ({x.shape[-1]} vs {y.shape[-2]})",
                         hint="transpose one input so the last dim of the first equals the second-to-last of the second")
    batch = broadcast(TensorType(x.shape[:-2], x.dtype), TensorType(y.shape[:-2], y.dtype))
    return [TensorType(batch.shape + (x.shape[-2], y.shape[-1]), x.dtype)]


register(LayerKind("matmul", "Matrix product of two inputs with batch broadcasting (torch.matmul).", (),
                   _matmul_rule, lambda a, args, mod, ins: f"{args[0]} @ {args[1]}", arity=(2, 2),
                   macs=lambda a, i, o: D.product(o[0].shape) * i[0].shape[-1]))
register(LayerKind("scale", "Multiplies by a constant factor.", (Attr("factor", "float", "the factor"),),
                   lambda a, ins: [ins[0]], lambda a, args, mod, ins: f"{args[0]} * {a['factor']!r}"))


# ---------------------------------------------------------------- attention

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
    _float(x, "attention")
    _rank(x, (3,), "attention")
    _features(x, -1, a["dim"], "dim", "attention")
    heads, kv_heads = a["heads"], a["kv_heads"] or a["heads"]
    if a["dim"] % heads:
        raise ShapeError(f"dim ({a['dim']}) must be divisible by heads ({heads})", attr="heads")
    if heads % kv_heads:
        raise ShapeError(f"heads ({heads}) must be a multiple of kv_heads ({kv_heads})", attr="kv_heads")
    rest = list(ins[1:])
    keys = x
    if a["memory"]:
        memory = rest.pop(0)
        _rank(memory, (3,), "attention memory")
        _features(memory, -1, a["kv_dim"] or a["dim"], "kv_dim", "attention memory")
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
     Attr("mask", "ref", "node giving a [batch, keys] padding mask, true (or 1) = attend", None)),
    _attention_rule, _attention_call, _attention_construct, _attention_params, _attention_macs,
    module_classes=("MultiHeadAttention",),
))
