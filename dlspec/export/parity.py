"""Parity: every artifact, run in its own runtime, against the eager model.

For every size case and seed the same random inputs go to the eager model and to
each artifact; per artifact and output we keep the max absolute error, the max
relative error (over elements where |eager| >= atol / rtol, where the relative
term of the tolerance dominates: near zero a relative error means nothing), the
mean absolute error, and the first element past atol + rtol * |eager|. NaN or
Inf anywhere fails.

Then, when the run has a validation split, the same on real examples, raw as the
data set gives them (the eager model applies training's preprocessing; the
artifact, its own): the differences of the output the run's metric reads, the
fraction of predictions whose top class is eager's, and the metric of each, judged
by the artifact's agreement tolerance. A smaller variant is judged there only: its
random-input differences are reported, not held to fp32's tolerance.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from dlspec.backend.inputs import random_inputs
from dlspec.core.budget import check_activations
from dlspec.core.errors import gist

from .config import Agreement, ExportConfig, Tolerance
from .formats import Runner
from .rundata import Validation, example_sizes
from .runners import as_numpy


@dataclass(frozen=True)
class OutputParity:
    name: str
    max_abs: float
    max_rel: float
    mean_abs: float
    worst: str  # the sizes and seed of the largest error, e.g. "B=17, T=3, seed 2"
    failure: str | None = None  # None: within tolerance everywhere

    @property
    def ok(self) -> bool:
        return self.failure is None


@dataclass(frozen=True)
class RealParity:
    """One artifact on real validation examples, for the output the run's metric reads."""

    output: str
    max_abs: float
    max_rel: float
    agree: float | None  # fraction of predictions whose top class is eager's (class scores only)
    eager: float  # the metric of the eager model
    metric: float  # the metric of the artifact
    agreement: Agreement  # what it had to keep
    failure: str | None = None

    @property
    def ok(self) -> bool:
        return self.failure is None


@dataclass(frozen=True)
class ArtifactParity:
    format: str
    file: Path
    method: str  # how it was made: "opset 22", "scripted", "torch.export", "int8_dynamic of opset 22"
    note: str = ""  # why, where it matters: "not scriptable: ..."
    outputs: tuple[OutputParity, ...] = ()
    error: str | None = None  # the artifact could not be loaded or run
    hashes: dict = field(default_factory=dict)  # sha256 of the file, and of its content without provenance
    variant: str | None = None  # a smaller variant: its random-input differences are not judged
    real: RealParity | None = None
    size: int = 0  # bytes, with external weights

    @property
    def ok(self) -> bool:
        return self.error is None and all(o.ok or self.variant for o in self.outputs) and (self.real is None or self.real.ok)


@dataclass(frozen=True)
class ParityReport:
    spec_name: str
    spec_hash: str
    weights: dict
    tolerance: Tolerance
    cases: tuple[dict[str, int], ...]
    seeds: int
    artifacts: tuple[ArtifactParity, ...] = field(default=())
    real: dict | None = None  # the real-data check: examples, of how many, which metric, eager's value
    real_error: str | None = None  # why the artifacts could not take the validation examples
    notes: tuple[str, ...] = ()  # what was not checked, and why
    preprocessing: tuple[str, ...] = ()  # what the files apply to raw inputs, one line per input
    latency: dict = field(default_factory=dict)  # file name -> {batch size: ms}, with variants

    @property
    def ok(self) -> bool:
        return all(a.ok for a in self.artifacts) and self.real_error is None


@dataclass(frozen=True)
class Candidate:
    """An artifact to check: its file and how to load it."""

    format: str
    file: Path
    method: str
    load: Callable[[], Runner]
    note: str = ""
    hashes: dict = field(default_factory=dict)
    variant: str | None = None
    agreement: Agreement | None = None  # None: the config's


