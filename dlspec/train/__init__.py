"""Training runtime: `dlspec train` and `dlspec generate`, driven by a spec's `training:` section.

Importing this package is cheap (no torch): the CLI and the schema import it at start-up.
Use `dlspec.train.train(spec, out)` from Python; it imports the runtime on first call.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any


def train(spec: Any, out: str | Path | None = None, *, resume: str | Path | None = None, force: bool = False,
          progress: str | None = None) -> dict[str, Any]:
    """Train a `dlspec.Spec` (or a spec path) into a run directory; returns the run's summary."""
    import dlspec
    from dlspec.train.loop import train as _train
    if not hasattr(spec, "training"):
        spec = dlspec.load(spec)
    return _train(spec, Path(out) if out is not None else None, resume=Path(resume) if resume else None,
                  force=force, progress_mode=progress)
