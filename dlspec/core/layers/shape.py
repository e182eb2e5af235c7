"""Shape manipulation, indexing and reductions."""
from __future__ import annotations

from .. import dims as D
from ..ir import TensorType, dim_str
from .base import FLOATS, Attr, LayerKind, ShapeError, at_least, axis, floating, register


def _flatten_rule(a, ins):
    t = ins[0]
    start, end = axis(a["start"], t.rank, "start"), axis(a["end"], t.rank, "end")
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
    if any(isinstance(d, int) and (d == 0 or d < -1) for d in target):
        raise ShapeError(f"reshape sizes must be positive (or -1 for one inferred dim), got {a['shape']}", attr="shape")
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
        elif rest is not None and not D.is_static(rest) and not D.divisible(total, known):
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
    order = [axis(d, t.rank, "dims") for d in a["dims"]]
    if sorted(order) != list(range(t.rank)):
        raise ShapeError(f"dims {a['dims']} is not a permutation of the {t.rank} dims of {t}", attr="dims")
    return [TensorType(tuple(t.shape[i] for i in order), t.dtype)]


register(LayerKind("permute", "Reorders dims (Tensor.permute).", (Attr("dims", "ints", "the new order of the dims"),),
                   _permute_rule, lambda a, args, mod, ins: f"{args[0]}.permute({', '.join(map(str, a['dims']))})"))


def _transpose_rule(a, ins):
    t = ins[0]
    i, j = axis(a["dim0"], t.rank, "dim0"), axis(a["dim1"], t.rank, "dim1")
    shape = list(t.shape)
    shape[i], shape[j] = shape[j], shape[i]
    return [TensorType(tuple(shape), t.dtype)]


register(LayerKind("transpose", "Swaps two dims.", (Attr("dim0", "int", "first dim"), Attr("dim1", "int", "second dim")),
                   _transpose_rule, lambda a, args, mod, ins: f"{args[0]}.transpose({a['dim0']}, {a['dim1']})"))


def _squeeze_rule(a, ins):
    t = ins[0]
    i = axis(a["dim"], t.rank)
    if t.shape[i] != 1:
        raise ShapeError(f"squeeze: dim {a['dim']} of {t} has size {t.shape[i]}, not 1", attr="dim")
    return [TensorType(t.shape[:i] + t.shape[i + 1:], t.dtype)]


def _unsqueeze_rule(a, ins):
    t = ins[0]
    i = axis(a["dim"], t.rank + 1)
    return [TensorType(t.shape[:i] + (1,) + t.shape[i:], t.dtype)]


register(LayerKind("squeeze", "Removes a dim of size 1.", (Attr("dim", "int", "the dim to remove"),), _squeeze_rule,
                   lambda a, args, mod, ins: f"{args[0]}.squeeze({a['dim']})"))
register(LayerKind("unsqueeze", "Inserts a dim of size 1.", (Attr("dim", "int", "where the new dim goes"),), _unsqueeze_rule,
                   lambda a, args, mod, ins: f"{args[0]}.unsqueeze({a['dim']})"))


def _select_rule(a, ins):
    t = ins[0]
    i = axis(a["dim"], t.rank)
    index = a["index"]
    at_least(t.shape[i], index + 1 if index >= 0 else -index, f"index {index} needs dim {a['dim']} to have "
             f"{index + 1 if index >= 0 else -index} or more entries; its size", attr="index")
    return [TensorType(t.shape[:i] + t.shape[i + 1:], t.dtype)]


register(LayerKind("select", "Takes one index along a dim, removing it (x[:, 0] takes the class token).",
                   (Attr("dim", "int", "the dim"), Attr("index", "int", "the index taken")), _select_rule,
                   lambda a, args, mod, ins: f"{args[0]}.select({a['dim']}, {a['index']})"))


def _slice_rule(a, ins):
    t = ins[0]
    i = axis(a["dim"], t.rank)
    size, start, end, step = t.shape[i], a["start"], a["end"], a["step"]
    if step < 1:
        raise ShapeError("slice step must be positive", attr="step")
    if D.is_static(size):
        length = len(range(size)[start:end:step])
        if length < 1:
            raise ShapeError(f"slice [{start}:{end}:{step}] of dim {a['dim']} (size {size}) is empty", attr="end")
    elif start >= 0 and (end is None or end >= 0):
        stop = size if end is None else _stop(size, end)
        span = stop - start
        length = D.normalize(span if step == 1 else -((-span) // step))
        at_least(length, 1, f"slice [{start}:{'' if end is None else end}] of dim {a['dim']} ({dim_str(size)}): "
                 "its length", attr="start")
    else:
        raise ShapeError(f"negative slice bounds on the symbolic dim '{dim_str(size)}' are not supported", attr="start")
    return [TensorType(t.shape[:i] + (length,) + t.shape[i + 1:], t.dtype)]


def _stop(size, end: int):
    """Where x[:end] stops along a symbolic dim: at `end`, or at the dim's size when that may be smaller."""
    low, high = D.bounds(size)
    if low is not None and low >= end:
        return end
    if high is not None and high <= end:
        return size
    raise ShapeError(f"slice end {end} may be past the end of the symbolic dim '{dim_str(size)}' (from {low} to "
                     f"{high if high is not None else 'any size'}), so the length depends on the size", attr="end",
                     hint=f"declare `dims: {{{dim_str(size)}: {{min: {end}}}}}`, or slice without an end")


def _slice_call(a, args, mod, ins):
    index = ", ".join([":"] * axis(a["dim"], ins[0].rank) + [
        f"{a['start'] or ''}:{'' if a['end'] is None else a['end']}{'' if a['step'] == 1 else ':' + str(a['step'])}"])
    return f"{args[0]}[{index}]"


register(LayerKind("slice", "Takes a range along one dim (x[:, start:end:step]).",
                   (Attr("dim", "int", "the dim"), Attr("start", "int", "first index", 0),
                    Attr("end", "int", "stop before this index (default: the end)", None), Attr("step", "int", "step", 1)),
                   _slice_rule, _slice_call))


def _reduce_kind(name: str, doc: str) -> LayerKind:
    def rule(a, ins):
        t = ins[0]
        if name == "mean":
            floating(t)
        listed = [axis(d, t.rank, "dims") for d in (a["dims"] if isinstance(a["dims"], list) else [a["dims"]])]
        if not listed or len(set(listed)) != len(listed):
            raise ShapeError(f"dims {a['dims']} must name each dim once", attr="dims")
        axes = sorted(listed)
        dtype = t.dtype if t.dtype in FLOATS else "int64"  # integer and bool sums are int64
        shape = tuple(1 if i in axes else s for i, s in enumerate(t.shape)) if a["keepdim"] else \
            tuple(s for i, s in enumerate(t.shape) if i not in axes)
        return [TensorType(shape, dtype)]

    def call(a, args, mod, ins):
        d = a["dims"]
        return f"{args[0]}.{name}({tuple(d) if isinstance(d, list) else d}{', keepdim=True' if a['keepdim'] else ''})"

    return register(LayerKind(name, doc,
                              (Attr("dims", "ints", "dim or dims to reduce"),
                               Attr("keepdim", "bool", "keep reduced dims as size 1", False)),
                              rule, call))


_reduce_kind("mean", "Mean over one or more dims (floating-point inputs).")
_reduce_kind("sum", "Sum over one or more dims; integer and bool inputs give int64.")
