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
    except SyntaxError as exc:
        raise ExprError(f"cannot parse expression '{text}': {exc.msg}") from None
    return _eval(tree.body, env, symbolic)


def _eval(node: ast.AST, env: Mapping[str, object], symbolic: bool):
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
        if isinstance(node.op, ast.FloorDiv):
            _nonzero(right)
            return floordiv(left, right)
        if type(node.op) not in _BINARY:
            raise ExprError(f"operator '{type(node.op).__name__}' is not allowed")
        if isinstance(node.op, (ast.Div, ast.Mod)):
            _nonzero(right)
        if isinstance(node.op, ast.Pow) and isinstance(right, (int, float)) and abs(right) > 64:
            raise ExprError("exponent larger than 64")
        result = _BINARY[type(node.op)](left, right)
        if isinstance(node.op, ast.Div) and isinstance(result, float) and result.is_integer():
            return int(result) if isinstance(left, int) and isinstance(right, int) else result
        return result
    if isinstance(node, ast.UnaryOp):
        value = _eval(node.operand, env, symbolic)
        if isinstance(node.op, ast.USub):
            return -value
        if isinstance(node.op, ast.UAdd):
            return value
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
        return _FUNCTIONS[node.func.id](*[_eval(a, env, symbolic) for a in node.args])
    raise ExprError(f"'{ast.unparse(node)}' is not allowed in an expression (only numbers, variables, + - * / // % **, "
                    "comparisons, and/or/not, x if c else y, min/max/int/round/sqrt/floor/ceiling)")


def _nonzero(value) -> None:
    if isinstance(value, (int, float)) and value == 0:
        raise ExprError("division by zero")
