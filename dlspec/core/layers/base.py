"""The pieces every layer kind is made of: `Attr`, `LayerKind`, the registry, and the helpers shape rules share."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

from .. import dims as D
from ..ir import TensorType, dim_str

REQUIRED = object()
FLOATS = ("float32", "float16", "bfloat16", "float64")
INTS = ("int64", "int32", "int16", "int8", "uint8")
DTYPES = FLOATS + INTS + ("bool",)
DEFAULT_FLOAT = "float32"


class ShapeError(Exception):
    """Raised by a shape rule; the shape pass turns it into a located Problem."""

    def __init__(self, message: str, attr: str | None = None, expected: str | None = None, hint: str | None = None):
        super().__init__(message)
        self.attr, self.expected, self.hint = attr, expected, hint


@dataclass(frozen=True)
class Attr:
    name: str
    type: str  # int | float | bool | str | ints | dims | padding | ref | struct | flags (true, false or a list of choices)
    doc: str
    default: Any = REQUIRED
    choices: tuple = ()
    minimum: float | None = None
    fields: tuple["Attr", ...] = ()  # a struct's named fields, each typed like an attribute

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
    # input dims that export must keep static (a time loop torch.export unrolls), as dims of the input types
    static_dims: Callable[[dict, list[TensorType]], list[Any]] = lambda a, ins: []
    # integer inputs read as indices: input position -> valid [lo, hi) of their values (embedding ids)
    index_range: Callable[[dict, list[TensorType]], dict[int, tuple[int, int]]] = lambda a, ins: {}
    # methods of a subclass of the class `construct` makes, when the attributes need one (attention's own
    # projection names): the generated source defines the subclass and constructs it instead
    helper: Callable[[dict], str | None] = lambda a: None

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

def rank(t: TensorType, ranks: Sequence[int]) -> None:
    if t.rank not in ranks:
        want = " or ".join(str(r) for r in ranks)
        raise ShapeError(f"expects a rank-{want} input, got {t}", expected=f"rank {want}")


def floating(t: TensorType) -> None:
    if t.dtype not in FLOATS:
        raise ShapeError(f"expects a floating-point input, got {t.dtype}",
                         hint="integer inputs go through an embedding first")


def features(t: TensorType, axis: int, want: int, attr: str, hint: str | None = None) -> None:
    have = t.shape[axis]
    same = D.equal(have, want)
    if same is None:
        raise ShapeError(f"{attr} must match dim {axis} of the input, which is the symbolic '{have}' (input {t})",
                         attr=attr, expected=str(want), hint=hint)
    if not same:
        raise ShapeError(f"{attr} is {want} but the input has {have} at dim {axis} (input {t})",
                         attr=attr, expected=f"{attr}: {have}", hint=hint)


def at_least(size, least: int, what: str, attr: str | None = None, hint: str | None = None) -> None:
    """A size (static or symbolic) must be >= `least` at every allowed size of the dims it depends on."""
    low, _ = D.bounds(size)
    if low is not None and low >= least:
        return
    if D.is_static(size):
        raise ShapeError(f"{what} would be {size}", attr=attr, hint=hint)
    smallest = D.smallest_min(size, least)
    declare = ", ".join(f"{name}: {{min: {n}}}" for name, n in smallest.items()) if smallest else None
    raise ShapeError(f"{what} is {dim_str(size)}, which is {'unbounded below' if low is None else low} at the smallest "
                     f"allowed size", attr=attr,
                     expected=f"{dim_str(size)} >= {least} at every allowed size",
                     hint=hint or (f"declare the smallest size the model takes: `dims: {{{declare}}}`" if declare else
                                   "declare a larger min for the dims under model.dims"))


def pair(value, n: int) -> tuple:
    if isinstance(value, (list, tuple)) and len(value) != n:
        raise ShapeError(f"a list of sizes here has one value per spatial dim: {n}, got {list(value)}",
                         expected=f"one int, or a list of {n}")
    return tuple(value) if isinstance(value, (list, tuple)) else (value,) * n


def axis(dim: int, rank: int, attr: str = "dim") -> int:
    if not -rank <= dim < rank:
        raise ShapeError(f"dim {dim} is out of range for a rank-{rank} input", attr=attr,
                         expected=f"{-rank} <= {attr} < {rank}")
    return dim % rank


def literal(value) -> str:
    """An attribute as Python source: lists become tuples, as torch's size arguments are written."""
    return repr(tuple(value) if isinstance(value, list) else value)


