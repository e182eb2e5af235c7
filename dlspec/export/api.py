"""The Python API behind `dlspec export` and `dlspec verify`."""
from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import dlspec
from dlspec.core.errors import DlspecError, Problem, gist
from dlspec.front.spec import Spec

from . import config as cfg
from . import parity, report
from . import weights as W
from .formats import format_of
from .pipeline import ExportResult, artifact_stem
from .pipeline import export as export_model
from .shapes import size_cases


def export(spec: Spec | str | Path, out_dir: str | Path | None = None, *, checkpoint: str | Path | None = None,
           last: bool = False, formats: Sequence[str] | None = None, opset: int | None = None,
           atol: float | None = None, rtol: float | None = None, overrides: Iterable[str] = (),
           seed: int = 0) -> ExportResult:
    """Export a spec's model (with a checkpoint's weights, else initialised with `seed`) and check parity.

    `out_dir` defaults to exports/<spec name>. Raises DlspecError for a bad spec, setting or
    checkpoint; formats that fail and parity failures are in the result's `problems`."""
    spec = _load(spec, overrides)
    config = cfg.resolve(spec, formats=formats, opset=opset, atol=atol, rtol=rtol)
    model, weights = _model(spec, checkpoint, last, seed)
    out = Path(out_dir) if out_dir is not None else Path("exports") / artifact_stem(spec.name)
    return export_model(spec, model, out, config, weights)


@dataclass(frozen=True)
class VerifyResult:
    report: parity.ParityReport
    problems: tuple[Problem, ...]

    @property
    def ok(self) -> bool:
        return not self.problems


def verify(artifact: str | Path, spec: Spec | str | Path, *, checkpoint: str | Path | None = None,
           last: bool = False, atol: float | None = None, rtol: float | None = None,
           overrides: Iterable[str] = ()) -> VerifyResult:
    """Re-run the parity check of an exported file (.onnx, .pt2, TorchScript) against the spec's eager model."""
    path = Path(artifact)
    fmt = format_of(path)
    if not path.is_file():
        raise DlspecError.single(f"{path} does not exist", hint="pass a file written by `dlspec export`", usage=True)
    if fmt is None:
        raise DlspecError.single(f"cannot tell the format of {path.name}",
                                 expected="a .onnx, .pt2 or TorchScript (.pt) file", usage=True)
    spec = _load(spec, overrides)
    try:
        record = fmt.read_record(path) or {}
    except Exception as e:
        raise DlspecError.single(f"cannot read {path} as {fmt.name}: {gist(e)}",
                                 hint="the file is damaged or truncated: export it again with `dlspec export`") from None
    if record and record.get("spec_hash") != spec.spec_hash:
        raise DlspecError.single(
            f"{path.name} was exported from another model (spec hash {str(record.get('spec_hash'))[:12]}, "
            f"{spec.path.name} resolves to {spec.spec_hash[:12]})",
            hint="pass the spec it was exported from, with the same --set overrides")
    recorded = record.get("weights", {})
    if checkpoint is None and recorded.get("source") == "checkpoint":
        raise DlspecError.single(f"{path.name} was exported with the weights of {recorded.get('path')}",
                                 hint=f"pass --checkpoint {recorded.get('path')}", usage=True)
    model, weights = _model(spec, checkpoint, last, recorded.get("seed", 0))
    config = cfg.resolve(spec, atol=atol, rtol=rtol)
    if "export" in record:  # check the dims the file was exported with, whatever the spec's export: says now
        exported = record["export"]
        config = dataclasses.replace(config, dynamic=tuple(exported["dynamic"]),
                                     sizes={k: tuple(v) for k, v in exported["sizes"].items()})
    candidate = parity.Candidate(fmt.name, path, fmt.name, functools.partial(fmt.load, path, spec))
    result = parity.check(spec, model, [candidate], config, size_cases(spec, config), weights)
    return VerifyResult(result, tuple(report.problems(result)))


def _load(spec: Spec | str | Path, overrides: Iterable[str]) -> Spec:
    return spec if isinstance(spec, Spec) else dlspec.load(spec, tuple(overrides))


def _model(spec: Spec, checkpoint, last: bool, seed: int):
    model = dlspec.build(spec, seed=seed)
    if checkpoint is None:
        if last:
            raise DlspecError.single("--last needs --checkpoint RUN_DIR", expected="--checkpoint RUN_DIR --last",
                                     hint="pass the run directory written by `dlspec train`", usage=True)
        return model, W.initialised(seed)
    return model, W.load_checkpoint(model, spec, W.resolve_checkpoint(checkpoint, last))
