"""TorchScript: scripted where torch.jit.script accepts the model, traced otherwise.

TorchScript is deprecated upstream (torch.export is its successor); it is
written because deployments still load it, with its deprecation warnings kept
out of the user's terminal (see `quiet`). Scripting keeps any Python control
flow; tracing records one run, which the parity check then proves at every
checked size.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from .files import publish, staging
from .provenance import ARCHIVE_ENTRY, dumps
from .quiet import quiet
from .runners import torch_runner


def write(job, path: Path) -> tuple[str, str]:
    with quiet():
        try:
            module, made = torch.jit.script(job.model), ("scripted", "")
        except Exception as e:  # unsupported Python in forward, source not inspectable, ...
            module = torch.jit.trace(job.model, job.example_inputs, check_trace=False)
            made = ("traced", f"not scriptable: {_reason(e)}")
        with staging(path.parent) as tmp:
            staged = tmp / path.name
            torch.jit.save(module, str(staged), _extra_files={ARCHIVE_ENTRY: dumps(job.record)})
            publish(staged, path)
    return made


def load(path: Path, spec):
    with quiet():
        module = torch.jit.load(str(path), map_location="cpu")
    return torch_runner(module.eval())


def read_record(path: Path) -> dict | None:
    extra = {ARCHIVE_ENTRY: ""}
    with quiet():
        torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
    return json.loads(extra[ARCHIVE_ENTRY]) if extra[ARCHIVE_ENTRY] else None


def _reason(e: Exception) -> str:
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    return (lines[0].rstrip(" :") if lines else type(e).__name__)[:120]  # TorchScript ends some with " :"