def opt(a: dict, **defaults) -> str:
    """`, name=value` for each attribute that differs from its default (torch's own default)."""
    parts = [f"{k}={a[k]!r}" for k, v in defaults.items() if a[k] != v]
    return (", " + ", ".join(parts)) if parts else ""


def module_call(a, args, mod, ins) -> str:
    return f"{mod}({', '.join(args)})"


# ---------------------------------------------------------------- dtypes, as torch promotes them

def _category(dtype: str) -> int:
    return 0 if dtype == "bool" else 1 if dtype in INTS else 2


_BITS = {"bool": 1, "uint8": 8, "int8": 8, "int16": 16, "int32": 32, "int64": 64,
         "float16": 16, "bfloat16": 16, "float32": 32, "float64": 64}


def promote(a: str, b: str) -> str:
    """The dtype of an element-wise op on two tensors of dtypes a and b (torch.promote_types)."""
    if a == b:
        return a
    if _category(a) != _category(b):
        return a if _category(a) > _category(b) else b
    if {a, b} == {"float16", "bfloat16"}:
        return "float32"
    if {a, b} == {"uint8", "int8"}:
        return "int16"
    if "uint8" in (a, b):  # uint8 with a wider signed int
        return a if b == "uint8" else b
    return a if _BITS[a] >= _BITS[b] else b


def with_scalar(dtype: str, scalar: Any) -> str:
    """The dtype of tensor (op) Python scalar: a float scalar makes an integer tensor float32."""
    if isinstance(scalar, float) and _category(dtype) < 2:
        return DEFAULT_FLOAT
    if isinstance(scalar, int) and not isinstance(scalar, bool) and dtype == "bool":
        return "int64"
    return dtype


def kind_hint(name: str, others: Sequence[str] = ()) -> str:
    """The hint for an unknown layer kind: a kind that goes by that name elsewhere (upsample: interpolate), a
    near spelling (conv3: conv3d), else the closest real kind, offered only as the nearest name."""
    import difflib
    lowered = str(name).lower()
    if _ALIASES.get(lowered) in REGISTRY:
        return f"dlspec calls it '{_ALIASES[lowered]}'"
    choices = list(REGISTRY) + list(others)
    close = difflib.get_close_matches(lowered, choices, n=1, cutoff=0.75)
    if close:
        return f"did you mean '{close[0]}'?"
    nearest = difflib.get_close_matches(lowered, list(REGISTRY), n=1, cutoff=0.0)
    return "see docs/layers.md for the layer kinds" + (f" (the nearest name is '{nearest[0]}')" if nearest else "")


# What other libraries call some kinds: an unknown `op: upsample` is pointed at interpolate, not at `scale`.
_ALIASES = {
    "upsample": "interpolate", "upsampling": "interpolate", "resize": "interpolate", "dense": "linear",
    "fc": "linear", "fully_connected": "linear", "cat": "concat", "concatenate": "concat", "tile": "repeat",
    "swish": "silu", "batch_norm": "batch_norm2d", "batchnorm": "batch_norm2d", "instance_norm": "instance_norm2d",
    "instancenorm": "instance_norm2d", "layernorm": "layer_norm", "rmsnorm": "rms_norm", "conv": "conv2d",
    "deconv": "conv_transpose2d", "conv2d_transpose": "conv_transpose2d", "view": "reshape", "clip": "clamp",
    "maxpool": "max_pool2d", "max_pool": "max_pool2d", "avgpool": "avg_pool2d", "avg_pool": "avg_pool2d",
    "global_avg_pool": "adaptive_avg_pool2d", "hard_swish": "hardswish", "hard_sigmoid": "hardsigmoid",
    "depth_to_space": "pixel_shuffle", "rotary": "rope", "rotary_embedding": "rope", "mha": "attention",
    "multihead_attention": "attention", "self_attention": "attention", "subtract": "sub", "divide": "div",
    "multiply": "mul", "power": "pow", "embed": "embedding", "padding": "pad",
}
