"""Training curves: loss, validation metrics, lr and throughput against step, one panel per metric.

Drawn from a run's metrics.jsonl events with matplotlib's object API and Agg canvas (no display, no pyplot
state), so the Trainer can draw RUN/curves.png on a background thread while it trains (`Refresher`), and
`dlspec plot` can overlay several runs, one colour each.
"""
from __future__ import annotations

import io
import math
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from dlspec.core.errors import DlspecError, did_you_mean
from dlspec.core.files import atomic_write_bytes

FORMATS = ("png", "svg", "pdf")
TRAIN_KEYS = ("loss", "lr", "grad_norm", "examples_per_s", "tokens_per_s", "mfu")
# the panel's title and y-axis label
_TITLES = {"loss": ("loss", "loss"), "lr": ("learning rate", "lr"),
           "grad_norm": ("gradient norm (before clipping)", "L2 norm"),
           "examples_per_s": ("throughput", "examples / s"), "tokens_per_s": ("throughput", "tokens / s"),
           "mfu": ("model FLOPs utilisation", "fraction of peak")}
_LOG_RATIO = 20  # a panel whose positive values span this factor or more is drawn on a log scale


@dataclass(frozen=True)
class Run:
    """One run's curves: its label in the legend and its metrics.jsonl events."""
    label: str
    events: tuple[dict, ...]

    def series(self, key: str) -> tuple[list[int], list[float]]:
        """The steps and values of one metric: train keys from `train` events, val_* from `eval` events."""
        kind = "eval" if key.startswith("val_") else "train"
        points = [(e["step"], e[key]) for e in self.events if e["event"] == kind and number(e.get(key))
                  and number(e.get("step"))]
        return [s for s, _ in points], [float(v) for _, v in points]

    def keys(self) -> list[str]:
        found: dict[str, None] = {}
        for e in self.events:
            if e["event"] in ("train", "eval"):
                found.update((k, None) for k, v in e.items() if number(v) and (k in TRAIN_KEYS or k.startswith("val_")))
        return list(found)

    def best(self) -> tuple[str, int, float] | None:
        """The metric best.pt was kept by, and its step and value, once the run has ended."""
        end = next((e for e in reversed(self.events) if e["event"] == "end"), None)
        if end and isinstance(end.get("best_metric"), str) and number(end.get("best_step")) \
                and number(end.get("best_value")):
            return end["best_metric"], end["best_step"], float(end["best_value"])
        return None

    def resumes(self) -> list[int]:
        return [e["step"] for e in self.events if e["event"] == "resume" and number(e.get("step"))]


def panels(runs: Sequence[Run], metrics: Sequence[str] | None = None) -> list[str]:
    """The panels to draw: the chosen metrics, else every one logged (validation loss shares the loss panel,
    and throughput is tokens/s for a model of tokens)."""
    available = list(dict.fromkeys(k for run in runs for k in run.keys()))
    if metrics:
        unknown = [m for m in metrics if m not in available]
        if unknown:
            raise DlspecError.single(f"no run logged '{unknown[0]}'", usage=True, expected=", ".join(available) or
                                     "a run with metrics", hint=did_you_mean(unknown[0], available))
        return list(dict.fromkeys(metrics))
    order = ["loss", *sorted(k for k in available if k.startswith("val_") and k != "val_loss"), "lr", "grad_norm",
             "tokens_per_s" if "tokens_per_s" in available else "examples_per_s", "mfu"]
    chosen = [k for k in order if k in available]
    if "val_loss" in available and "loss" not in available:
        chosen.insert(0, "val_loss")
    return chosen


def draw(runs: Sequence[Run], out: Path, metrics: Sequence[str] | None = None) -> None:
    """Write the curves of `runs` to `out` (.png, .svg or .pdf), atomically."""
    fmt = out.suffix.lstrip(".").lower()
    if fmt not in FORMATS:
        raise DlspecError.single(f"cannot draw {out}: unknown picture format '{out.suffix}'", usage=True,
                                 expected=", ".join(f".{f}" for f in FORMATS))
    atomic_write_bytes(out, figure_bytes(_figure(runs, panels(runs, metrics)), fmt))


