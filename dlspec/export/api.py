"""The Python API behind `dlspec export` and `dlspec verify`."""
from __future__ import annotations

import dataclasses
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import onnx

import dlspec
from dlspec.core.errors import DlspecError, Problem, gist
from dlspec.core.files import file_sha256
from dlspec.front.spec import Spec

from . import compare, parity, report, rundata
from . import config as cfg
from . import preprocess as P
from . import weights as W
from .formats import format_of
from .pipeline import ExportResult, artifact_stem, loader
from .pipeline import export as export_model
from .pipeline import write as write_formats
from .schema import MAX_OPSET, MIN_OPSET, VARIANTS
from .shapes import check_memory, size_cases
from .to_onnx import read_model
from .weights import describe


def export(spec: Spec | str | Path, out_dir: str | Path | None = None, *, checkpoint: str | Path | None = None,
           last: bool = False, formats: Sequence[str] | None = None, opset: int | None = None,
           atol: float | None = None, rtol: float | None = None, overrides: Iterable[str] = (),
           seed: int = 0, weights: str | Path | None = None, variants: Sequence[str] | None = None,
           preprocessing: str | None = None) -> ExportResult:
    """Export a spec's model (with a checkpoint's weights, or `weights` from elsewhere through the spec's
    `weights:` mapping, else initialised with `seed`) and check parity.

    With a checkpoint of a run, the files take inputs as the run's data set gives them (the training preprocessing
    is in their graph, or in preprocess.json with preprocessing="external") and parity also runs them on the run's
    validation examples. `variants` ("fp16", "int8_dynamic") adds smaller ONNX files.
    `out_dir` defaults to exports/<spec name>. Raises DlspecError for a bad spec, setting or
    checkpoint; formats that fail and parity failures are in the result's `problems`."""
    spec = _load(spec, overrides)
    config = cfg.resolve(spec, formats=formats, opset=opset, atol=atol, rtol=rtol, variants=variants,
                         preprocessing=preprocessing)
    model, weights = _model(spec, checkpoint, last, seed, weights)
    run = rundata.load(spec, Path(weights["path"]) if weights["source"] == "checkpoint" else None, config.examples)
    out = Path(out_dir) if out_dir is not None else Path("exports") / artifact_stem(spec.name)
    return export_model(spec, model, out, config, weights, run)


@dataclass(frozen=True)
class VerifyResult:
    report: parity.ParityReport | None  # None: the content differed, so the file was not run
    problems: tuple[Problem, ...]
    content: dict  # sha256 of the file and of its content, and whether the content is the re-derived export's

    @property
    def ok(self) -> bool:
        return not self.problems


def verify(artifact: str | Path, spec: Spec | str | Path, *, checkpoint: str | Path | None = None,
           last: bool = False, atol: float | None = None, rtol: float | None = None,
           overrides: Iterable[str] = (), weights: str | Path | None = None) -> VerifyResult:
    """Prove an exported file (.onnx, .pt2, TorchScript) is the one dlspec makes from this spec and these
    weights (every node and weight compared with a fresh export), then re-run its parity check.

    A file whose content differs is reported node by node and weight by weight, and never loaded."""
    path = Path(artifact)
    fmt = format_of(path)
    if not path.is_file():
        raise DlspecError.single(f"{path} does not exist", hint="pass a file written by `dlspec export`", usage=True)
    if fmt is None:
        raise DlspecError.single(f"cannot tell the format of {path.name}",
                                 expected="a .onnx, .pt2 or TorchScript (.pt) file", usage=True)
    spec = _load(spec, overrides)
    record = read_record(fmt, path)
    if record.get("spec_hash") != spec.spec_hash:
        raise DlspecError.single(
            f"{path.name} was exported from another model (spec hash {str(record.get('spec_hash'))[:12]}, "
            f"{spec.path.name} resolves to {spec.spec_hash[:12]})",
            hint="pass the spec it was exported from, with the same --set overrides")
    compare.refuse_unsafe(fmt.name, path)
    recorded = record.get("weights") if isinstance(record.get("weights"), dict) else {}
    for source, given in (("checkpoint", checkpoint), ("weights", weights)):
        if given is None and recorded.get("source") == source:
            raise DlspecError.single(f"{path.name} was exported with the weights of {str(recorded.get('path'))[:200]}",
                                     hint=f"pass --{source} {str(recorded.get('path'))[:200]}", usage=True)
    seed = recorded.get("seed", 0)
    if not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed <= 2**62:
        raise DlspecError.single(f"{path.name} records the initialisation seed {str(seed)[:40]}, which dlspec never "
                                 "writes", hint="export it again with `dlspec export`")
    model, weights = _model(spec, checkpoint, last, seed, weights)
    config = dataclasses.replace(cfg.resolve(spec, atol=atol, rtol=rtol), formats=(fmt.name,), **_as_written(fmt, path),
                                 variants=_variant(record, path))
    if "export" in record:  # check the dims the file was exported with, whatever the spec's export: says now
        config = cfg.recorded(spec, config, record["export"], path.name)
    # the preprocessing the file records: re-deriving the file with it and comparing proves its graph applies it
    prep = P.from_json(record["preprocessing"], spec, path.name) if record.get("preprocessing") is not None else None
    cases = size_cases(spec, config)
    check_memory(spec, cases, config, source=path.name)
    content = {"sha256": file_sha256(path), "content_sha256": compare.content_hash(fmt.name, path)}
    with tempfile.TemporaryDirectory(prefix="dlspec-verify-") as tmp:
        rederived, failed, _ = write_formats(spec, model, Path(tmp), config, weights, prep)
        if failed:
            raise DlspecError(failed)
        twin = next(c for c in rederived if c.variant == (config.variants[0].kind if config.variants else None))
        differences = compare.differences(fmt.name, path, twin.file)
    content["identical"] = not differences
    if differences:
        problems = [Problem(f"{path.name} is not the export of {spec.path.name} with {describe(weights)}: {d}",
                            hint="do not deploy it: export it again with `dlspec export`") for d in differences]
        return VerifyResult(None, tuple(problems), content)
    candidate = dataclasses.replace(twin, file=path, load=loader(fmt.load, path, P.files_spec(spec, prep), spec, prep))
    result = parity.check(P.raw_spec(spec, prep), P.wrap(model, spec, prep), [candidate], config, cases, weights)
    return VerifyResult(result, tuple(report.problems(result)), content)


