"""Sizes: the symbolic dims of the spec as torch.export dynamic dims, the sizes
the exporters trace with, and the size cases parity checks."""
from __future__ import annotations

import sympy
import torch

from dlspec.core.budget import check_activations
from dlspec.core.errors import DlspecError, format_path
from dlspec.core.expr import ExprError, evaluate

from .config import ExportConfig, trace_size


def trace_sizes(spec, config: ExportConfig) -> dict[str, int]:
    """Example sizes, with every dynamic dim at 2 or more.

    torch.export specialises a dim traced at size 0 or 1 into a constant, so each
    dynamic dim is traced where it and every dim that depends on it is 2 or more
    (config.trace_size); the exports still run at 1, which parity checks.
    """
    sizes = spec.example_sizes()
    for name in config.dynamic:
        sizes[name] = trace_size(spec, name)
    return sizes


def size_cases(spec, config: ExportConfig) -> tuple[dict[str, int], ...]:
    """The example sizes, each dynamic dim at each of its checked sizes (the others at their example),
    then all dynamic dims at their smallest and at their largest checked size together."""
    base = spec.example_sizes()
    cases = [base]
    for name in config.dynamic:
        cases += [{**base, name: size} for size in config.sizes[name]]
    if config.dynamic:
        cases.append({**base, **{name: min(config.sizes[name]) for name in config.dynamic}})
        cases.append({**base, **{name: max(config.sizes[name]) for name in config.dynamic}})
    unique = {tuple(sorted(case.items())): case for case in cases}
    return tuple(unique.values())


def dynamic_shapes(spec, config: ExportConfig) -> dict[str, dict[int, object]]:
    """torch.export `dynamic_shapes`: one `Dim` per dynamic dim, shared by every input that uses it
    (so B of `tokens` and B of `mask` are one axis), and `a * Dim + b` for a dim written `T + 1`."""
    dims = {name: _dim(spec.dims[name]) for name in config.dynamic}
    static = {name: dim.example for name, dim in spec.dims.items() if name not in dims}
    shapes: dict[str, dict[int, object]] = {}
    for tensor in spec.inputs:
        axes = {}
        for axis, entry in enumerate(tensor.shape):
            if isinstance(entry, str):
                dim = _axis(spec, tensor.name, axis, entry, dims, static)
                if dim is not None:
                    axes[axis] = dim
        shapes[tensor.name] = axes
    return shapes


def _dim(dim):
    """The spec's dim as torch.export sees it: `Dim`, or `m * Dim` for a dim declared a multiple of m."""
    step = dim.multiple_of
    low, high = max(dim.min, 1) // step, (dim.max // step if dim.max is not None else None)
    bounds = {"min": low} | ({"max": high} if high is not None else {})
    if step == 1:
        return torch.export.Dim(dim.name, **bounds)
    return step * torch.export.Dim(f"{dim.name}_over_{step}", **bounds)


def _axis(spec, input_name: str, axis: int, entry: str, dims: dict, static: dict):
    """The Dim of one input axis, or None when it is static."""
    try:
        expr = sympy.expand(sympy.sympify(evaluate(entry, {}, symbolic=True)).subs(
            {sympy.Symbol(n, integer=True, positive=True): v for n, v in static.items()}))
    except ExprError as e:  # the front end has already checked it; kept for a clear message
        raise _error(spec, input_name, axis, f"cannot read dim '{entry}': {e}") from None
    free = sorted(expr.free_symbols, key=str)
    if not free:
        return None
    if len(free) > 1:
        raise _error(spec, input_name, axis, f"axis '{entry}' of input '{input_name}' combines the dynamic dims "
                     f"{', '.join(map(str, free))}, which torch.export cannot express",
                     hint="keep only one of them in export.dynamic")
    root = free[0]
    poly = sympy.Poly(expr, root)
    if poly.degree() > 1 or not all(c.is_Integer for c in poly.all_coeffs()):
        raise _error(spec, input_name, axis, f"axis '{entry}' of input '{input_name}' is not of the form a * {root} + b",
                     hint=f"remove '{root}' from export.dynamic to export it at its example size")
    scale, offset = (int(c) for c in poly.all_coeffs()) if poly.degree() == 1 else (0, int(poly.all_coeffs()[0]))
    dim = dims[str(root)]
    if scale == 1 and offset == 0:
        return dim
    return dim * scale + offset if offset else dim * scale


def _error(spec, input_name: str, axis: int, message: str, hint: str | None = None) -> DlspecError:
    path = ("model", "inputs", input_name, "shape", axis)
    return DlspecError.single(message, spec.locate(path), path=format_path(path), hint=hint)


def check_memory(spec, cases: tuple[dict[str, int], ...], config: ExportConfig, source: str | None = None) -> None:
    """Refuse size cases whose activations would not fit in memory, before any input is drawn.

    `source` names where recorded sizes came from (an artifact), else they are the spec's export sizes."""
    for case in cases:
        where = ", ".join(f"{k}={v}" for k, v in case.items())
        loc = None if source else spec.locate(("export", "sizes"))
        check_activations(spec.graph, case, f"{source + ': ' if source else ''}the checked sizes {where}", loc)
