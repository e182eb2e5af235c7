"""Safe arithmetic expressions for dims and hyper-parameters (`4 * d_model`).

Parsed with `ast` and evaluated over a whitelist of node kinds: no attribute
access, no calls except min/max/int/round, no comprehension, nothing that can
reach Python objects. Names resolve to variables; in shape context unknown
names become symbolic dims (sympy symbols) instead of errors.
"""
from __future__ import annotations

import ast
import math
import operator
from typing import Callable, Mapping

import sympy


class ExprError(ValueError):
    """An expression that cannot be evaluated; `name` is set for an unknown variable."""

    def __init__(self, message: str, name: str | None = None):
        super().__init__(message)
        self.name = name


_BINARY: dict[type, Callable] = {
    ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
    ast.Mod: operator.mod, ast.Pow: operator.pow,
}
_COMPARE: dict[type, Callable] = {
    ast.Eq: operator.eq, ast.NotEq: operator.ne, ast.Lt: operator.lt, ast.LtE: operator.le,
    ast.Gt: operator.gt, ast.GtE: operator.ge,
}
def _rounding(exact: Callable, symbolic: Callable) -> Callable:
    return lambda x: symbolic(x) if isinstance(x, sympy.Basic) else exact(x)


# floor/ceiling: how shape inference writes dims such as floor(H/2 - 1/2) + 1, read back by concrete_shape
_FUNCTIONS: dict[str, Callable] = {"min": min, "max": max, "int": int, "round": round, "sqrt": math.sqrt,
                                   "floor": _rounding(math.floor, sympy.floor),
                                   "ceiling": _rounding(math.ceil, sympy.ceiling)}
_MAX_LENGTH = 500
# Every integer an expression computes stays within int64, like any size or setting torch takes; checked
# after each operation (and before a power is computed), so no expression builds a huge number.
MAX_INT = 2**63 - 1
_MAX_SYMBOLIC_POWER = 8


def floordiv(a, b):
    if isinstance(a, sympy.Basic) or isinstance(b, sympy.Basic):
        return sympy.floor(sympy.sympify(a) / b)
    return a // b


def symbol(name: str) -> sympy.Symbol:
    return sympy.Symbol(name, integer=True, positive=True)


def is_expression(text: str) -> bool:
    """True when a string reads as an expression rather than a plain word like `same`."""
    return any(ch in text for ch in "+-*/%()<>=!") or text.strip().isdigit()


def evaluate(text: str, env: Mapping[str, object], *, symbolic: bool = False):
    """Evaluate `text` with names from `env`; unknown names become symbols when `symbolic`."""
    if len(text) > _MAX_LENGTH:
        raise ExprError(f"expression longer than {_MAX_LENGTH} characters")
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except (SyntaxError, ValueError, MemoryError, RecursionError) as exc:  # ValueError: a NUL in the text
        raise ExprError(f"cannot parse expression '{text}': {getattr(exc, 'msg', None) or exc}") from None
    try:
        return _eval(tree.body, env, symbolic)
    except ExprError:
        raise
    except RecursionError:
        raise ExprError("the expression nests too deeply") from None
    except (ArithmeticError, ValueError, TypeError) as exc:  # 0 ** -1, sqrt(-1), round(inf), max(1), min(B, T), ...
        raise ExprError(f"cannot compute '{text.strip()}': {_reason(exc)}") from None


def _reason(exc: Exception) -> str:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    if "truth value of Relational" in text or "cannot determine truth value" in text:
        return "it compares symbolic dims, whose sizes are not known until run time"
    return text


def _number(value, what: str):
    """An operand must be a number (or a symbolic dim): text or a list repeated 10**9 times is a memory bomb."""
    if isinstance(value, (int, float, sympy.Basic)):
        return value
    raise ExprError(f"{what} is {type(value).__name__} {str(value)[:40]!r}, not a number")


def _bounded(value):
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and abs(value) > MAX_INT:
        raise ExprError(f"the result has {len(str(abs(value)))} digits, past the largest integer a size or setting "
                        f"can take (2**63 - 1)")
    if isinstance(value, float) and not math.isfinite(value):
        raise ExprError(f"the result is {value}, not a finite number")
    if isinstance(value, complex):
        raise ExprError("the result is a complex number")
    if isinstance(value, sympy.Basic) and value.is_Number and abs(value) > MAX_INT:
        raise ExprError("the result is past the largest integer a size can take (2**63 - 1)")
    return value