def figure_bytes(figure, fmt: str, dpi: float = 110) -> bytes:
    """A matplotlib figure as a .png, .svg or .pdf that depends on what it shows only: no date, no versions."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format=fmt, dpi=dpi, metadata={"png": {"Software": None}, "svg": {"Date": None, "Creator": None},
                                                          "pdf": {"CreationDate": None, "Producer": None,
                                                                  "Creator": None}}[fmt])
    return buffer.getvalue()


def _figure(runs: Sequence[Run], keys: list[str]):
    from matplotlib.figure import Figure

    n = max(len(keys), 1)
    cols = 2 if n in (2, 4) else min(n, 3)
    rows = math.ceil(n / cols)
    legend = 0.5 if len(runs) > 1 else 0.0  # inches under the panels for the runs' legend
    width, height = 5.2 * cols, 3.5 * rows + 0.5 + legend
    figure = Figure(figsize=(width, height))
    # fixed margins in inches: a layout engine would cost more than the drawing itself
    figure.subplots_adjust(left=0.85 / width, right=1 - 0.25 / width, top=1 - 0.65 / height,
                           bottom=(0.6 + legend) / height, wspace=0.3, hspace=0.45)
    axes = list(figure.subplots(rows, cols, squeeze=False).flat)
    colors = [f"C{i % 10}" for i in range(len(runs))]
    for ax, key in zip(axes, keys):
        _panel(ax, key, runs, colors)
    for ax in axes[len(keys):]:
        ax.set_visible(False)
    if not keys:
        figure.text(0.5, 0.5, "no metrics logged yet", ha="center", va="center", fontsize=14, color="0.4")
    if len(runs) == 1:
        start = next((e for e in runs[0].events if e["event"] in ("start", "resume")), {})
        figure.suptitle(f"{start.get('spec', '')}  ({runs[0].label})".strip(), fontsize=13)
    else:
        specs = {e.get("spec") for run in runs for e in run.events if e["event"] == "start"}
        figure.suptitle(f"{len(runs)} runs" + (f" of {specs.pop()}" if len(specs) == 1 else ""), fontsize=13)
        figure.legend(handles=_run_handles(runs, colors), loc="lower center", bbox_to_anchor=(0.5, 0.08 / height),
                      ncols=min(len(runs) + 2, 6), frameon=False)
    return figure


def _panel(ax, key: str, runs: Sequence[Run], colors: list[str]) -> None:
    title, unit = _TITLES.get(key) or (f"validation {key[4:].replace('_', ' ')}", key)
    shown = [key, "val_loss"] if key == "loss" else [key]
    values: list[float] = []
    for run, color in zip(runs, colors):
        for metric in shown:
            steps, ys = run.series(metric)
            if not steps:
                continue
            values += ys
            if metric.startswith("val_"):  # evaluations: marked points, joined by a dashed line
                ax.plot(steps, ys, color=color, ls="--", lw=1.2, marker="o", ms=4.5, label="validation")
            else:
                ax.plot(steps, ys, color=color, lw=1.6, label="train" if key == "loss" else key)
        best = run.best()
        if best and best[0] in shown:
            ax.plot([best[1]], [best[2]], color=color, marker="*", ms=14, mec="black", mew=0.8, ls="none",
                    label=f"best ({best[2]:.4g} at step {best[1]})", zorder=5)
        for step in run.resumes():
            ax.axvline(step, color=color, ls=":", lw=1, alpha=0.8)
    positive = [v for v in values if v > 0 and math.isfinite(v)]
    # a schedule reads best on a linear scale; a loss or a norm that spans decades, on a log scale
    if key != "lr" and positive and len(positive) == len(values) and max(positive) / min(positive) >= _LOG_RATIO:
        ax.set_yscale("log")
    ax.set_title(title, fontsize=11)
    ax.set_xlabel("step")
    ax.set_ylabel(unit)
    ax.grid(True, alpha=0.3, which="major")
    if not values:
        ax.text(0.5, 0.5, "not logged yet", ha="center", va="center", transform=ax.transAxes, color="0.5")
    if len(runs) == 1 and len(ax.get_lines()) > 1:
        ax.legend(fontsize=8, loc="best")


def _run_handles(runs: Sequence[Run], colors: list[str]) -> list:
    from matplotlib.lines import Line2D
    handles = [Line2D([], [], color=c, lw=2, label=run.label) for run, c in zip(runs, colors)]
    return handles + [Line2D([], [], color="0.3", lw=1.6, label="train"),
                      Line2D([], [], color="0.3", ls="--", marker="o", ms=4.5, label="validation")]


def number(value) -> bool:
    """A finite int or float (not a bool): a value a curve can show."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


class Refresher:
    """RUN/curves.png while a run trains: redrawn on a background thread after an evaluation, unless the last
    drawing is still under way or ended less than nine drawing-times ago (so drawing never takes more than about
    a tenth of the run); drawn once more, and waited for, at the end."""

    def __init__(self, run) -> None:
        self.run = run  # a rundir.RunDir
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="dlspec-curves")
        self.future: Future | None = None
        self.next_at = 0.0

    def refresh(self) -> None:
        if (self.future is None or self.future.done()) and time.perf_counter() >= self.next_at:
            if self.future is not None:
                self.future.result()  # a drawing that failed raises here, on the training thread
            self.future = self.pool.submit(self._draw)

    def finish(self) -> None:
        """The last drawing, with every event of the run, then the thread is gone."""
        try:
            if self.future is not None:
                self.future.result()
            self._draw()
        finally:
            self.pool.shutdown()

    def _draw(self) -> None:
        start = time.perf_counter()
        draw([Run(self.run.path.name, tuple(self.run.events()))], self.run.curves)
        now = time.perf_counter()
        self.next_at = now + 9 * (now - start)
