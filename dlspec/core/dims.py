"""Dimension algebra for shape inference: ints, or sympy expressions of symbolic dims.

Shape inference runs under the spec's dim declarations (`assume`): each symbolic dim's smallest and
largest size and the number it is a multiple of. With them, `floor(H/8)` and `2*floor(H/16)` are the same
dim when H is a multiple of 16, and a rule can ask whether a size may fall below 1 at the smallest
allowed input (`bounds`) instead of failing at run time.
"""
from __future__ import annotations

import contextlib
import contextvars
from dataclasses import dataclass
from typing import Iterable, Iterator, Mapping

import sympy

from .expr import floordiv, symbol


@dataclass(frozen=True)
class Bound:
    """The sizes a symbolic dim may take: multiples of `multiple_of` from `min` to `max` (None: no max)."""

    min: int = 1
    max: int | None = None
    multiple_of: int = 1

    @property
    def smallest(self) -> int:
        return -(-max(self.min, 1) // self.multiple_of) * self.multiple_of

    @property
    def largest(self) -> int | None:
        return None if self.max is None else self.max // self.multiple_of * self.multiple_of

    def allows(self, size: int) -> bool:
        return size >= self.smallest and size % self.multiple_of == 0 and (self.max is None or size <= self.max)


_BOUNDS: contextvars.ContextVar[Mapping[str, Bound] | None] = contextvars.ContextVar("dim_bounds", default=None)


@contextlib.contextmanager
def assume(bounds: Mapping[str, Bound]) -> Iterator[None]:
    """Run shape rules knowing the declared range of each symbolic dim (undeclared ones: any size >= 1)."""
    token = _BOUNDS.set(dict(bounds))
    try:
        yield
    finally:
        _BOUNDS.reset(token)


def bound(name: str) -> Bound:
    return (_BOUNDS.get() or {}).get(name, Bound())


# Every input and output is batched along its first dim: the one place that says so.
BATCH_AXIS = 0


def per_example(shape: tuple) -> tuple:
    """A batched shape without its batch dim: the shape of one example."""
    return tuple(shape[BATCH_AXIS + 1:])


def is_static(dim) -> bool:
    return isinstance(dim, int) or (isinstance(dim, sympy.Integer))


def normalize(dim):
    """Ints stay ints; sympy integers become ints; expressions are expanded, and floors that a declared
    `multiple_of` makes exact are removed (floor(H/8) is H/8 when H is a multiple of 16)."""
    if isinstance(dim, sympy.Basic):
        dim = _with_multiples(sympy.expand(dim))
        return int(dim) if dim.is_Integer else dim
    return dim


def _with_multiples(expr):
    """Write each dim declared a multiple of m as m*k, let sympy simplify over the integer k, write it back."""
    swaps = {}
    for sym in expr.free_symbols:
        m = bound(str(sym)).multiple_of
        if m > 1:
            swaps[sym] = (m * symbol(f"{sym}__k"), symbol(f"{sym}__k"), sym / m)
    if not swaps:
        return expr
    expr = sympy.expand(expr.subs({s: v[0] for s, v in swaps.items()}))
    return sympy.expand(expr.subs({v[1]: v[2] for v in swaps.values()}))


def equal(a, b) -> bool | None:
    """True if provably equal, False if provably different, None if it depends on symbol values."""
    if isinstance(a, int) and isinstance(b, int):
        return a == b
    diff = normalize(sympy.sympify(a) - sympy.sympify(b))
    if diff == 0:
        return True
    if is_static(diff) or getattr(diff, "is_Number", False):
        return False
    return None


def divisible(dim, n: int) -> bool:
    """Whether `dim` is a multiple of n at every allowed size."""
    if is_static(dim):
        return int(dim) % n == 0
    quotient = normalize(sympy.sympify(dim) / n)
    return _integral(quotient)


def _integral(expr) -> bool:
    num, den = sympy.fraction(sympy.together(expr))
    return den == 1


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
    if ceil:
        return normalize(-floordiv(-span, stride) + 1)
    return normalize(floordiv(span, stride) + 1)


def bounds(dim) -> tuple[int | None, int | None]:
    """The smallest and largest value `dim` takes over the allowed sizes of its symbols; None where it is
    unbounded or not provably monotone in each symbol (a rule then treats it as unknown)."""
    if is_static(dim):
        return int(dim), int(dim)
    low, high = _extremes(sympy.sympify(dim))
    return (None if low is None else int(sympy.floor(low))), (None if high is None else int(sympy.floor(high)))


def smallest_product(dims: Iterable) -> int | None:
    """The smallest value of a product of sizes (each >= 1), factor by factor: expanding the product first
    would hide that each factor is a size."""
    total = 1
    for d in dims:
        low, _ = bounds(d)
        if low is None:
            return None
        total *= low
    return total


def _extremes(expr):
    """Exact (lowest, highest) values of expr, each None when unknown: every symbol at its smallest or
    largest allowed size, whichever way expr moves with it."""
    low, high = {}, {}
    for sym in expr.free_symbols:
        b = bound(str(sym))
        direction = _direction(expr, sym)
        if direction is None:
            return None, None
        small, large = (b.smallest, b.largest) if direction >= 0 else (b.largest, b.smallest)
        low[sym], high[sym] = small, large
    return _at(expr, low), _at(expr, high)


def _at(expr, values: dict):
    if any(v is None for v in values.values()):
        return None
    value = expr.subs(values)
    return value if value.is_number else None


def _direction(expr, sym) -> int | None:
    """+1 if expr never decreases as `sym` grows (others fixed), -1 if it never increases, 0 if it does
    not depend on it, None if that cannot be read off its form."""
    if sym not in expr.free_symbols:
        return 0
    if expr == sym:
        return 1
    if isinstance(expr, (sympy.Add, sympy.Max, sympy.Min)):
        return _combine([_direction(arg, sym) for arg in expr.args])
    if isinstance(expr, (sympy.floor, sympy.ceiling)):
        return _direction(expr.args[0], sym)
    if isinstance(expr, sympy.Mul):
        coeff, rest = expr.as_coeff_Mul()
        factors = sympy.Mul.make_args(rest)
        if not all(_nonnegative(f) for f in factors):  # a product of non-negative factors grows with each
            return None
        d = _combine([_direction(f, sym) for f in factors])
        return None if d is None else d * (1 if coeff > 0 else -1)
    if isinstance(expr, sympy.Pow) and expr.exp.is_Integer and expr.exp > 0 and _nonnegative(expr.base):
        return _direction(expr.base, sym)
    return None


def _nonnegative(expr) -> bool:
    low, _ = _extremes(expr) if not expr.is_number else (expr, expr)
    return low is not None and low >= 0


def _combine(directions: list[int | None]) -> int | None:
    if None in directions:
        return None
    signs = {d for d in directions if d}
    return 0 if not signs else signs.pop() if len(signs) == 1 else None


def smallest_min(dim, at_least: int) -> dict[str, int] | None:
    """For a dim of one symbol that grows with it and may fall below `at_least`: the smallest allowed size
    of that symbol from which it stays there (for a hint), or None (several symbols, no such size below
    2**20, or a form whose growth cannot be read)."""
    if is_static(dim):
        return None
    expr = sympy.sympify(dim)
    syms = sorted(expr.free_symbols, key=str)
    if len(syms) != 1 or _direction(expr, syms[0]) != 1:
        return None
    b = bound(str(syms[0]))
    first, last = b.smallest // b.multiple_of, (b.largest if b.largest is not None else 2**20) // b.multiple_of

    def enough(k: int) -> bool:
        return expr.subs(syms[0], k * b.multiple_of) >= at_least

    if first > last or not enough(last):
        return None
    while first < last:  # bisect: expr never decreases as the symbol grows
        middle = (first + last) // 2
        first, last = (first, middle) if enough(middle) else (middle + 1, last)
    return {str(syms[0]): first * b.multiple_of}


def substitute(dim, sizes: dict[str, int]) -> int:
    if isinstance(dim, int):
        return dim
    value = dim.subs({sympy.Symbol(k, integer=True, positive=True): v for k, v in sizes.items()})
    if not value.is_Number:
        raise ValueError(f"no size given for {sorted(str(s) for s in value.free_symbols)}")
    return int(value)
