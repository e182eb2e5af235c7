"""Checkpoints: written atomically, read without running code, carrying provenance.

A checkpoint is a plain dict of tensors, numbers, strings, lists and dicts, so
`torch.load(weights_only=True)` reads it: loading never unpickles arbitrary
objects. RNG states are kept as tensors and plain numbers for the same reason.

Writes go to a temporary file in the same folder, are flushed to disk, then
renamed over the old file: a process killed at any moment leaves either the
old checkpoint or the new one, never half of one.
"""
from __future__ import annotations

import io
import random
import sys
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

from dlspec.core.errors import DlspecError, gist
from dlspec.core.files import atomic_write_bytes

FORMAT = 1


def save_atomic(obj: Any, path: Path) -> None:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def load(path: Path, hint: str | None = None) -> dict:
    """Read a checkpoint or weights file; only tensors and plain data are accepted. `hint` replaces the
    generic hint of a file that cannot be read."""
    if not path.is_file():
        raise DlspecError.single(f"no checkpoint at {path}", usage=True)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle errors, truncated files, unsafe globals: all mean "not our file"
        raise DlspecError.single(f"cannot read checkpoint {path}: the file is damaged, truncated or not a "
                                 f"checkpoint ({gist(exc)})", hint=hint or "checkpoints are read with "
                                 "weights_only=True and must hold tensors and plain data") from None
    if not isinstance(obj, dict) or "model" not in obj:
        raise DlspecError.single(f"{path} is not a dlspec checkpoint or weights file (no 'model' entry)")
    return obj


def versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version
    try:
        dlspec_version = version("dlspec")
    except PackageNotFoundError:
        dlspec_version = "source"
    return {"dlspec": dlspec_version, "torch": str(torch.__version__), "python": sys.version.split()[0]}


def model_document(document: Mapping[str, Any]) -> dict:
    """The part of the resolved spec that defines the model (what spec_hash covers)."""
    return {key: document[key] for key in ("model", "blocks") if key in document}


def describe_changes(old: Any, new: Any, path: str = "") -> list[str]:
    """Readable differences between two plain documents, one line per changed value."""
    if isinstance(old, dict) and isinstance(new, dict):
        lines = []
        for key in list(old) + [k for k in new if k not in old]:
            sub = f"{path}.{key}" if path else str(key)
            if key not in new:
                lines.append(f"{sub}: removed (was {old[key]!r})")
            elif key not in old:
                lines.append(f"{sub}: added ({new[key]!r})")
            else:
                lines.extend(describe_changes(old[key], new[key], sub))
        return lines
    if isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        return [line for i, (a, b) in enumerate(zip(old, new)) for line in describe_changes(a, b, f"{path}[{i}]")]
    return [] if old == new else [f"{path}: {old!r} -> {new!r}"]


def rng_state() -> dict:
    """Every random generator a step can touch, as plain data and tensors."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {
        "python": _plain(random.getstate()),
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "gauss": float(gauss)},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Mapping[str, Any]) -> None:
    random.setstate(_tuples(state["python"]))
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _plain(value: Any) -> Any:
    return [_plain(v) for v in value] if isinstance(value, tuple) else value


def _tuples(value: Any) -> Any:
    return tuple(_tuples(v) for v in value) if isinstance(value, list) else value
