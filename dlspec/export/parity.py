"""Parity: every artifact, run in its own runtime, against the eager model.

For every size case and seed the same random inputs go to the eager model and to
each artifact; per artifact and output we keep the max absolute error, the max
relative error (over elements where |eager| >= atol / rtol, where the relative
term of the tolerance dominates: near zero a relative error means nothing), the
mean absolute error, and the first element past atol + rtol * |eager|. NaN or
Inf anywhere fails.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from dlspec.backend.inputs import random_inputs
from dlspec.core.errors import gist

from .config import ExportConfig, Tolerance
from .formats import Runner
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
class ArtifactParity:
    format: str
    file: Path
    method: str  # how it was made: "opset 22", "scripted", "torch.export"
    note: str = ""  # why, where it matters: "not scriptable: ..."
    outputs: tuple[OutputParity, ...] = ()
    error: str | None = None  # the artifact could not be loaded or run
    hashes: dict = field(default_factory=dict)  # sha256 of the file, and of its content without provenance

    @property
    def ok(self) -> bool:
        return self.error is None and all(o.ok for o in self.outputs)


@dataclass(frozen=True)
class ParityReport:
    spec_name: str
    spec_hash: str
    weights: dict
    tolerance: Tolerance
    cases: tuple[dict[str, int], ...]
    seeds: int
    artifacts: tuple[ArtifactParity, ...] = field(default=())

    @property
    def ok(self) -> bool:
        return all(a.ok for a in self.artifacts)


@dataclass(frozen=True)
class Candidate:
    """An artifact to check: its file and how to load it."""

    format: str
    file: Path
    method: str
    load: Callable[[], Runner]
    note: str = ""
    hashes: dict = field(default_factory=dict)


def check(spec, model: torch.nn.Module, candidates: list[Candidate], config: ExportConfig,
          cases: tuple[dict[str, int], ...], weights: dict) -> ParityReport:
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
    artifacts = tuple(
        ArtifactParity(c.format, c.file, c.method, c.note,
                       tuple(stats[i][name].result(name) for name in stats[i]), errors.get(i), c.hashes)
        for i, c in enumerate(candidates))
    return ParityReport(spec.name, spec.spec_hash, weights, config.tolerance, cases, config.seeds, artifacts)


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