def _power(base, exponent):
    """base ** exponent, refused before it is computed when its result could not be bounded."""
    if isinstance(exponent, sympy.Basic) and not exponent.is_Number:
        raise ExprError("a symbolic dim cannot be an exponent")
    if isinstance(base, sympy.Basic) and not base.is_Number:
        if not (isinstance(exponent, int) and 0 <= exponent <= _MAX_SYMBOLIC_POWER):
            raise ExprError(f"a symbolic dim can be raised to a whole power of at most {_MAX_SYMBOLIC_POWER}")
    elif abs(exponent) > 64:
        raise ExprError("exponent larger than 64")
    elif isinstance(base, int) and isinstance(exponent, int) and exponent > 0 and abs(base) > 1 \
            and exponent * math.log2(abs(base)) > 64:
        raise ExprError(f"{base} ** {exponent} is past the largest integer a size or setting can take (2**63 - 1)")
    return base ** exponent


def _eval(node: ast.AST, env: Mapping[str, object], symbolic: bool):
    return _bounded(_eval_node(node, env, symbolic))


def _eval_node(node: ast.AST, env: Mapping[str, object], symbolic: bool):
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float, bool)):
        return node.value
    if isinstance(node, ast.Name):
        if node.id in env:
            return env[node.id]
        if node.id in ("true", "True"):
            return True
        if node.id in ("false", "False"):
            return False
        if symbolic:
            return symbol(node.id)
        raise ExprError(f"unknown variable '{node.id}'", name=node.id)
    if isinstance(node, ast.BinOp):
        left, right = _eval(node.left, env, symbolic), _eval(node.right, env, symbolic)
        if not isinstance(node.op, ast.FloorDiv) and type(node.op) not in _BINARY:
            raise ExprError(f"operator '{type(node.op).__name__}' is not allowed")
        left, right = _number(left, ast.unparse(node.left)), _number(right, ast.unparse(node.right))
        if isinstance(node.op, ast.FloorDiv):
            _nonzero(right)
            return floordiv(left, right)
        if isinstance(node.op, (ast.Div, ast.Mod)):
            _nonzero(right)
        if isinstance(node.op, ast.Pow):
            return _power(left, right)
        result = _BINARY[type(node.op)](left, right)
        if isinstance(node.op, ast.Div) and isinstance(result, float) and result.is_integer():
            return int(result) if isinstance(left, int) and isinstance(right, int) else result
        return result
    if isinstance(node, ast.UnaryOp):
        value = _eval(node.operand, env, symbolic)
        if isinstance(node.op, ast.USub):
            return -_number(value, ast.unparse(node.operand))
        if isinstance(node.op, ast.UAdd):
            return _number(value, ast.unparse(node.operand))
        if isinstance(node.op, ast.Not):
            return not value
    if isinstance(node, ast.BoolOp):
        values = [_eval(v, env, symbolic) for v in node.values]
        return all(values) if isinstance(node.op, ast.And) else any(values)
    if isinstance(node, ast.Compare):
        left = _eval(node.left, env, symbolic)
        for op, comparator in zip(node.ops, node.comparators):
            right = _eval(comparator, env, symbolic)
            if type(op) not in _COMPARE or not _COMPARE[type(op)](left, right):
                return False
            left = right
        return True
    if isinstance(node, ast.IfExp):
        return _eval(node.body if _eval(node.test, env, symbolic) else node.orelse, env, symbolic)
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in _FUNCTIONS and not node.keywords:
        args = [_number(_eval(a, env, symbolic), ast.unparse(a)) for a in node.args]
        if node.func.id in ("min", "max") and len(args) < 2:
            raise ExprError(f"{node.func.id}() takes two or more values, got {len(args)}")
        if node.func.id not in ("min", "max") and len(args) != 1:
            raise ExprError(f"{node.func.id}() takes one value, got {len(args)}")
        return _FUNCTIONS[node.func.id](*args)
    raise ExprError(f"'{ast.unparse(node)}' is not allowed in an expression (only numbers, variables, + - * / // % **, "
                    "comparisons, and/or/not, x if c else y, min/max/int/round/sqrt/floor/ceiling)")


def _nonzero(value) -> None:
    if isinstance(value, (int, float)) and value == 0:
        raise ExprError("division by zero")
