"""torch.export (.pt2): the forward-looking format, loaded with torch.export.load."""
from __future__ import annotations

from pathlib import Path

import torch

from .files import publish, staging, without_stack_traces
from .provenance import ARCHIVE_ENTRY, dumps, read_archive_record
from .quiet import quiet
from .runners import torch_runner


def write(job, path: Path) -> tuple[str, str]:
    program = job.exported()
    with staging(path.parent) as tmp, quiet(), without_stack_traces(program):
        staged = tmp / path.name
        torch.export.save(program, staged, extra_files={ARCHIVE_ENTRY: dumps(job.record)})
        publish(staged, path)
    return "torch.export", ""


def load(path: Path, spec):
    with quiet():
        return torch_runner(torch.export.load(path).module())


def read_record(path: Path) -> dict | None:
    return read_archive_record(path)  # read from the archive's JSON member: torch.export.load would unpickle
