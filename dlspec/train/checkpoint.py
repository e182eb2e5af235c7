"""Checkpoints: written atomically, read without running code, carrying provenance.

A checkpoint is a plain dict of tensors, numbers, strings, lists and dicts, so
`torch.load(weights_only=True)` reads it: loading never unpickles arbitrary
objects. RNG states are kept as tensors and plain numbers for the same reason.

Writes go to a temporary file in the same folder, are flushed to disk, then
renamed over the old file: a process killed at any moment leaves either the
old checkpoint or the new one, never half of one.
"""
from __future__ import annotations

import functools
import hashlib
import io
import random
import sys
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

from dlspec.core.budget import memory_limit
from dlspec.core.errors import DlspecError, gist
from dlspec.core.files import atomic_write_bytes
from dlspec.core.reading import open_checked

FORMAT = 2  # 2: sealed with checksums
CHECKSUMS = "checksums"
FIELDS = "<fields>"  # the checksum entry that covers every value that is not a tensor


def save_atomic(obj: Any, path: Path) -> None:
    """Write a checkpoint or weights dict, sealed with the checksums every load checks."""
    atomic_write_bytes(path, serialise(obj))


def serialise(obj: Any) -> bytes:
    """The bytes of the file save_atomic writes."""
    buffer = io.BytesIO()
    torch.save(seal(obj) if isinstance(obj, dict) else obj, buffer)
    return buffer.getvalue()


def seal(blob: dict) -> dict:
    """`blob` with CHECKSUMS: the sha256 of every tensor by its path (`model.fc1.weight`), and of all the
    other fields together, so a flipped byte anywhere is found when the file is read back."""
    return {**{k: v for k, v in blob.items() if k != CHECKSUMS}, CHECKSUMS: checksums(blob)}


def checksums(blob: dict) -> dict[str, str]:
    tensors: dict[str, str] = {}
    fields = _canonical({k: v for k, v in blob.items() if k != CHECKSUMS}, "", tensors)
    return {**tensors, FIELDS: hashlib.sha256(fields.encode()).hexdigest()}


def _canonical(value: Any, path: str, tensors: dict[str, str]) -> str:
    """A text form of the non-tensor data (tensors stand in by their checksum, recorded in `tensors`)."""
    if isinstance(value, torch.Tensor):
        raw = value.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy()
        digest = hashlib.sha256(f"{value.dtype}{tuple(value.shape)}".encode())
        digest.update(memoryview(raw))
        tensors[path] = digest.hexdigest()
        return f"<tensor {path}>"
    if isinstance(value, dict):
        items = sorted(((repr(k), v, f"{path}.{k}" if path else str(k)) for k, v in value.items()), key=lambda x: x[0])
        return "{" + ",".join(f"{k}:{_canonical(v, p, tensors)}" for k, v, p in items) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_canonical(v, f"{path}.{i}", tensors) for i, v in enumerate(value)) + "]"
    return repr(value)


def load(path: Path, hint: str | None = None) -> dict:
    """Read a checkpoint or weights file; only tensors and plain data are accepted, and a file dlspec wrote
    (it has a `format`) must match its checksums. `hint` replaces the generic hint of a file that cannot be read."""
    path = Path(path)
    obj = read(path, hint)
    if not isinstance(obj, dict) or not isinstance(obj.get("model"), dict):
        raise DlspecError.single(f"{path} is not a dlspec checkpoint or weights file (no 'model' state dict)")
    if "format" in obj:  # written by dlspec: sealed
        check_sealed(obj, path, hint)
    return obj


def read(path: Path, hint: str | None = None) -> Any:
    """Whatever a .pt/.pth/.bin file holds, read with weights_only=True: tensors and plain data, never code."""
    path = Path(path)
    if not path.is_file():
        raise DlspecError.single(f"no checkpoint at {path}", usage=True)
    try:
        with open_checked(path, memory_limit(), what="checkpoints") as handle:
            return torch.load(handle, map_location="cpu", weights_only=True)
    except DlspecError:
        raise
    except Exception as exc:  # pickle errors, truncated files, unsafe globals: all mean "not our file"
        raise DlspecError.single(f"cannot read checkpoint {path}: the file is damaged, truncated or not a "
                                 f"checkpoint ({gist(exc)})", hint=hint or "checkpoints are read with "
                                 "weights_only=True and must hold tensors and plain data") from None


def is_dlspec(obj: Any) -> bool:
    """A checkpoint or weights file dlspec wrote: its state dict has the model's own names."""
    return isinstance(obj, dict) and "format" in obj and isinstance(obj.get("model"), dict)


def check_sealed(obj: dict, path: Path, hint: str | None = None) -> None:
    recorded = obj.get(CHECKSUMS)
    if not isinstance(recorded, dict):
        raise DlspecError.single(f"checkpoint {path} has no checksums: it was damaged, or written by a dlspec "
                                 "older than its format", hint=hint)
    actual = checksums(obj)
    for name in sorted(set(actual) | set(recorded)):
        if actual.get(name) != recorded.get(name):
            what = "its fields (step, state, settings)" if name == FIELDS else f"tensor '{name}'"
            raise DlspecError.single(f"checkpoint {path} is corrupted: {what} does not match the checksum written "
                                     "with it", hint=hint or "the file was changed or damaged after it was written: "
                                     "use another checkpoint")


@functools.cache  # read from the installed packages' metadata: once per process, not per checkpoint
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
