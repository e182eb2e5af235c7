"""The run directory: created for a new run, reopened (and checked) for a resumed one.

RUN/spec.yaml      the resolved spec (after --set overrides)
RUN/run.json       where the spec came from, so `--resume RUN` alone finds its relative paths
RUN/metrics.jsonl  one JSON object per event
RUN/checkpoints/   last.pt, best.pt, step-N.pt
RUN/weights.pt     the final weights;  RUN/summary.json  the final summary;  RUN/vocab.json  (text data)
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from dlspec.core.errors import DlspecError, shorten
from dlspec.core.files import atomic_write_text, leftover_temporaries
from dlspec.core.reading import read_text
from dlspec.train import checkpoint


@dataclass(frozen=True)
class RunDir:
    path: Path

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    @property
    def last(self) -> Path:
        return self.checkpoints / "last.pt"

    @property
    def best(self) -> Path:
        return self.checkpoints / "best.pt"

    @property
    def metrics(self) -> Path:
        return self.path / "metrics.jsonl"

    @property
    def weights(self) -> Path:
        return self.path / "weights.pt"

    def step_file(self, step: int) -> Path:
        return self.checkpoints / f"step-{step:08d}.pt"

    def write_json(self, name: str, data: Any) -> None:
        atomic_write_text(self.path / name, json.dumps(data, indent=2) + "\n")

    def read_json(self, name: str, expected: str = "a JSON object") -> dict:
        """A JSON object the run wrote; a damaged or edited one is an error naming the file."""
        path = self.path / name
        try:
            value = json.loads(read_text(path, 64 * 2**20, what="run files"))
        except (ValueError, RecursionError) as exc:
            raise DlspecError.single(f"{path} is not valid JSON: {str(exc)[:100]}", expected=expected) from None
        if not isinstance(value, dict):
            raise DlspecError.single(f"{path} holds a {type(value).__name__}, not a JSON object", expected=expected)
        return value

    def write_spec(self, document: dict) -> None:
        text = yaml.safe_dump(document, sort_keys=False, allow_unicode=True)
        atomic_write_text(self.path / "spec.yaml", text)


def new(out: Path | None, name: str) -> RunDir:
    """A fresh directory: --out if given (it must be empty), else runs/NAME, runs/NAME-2, ..."""
    if out is not None:
        if out.exists() and any(out.iterdir()):
            raise DlspecError.single(f"{out} already holds files; a new run will not write over them", usage=True,
                                     hint=f"continue that run with `--resume {out}`, or choose another --out")
        out.mkdir(parents=True, exist_ok=True)
        return RunDir(out)
    base = Path("runs") / name
    path, n = base, 1
    while path.exists():
        n += 1
        path = base.with_name(f"{name}-{n}")
    path.mkdir(parents=True)
    return RunDir(path)


def existing(path: Path) -> RunDir:
    run = RunDir(path)
    if not run.last.is_file():
        raise DlspecError.single(f"{path} has no checkpoint to resume from ({run.last} is missing)", usage=True,
                                 hint="checkpoints are written every checkpoint.every_steps steps and after each epoch")
    for leftover in leftover_temporaries(run.path) + leftover_temporaries(run.checkpoints):
        leftover.unlink()  # a write killed before its rename: the file it was replacing is intact
    return run


def load_last(run: RunDir) -> dict:
    """The checkpoint a resume starts from; a damaged one names the step checkpoints that could replace it."""
    steps = sorted(run.checkpoints.glob("step-*.pt"))
    hint = (f"the newest step checkpoint is {steps[-1]}; copy it over {run.last} to resume from there"
            if steps else "nothing else to resume from: start the run again")
    state = checkpoint.load(run.last, hint=hint)
    if state.get("kind") != "checkpoint":
        raise DlspecError.single(f"{run.last} holds {str(state.get('kind') or 'unknown')[:40]} data, not a training "
                                 "checkpoint (no optimizer, schedule or position)", hint=hint)
    for field, ok, expected in _FIELDS:
        if field not in state or not ok(state[field]):
            raise DlspecError.single(f"{run.last}: field '{field}' is {shorten(repr(state.get(field)), 60)}",
                                     expected=expected, hint=hint)
    return state


def _count(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and 0 <= v < 2**62


# what a resume reads from last.pt, beyond the state dicts torch checks itself
_FIELDS = (
    ("step", _count, "a step count"),
    ("position", lambda v: isinstance(v, list) and len(v) == 2 and all(map(_count, v)), "[epoch, batch]"),
    ("metrics_bytes", _count, "a size in bytes"),
    ("optimizer", lambda v: isinstance(v, dict), "an optimizer state dict"),
    ("schedule", lambda v: isinstance(v, dict), "a schedule state dict"),
    ("scaler", lambda v: v is None or isinstance(v, dict), "a GradScaler state dict or None"),
    ("tracker", lambda v: isinstance(v, dict) and set(v) <= {"best", "best_step", "stop_best", "stop_bad"},
     "the best-metric tracker"),
    ("rng", lambda v: isinstance(v, list) and bool(v) and all(isinstance(r, dict) for r in v), "one RNG state per process"),
)


def check_same_model(state: dict, spec: Any, force: bool) -> list[str]:
    """The changes between the checkpoint's model and the spec's; refused unless `force`."""
    if state.get("spec_hash") == spec.spec_hash:
        return []
    changes = checkpoint.describe_changes(state.get("model_document", {}), checkpoint.model_document(spec.document))
    changes = changes or ["the model's computation differs (a standard block or default changed)"]
    if not force:
        raise DlspecError.single("the model changed since this run was checkpointed:\n    " + "\n    ".join(changes),
                                 hint="resume with the spec the run started with, or pass --force to load the "
                                      "checkpoint into the changed model", usage=True)
    return changes


def cut_metrics(run: RunDir, size: int) -> None:
    """Drop metrics.jsonl lines written after the checkpoint we resume from: they will be written again.

    Only at the end of that checkpoint's own line: a size that lands anywhere else (a damaged or crafted
    checkpoint, an edited file) leaves the file whole, since cutting there would lose lines for good."""
    if not run.metrics.is_file() or run.metrics.stat().st_size <= size:
        return
    with run.metrics.open("r+b") as handle:
        handle.seek(max(size - 4096, 0))
        before = handle.read(size - max(size - 4096, 0))
        if not before.endswith(b"\n") or b'"event": "checkpoint"' not in before.rsplit(b"\n", 2)[-2]:
            return
        handle.truncate(size)
