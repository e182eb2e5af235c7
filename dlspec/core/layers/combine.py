"""Ops of several inputs: element-wise arithmetic, where/masked_fill, concat, stack, split, matmul."""
from __future__ import annotations

from .. import dims as D
from ..ir import TensorType, dim_str
from .base import FLOATS, Attr, LayerKind, ShapeError, at_least, axis, floating, promote, register, with_scalar


def broadcast(a: TensorType, b: TensorType) -> TensorType:
    """The shape of an element-wise op on a and b (numpy broadcasting), with the promoted dtype."""
    shape = []
    for i in range(1, max(a.rank, b.rank) + 1):
        x = a.shape[-i] if i <= a.rank else 1
        y = b.shape[-i] if i <= b.rank else 1
        if x == 1:
            shape.append(y)
        elif y == 1 or D.equal(x, y):
            shape.append(x)
        else:
            raise ShapeError(f"shapes {a} and {b} do not broadcast: {dim_str(x)} vs {dim_str(y)} at dim -{i}",
                             hint="element-wise ops need equal dims, or 1 where one side broadcasts")
    return TensorType(tuple(reversed(shape)), promote(a.dtype, b.dtype))


def _elementwise_kind(name: str, op: str, doc: str, arity: tuple[int, int | None] = (2, None),
                      true_division: bool = False, no_bool: bool = False) -> LayerKind:
    def rule(a, ins):
        out = ins[0]
        for t in ins[1:]:
            out = broadcast(out, t)
        if no_bool and all(t.dtype == "bool" for t in ins):
            raise ShapeError(f"{name} of bool tensors is not defined", hint="convert them first, or use where")
        if true_division and out.dtype not in FLOATS:
            out = TensorType(out.shape, "float32")  # true division of integers gives floats
        return [out]

    call = (lambda a, args, mod, ins: f" {op} ".join(args)) if len(op) == 1 else \
        (lambda a, args, mod, ins: f"{op}({', '.join(args)})")
    return register(LayerKind(name, doc, (), rule, call, arity=arity))


_elementwise_kind("add", "+", "Element-wise sum of two or more inputs (with broadcasting).")
_elementwise_kind("mul", "*", "Element-wise product of two or more inputs (with broadcasting).")
_elementwise_kind("sub", "-", "Element-wise difference of two inputs, first minus second (with broadcasting).",
                  arity=(2, 2), no_bool=True)
_elementwise_kind("div", "/", "Element-wise true division of two inputs (with broadcasting); integers give float32.",
                  arity=(2, 2), true_division=True)
_elementwise_kind("maximum", "torch.maximum", "Element-wise maximum of two inputs (with broadcasting).", arity=(2, 2))
_elementwise_kind("minimum", "torch.minimum", "Element-wise minimum of two inputs (with broadcasting).", arity=(2, 2))


def _pow_rule(a, ins):
    floating(ins[0])
    if len(ins) == 2:
        if a["exponent"] is not None:
            raise ShapeError("give either a second input or an exponent, not both", attr="exponent")
        floating(ins[1])
        return [broadcast(ins[0], ins[1])]
    if a["exponent"] is None:
        raise ShapeError("pow needs an exponent (or a second input)", attr="exponent")
    return [ins[0]]


register(LayerKind("pow", "x ** exponent, or x ** y element-wise for two inputs (with broadcasting).",
                   (Attr("exponent", "float", "the power, when there is one input", None),), _pow_rule,
                   lambda a, args, mod, ins: f"{args[0]} ** {args[1] if len(args) == 2 else repr(a['exponent'])}",
                   arity=(1, 2)))


def _where_rule(a, ins):
    cond, x, y = ins
    if cond.dtype != "bool":
        raise ShapeError(f"the condition (first input) must be bool, got {cond.dtype}")
    out = broadcast(x, y)
    return [TensorType(broadcast(cond, out).shape, out.dtype)]