def check(spec, model: torch.nn.Module, candidates: list[Candidate], config: ExportConfig,
          cases: tuple[dict[str, int], ...], weights: dict, validation: Validation | None = None) -> ParityReport:
    """`spec` and `model` take inputs as the data set gives them (the eager model with its preprocessing), as the
    runners do."""
    model.eval()
    runners: dict[int, Runner] = {}
    stats = {i: {} for i in range(len(candidates))}
    errors: dict[int, str] = {}
    for i, candidate in enumerate(candidates):
        try:
            runners[i] = candidate.load()
        except Exception as e:
            errors[i] = f"cannot load {candidate.file.name}: {gist(e)}"
    for sizes in cases:
        for seed in range(config.seeds):
            where = describe_case(sizes, seed)
            inputs = random_inputs(spec, sizes, seed)
            with torch.no_grad():
                expected = as_numpy(model(*inputs))
            feed = {t.name: x for t, x in zip(spec.inputs, inputs)}
            for i, run in runners.items():
                if i in errors:
                    continue
                try:
                    actual = run(feed)
                except Exception as e:
                    errors[i] = f"{candidates[i].file.name} failed to run at {where}: {gist(e)}"
                    continue
                if len(actual) != len(expected):
                    errors[i] = f"{candidates[i].file.name} returns {len(actual)} outputs, the spec declares {len(expected)}"
                    continue
                for tensor, a, e in zip(spec.outputs, actual, expected):
                    _accumulate(stats[i].setdefault(tensor.name, _Stats()), a, e, config.tolerance, where)
    real, summary, real_error = {}, None, None
    if validation is not None:
        real_error = _unfit(spec, config, validation)
        if real_error is None:
            real, summary = _real(spec, model, candidates, runners, errors, config, validation)
    artifacts = tuple(
        ArtifactParity(c.format, c.file, c.method, c.note,
                       tuple(stats[i][name].result(name) for name in stats[i]), errors.get(i), c.hashes, c.variant,
                       real.get(i), _size(c.file))
        for i, c in enumerate(candidates))
    return ParityReport(spec.name, spec.spec_hash, weights, config.tolerance, cases, config.seeds, artifacts,
                        summary, real_error)


def _size(path: Path) -> int:
    data = path.with_name(path.name + ".data")
    return path.stat().st_size + (data.stat().st_size if data.is_file() else 0) if path.is_file() else 0


# ---- real data ---------------------------------------------------------------------------------------------

def _unfit(spec, config: ExportConfig, validation: Validation) -> str | None:
    """Why the exported files cannot take the validation examples (a dim they fix at another size), or None."""
    for name, size in example_sizes(spec, validation).items():
        if name not in config.dynamic and name in spec.dims and spec.dims[name].example != size:
            return (f"the validation examples have {name}={size}, but the exported files fix {name} at "
                    f"{spec.dims[name].example}: they cannot take the data the model was trained on")
    return None


def _batch_size(spec, config: ExportConfig, validation: Validation) -> tuple[int, bool]:
    """The batch size the real-data check runs at, and whether it is fixed (the last batch is then padded)."""
    name = spec.batch_dim
    if name is None:
        size = spec.inputs[0].shape[0]
        return (size if isinstance(size, int) else 1), True
    dim = spec.dims[name]
    if name not in config.dynamic:
        return dim.example, True
    size = min(validation.batch_size, dim.max or validation.batch_size, len(validation))
    while size > dim.min and not dim.allows(size):
        size -= 1
    return size, False


def _real(spec, model, candidates: list[Candidate], runners: dict, errors: dict, config: ExportConfig,
          validation: Validation) -> tuple[dict[int, RealParity], dict]:
    n = len(validation)
    size, fixed = _batch_size(spec, config, validation)
    sizes = {**spec.example_sizes(), **example_sizes(spec, validation)}
    if spec.batch_dim:
        sizes[spec.batch_dim] = size
    check_activations(spec.graph, sizes, f"the real-data check's batches ({size} examples)")
    eager = _Metric(validation)
    stats = {i: (_RealStats(), _Metric(validation)) for i in runners if i not in errors}
    for start in range(0, n, size):
        index = torch.arange(start, min(start + size, n))
        keep = len(index)
        if fixed and keep < size:  # a fixed batch size: fill the last batch with its first example, not scored
            index = torch.cat([index, index[:1].repeat(size - keep)])
        feed = {name: values[index] for name, values in validation.inputs.items()}
        target = validation.target[index[:keep]]
        with torch.no_grad():
            expected = as_numpy(model(*feed.values()))[validation.output][:keep]
        eager.add(expected, target)
        for i, (real, metric) in stats.items():
            if i in errors:
                continue
            try:
                actual = runners[i](feed)[validation.output][:keep]
            except Exception as e:
                errors[i] = f"{candidates[i].file.name} failed to run on the validation examples: {gist(e)}"
                continue
            real.add(actual, expected, config.tolerance)
            metric.add(actual, target, expected)
    results = {}
    for i, (real, metric) in stats.items():
        if i not in errors:
            agreement = candidates[i].agreement or config.agreement
            results[i] = real.result(spec.outputs[validation.output].name, metric, eager.value, agreement)
    summary = {"examples": n, "of": validation.total, "metric": validation.metric, "eager": eager.value,
               "output": spec.outputs[validation.output].name}
    return results, summary


