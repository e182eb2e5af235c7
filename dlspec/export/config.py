"""The resolved export settings: the spec's `export:` section, then the command line.

The JSON Schema (`schema.py`) has already checked types; this module checks what
needs the model: named dims exist, checked sizes fit each dim's range.
"""
from __future__ import annotations

import importlib.metadata
import re
from dataclasses import dataclass, field, replace
from typing import Sequence

from dlspec.core import dims as D
from dlspec.core.errors import DlspecError, Problem, did_you_mean, format_path
from dlspec.core.layers import REGISTRY

from .schema import AGREEMENT, DEFAULT_OPSET, EXAMPLES, FORMATS, MAX_OPSET, MIN_OPSET, PREPROCESSING, RUNTIME_OPSETS, VARIANTS

# Default fp32 tolerances: |export - eager| <= ATOL + RTOL * |eager|. Measured worst
# cases (docs/export.md): ~1e-7 abs for the small specs, 3.4e-6 abs and 2.8e-5 rel for
# the full 12-layer gpt2-small: float rounding stays 3-100x below.
ATOL = 1e-5
RTOL = 1e-4
SEEDS = 3
_ODD_SIZES = (17, 3, 5, 7, 9, 11, 13, 15)  # the first that fits a dim's range is checked


@dataclass(frozen=True)
class Tolerance:
    atol: float = ATOL
    rtol: float = RTOL


@dataclass(frozen=True)
class Agreement:
    """What an export must keep on real data: the fraction of predictions whose top class is eager's, and
    the largest difference of accuracy."""
    argmax: float = AGREEMENT["argmax"]
    metric: float = AGREEMENT["metric"]


@dataclass(frozen=True)
class Variant:
    kind: str  # a key of schema.VARIANTS
    agreement: Agreement


@dataclass(frozen=True)
class ExportConfig:
    formats: tuple[str, ...] = FORMATS
    opset: int = DEFAULT_OPSET
    dynamic: tuple[str, ...] = ()  # symbolic dims exported as dynamic axes
    sizes: dict[str, tuple[int, ...]] = field(default_factory=dict)  # dynamic dim -> sizes checked
    seeds: int = SEEDS
    tolerance: Tolerance = Tolerance()
    external_data: bool | None = None  # None: only past protobuf's 2 GB limit
    chosen: tuple[str, ...] = ()  # the dynamic dims the spec or command line named (the rest are defaults)
    preprocessing: str = "embedded"  # or "external": the files take preprocessed inputs
    agreement: Agreement = Agreement()
    examples: int = EXAMPLES  # real validation examples checked at most
    variants: tuple[Variant, ...] = ()


def default_opset() -> int:
    """The newest opset the installed onnxruntime loads for every layer kind (schema.RUNTIME_OPSETS): a file
    exported with the default runs in the runtime it was checked with."""
    try:
        version = tuple(int(n) for n in re.findall(r"\d+", importlib.metadata.version("onnxruntime"))[:2])
    except importlib.metadata.PackageNotFoundError:
        return DEFAULT_OPSET
    return max((opset for first, opset in RUNTIME_OPSETS if version >= first), default=RUNTIME_OPSETS[0][1])


