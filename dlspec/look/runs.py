"""`dlspec runs [DIR]`: a table of the runs under a folder, to compare them and pick one."""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from dlspec.core.errors import DlspecError, did_you_mean
from dlspec.look.plot import labels
from dlspec.train import rundir
from dlspec.train.config import metric_mode
from dlspec.train.curves import number

COLUMNS = ("name", "params", "steps", "time")  # besides the metrics, what --sort takes


@dataclass(frozen=True)
class Row:
    name: str
    path: str
    spec: str
    spec_hash: str
    params: int | None
    steps: int
    total_steps: int | None
    best_metric: str | None
    best_value: float | None
    best_step: int | None
    wall_s: float
    stopped_by: str | None
    state: str  # finished, resumable (a last.pt to continue from), or not resumable

    @classmethod
    def of(cls, name: str, run: rundir.RunDir, metric: str | None) -> "Row":
        events = run.events()
        first = next((e for e in events if e["event"] == "start"), {})
        end = next((e for e in reversed(events) if e["event"] == "end"), None)
        metric = metric or (end or {}).get("best_metric") or _kept_by(run) or ("val_loss" if _values(events, "val_loss")
                                                                                 else None)
        best = _best(events, metric) if metric else None
        state = "finished" if end else "resumable" if run.last.is_file() else "not resumable"
        return cls(name, str(run.path), str(first.get("spec", "?")), str(first.get("spec_hash", ""))[:12],
                   first.get("parameters"), max((e["step"] for e in events if number(e.get("step"))), default=0),
                   first.get("total_steps"), metric, *(best or (None, None)), _wall(events),
                   (end or {}).get("stopped_by"), state)


def add_arguments(p) -> None:
    p.add_argument("dir", nargs="?", default="runs", metavar="DIR", help="a folder of runs, or one run (default: runs)")
    p.add_argument("--sort", metavar="KEY", help="sort by a metric's best value (val_accuracy: highest first; val_loss: "
                                                 f"lowest first) or by {', '.join(COLUMNS)}")
    p.add_argument("--json", action="store_true", help="print the rows as JSON")


def run(args) -> int:
    root = Path(args.dir)
    runs = rundir.find(root) if root.is_dir() else []
    if not runs:
        raise DlspecError.single(f"no runs in {root}" if root.is_dir() else f"{root} is not a directory", usage=True,
                                 hint="pass the folder `dlspec train` writes runs into (runs/, or a --out's parent)")
    metric = args.sort if args.sort and args.sort not in COLUMNS else None
    rows = [Row.of(label, run, metric) for label, run in zip(labels(runs), runs)]
    if metric and all(r.best_value is None for r in rows):
        logged = sorted({k for run in runs for e in run.events() if e["event"] == "eval" for k in e if k.startswith("val_")})
        raise DlspecError.single(f"no run logged '{metric}'", usage=True, expected=", ".join(list(COLUMNS) + logged),
                                 hint=did_you_mean(metric, list(COLUMNS) + logged))
    rows = _sorted(rows, args.sort)
    if args.json:
        print(json.dumps([asdict(r) for r in rows], indent=2))
    else:
        print(table(rows))
    return 0


def table(rows: list[Row]) -> str:
    head = ("run", "spec", "hash", "params", "steps", "best", "at step", "time", "stopped by", "state")
    cells = [(r.name, r.spec, r.spec_hash[:8], f"{r.params:,}" if r.params is not None else "?",
              f"{r.steps}" + (f"/{r.total_steps}" if r.total_steps and r.state != "finished" else ""),
              f"{r.best_metric} {r.best_value:.4g}" if r.best_value is not None else "-",
              str(r.best_step) if r.best_step is not None else "-", _duration(r.wall_s), r.stopped_by or "-", r.state)
             for r in rows]
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(head)]
    right = {3, 4, 6, 7}
    lines = ["  ".join(c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths))).rstrip()
             for row in [head, tuple("-" * w for w in widths), *cells]]
    return "\n".join(lines)


def _sorted(rows: list[Row], key: str | None) -> list[Row]:
    if key is None or key == "name":
        return sorted(rows, key=lambda r: r.name)
    if key in ("params", "steps"):
        return sorted(rows, key=lambda r: -(getattr(r, key) or 0))
    if key == "time":
        return sorted(rows, key=lambda r: r.wall_s)
    sign = -1 if metric_mode(key) == "max" else 1  # best first
    return sorted(rows, key=lambda r: (r.best_value is None, sign * (r.best_value or 0.0)))


def _kept_by(run: rundir.RunDir) -> str | None:
    """The metric a run still going keeps best.pt by, as its resolved spec says."""
    from dlspec.front.document import load_document
    try:
        training = load_document(run.spec).data.get("training") or {}
    except DlspecError:
        return None
    metric = (training.get("checkpoint") or {}).get("best_metric") if isinstance(training, dict) else None
    return metric if isinstance(metric, str) else None


def _best(events: list[dict], metric: str) -> tuple[float, int] | None:
    """The best value of a validation metric over the run's evaluations, and its step."""
    values = _values(events, metric)
    if not values:
        return None
    pick = max if metric_mode(metric) == "max" else min
    step, value = pick(values, key=lambda sv: sv[1])
    return value, step


def _values(events: list[dict], metric: str) -> list[tuple[int, float]]:
    return [(e["step"], float(e[metric])) for e in events if e["event"] == "eval" and number(e.get(metric))
            and number(e.get("step"))]


def _wall(events: list[dict]) -> float:
    """Seconds spent training: each session (a start or resume) from its first event to its last."""
    total, began, last = 0.0, None, None
    for e in events:
        t = e.get("time")
        if not number(t):
            continue
        if e["event"] in ("start", "resume"):
            total += (last - began) if began is not None else 0.0
            began = t
        last = t
    return total + ((last - began) if began is not None and last is not None else 0.0)


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}" if seconds >= 3600 else \
        f"{seconds // 60}:{seconds % 60:02d}"