def _variant(record: dict, path: Path) -> tuple[cfg.Variant, ...]:
    """The variant a file records being (none: the fp32 file)."""
    kind = record.get("variant")
    if kind is None:
        return ()
    if kind not in VARIANTS:
        raise DlspecError.single(f"{path.name} records the variant {str(kind)[:40]!r}, which dlspec does not make",
                                 expected=", ".join(VARIANTS), hint="export it again with `dlspec export`")
    return (cfg.Variant(kind, cfg.Agreement(**VARIANTS[kind][1])),)


def read_record(fmt, path: Path) -> dict:
    """The provenance record of a file dlspec exported, read without loading the model."""
    try:
        record = fmt.read_record(path)
    except DlspecError:
        raise
    except Exception as e:
        raise DlspecError.single(f"cannot read {path} as {fmt.name}: {gist(e)}",
                                 hint="the file is damaged or truncated: export it again with `dlspec export`") from None
    if not isinstance(record, dict):
        raise DlspecError.single(f"{path} holds no dlspec provenance record: it was not written by `dlspec export`",
                                 hint="verify proves files that dlspec exported")
    return record


def _as_written(fmt, path: Path) -> dict:
    """The settings an ONNX file shows it was written with: its opset, and whether its weights are external."""
    if fmt.name != "onnx":
        return {}
    model = read_model(path)
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    if opset is None or not MIN_OPSET <= opset <= MAX_OPSET:
        raise DlspecError.single(f"{path.name} imports ONNX opset {opset}, which dlspec does not write",
                                 expected=f"{MIN_OPSET} to {MAX_OPSET}", hint="export it again with `dlspec export`")
    external = any(t.data_location == onnx.TensorProto.EXTERNAL for t in model.graph.initializer)
    return {"opset": opset, "external_data": external}


def _load(spec: Spec | str | Path, overrides: Iterable[str]) -> Spec:
    return spec if isinstance(spec, Spec) else dlspec.load(spec, tuple(overrides))


def _model(spec: Spec, checkpoint, last: bool, seed: int, weights=None):
    if weights is not None:
        if checkpoint is not None:
            raise DlspecError.single("--checkpoint and --weights both give the weights: pass one", usage=True)
        model = dlspec.build(spec, seed=seed, weights=weights)
        return model, W.from_weights(model.weights_report)
    model = dlspec.build(spec, seed=seed)
    if checkpoint is None:
        if last:
            raise DlspecError.single("--last needs --checkpoint RUN_DIR", expected="--checkpoint RUN_DIR --last",
                                     hint="pass the run directory written by `dlspec train`", usage=True)
        return model, W.initialised(seed)
    return model, W.load_checkpoint(model, spec, W.resolve_checkpoint(checkpoint, last))
