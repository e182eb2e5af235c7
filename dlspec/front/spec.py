"""The checked spec: what `dlspec.load` returns and every later stage consumes.

The whole front end is the pipeline in `load()`: read, validate, lower, infer shapes.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping

import sympy

from ..core import dims as D
from ..core.errors import DlspecError, Loc, Problem, did_you_mean
from ..core.ir import Graph, TensorType, dim_str
from ..core.layers import REGISTRY
from .document import Document, Reader, load_document
from .lower import lower, lower_draft
from .schema import validate_document
from .shapes import infer_draft, infer_shapes


@dataclass(frozen=True)
class TensorSpec:
    name: str
    shape: tuple  # ints, or strings for symbolic dims ("B", "T + 1")
    dtype: str
    range: tuple[int, int] | None = None


@dataclass(frozen=True)
class DimSpec:
    """A symbolic dim's sizes: multiples of `multiple_of` from `min` to `max` (None: unbounded), both allowed sizes."""

    name: str
    example: int
    min: int = 1
    max: int | None = None
    multiple_of: int = 1

    def allows(self, size: int) -> bool:
        return size >= self.min and size % self.multiple_of == 0 and (self.max is None or size <= self.max)


@dataclass(frozen=True)
class Spec:
    path: Path
    name: str
    document: dict
    graph: Graph
    spec_hash: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    dims: Mapping[str, DimSpec]
    source: Document
    batch_dim: str | None = None  # the name of the symbolic batch dim ("B"); None when the batch size is fixed

    @property
    def training(self) -> dict | None:
        return self.document.get("training")

    @property
    def export(self) -> dict | None:
        return self.document.get("export")

    def locate(self, path: Iterable) -> Loc | None:
        return self.source.locate(tuple(path))

    def example_sizes(self) -> dict[str, int]:
        return {name: d.example for name, d in self.dims.items()}


def load(path: str | Path, overrides: Iterable[str] | Mapping[str, Any] = (), read: Reader | None = None) -> Spec:
    """Read, validate, lower and shape-check a spec file; raises DlspecError with every problem found.
    `read` reads the file and its includes instead of the disk (a git revision: dlspec diff)."""
    doc = load_document(path, overrides, read)  # YAML -> plain data with locations, includes, --set overrides
    validate_document(doc)                     # JSON Schema (schemas/dlspec.schema.json), all errors located
    if "model" not in doc.data:
        raise DlspecError.single("this file has no `model:` section (a block library can be included, not loaded)",
                                 doc.locate(()), hint="add a model: section, or include this file from a spec")
    with D.assume(declared_bounds(doc)):       # every shape below knows each dim's min, max and multiple_of
        graph = lower(doc)                     # blocks, repeats, residuals, variables -> flat IR, names resolved
        graph = infer_shapes(graph)            # symbolic shapes, wiring and tie checks
        return _spec(doc, graph)


def draft(path: str | Path, overrides: Iterable[str] | Mapping[str, Any] = ()) -> tuple[Graph | None, list[Problem]]:
    """As far as the front end gets: the graph lowered and shape-checked up to its problems (a node after a failed
    one has no types), and the problems; no graph when the document itself is refused. For pictures of a spec that
    does not load; a missing file still raises."""
    try:
        doc = load_document(path, overrides)
        validate_document(doc)
    except DlspecError as exc:
        if exc.usage:
            raise
        return None, list(exc.problems)
    if "model" not in doc.data:
        return None, [Problem("this file has no `model:` section", doc.locate(()), "")]
    with D.assume(declared_bounds(doc)):
        graph, problems = lower_draft(doc)
        graph, more = infer_draft(graph)
        return graph, problems + more


def declared_bounds(doc: Document) -> dict[str, D.Bound]:
    """`model.dims` as the sizes each symbolic dim may take."""
    return {name: _bound(decl) for name, decl in ((doc.data.get("model") or {}).get("dims") or {}).items()}


def _bound(decl: int | dict) -> D.Bound:
    """A dim's declaration (an example size alone, or {example, min, max, multiple_of}) as its allowed sizes."""
    decl = decl if isinstance(decl, dict) else {}
    return D.Bound(decl.get("min", 1), decl.get("max"), decl.get("multiple_of", 1))