@dataclass
class _RealStats:
    max_abs: float = 0.0
    max_rel: float = 0.0
    finite: bool = True

    def add(self, actual: np.ndarray, expected: np.ndarray, tol: Tolerance) -> None:
        a, e = actual.astype(np.float64), expected.astype(np.float64)
        if a.shape != e.shape or not np.isfinite(a).all():
            self.finite = False
            return
        diff, scale = np.abs(a - e), np.abs(e)
        if diff.size:
            self.max_abs = max(self.max_abs, float(diff.max()))
            significant = scale >= (tol.atol / tol.rtol if tol.rtol else tol.atol)
            if significant.any():
                self.max_rel = max(self.max_rel, float((diff[significant] / scale[significant]).max()))

    def result(self, output: str, metric: "_Metric", eager: float, agreement: Agreement) -> RealParity:
        agree = metric.agreement
        failure = None
        if not self.finite:
            failure = "NaN or Inf values (or outputs of another shape) on the validation examples"
        elif agree is not None and agree < agreement.argmax:
            failure = (f"its top class agrees with eager's on {agree:.4f} of {metric.predictions} predictions, "
                       f"below {agreement.argmax:g}")
        elif agree is not None and abs(metric.value - eager) > agreement.metric:
            failure = (f"accuracy {metric.value:.4f}, eager's {eager:.4f}: they differ by {abs(metric.value - eager):.4f}, "
                       f"more than {agreement.metric:g}")
        return RealParity(output, self.max_abs, self.max_rel, agree, eager, metric.value, agreement, failure)


class _Metric:
    """Accuracy (class scores) or the training loss of one model's outputs over the validation examples, and,
    for class scores, how often its top class is another model's."""

    def __init__(self, validation: Validation):
        self.validation = validation
        self.total = self.scored = self.agreeing = self.predictions = 0
        self.loss_sum = 0.0

    def add(self, out: np.ndarray, target: torch.Tensor, reference: np.ndarray | None = None) -> None:
        v = self.validation
        if v.classes is None:
            with torch.no_grad():
                self.loss_sum += float(v.loss(torch.from_numpy(out).float(), target)) * len(target)
            self.total += len(target)
            return
        labels = target.argmax(-1) if target.is_floating_point() else target
        mask = labels != v.ignore_index if v.ignore_index is not None else torch.ones_like(labels, dtype=torch.bool)
        top = torch.from_numpy(out).argmax(-1)
        self.scored += int(mask.sum())
        self.total += int(((top == labels) & mask).sum())
        if reference is not None:
            self.predictions += int(mask.sum())
            self.agreeing += int(((top == torch.from_numpy(reference).argmax(-1)) & mask).sum())

    @property
    def value(self) -> float:
        if self.validation.classes is None:
            return self.loss_sum / max(self.total, 1)
        return self.total / max(self.scored, 1)

    @property
    def agreement(self) -> float | None:
        return self.agreeing / max(self.predictions, 1) if self.validation.classes is not None else None


def describe_case(sizes: dict[str, int], seed: int) -> str:
    return ", ".join([f"{k}={v}" for k, v in sizes.items()] + [f"seed {seed}"])


@dataclass
class _Stats:
    """Running error statistics of one output of one artifact over all cases."""

    max_abs: float = 0.0
    max_rel: float = 0.0
    sum_abs: float = 0.0
    count: int = 0
    worst: str = ""
    failure: str | None = None

    def result(self, name: str) -> OutputParity:
        return OutputParity(name, self.max_abs, self.max_rel, self.sum_abs / max(self.count, 1), self.worst,
                            self.failure)


def _accumulate(s: _Stats, actual: np.ndarray, expected: np.ndarray, tol: Tolerance, where: str) -> None:
    def fail(message: str) -> None:
        s.failure = s.failure or f"{message} at {where}"  # keep the first failing case: it is the one to reproduce

    if actual.shape != expected.shape:
        fail(f"shape {list(actual.shape)}, eager gives {list(expected.shape)}")
        return
    a, e = actual.astype(np.float64), expected.astype(np.float64)
    if not np.isfinite(e).all():
        fail("the eager model itself gives NaN or Inf")
        return
    if not np.isfinite(a).all():
        fail(f"{int((~np.isfinite(a)).sum())} NaN or Inf values")
        return
    diff = np.abs(a - e)
    scale = np.abs(e)
    if diff.size:
        max_abs = float(diff.max())
        if max_abs > s.max_abs or not s.worst:
            s.max_abs, s.worst = max_abs, where
        significant = scale >= (tol.atol / tol.rtol if tol.rtol else tol.atol)
        if significant.any():
            s.max_rel = max(s.max_rel, float((diff[significant] / scale[significant]).max()))
        excess = diff - (tol.atol + tol.rtol * scale)
        if excess.max() > 0:
            k = int(excess.argmax())
            fail(f"|error| {diff.flat[k]:.3g} where eager is {e.flat[k]:.4g} "
                 f"exceeds atol {tol.atol:g} + rtol {tol.rtol:g} * |eager| by {excess.flat[k]:.3g}")
    s.sum_abs += float(diff.sum())
    s.count += diff.size
