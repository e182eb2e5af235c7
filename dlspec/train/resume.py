"""What a resumed run may change, and how each change takes effect.

`dlspec train --resume RUN --set KEY=VALUE` (or with a spec file that differs from the one the run last
started with) compares the resolved spec with the one the checkpoint was written under. Every value that
differs is either in TAKES_EFFECT, and then applies from the resume step on and is recorded with that
step (in the `resume` event, in run.json, and at the top of spec.yaml), or it is refused with exit 2,
naming the key. The model itself is compared by its hash (rundir.check_same_model, `--force`).

What takes effect, and how:
- `epochs`, `max_steps`: the run's length; the rest of the schedule is stretched (or squeezed) over the
  steps left (schedules.Plan). A length below the steps already done is refused.
- `optimizer.lr`, `optimizer.weight_decay` and their per-group values: each group's base lr and decay; the
  schedule scales the new base from the resume step on.
- how the run is checked, logged, evaluated, checkpointed and computed: `grad_clip`, `nan_guard`,
  `logging`, `checkpoint.every_steps` and `keep`, `evaluation.every_steps`, early stopping's `patience`
  and `min_delta`, `threads`, `device`, `precision`, `compile`, `deterministic`, `distributed`, and the
  loader's `num_workers`, `persistent_workers`, `prefetch_factor`, `pin_memory` and `eval_batch_size`;
- anything outside `training:` and `model:` (`export:`, `weights:`, `name`, `description`).
Everything else (the data, its order and splits, the loss, the optimizer's kind and other options, the
schedule, the metrics, init_from, freeze) defines what the steps already taken meant, so it is refused.
"""
from __future__ import annotations

import fnmatch
from typing import Any

from dlspec.core.errors import DlspecError, Problem

MODEL_KEYS = ("dlspec", "model", "blocks", "include")  # covered by the spec hash
TAKES_EFFECT = (
    "training.epochs", "training.max_steps",
    "training.optimizer.lr", "training.optimizer.weight_decay",
    "training.optimizer.groups.*.lr", "training.optimizer.groups.*.weight_decay",
    "training.grad_clip", "training.grad_clip.*", "training.nan_guard",
    "training.logging", "training.logging.*", "training.checkpoint.every_steps", "training.checkpoint.keep",
    "training.evaluation.every_steps", "training.early_stopping.patience", "training.early_stopping.min_delta",
    "training.threads", "training.device", "training.precision", "training.compile", "training.compile.*",
    "training.deterministic", "training.distributed", "training.distributed.*",
    "training.data.num_workers", "training.data.pin_memory", "training.data.eval_batch_size",
    "training.data.persistent_workers", "training.data.prefetch_factor",
)


def changes(old: Any, new: Any, path: str = "") -> list[dict]:
    """Every value that differs between two resolved specs, as {key, from, to}; lists compare whole."""
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for key in list(old) + [k for k in new if k not in old]:
            sub = f"{path}.{key}" if path else str(key)
            if not path and key in MODEL_KEYS:
                continue
            out.extend(changes(old.get(key), new.get(key), sub))
        return out
    return [] if old == new else [{"key": path, "from": old, "to": new}]


def check(old_document: dict, new_document: dict, done: int, total_steps: int, locate) -> list[dict]:
    """The changes a resume makes; raises a usage error naming every key that may not change."""
    found = changes(old_document, new_document)
    problems = [Problem(f"{c['key']} cannot change on --resume ({c['from']!r} -> {c['to']!r}): the steps already "
                        "taken were trained with the old value", locate(tuple(_parts(c["key"]))), c["key"],
                        hint="resume with the old value, or start a new run from this one's weights with "
                             "`training.init_from: {checkpoint: RUN}`")
                for c in found if not any(fnmatch.fnmatchcase(c["key"], p) for p in TAKES_EFFECT)]
    if total_steps < done:
        problems.append(Problem(f"the run would be {total_steps} steps long, but it has already done {done}", locate(
            ("training", "max_steps" if "max_steps" in new_document.get("training", {}) else "epochs")),
            hint="a resume can extend a run or end it where it is, not take steps back"))
    if problems:
        raise DlspecError(problems, usage=True)
    return found


def _parts(key: str) -> list:
    return [int(p) if p.isdigit() else p for p in key.split(".")]