register(LayerKind("where", "x where the condition is true, else y: `from: [condition, x, y]` (torch.where).", (),
                   _where_rule, lambda a, args, mod, ins: f"torch.where({', '.join(args)})", arity=(3, 3)))


def _masked_fill_rule(a, ins):
    x, mask = ins
    if mask.dtype != "bool":
        raise ShapeError(f"the mask (second input) must be bool, got {mask.dtype}")
    if broadcast(x, mask).shape != x.shape:
        raise ShapeError(f"the mask {mask} must broadcast to the input {x} without growing it")
    if x.dtype not in FLOATS and not float(a["value"]).is_integer():
        raise ShapeError(f"value {a['value']} does not fit the {x.dtype} input", attr="value")
    return [x]


register(LayerKind("masked_fill", "Sets the input to `value` where the mask is true: `from: [x, mask]`.",
                   (Attr("value", "float", "the fill value (-inf is written -.inf in YAML)"),), _masked_fill_rule,
                   lambda a, args, mod, ins: f"{args[0]}.masked_fill({args[1]}, {_float_literal(a['value'])})",
                   arity=(2, 2)))


def _float_literal(value: float) -> str:
    return {float("inf"): "float('inf')", float("-inf"): "float('-inf')"}.get(value, repr(value))


def _concat_rule(a, ins):
    first = ins[0]
    i = axis(a["dim"], first.rank)
    total, dtype = 0, first.dtype
    for t in ins:
        if t.rank != first.rank:
            raise ShapeError(f"concat of different ranks: {first} and {t}")
        for j, (x, y) in enumerate(zip(first.shape, t.shape)):
            if j != i and D.equal(x, y) is not True:
                raise ShapeError(f"concat along dim {a['dim']}: inputs differ at dim {j}: {first} vs {t}",
                                 hint=_multiple_hint(x, y) or "all dims except the concat dim must match")
        total = total + t.shape[i]
        dtype = promote(dtype, t.dtype)
    return [TensorType(first.shape[:i] + (D.normalize(total),) + first.shape[i + 1:], dtype)]


def _multiple_hint(x, y) -> str | None:
    """When two sizes agree for multiples of some power of two (a U-Net's floor(H/8) and 2*floor(H/16)),
    the dims declaration that proves it."""
    names = sorted({str(s) for d in (x, y) for s in getattr(d, "free_symbols", ())})
    if len(names) != 1:
        return None
    for power in range(1, 11):
        with D.assume({names[0]: D.Bound(2 ** power, None, 2 ** power)}):
            if D.equal(x, y):
                return (f"they are equal when {names[0]} is a multiple of {2 ** power}: declare "
                        f"`dims: {{{names[0]}: {{multiple_of: {2 ** power}, min: {2 ** power}}}}}`")
    return None


register(LayerKind("concat", "Joins two or more inputs along a dim (torch.cat).",
                   (Attr("dim", "int", "the dim to join along", -1),),
                   _concat_rule, lambda a, args, mod, ins: f"torch.cat([{', '.join(args)}], dim={a['dim']})", arity=(2, None)))


def _stack_rule(a, ins):
    first = ins[0]
    i = axis(a["dim"], first.rank + 1)
    dtype = first.dtype
    for t in ins[1:]:
        if t.rank != first.rank or any(D.equal(x, y) is not True for x, y in zip(first.shape, t.shape)):
            raise ShapeError(f"stack needs inputs of one shape: {first} vs {t}")
        dtype = promote(dtype, t.dtype)
    return [TensorType(first.shape[:i] + (len(ins),) + first.shape[i:], dtype)]


register(LayerKind("stack", "Stacks two or more inputs of one shape along a new dim (torch.stack).",
                   (Attr("dim", "int", "where the new dim goes", 0),),
                   _stack_rule, lambda a, args, mod, ins: f"torch.stack([{', '.join(args)}], dim={a['dim']})",
                   arity=(2, None)))


def _sizes(a) -> list:
    return a["sizes"] if isinstance(a["sizes"], list) else [a["sizes"]]


