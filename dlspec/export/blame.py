"""Which spec node an exporter failure belongs to.

Exporters fail deep inside torch with messages about aten ops and fx nodes.
The user wrote a spec, so we name the spec node and its line instead. Two
trails lead back: a torch.fx node in a failing frame (the ONNX translator and
torch.export walk fx nodes) carries the module path (`h.0.attn`, which is the IR
node's name) and a stack trace into the generated forward; and a frame or
stack-trace line inside the generated source. A line of a block's class is run
by every instance of the class: the code generator says which node of the class
it runs (`mlp.fc`), and the module that ran it (the frame's `self`, or the fx
node's module stack) says which instance (`h.3`).
"""
from __future__ import annotations

import inspect
import re
import traceback

import torch

from dlspec.backend.builder import generated
from dlspec.core.errors import Problem

_FRAME = re.compile(r'File "([^"]+)", line (\d+)')


def export_problem(formats: list[str], error: BaseException, spec, model: torch.nn.Module) -> Problem:
    """A located problem for the formats that one failure kept from being produced."""
    targets = " and ".join(formats)
    dims = _dim_constraints(error, spec)
    if dims:
        return dims
    node = culprit(error, spec, model)
    reason = _reason(error)
    if node is None:
        return Problem(f"cannot export to {targets}: {reason}", hint=_OTHERS)
    where = f" ({node.context})" if node.context else ""
    return Problem(f"cannot export node '{node.name}' ({node.op}){where} to {targets}: {reason}", node.loc,
                   hint=_OTHERS)


_OTHERS = "the other formats were still exported"
# torch.export's suggested fixes: `T = Dim('T', max=32)`, `T = 16`
_SUGGESTION = re.compile(r"^\s*(\w+) = (?:Dim\('\w+'(?P<bounds>[^)]*)\)|(?P<value>\d+))\s*$", re.M)


def _dim_constraints(error: BaseException, spec) -> Problem | None:
    """torch.export found that the model works only on part of a dynamic dim's range: say which
    range, at the dim's declaration, in the spec's terms."""
    text = next((str(e) for e in _chain(error) if "Constraints violated" in str(e)), None)
    if text is None or "Suggested fixes:" not in text:
        return None
    for match in _SUGGESTION.finditer(text.split("Suggested fixes:", 1)[1]):
        name = match.group(1)
        if name not in spec.dims:
            continue
        loc = spec.locate(("model", "dims", name)) or spec.locate(("model", "inputs"))
        if match.group("value"):
            return Problem(f"the model works only with dim {name} = {match.group('value')}, but {name} is exported "
                           "as dynamic", loc, f"model.dims.{name}", hint=f"leave {name} out of export.dynamic")
        bounds = dict(b.split("=") for b in match.group("bounds").replace(" ", "").split(",") if "=" in b)
        declared = spec.dims[name]
        fixes = "; ".join(f"{k}: {v}" for k, v in bounds.items())
        return Problem(
            f"dim {name} is declared with min {declared.min}, max {declared.max or 'unbounded'}, but the model "
            f"works only for {' and '.join(f'{k} {v}' for k, v in bounds.items())} (torch.export)", loc,
            f"model.dims.{name}", expected=f"model.dims.{name} with {fixes}",
            hint=f"set it in the spec, or pass {_set_dim(spec, name, bounds)}")
    return None


def _set_dim(spec, name: str, bounds: dict) -> str:
    """The --set override that gives dim `name` these bounds, whatever form its declaration has
    (overrides replace values; they cannot add keys below a missing section)."""
    dims = spec.document.get("model", {}).get("dims")
    declared = dims.get(name) if isinstance(dims, dict) else None
    if isinstance(declared, dict):
        return " ".join(f"--set model.dims.{name}.{k}={v}" for k, v in bounds.items())
    entry = ({"example": declared} if isinstance(declared, int) else {}) | bounds
    flow = "{" + ", ".join(f"{k}: {v}" for k, v in entry.items()) + "}"
    if isinstance(dims, dict):
        return f"--set 'model.dims.{name}={flow}'"
    return f"--set 'model.dims={{{name}: {flow}}}'"


def culprit(error: BaseException, spec, model: torch.nn.Module):
    """The IR node an exception points at, or None."""
    nodes = {n.name: n for n in spec.graph.nodes}
    code = generated(spec)
    source = _source_file(model)
    paths = {id(module): path for path, module in model.named_modules()}
    found = None
    for exc in _chain(error):
        for frame, lineno in traceback.walk_tb(exc.__traceback__):
            fx_node = frame.f_locals.get("node")
            if isinstance(fx_node, torch.fx.Node):
                found = _from_fx(fx_node, nodes, code, source) or found
            elif frame.f_code.co_filename == source:
                found = _from_line(code, lineno, nodes, paths.get(id(frame.f_locals.get("self")))) or found
        if found is None and source:  # torch.export quotes the user's stack in its messages
            for file, line in _FRAME.findall(str(exc)):
                if file == source:
                    found = _from_line(code, int(line), nodes) or found
    return found


def _from_fx(fx_node: torch.fx.Node, nodes: dict, code, source: str | None):
    stack = list((fx_node.meta.get("nn_module_stack") or {}).values())
    for path, _type in reversed(stack):  # innermost module first
        node = _by_module_path(path, nodes)
        if node is not None:
            return node
    trace = fx_node.meta.get("stack_trace") or ""
    for file, line in reversed(_FRAME.findall(trace)):
        if file == source and int(line) in code.lines:
            cls = code.lines[int(line)][0]
            scope = next((_module_path(path) for path, kind in reversed(stack)
                          if str(getattr(kind, "__name__", kind)).rpartition(".")[2] == cls), None)
            return _from_line(code, int(line), nodes, scope)
    return None


def _module_path(path: str) -> str:
    return re.sub(r"\[(\d+)\]", r".\1", path)  # strict export writes h[0].attn


def _by_module_path(path: str, nodes: dict):
    """The IR node whose name is the longest prefix of a module path (`h.0.attn.qkv` -> `h.0.attn`)."""
    parts = _module_path(path).split(".")
    for end in range(len(parts), 0, -1):
        node = nodes.get(".".join(parts[:end]))
        if node is not None:
            return node
    return None


def _from_line(code, lineno: int, nodes: dict, scope: str | None = None):
    """The IR node a line of the generated source runs, in the instance at module path `scope` (default: the
    first instance of the line's class)."""
    if lineno not in code.lines:
        return None
    cls, label = code.lines[lineno]
    scope = code.classes[cls][0] if scope is None else scope
    return nodes.get(f"{scope}.{label}" if scope else label)


def _source_file(model: torch.nn.Module) -> str | None:
    try:
        return inspect.getsourcefile(type(model).forward) or type(model).forward.__code__.co_filename
    except (TypeError, OSError):
        return getattr(getattr(type(model).forward, "__code__", None), "co_filename", None)


def _chain(error: BaseException):
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        yield error
        error = error.__cause__ or error.__context__


def _reason(error: BaseException) -> str:
    """The most specific message in the chain, on one line."""
    messages = [str(e).strip() for e in _chain(error) if str(e).strip()]
    text = messages[-1] if messages else type(error).__name__
    text = re.sub(r"\x1b\[[0-9;]*m", "", text)  # exporters colour their messages
    first = next((line.strip() for line in text.splitlines() if line.strip()), text)
    return first[:300]
