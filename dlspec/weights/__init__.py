"""Pretrained weights in and out: read a checkpoint from elsewhere, map its names and tensors onto a built
model's state dict (the spec's `weights:` section), check every shape, load it, report; and save a model's
weights back in the source's layout.

Importing this package is cheap (no torch): the schema reads its rule kinds and presets.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any


def load(model: Any, source: str | Path, *, strict: bool = True, ignore: tuple[str, ...] = ()) -> Any:
    """Load the weights at `source` (a file, a Hugging Face folder, a dlspec checkpoint or run) into a model
    that `dlspec.build` made; returns the `Report`. Strict: anything missing, unexpected or of another shape
    raises a DlspecError listing all of it, at the spec lines of the layers (`ignore`: model and checkpoint
    names left out of that)."""
    from .load import load_into
    return load_into(model, Path(source), strict=strict, ignore=ignore)


def save(model: Any, path: str | Path) -> dict:
    """Write a built model's weights as .safetensors in the layout of the source its spec maps from (the
    `weights:` rules undone, in reverse order); returns {'tensors': n, 'path': ...}."""
    from .load import save_back
    return save_back(model, Path(path))