def _split_rule(a, ins):
    t = ins[0]
    i = axis(a["dim"], t.rank)
    sizes = _sizes(a)
    if any(s < 1 for s in sizes):
        raise ShapeError(f"split sizes must be positive, got {sizes}", attr="sizes")
    if D.equal(sum(sizes), t.shape[i]) is not True:
        raise ShapeError(f"split sizes {sizes} add up to {sum(sizes)}, but dim {a['dim']} has size {dim_str(t.shape[i])}",
                         attr="sizes", hint="split a dim of known size, or use chunk for equal pieces")
    return [TensorType(t.shape[:i] + (s,) + t.shape[i + 1:], t.dtype) for s in sizes]


register(LayerKind("split", "Splits along a dim into pieces of the given sizes; name them with `outputs: [a, b]`.",
                   (Attr("sizes", "ints", "size of each piece"), Attr("dim", "int", "the dim to split", -1)),
                   _split_rule, lambda a, args, mod, ins: f"torch.split({args[0]}, {_sizes(a)!r}, dim={a['dim']})",
                   outputs=lambda a: len(_sizes(a))))


def _chunk_rule(a, ins):
    t = ins[0]
    i = axis(a["dim"], t.rank)
    size = t.shape[i]
    if not D.divisible(size, a["chunks"]):
        raise ShapeError(f"dim {a['dim']} of size {dim_str(size)} does not always divide into {a['chunks']} equal chunks",
                         attr="chunks",
                         hint=None if D.is_static(size) else
                         f"declare the dim a multiple: `dims: {{{dim_str(size)}: {{multiple_of: {a['chunks']}}}}}`")
    piece = D.normalize(size // a["chunks"] if D.is_static(size) else size / a["chunks"])
    at_least(piece, 1, "a chunk's size", attr="chunks")
    return [TensorType(t.shape[:i] + (piece,) + t.shape[i + 1:], t.dtype)] * a["chunks"]


register(LayerKind("chunk", "Splits along a dim into equal chunks; name them with `outputs: [q, k, v]`.",
                   (Attr("chunks", "int", "number of chunks", minimum=1), Attr("dim", "int", "the dim to split", -1)),
                   _chunk_rule, lambda a, args, mod, ins: f"torch.chunk({args[0]}, {a['chunks']}, dim={a['dim']})",
                   outputs=lambda a: a["chunks"]))


def _matmul_rule(a, ins):
    x, y = ins
    floating(x)
    floating(y)
    if x.dtype != y.dtype:
        raise ShapeError(f"matmul needs inputs of one dtype, got {x.dtype} and {y.dtype}")
    if x.rank < 2 or y.rank < 2:
        raise ShapeError(f"matmul expects rank >= 2 inputs, got {x} and {y}")
    if D.equal(x.shape[-1], y.shape[-2]) is not True:
        raise ShapeError(f"inner dims differ: {x} @ {y} ({dim_str(x.shape[-1])} vs {dim_str(y.shape[-2])})",
                         hint="transpose one input so the last dim of the first equals the second-to-last of the second")
    batch = broadcast(TensorType(x.shape[:-2], x.dtype), TensorType(y.shape[:-2], y.dtype))
    return [TensorType(batch.shape + (x.shape[-2], y.shape[-1]), x.dtype)]


register(LayerKind("matmul", "Matrix product of two inputs with batch broadcasting (torch.matmul).", (),
                   _matmul_rule, lambda a, args, mod, ins: f"{args[0]} @ {args[1]}", arity=(2, 2),
                   macs=lambda a, i, o: D.product(o[0].shape) * i[0].shape[-1]))
register(LayerKind("scale", "Multiplies by a constant factor (an integer input gives float32).",
                   (Attr("factor", "float", "the factor"),),
                   lambda a, ins: [TensorType(ins[0].shape, with_scalar(ins[0].dtype, a["factor"]))],
                   lambda a, args, mod, ins: f"{args[0]} * {a['factor']!r}"))
