"""Making tensors (constant, arange, ones_like, ...) and indexing them (gather, index_select, tril, ...).

Ops that make a tensor still take an input: it gives the device, and the sizes their `shape` names
(`shape: [T, T]` takes T from the input's dims).
"""
from __future__ import annotations

from .. import dims as D
from ..ir import TensorType, dim_str
from .base import DTYPES, FLOATS, INTS, Attr, LayerKind, ShapeError, axis, rank, register

_DTYPE = Attr("dtype", "str", "element type of the result", "float32", choices=DTYPES)


def _size_source(d, ins: list[TensorType], args: list[str]) -> str:
    """Python source for one size: an int, or `.size(i)` of the input that has that symbolic dim."""
    if isinstance(d, int):
        return str(d)
    for t, arg in zip(ins, args):
        for i, s in enumerate(t.shape):
            if D.equal(d, s):
                return f"{arg}.size({i})"
    raise AssertionError(f"no input has the dim {d}")  # the shape rule has checked it


def _sizes_rule(shape: list, ins: list[TensorType], attr: str, allow_keep: bool = False) -> None:
    for d in shape:
        if isinstance(d, int):
            if d < 1 and not (allow_keep and d == -1):
                raise ShapeError(f"sizes must be positive{' (or -1 to keep one)' if allow_keep else ''}, got {shape}",
                                 attr=attr)
        elif not any(D.equal(d, s) for t in ins for s in t.shape):
            raise ShapeError(f"'{dim_str(d)}' is not a dim of the input(s) {', '.join(map(str, ins))}", attr=attr,
                             hint="a symbolic size must be a dim of an input, which gives its size at run time")


def _sizes_tuple(parts: list[str]) -> str:
    return f"({parts[0]},)" if len(parts) == 1 else f"({', '.join(parts)})"


def _fits(value: float, dtype: str) -> bool:
    if dtype == "bool":
        return value in (0, 1)
    return dtype in FLOATS or float(value).is_integer()


def _constant_rule(a, ins):
    shape = list(a["shape"])
    _sizes_rule(shape, ins, "shape")
    if not _fits(a["value"], a["dtype"]):
        raise ShapeError(f"value {a['value']} is not a {a['dtype']}", attr="value")
    return [TensorType(tuple(D.normalize(d) for d in shape), a["dtype"])]


def _constant_call(a, args, mod, ins):
    sizes = _sizes_tuple([_size_source(d, ins, args) for d in a["shape"]])
    value = a["value"] if a["dtype"] in FLOATS else int(a["value"]) if a["dtype"] != "bool" else bool(a["value"])
    return f"torch.full({sizes}, {value!r}, dtype=torch.{a['dtype']}, device={args[0]}.device)"


register(LayerKind("constant", "A tensor of one value in a given shape; ints, or dims of the input (which gives "
                               "the device and those sizes).",
                   (Attr("value", "float", "the value"), Attr("shape", "dims", "the shape: ints or dims of the input"),
                    _DTYPE), _constant_rule, _constant_call))


def _like_kind(name: str) -> LayerKind:
    def rule(a, ins):
        return [TensorType(ins[0].shape, a["dtype"] or ins[0].dtype)]

    def call(a, args, mod, ins):
        return f"torch.{name}({args[0]}{'' if a['dtype'] is None else ', dtype=torch.' + a['dtype']})"

    return register(LayerKind(name, f"{'Ones' if name == 'ones_like' else 'Zeros'} in the input's shape.",
                              (Attr("dtype", "str", "element type (default: the input's)", None, choices=DTYPES),),
                              rule, call))


_like_kind("ones_like")
_like_kind("zeros_like")


def _arange_rule(a, ins):
    t = ins[0]
    return [TensorType((t.shape[axis(a["dim"], t.rank)],), a["dtype"])]


register(LayerKind("arange", "0, 1, ..., n - 1 where n is the size of one dim of the input (positions).",
                   (Attr("dim", "int", "the input dim whose size is n"),
                    Attr("dtype", "str", "element type", "int64", choices=FLOATS + INTS)),
                   _arange_rule,
                   lambda a, args, mod, ins:
                   f"torch.arange({args[0]}.size({a['dim']}), dtype=torch.{a['dtype']}, device={args[0]}.device)"))


def _triangle_kind(name: str, doc: str) -> LayerKind:
    def rule(a, ins):
        if ins[0].rank < 2:
            raise ShapeError(f"{name} works on the last two dims, but the input {ins[0]} has rank {ins[0].rank}")
        return [ins[0]]

    return register(LayerKind(name, doc, (Attr("diagonal", "int", "0: the main diagonal; k > 0 above, k < 0 below", 0),),
                              rule, lambda a, args, mod, ins: f"torch.{name}({args[0]}, {a['diagonal']})"))


_triangle_kind("tril", "Keeps the lower triangle of the last two dims (on and below `diagonal`), zeroes the rest.")
_triangle_kind("triu", "Keeps the upper triangle of the last two dims (on and above `diagonal`), zeroes the rest.")


