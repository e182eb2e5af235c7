"""Atomic writes of files that exporters write themselves: each is written into a
scratch folder beside its destination, then moved into place, so a failed export
never clobbers the files a previous run wrote. And what keeps a file free of the
machine it was made on."""
from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

import torch


@contextlib.contextmanager
def staging(directory: Path) -> Iterator[Path]:
    """A scratch folder inside `directory` (same filesystem, so os.replace is atomic), removed afterwards."""
    directory.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".dlspec-", dir=directory))
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def publish(staged: Path, final: Path) -> None:
    """Move a finished file into place, replacing an older one in one step."""
    os.replace(staged, final)


def clean_staging(directory: Path) -> None:
    """Remove scratch folders a killed export left behind (an export runs alone in its output folder)."""
    for leftover in directory.glob(".dlspec-*") if directory.is_dir() else ():
        if leftover.is_dir() and not leftover.is_symlink():
            shutil.rmtree(leftover, ignore_errors=True)


@contextlib.contextmanager
def without_stack_traces(program: torch.export.ExportedProgram) -> Iterator[None]:
    """torch.export keeps each node's Python stack trace, with the absolute paths of dlspec's and torch's files,
    and the ONNX and .pt2 writers copy it into the file: the same model exported from another installation
    would differ, and fail `dlspec verify` there. Left out while a writer runs; put back for blame after."""
    nodes = [n for m in program.graph_module.modules() if isinstance(m, torch.fx.GraphModule) for n in m.graph.nodes]
    saved = [(n, n.meta.pop("stack_trace")) for n in nodes if "stack_trace" in n.meta]
    try:
        yield
    finally:
        for node, trace in saved:
            node.meta["stack_trace"] = trace