def resolve(spec, formats: Sequence[str] | None = None, opset: int | None = None,
            atol: float | None = None, rtol: float | None = None, variants: Sequence[str] | None = None,
            preprocessing: str | None = None) -> ExportConfig:
    """Settings for exporting `spec`: command-line values win over the spec's `export:` section."""
    section = spec.export or {}
    problems: list[Problem] = []
    dims = spec.dims

    static = static_dims(spec)
    dynamic = tuple(section.get("dynamic", [name for name in dims if name not in static and _sizes(dims[name]) > 1
                                            and not _may_derive_one(spec, name)]))
    for i, name in enumerate(dynamic):
        if name not in dims:
            problems.append(_unknown_dim(spec, ("export", "dynamic", i), name))
        elif trace_size(spec, name) is None:
            problems.append(Problem(
                f"dim '{name}' cannot be dynamic: at each of its sizes some layer's output has a dim of size 1, "
                "which torch.export fixes to 1", spec.locate(("export", "dynamic", i)),
                format_path(("export", "dynamic", i)), expected="a dim with a size where every dim it sets is 2 or more",
                hint=f"remove '{name}' from export.dynamic, or allow larger sizes under model.dims.{name}"))
        elif name in static:
            problems.append(Problem(
                f"dim '{name}' cannot be dynamic: {static[name]} runs a time loop over it, which torch.export unrolls",
                spec.locate(("export", "dynamic", i)), format_path(("export", "dynamic", i)),
                expected="dims no recurrent layer steps over", hint=f"remove '{name}' from export.dynamic: the export "
                                                                   f"then runs at {name} = {dims[name].example}"))
        elif _sizes(dims[name]) < 2:
            problems.append(Problem(
                f"dim '{name}' cannot be dynamic: it takes one size ({dims[name].min})",
                spec.locate(("export", "dynamic", i)), format_path(("export", "dynamic", i)),
                expected="a dim that can take two sizes or more", hint=f"remove '{name}' from export.dynamic"))

    sizes = {name: default_sizes(dims[name]) for name in dynamic if name in dims}
    for name, values in section.get("sizes", {}).items():
        path = ("export", "sizes", name)
        if name not in dims:
            problems.append(_unknown_dim(spec, path, name))
        elif name not in dynamic:
            problems.append(Problem(f"sizes given for dim '{name}', which is not dynamic",
                                    spec.locate(path), format_path(path),
                                    expected=f"one of the dynamic dims: {', '.join(dynamic)}",
                                    hint=f"add '{name}' to export.dynamic, or remove its sizes"))
        else:
            bad = [v for v in values if not dims[name].allows(v)]
            if bad:
                problems.append(Problem(
                    f"size {bad[0]} is outside the range of dim '{name}'", spec.locate(path), format_path(path),
                    expected=f"sizes from {dims[name].min} to {dims[name].max if dims[name].max else 'any'}"
                             + (f", multiples of {dims[name].multiple_of}" if dims[name].multiple_of > 1 else ""),
                    hint=f"change the sizes, or the dim's min/max under model.dims.{name}"))
            sizes[name] = tuple(values)

    formats = _formats(formats) if formats else tuple(section.get("formats", FORMATS))
    chosen_variants = _variants(spec, section, variants, formats, problems)
    if problems:
        raise DlspecError(problems)
    tolerance = section.get("tolerance", {})
    agreement = section.get("agreement", {})
    return ExportConfig(
        formats=formats,
        opset=_opset(opset) if opset is not None else section.get("opset", default_opset()),
        dynamic=dynamic,
        sizes=sizes,
        seeds=section.get("seeds", SEEDS),
        tolerance=Tolerance(atol=_tolerance("atol", atol) if atol is not None else tolerance.get("atol", ATOL),
                            rtol=_tolerance("rtol", rtol) if rtol is not None else tolerance.get("rtol", RTOL)),
        external_data=section.get("external_data"),
        chosen=dynamic if "dynamic" in section else (),
        preprocessing=_preprocessing(preprocessing) if preprocessing else section.get("preprocessing", "embedded"),
        agreement=Agreement(agreement.get("argmax", AGREEMENT["argmax"]), agreement.get("metric", AGREEMENT["metric"])),
        examples=agreement.get("examples", EXAMPLES),
        variants=chosen_variants,
    )


