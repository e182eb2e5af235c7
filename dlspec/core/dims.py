"""Dimension algebra for shape inference: ints, or sympy expressions of symbolic dims."""
from __future__ import annotations

from typing import Iterable

import sympy

from .expr import floordiv

# Every input and output is batched along its first dim: the one place that says so.
BATCH_AXIS = 0


def per_example(shape: tuple) -> tuple:
    """A batched shape without its batch dim: the shape of one example."""
    return tuple(shape[BATCH_AXIS + 1:])


def is_static(dim) -> bool:
    return isinstance(dim, int) or (isinstance(dim, sympy.Integer))


def normalize(dim):
    """Ints stay ints; sympy integers become ints; expressions are expanded."""
    if isinstance(dim, sympy.Basic):
        dim = sympy.expand(dim)
        return int(dim) if dim.is_Integer else dim
    return dim


def equal(a, b) -> bool | None:
    """True if provably equal, False if provably different, None if it depends on symbol values."""
    if isinstance(a, int) and isinstance(b, int):
        return a == b
    diff = sympy.expand(sympy.sympify(a) - sympy.sympify(b))
    if diff == 0:
        return True
    if diff.is_Number:
        return False
    return None


def product(dims: Iterable):
    total = 1
    for d in dims:
        total = total * d
    return normalize(total)


def window_out(size, kernel: int, stride: int, padding: int, dilation: int = 1, ceil: bool = False):
    """Output length of a conv/pool window over `size`."""
    span = size + 2 * padding - dilation * (kernel - 1) - 1
    if is_static(span):
        span = int(span)
        return (-(-span // stride) if ceil else span // stride) + 1
    return normalize(floordiv(span, stride) + 1)


def substitute(dim, sizes: dict[str, int]) -> int:
    if isinstance(dim, int):
        return dim
    value = dim.subs({sympy.Symbol(k, integer=True, positive=True): v for k, v in sizes.items()})
    if not value.is_Number:
        raise ValueError(f"no size given for {sorted(str(s) for s in value.free_symbols)}")
    return int(value)

