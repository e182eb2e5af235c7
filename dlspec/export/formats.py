"""The export formats: how each is written, loaded in its own runtime, recognised by its file name, and how
its provenance record is read back.

Adding a format is its module (`to_<name>.py`: write, load, read_record), one entry in FORMATS here, and its
name in `schema.FORMATS`, the torch-free list the spec's schema and the command line offer (a test checks
that the two lists agree)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from . import to_onnx, to_pt2, to_torchscript
from .config import ExportConfig

# A loaded artifact: spec inputs by name (in declared order) -> outputs in declared order.
Runner = Callable[[dict[str, torch.Tensor]], tuple[np.ndarray, ...]]


@dataclass(frozen=True)
class Job:
    """Everything a format writer needs, prepared once for all formats."""

    model: torch.nn.Module  # in eval mode
    spec: object
    config: ExportConfig
    example_inputs: tuple[torch.Tensor, ...]  # traced with: dynamic dims at 2 or more
    dynamic_shapes: dict
    record: dict  # provenance written into every file
    exported: Callable[[], torch.export.ExportedProgram]  # torch.export, run at most once


@dataclass(frozen=True)
class Format:
    name: str
    suffix: str
    write: Callable[[Job, Path], tuple[str, str]]  # how it was made ("traced"), a note ("not scriptable: ...")
    load: Callable[[Path, object], Runner]
    read_record: Callable[[Path], dict | None]
    reads: tuple[str, ...] = ()  # other file-name endings `verify` recognises as this format


FORMATS: dict[str, Format] = {
    "onnx": Format("onnx", ".onnx", to_onnx.write, to_onnx.load, to_onnx.read_record),
    "torchscript": Format("torchscript", ".torchscript.pt", to_torchscript.write, to_torchscript.load,
                          to_torchscript.read_record, reads=(".pt", ".ts", ".torchscript")),
    "pt2": Format("pt2", ".pt2", to_pt2.write, to_pt2.load, to_pt2.read_record),
}


def format_of(path: Path) -> Format | None:
    """The format of an existing file, by the end of its name (.onnx, .pt2, .pt / .ts for TorchScript)."""
    return next((f for f in FORMATS.values() if path.name.endswith((f.suffix,) + f.reads)), None)