def _variants(spec, section: dict, names: Sequence[str] | None, formats: tuple[str, ...],
              problems: list[Problem]) -> tuple[Variant, ...]:
    """The variants to write, each with its agreement: --variants (with each kind's default agreement) wins
    over export.variants. They are made from the .onnx file, so they need the onnx format."""
    if names is not None:
        for name in names:
            if name not in VARIANTS:
                raise DlspecError.single(f"unknown variant '{name}'", expected=", ".join(VARIANTS),
                                         hint=did_you_mean(name, list(VARIANTS)), usage=True)
        items, where = [{"kind": n} for n in dict.fromkeys(names)], None
    else:
        items = [{"kind": v} if isinstance(v, str) else v for v in section.get("variants", [])]
        where = ("export", "variants")
    found: dict[str, Variant] = {}
    for i, item in enumerate(items):
        kind, defaults = item["kind"], VARIANTS[item["kind"]][1]
        if kind in found:
            problems.append(Problem(f"variant '{kind}' is listed twice", spec.locate(where + (i,)) if where else None,
                                    format_path(where + (i,)) if where else None, expected="each variant once"))
        found[kind] = Variant(kind, Agreement(item.get("argmax", defaults["argmax"]), item.get("metric", defaults["metric"])))
    if found and "onnx" not in formats:
        problems.append(Problem("variants are made from the .onnx file, which is not exported",
                                spec.locate(where) if where else None, format_path(where) if where else None,
                                expected="onnx among the formats", hint="add onnx to --format or export.formats"))
    return tuple(found.values())


def _preprocessing(value: str) -> str:
    if value not in PREPROCESSING:
        raise DlspecError.single(f"--preprocessing {value} is not a choice", expected=" or ".join(PREPROCESSING),
                                 usage=True)
    return value


MAX_RECORDED_SIZES = 16


def recorded(spec, config: ExportConfig, exported, source: str) -> ExportConfig:
    """The dynamic dims and checked sizes an artifact records (`source` names it), checked like the spec's own:
    a crafted record cannot make verify check a dim the spec lacks or allocate for a size past its range."""
    def bad(why: str) -> DlspecError:
        return DlspecError.single(f"{source} records export dims that do not fit {spec.path.name}: {why}",
                                  hint="export it again with `dlspec export`")
    if not isinstance(exported, dict) or not isinstance(exported.get("dynamic"), list) \
            or not isinstance(exported.get("sizes"), dict):
        raise bad("expected {dynamic: [...], sizes: {...}}")
    dynamic = exported["dynamic"]
    for name in dynamic:
        if not isinstance(name, str) or name not in spec.dims:
            raise bad(f"'{str(name)[:40]}' is not a symbolic dim of the spec's inputs")
    sizes = {}
    for name in dynamic:
        values = exported["sizes"].get(name)
        if not isinstance(values, list) or not 1 <= len(values) <= MAX_RECORDED_SIZES:
            raise bad(f"dim '{name}' needs 1 to {MAX_RECORDED_SIZES} sizes")
        for v in values:
            if not isinstance(v, int) or isinstance(v, bool) or not spec.dims[name].allows(v):
                raise bad(f"size {str(v)[:40]} of dim '{name}' is outside its range "
                          f"{spec.dims[name].min}..{spec.dims[name].max or 'unbounded'}")
        sizes[name] = tuple(values)
    return replace(config, dynamic=tuple(dynamic), sizes=sizes)


def _sizes(dim) -> float:
    """How many sizes a dim allows (inf when it has no max)."""
    return float("inf") if dim.max is None else (dim.max - dim.min) // dim.multiple_of + 1


def _may_derive_one(spec, name: str) -> bool:
    """Whether a size computed from this dim alone (a conv's output, not the dim itself) may be 1 at an
    allowed size. torch.export assumes such sizes are not 1 and refuses a range where they are, so by
    default the dim is exported at a fixed size; `export.dynamic` can still name it."""
    bounds = {n: D.Bound(d.min, d.max, d.multiple_of) for n, d in spec.dims.items()}
    with D.assume(bounds):
        for t in spec.graph.types.values():
            for d in t.shape:
                if {str(s) for s in getattr(d, "free_symbols", ())} == {name} and not d.is_Symbol:
                    low, _ = D.bounds(d)
                    if low is None or low < 2:
                        return True
    return False


