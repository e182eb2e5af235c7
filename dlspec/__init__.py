"""dlspec: declarative, shape-checked model specs compiled to plain PyTorch."""
from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__", "load", "build", "DlspecError"]

from .core.errors import DlspecError  # noqa: E402


def load(path, overrides=()):
    """Read, validate and shape-check a spec; returns a `dlspec.front.spec.Spec`. Raises DlspecError."""
    from .front.spec import load as _load
    return _load(path, overrides)


def build(spec_or_path, overrides=(), seed: int = 0, device=None, weights=None, strict: bool = True):
    """Build the spec's nn.Module (forward takes the spec's inputs in order); `device="meta"` builds it
    without allocating weights. `weights` loads a checkpoint (a .safetensors/.pt/.pth/.bin file, a Hugging
    Face folder, a dlspec checkpoint or run) through the spec's `weights:` mapping, strictly unless
    strict=False: anything missing, unexpected or of another shape is an error. Raises DlspecError."""
    from .backend.builder import build as _build
    return _build(spec_or_path, overrides, seed, device, weights, strict)