def _spec(doc: Document, graph: Graph) -> Spec:
    inputs = tuple(TensorSpec(v.name, _shape(v.type), v.type.dtype, v.range) for v in graph.inputs)
    outputs = tuple(TensorSpec(name, _shape(graph.types[value]), graph.types[value].dtype) for name, value in graph.outputs)
    declared = doc.data["model"].get("dims") or {}
    used = {str(sym) for v in graph.inputs for d in v.type.shape for sym in getattr(d, "free_symbols", ())}
    unknown = [Problem(f"dims declares '{name}', but no input has a dim of that name",
                       doc.locate(("model", "dims", name), key=True),
                       f"model.dims.{name}", expected=", ".join(sorted(used)) or "no symbolic dims",
                       hint=did_you_mean(name, sorted(used))) for name in declared if name not in used]
    if unknown:
        raise DlspecError(unknown)
    batch = next((dim_str(v.type.shape[D.BATCH_AXIS]) for v in graph.inputs
                  if v.type.rank > D.BATCH_AXIS and not D.is_static(v.type.shape[D.BATCH_AXIS])), None)
    dims, problems = {}, []
    for v in graph.inputs:
        for d in v.type.shape:
            for sym in sorted(getattr(d, "free_symbols", ()), key=str):
                name = str(sym)
                decl = declared.get(name, {})
                decl = {"example": decl} if isinstance(decl, int) else decl
                bound = _bound(decl)
                low, high, step = bound.smallest, bound.largest, bound.multiple_of
                default = -(-(2 if name == batch else 8) // step) * step
                example = decl.get("example", max(low, min(default, high)) if high is not None else max(low, default))
                dims[name] = DimSpec(name, example, low, high, step)
                if high is not None and high < low:
                    problems.append(Problem(
                        f"dim '{name}' allows no size: no multiple of {step} from {decl.get('min', 1)} to {decl['max']}"
                        if step > 1 else f"dim '{name}': max {high} is below min {low}",
                        doc.locate(("model", "dims", name)), f"model.dims.{name}", expected="min <= max"))
                elif not bound.allows(example):
                    problems.append(Problem(
                        f"dim '{name}': example {example} is not within min {low} "
                        f"and max {high if high is not None else '(none)'}" +
                        (f" or not a multiple of {step}" if step > 1 else ""),
                        doc.locate(("model", "dims", name)), f"model.dims.{name}",
                        expected="min <= example <= max" + (f", a multiple of {step}" if step > 1 else ""),
                        hint="the example size is what summaries and export checks use"))
    problems += _check_limits(graph, dims, doc)
    if problems:
        raise DlspecError(problems)
    return Spec(doc.path, graph.name, doc.data, graph, graph_hash(graph), inputs, outputs, dims, doc, batch)


def _check_limits(graph: Graph, dims: Mapping[str, "DimSpec"], doc: Document) -> list[Problem]:
    """A symbolic dim that feeds a bounded attribute (pos_embedding's max_len) must declare a max within it:
    otherwise a longer input is a crash at run time, not an error here."""
    problems = []
    for node in graph.nodes:
        for dim, bound, attr in REGISTRY[node.op].limits(node.a, [graph.types[v] for v in node.inputs]):
            if D.is_static(dim):
                continue  # the shape rule has checked it
            names = sorted(str(s) for s in dim.free_symbols)
            unbounded = [n for n in names if n not in dims or dims[n].max is None]
            if unbounded:
                problems.append(Problem(
                    f"{node.name} ({node.op}): {attr} is {bound}, but dim {dim_str(dim)} has no max",
                    node.loc, node.name, expected=f"model.dims.{unbounded[0]}.max at most {bound}",
                    hint=f"declare it: `dims: {{{unbounded[0]}: {{max: {bound}}}}}`" if dim_str(dim) == unbounded[0]
                    else f"declare a max for {unbounded[0]} in model.dims so that {dim_str(dim)} <= {bound}"))
                continue
            largest = D.substitute(dim, {n: dims[n].max for n in names})
            if largest > bound:
                problems.append(Problem(
                    f"{node.name} ({node.op}): {attr} is {bound}, but dim {dim_str(dim)} may reach {largest}",
                    node.loc, node.name, expected=f"{dim_str(dim)} <= {bound}",
                    hint=f"lower the max of {', '.join(names)} in model.dims, or raise {attr}"))
    return problems


def _shape(t: TensorType) -> tuple:
    return tuple(d if isinstance(d, int) else dim_str(d) for d in t.shape)


def graph_hash(graph: Graph) -> str:
    """A hash of everything that defines the model's computation and parameters (not training settings)."""
    def plain(v):
        return str(v) if isinstance(v, sympy.Basic) else v
    canonical = {
        "inputs": [[v.name, [plain(d) for d in v.type.shape], v.type.dtype] for v in graph.inputs],
        "nodes": [[n.name, n.op, [[k, plain(v) if not isinstance(v, list) else [plain(x) for x in v]] for k, v in n.attrs],
                   list(n.inputs), n.region, n.trainable, [[s, dict(m)] for s, m in n.init], [list(t) for t in n.ties]]
                  for n in graph.nodes],
        "outputs": [list(o) for o in graph.outputs],
    }
    return hashlib.sha256(json.dumps(canonical, sort_keys=True, default=str).encode()).hexdigest()


def concrete_shape(shape: Iterable, sizes: Mapping[str, int]) -> tuple[int, ...]:
    """Evaluate a TensorSpec shape (ints and symbolic strings) at the given dim sizes."""
    from ..core.expr import evaluate
    out = []
    for d in shape:
        out.append(d if isinstance(d, int) else D.substitute(sympy.sympify(evaluate(str(d), {}, symbolic=True)), dict(sizes)))
    return tuple(out)