def trace_size(spec, name: str) -> int | None:
    """The size to trace a dynamic dim at: torch.export fixes any size it sees at 0 or 1 (a guard that
    then fails at other sizes), so the smallest allowed size from the example (and 2) at which every size of
    the model that depends on this dim is 2 or more (the other dims at their example); None if none is."""
    dim = spec.dims[name]
    sizes = spec.example_sizes()
    dependent = {d for t in spec.graph.types.values() for d in t.shape
                 if name in {str(s) for s in getattr(d, "free_symbols", ())}}
    size = max(dim.example, 2 * dim.multiple_of)  # a multiple of m is exported as m * k: k at 2 or more too
    last = min(dim.max if dim.max is not None else size + 256, size + 256)
    while size <= last:
        if dim.allows(size) and all(D.substitute(d, {**sizes, name: size}) >= 2 for d in dependent):
            return size
        size += 1
    return None


def static_dims(spec) -> dict[str, str]:
    """Dims a layer needs at a fixed size in export (an LSTM's T) -> that layer, as `lstm 'encoder'`."""
    out: dict[str, str] = {}
    graph = spec.graph
    for node in graph.nodes:
        for dim in REGISTRY[node.op].static_dims(node.a, [graph.types[v] for v in node.inputs]):
            for symbol in getattr(dim, "free_symbols", ()):
                out.setdefault(str(symbol), f"{node.op} '{node.name}'")
    return out


def default_sizes(dim) -> tuple[int, ...]:
    """The dim's smallest size (1 unless it says otherwise), its example size, and an odd size (an odd
    multiple of its multiple_of): the sizes exporters get wrong."""
    smallest = max(dim.min, 1)
    step = dim.multiple_of
    # odd multiples from the smallest: 17 x 16 would make a U-Net check 272 x 272 images
    odd_factors = _ODD_SIZES if step == 1 else sorted(_ODD_SIZES)
    odd = next((n * step for n in odd_factors if dim.allows(n * step) and n * step not in (smallest, dim.example)), None)
    return tuple(sorted({smallest, dim.example} | ({odd} if odd else set())))


def _formats(names: Sequence[str]) -> tuple[str, ...]:
    for name in names:
        if name not in FORMATS:
            raise DlspecError.single(f"unknown export format '{name}'", expected=", ".join(FORMATS),
                                     hint=did_you_mean(name, FORMATS), usage=True)
    return tuple(dict.fromkeys(names))


def _tolerance(name: str, value: float) -> float:
    """--atol must be positive (an exact match is not a tolerance fp32 kernels can meet); --rtol may be 0."""
    smallest_ok = value > 0 if name == "atol" else value >= 0
    if not smallest_ok or value != value or value == float("inf"):
        default = ATOL if name == "atol" else RTOL
        raise DlspecError.single(f"--{name} {value:g} is not a tolerance",
                                 expected="a positive number" if name == "atol" else "0 or a positive number",
                                 hint=f"the fp32 default is {default:g}", usage=True)
    return value


def _opset(opset: int) -> int:
    if not MIN_OPSET <= opset <= MAX_OPSET:
        raise DlspecError.single(f"opset {opset} is not supported", expected=f"{MIN_OPSET} to {MAX_OPSET}",
                                 hint=f"the default, {default_opset()}, is the newest the installed onnxruntime runs "
                                      "for every layer",
                                 usage=True)
    return opset


def _unknown_dim(spec, path: tuple, name: str) -> Problem:
    known = list(spec.dims)
    return Problem(f"unknown dim '{name}'", spec.locate(path), format_path(path),
                   expected=f"a symbolic dim of the inputs: {', '.join(known) or 'none'}",
                   hint=did_you_mean(name, known))

