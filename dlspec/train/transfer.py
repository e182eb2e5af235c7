"""Transfer learning: start from other weights (a dlspec run, or a checkpoint from elsewhere through the
spec's `weights:` mapping), then freeze and unfreeze by name.

`init_from` is strict: every tensor of the model comes from the checkpoint unless an `ignore` pattern says
it starts fresh (a new head), and every tensor of the checkpoint has a place unless ignored. Its report
says what was loaded, tied and ignored.
"""
from __future__ import annotations

import fnmatch
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch

from dlspec.core.errors import DlspecError
from dlspec.weights.load import Report, load_into


def init_from(model: torch.nn.Module, cfg: Mapping[str, Any], base_dir: Path, locate) -> Report:
    path = base_dir / cfg["checkpoint"]
    ignore = cfg.get("ignore", [])
    report = load_into(model, path, ignore=ignore, loc=locate(("training", "init_from", "checkpoint")))
    for i, pattern in enumerate(ignore):
        if not any(e.note == "init_from ignore" and fnmatch.fnmatchcase(e.name, pattern) for e in report.ignored):
            raise DlspecError.single(f"init_from ignore pattern '{pattern}' matches no tensor of the model or the "
                                     "checkpoint", locate(("training", "init_from", "ignore", i)),
                                     hint="names follow the node ids, e.g. `fc.weight`; `fc.*` matches its weight and bias")
    return report


def freeze(model: torch.nn.Module, frozen: Sequence[str], unfrozen: Sequence[str], locate) -> int:
    """Apply freeze patterns, then unfreeze patterns; returns the number of trainable parameter tensors."""
    names = [name for name, _ in model.named_parameters()]
    for key, patterns in (("freeze", frozen), ("unfreeze", unfrozen)):
        for i, pattern in enumerate(patterns):
            if not any(fnmatch.fnmatchcase(n, pattern) for n in names):
                raise DlspecError.single(f"{key} pattern '{pattern}' matches no parameter", locate(("training", key, i)),
                                         hint="names follow the node ids, e.g. `conv1.weight`; `conv1.*` matches both "
                                              "its weight and bias")
    for name, param in model.named_parameters():
        if _any(name, frozen):
            param.requires_grad_(False)
        if _any(name, unfrozen):
            param.requires_grad_(True)
    return sum(p.requires_grad for p in model.parameters())


def _any(name: str, patterns: Sequence[str]) -> bool:
    return any(fnmatch.fnmatchcase(name, p) for p in patterns)