def _expand_rule(a, ins):
    x, target = ins[0], list(a["shape"])
    _sizes_rule(target, ins, "shape", allow_keep=True)
    if len(target) < x.rank:
        raise ShapeError(f"shape {a['shape']} has fewer dims than the input {x}", attr="shape")
    lead = len(target) - x.rank
    out = []
    for i, d in enumerate(target):
        if i < lead:
            if isinstance(d, int) and d == -1:
                raise ShapeError("-1 (keep) only applies to dims the input has", attr="shape")
            out.append(d)
            continue
        have = x.shape[i - lead]
        if isinstance(d, int) and d == -1:
            out.append(have)
        elif have == 1 or D.equal(have, d):
            out.append(d)
        else:
            raise ShapeError(f"cannot expand dim {i - lead} of {x} ({dim_str(have)}) to {dim_str(d)}: only size-1 dims grow",
                             attr="shape")
    return [TensorType(tuple(D.normalize(d) for d in out), x.dtype)]


register(LayerKind("expand", "Broadcasts size-1 dims to a larger shape without copying (Tensor.expand); -1 keeps a dim; "
                             "symbolic sizes come from the inputs (a second input may supply them).",
                   (Attr("shape", "dims", "the new shape: ints, -1, or dims of the inputs"),), _expand_rule,
                   lambda a, args, mod, ins:
                   f"{args[0]}.expand({', '.join(_size_source(d, ins, args) for d in a['shape'])})", arity=(1, 2)))


def _repeat_rule(a, ins):
    x = ins[0]
    times = a["times"] if isinstance(a["times"], list) else [a["times"]]
    if len(times) < x.rank or any(n < 1 for n in times):
        raise ShapeError(f"times needs one positive count per dim of {x} (at least {x.rank}), got {a['times']}",
                         attr="times")
    lead = len(times) - x.rank
    shape = tuple(times[:lead]) + tuple(D.normalize(s * n) for s, n in zip(x.shape, times[lead:]))
    return [TensorType(shape, x.dtype)]


register(LayerKind("repeat", "Tiles the input: dim i repeats times[i] times (Tensor.repeat); extra leading counts add dims.",
                   (Attr("times", "ints", "how often each dim repeats"),), _repeat_rule,
                   lambda a, args, mod, ins:
                   f"{args[0]}.repeat({', '.join(map(str, a['times'] if isinstance(a['times'], list) else [a['times']]))})"))


def _index(t: TensorType, dtypes: tuple[str, ...]) -> None:
    if t.dtype not in dtypes:
        raise ShapeError(f"the index (second input) must be {' or '.join(dtypes)}, got {t.dtype}")


def _gather_rule(a, ins):
    x, index = ins
    i = axis(a["dim"], x.rank)
    _index(index, ("int64",))
    if index.rank != x.rank:
        raise ShapeError(f"the index {index} must have the rank of the input {x}")
    for d, (have, want) in enumerate(zip(x.shape, index.shape)):
        if d != i and not (D.equal(have, want) or (D.is_static(have) and D.is_static(want) and want <= have)):
            raise ShapeError(f"index dim {d} ({dim_str(want)}) may be larger than the input's ({dim_str(have)})")
    return [TensorType(index.shape, x.dtype)]


def _index_range(a, ins) -> dict[int, tuple[int, int]]:
    # ids of the indexed dim: from 0 to its smallest allowed size
    low, _ = D.bounds(ins[0].shape[axis(a["dim"], ins[0].rank)])
    return {1: (0, low)} if low else {}


register(LayerKind("gather", "Picks input values along a dim at the positions an index gives: `from: [x, index]` "
                             "(torch.gather; the index is int64 and of the input's rank).",
                   (Attr("dim", "int", "the dim indexed"),), _gather_rule,
                   lambda a, args, mod, ins: f"torch.gather({args[0]}, {a['dim']}, {args[1]})", arity=(2, 2),
                   index_range=_index_range))


def _index_select_rule(a, ins):
    x, index = ins
    i = axis(a["dim"], x.rank)
    _index(index, ("int64", "int32"))
    rank(index, (1,))
    return [TensorType(x.shape[:i] + index.shape + x.shape[i + 1:], x.dtype)]


register(LayerKind("index_select", "Takes the entries a 1-D index lists along a dim: `from: [x, index]`.",
                   (Attr("dim", "int", "the dim indexed"),), _index_select_rule,
                   lambda a, args, mod, ins: f"torch.index_select({args[0]}, {a['dim']}, {args[1]})", arity=(2, 2),
                   index_range=_index_range))


def _cumsum_rule(a, ins):
    t = ins[0]
    axis(a["dim"], t.rank)
    return [TensorType(t.shape, t.dtype if t.dtype in FLOATS else "int64")]


register(LayerKind("cumsum", "Running sum along a dim; integer and bool inputs give int64.",
                   (Attr("dim", "int", "the dim summed along"),), _cumsum_rule,
                   lambda a, args, mod, ins: f"torch.cumsum({args[0]}, {a['dim']})"))
