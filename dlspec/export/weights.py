"""Which weights an export carries: a training checkpoint, or the initialised ones.

A checkpoint or weights file is a dict with the `model` state dict and the
`spec_hash` of the spec it was trained from; `dlspec.train.rundir` says which file
a run directory stands for. The hash must match the spec being exported, or the
export would silently ship other weights than the user thinks.
"""
from __future__ import annotations

from pathlib import Path

import torch

from dlspec.core.errors import DlspecError
from dlspec.core.files import file_sha256
from dlspec.train import rundir
from dlspec.train.checkpoint import load as read_checkpoint


def initialised(seed: int) -> dict:
    return {"source": "initialised", "seed": seed}


def from_weights(report) -> dict:
    """Weights loaded from elsewhere through the spec's mapping (dlspec.weights)."""
    return {"source": "weights", "path": report.source, "sha256": file_sha256(Path(report.source)),
            "tensors": len(report.loaded)}


def describe(weights: dict) -> str:
    if weights["source"] == "checkpoint":
        return f"weights from checkpoint {weights['path']}"
    if weights["source"] == "weights":
        return f"weights from {weights['path']}"
    return f"no checkpoint given: initialised weights (seed {weights['seed']})"


def resolve_checkpoint(path: str | Path, last: bool = False) -> Path:
    """A checkpoint file, or a run directory's weights (its last checkpoint with `last`)."""
    path = Path(path)
    if last and path.is_file():
        raise DlspecError.single("--last needs a run directory", expected="--checkpoint RUN_DIR --last",
                                 hint=f"{path} is a file: drop --last", usage=True)
    return rundir.weights_path(path, "last" if last else None)


def load_checkpoint(model: torch.nn.Module, spec, path: Path) -> dict:
    """Load a checkpoint's weights into `model` after checking it was trained from `spec`."""
    state = read_checkpoint(path)  # weights_only: reading never runs code from the file
    if state.get("spec_hash") != spec.spec_hash:
        raise DlspecError.single(
            f"checkpoint {path} was trained from a different spec "
            f"(hash {str(state.get('spec_hash'))[:12]}, {spec.path} resolves to {spec.spec_hash[:12]})",
            hint="pass the spec and the same --set overrides the run was trained with")
    missing, unexpected = _key_mismatch(model.state_dict(), state["model"])
    if missing or unexpected:
        raise DlspecError.single(
            f"checkpoint {path} does not fit the model built from {spec.path}",
            expected="the same state-dict keys",
            hint="; ".join(part for part in (
                f"missing: {', '.join(missing[:5])}" if missing else "",
                f"unexpected: {', '.join(unexpected[:5])}" if unexpected else "") if part))
    model.load_state_dict(state["model"])
    return {"source": "checkpoint", "path": str(path), "sha256": file_sha256(path)}


def _key_mismatch(ours: dict, theirs: dict) -> tuple[list[str], list[str]]:
    return sorted(set(ours) - set(theirs)), sorted(set(theirs) - set(ours))


