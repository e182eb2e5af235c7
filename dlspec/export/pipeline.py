"""`dlspec export` as a library call: write every format, then prove parity.

    export(spec, model, out_dir, config, weights) -> ExportResult

A format that cannot be produced becomes a located problem and the others are
still written; parity then checks every file that was written, and the report
goes to `parity.json` beside them.
"""
from __future__ import annotations

import functools
import re
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from dlspec.backend.inputs import random_inputs
from dlspec.core.errors import DlspecError, Problem
from dlspec.core.files import file_sha256

from . import parity, report
from .blame import export_problem
from .compare import content_hash
from .config import ExportConfig
from .files import clean_staging
from .formats import FORMATS, Job
from .provenance import provenance
from .quiet import quiet
from .shapes import check_memory, dynamic_shapes, size_cases, trace_sizes

PARITY_FILE = "parity.json"


@dataclass(frozen=True)
class ExportResult:
    files: tuple[Path, ...]  # written artifacts
    parity_file: Path
    report: parity.ParityReport
    problems: tuple[Problem, ...]  # formats not produced, then parity failures

    @property
    def ok(self) -> bool:
        return not self.problems


def export(spec, model: torch.nn.Module, out_dir: Path, config: ExportConfig, weights: dict) -> ExportResult:
    cases = size_cases(spec, config)
    check_memory(spec, cases, config)
    clean_staging(Path(out_dir))
    candidates, problems = write(spec, model, Path(out_dir), config, weights)
    result = parity.check(spec, model, candidates, config, cases, weights)
    parity_file = Path(out_dir) / PARITY_FILE
    report.write_json(result, parity_file)
    return ExportResult(tuple(c.file for c in candidates), parity_file, result,
                        tuple(problems) + tuple(report.problems(result)))


def write(spec, model: torch.nn.Module, out_dir: Path, config: ExportConfig,
          weights: dict) -> tuple[list[parity.Candidate], list[Problem]]:
    """Write each format of `config` into `out_dir`: the files written (with their content hashes), and a
    located problem for each format that could not be written."""
    model.eval()  # dropout off, batch norm on its running statistics
    # ONNX and .pt2 are made from one torch.export program, traced first: it may make default dims static
    config, program = trace(spec, model, config) if {"onnx", "pt2"} & set(config.formats) else (config, None)
    shapes = dynamic_shapes(spec, config)
    record = provenance(spec, weights, config)
    example = random_inputs(spec, trace_sizes(spec, config), seed=0)
    job = Job(model, spec, config, example, shapes, record, program or _once(lambda: _torch_export(model, example, shapes)))

    candidates, failed = [], {}
    for name in config.formats:
        fmt = FORMATS[name]
        path = out_dir / (artifact_stem(spec.name) + fmt.suffix)
        try:
            method, note = fmt.write(job, path)
        except DlspecError:
            raise
        except Exception as e:  # an op the exporter cannot handle, a failed check: name the spec node
            failed.setdefault(id(e), (e, []))[1].append(name)  # ONNX and .pt2 share one torch.export failure
            continue
        hashes = {"sha256": file_sha256(path), "content_sha256": content_hash(name, path)}
        candidates.append(parity.Candidate(name, path, method, functools.partial(fmt.load, path, spec), note, hashes))
    return candidates, [export_problem(names, e, spec, model) for e, names in failed.values()]


def artifact_stem(name: str) -> str:
    """A file name from the spec name: letters, digits, '.', '_' and '-' only."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "model"


_SPECIALISED = re.compile(r"You marked (\w+) as dynamic but your code specialized it")


def trace(spec, model: torch.nn.Module, config: ExportConfig):
    """The torch.export program ONNX and .pt2 are made from, and the config it was made with: a dim exported
    dynamic by default (not named in export.dynamic) that an op specialises to one size (torch's max_pool1d
    with kernel 1 does) is exported at its example size instead, so a default export does not fail on it;
    a dim the spec names still fails, and so does a range torch finds narrower than the spec's (the blame
    gives the dims declaration that fixes it).
    Returns (config, a function giving the program or raising torch's error)."""
    while True:
        example = random_inputs(spec, trace_sizes(spec, config), seed=0)
        try:
            program = _torch_export(model, example, dynamic_shapes(spec, config))
        except Exception as e:  # torch raises several types; the message names the dim
            names = {m.group(1) for m in _SPECIALISED.finditer(str(e))}
            names = (names & set(config.dynamic)) - set(config.chosen)
            if not names:
                return config, _raise(e)
            config = replace(config, dynamic=tuple(n for n in config.dynamic if n not in names),
                             sizes={k: v for k, v in config.sizes.items() if k not in names})
            continue
        return config, _give(program)


def _give(program):
    return lambda: program


def _raise(error: Exception):
    def get():
        raise error
    return get


def _torch_export(model: torch.nn.Module, example: tuple, shapes: dict) -> torch.export.ExportedProgram:
    with quiet():
        # Non-strict: traces the generated forward as Python runs it, so failures point at its lines.
        return torch.export.export(model, example, dynamic_shapes=shapes, strict=False)


def _once(make):
    """`make()` run at most once; its result, or its exception, shared by the ONNX and .pt2 writers."""
    outcome: list = []

    def get():
        if not outcome:
            try:
                outcome.append((True, make()))
            except Exception as e:
                outcome.append((False, e))
        ok, value = outcome[0]
        if not ok:
            raise value
        return value
    return get
