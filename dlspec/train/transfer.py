"""Transfer learning: start from another run's weights (all or part), then freeze and unfreeze by name.

`init_from` reports what it did, so a user sees which layers came from the
checkpoint and which start fresh (a replaced head shows up as a shape mismatch).
"""
from __future__ import annotations

import fnmatch
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch

from dlspec.core.errors import DlspecError
from dlspec.train import checkpoint, rundir


def init_from(model: torch.nn.Module, cfg: Mapping[str, Any], base_dir: Path, locate) -> dict[str, list[str]]:
    path = rundir.weights_path(base_dir / cfg["checkpoint"], loc=locate(("training", "init_from", "checkpoint")))
    source = checkpoint.load(path)["model"]
    own = model.state_dict()
    include, exclude = cfg.get("include", ["*"]), cfg.get("exclude", [])
    for key, patterns in (("include", cfg.get("include", [])), ("exclude", exclude)):
        for i, pattern in enumerate(patterns):
            if not any(fnmatch.fnmatchcase(name, pattern) for name in own):
                raise DlspecError.single(f"init_from {key} pattern '{pattern}' matches no parameter of the model",
                                         locate(("training", "init_from", key, i)),
                                         hint="names follow the node ids, e.g. `fc.weight`, `h.0.attn.qkv.bias`")
    report: dict[str, list[str]] = {"loaded": [], "shape_mismatch": [], "missing": [], "unexpected": [],
                                    "skipped": []}
    chosen = {}
    for name, tensor in own.items():
        if not _any(name, include) or _any(name, exclude):
            report["skipped"].append(name)
        elif name not in source:
            report["missing"].append(name)
        elif source[name].shape != tensor.shape:
            report["shape_mismatch"].append(f"{name} {list(source[name].shape)} -> {list(tensor.shape)}")
        else:
            chosen[name] = source[name]
            report["loaded"].append(name)
    report["unexpected"] = [name for name in source if name not in own]
    model.load_state_dict(chosen, strict=False)
    report["source"] = [str(path)]
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
