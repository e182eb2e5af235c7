"""What a run tells the user: metrics.jsonl, a progress bar or plain lines, TensorBoard, the summary table.

Only rank 0 reports; the other ranks get a silent reporter.
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any, Mapping

from dlspec.core.errors import DlspecError


class Reporter:
    def __init__(self, metrics_file: Path | None, total_steps: int, start_step: int, mode: str,
                 tensorboard_dir: Path | None, locate=None):
        self.metrics_file = metrics_file
        self.mode = ("bar" if sys.stderr.isatty() else "lines") if mode == "auto" else mode
        self.bar = None
        if metrics_file is not None and self.mode == "bar":
            from tqdm import tqdm
            self.bar = tqdm(total=total_steps, initial=start_step, unit="step", dynamic_ncols=True, file=sys.stderr)
        self.writer = None
        if metrics_file is not None and tensorboard_dir is not None:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                raise DlspecError.single("logging.tensorboard needs the tensorboard package, which is not installed",
                                         locate(("training", "logging", "tensorboard")) if locate else None,
                                         hint="pip install tensorboard, or set `tensorboard: false`") from None
            self.writer = SummaryWriter(str(tensorboard_dir))

    @property
    def active(self) -> bool:
        return self.metrics_file is not None

    def line(self, record: Mapping[str, Any]) -> str:
        """The metrics.jsonl line of an event, stamped with the time."""
        return json.dumps({**record, "time": round(time.time(), 3)}, sort_keys=False) + "\n"

    def event(self, record: Mapping[str, Any], line: str | None = None) -> None:
        """One JSON line per event (`line`, if already made); the train and eval metrics also go to TensorBoard
        (not the counts of the other events: processes, batch, parameters are no curves)."""
        if not self.active:
            return
        with self.metrics_file.open("a", encoding="utf-8") as handle:
            handle.write(line or self.line(record))
        if self.writer is not None and record["event"] in ("train", "eval"):
            for key, value in record.items():
                if _scalar(value) and key not in ("step", "epoch"):
                    self.writer.add_scalar(f"{record['event']}/{key}", value, record["step"])

    def hparams(self, training: Mapping[str, Any], final: Mapping[str, Any], step: int) -> None:
        """TensorBoard's hparams table: the resolved training section (flattened: `optimizer.lr`) beside the run's
        final metrics (`final/val_accuracy`), so runs compare side by side."""
        if self.writer is None:
            return
        from torch.utils.tensorboard.summary import hparams
        metrics = {f"final/{k}": v for k, v in final.items() if _scalar(v)}
        for summary in hparams({k: v if isinstance(v, (int, float, str, bool)) else json.dumps(v)
                                for k, v in _flatten(training)}, metrics):
            self.writer.file_writer.add_summary(summary)
        for key, value in metrics.items():
            self.writer.add_scalar(key, value, step)

    def progress(self, step: int, values: Mapping[str, float], eta_s: float) -> None:
        if not self.active or self.mode == "off":
            return
        if self.bar is not None:
            self.bar.n = step
            self.bar.set_postfix({k: _short(v) for k, v in values.items()}, refresh=True)
        else:
            text = "  ".join(f"{k} {_short(v)}" for k, v in values.items())
            print(f"step {step}  {text}  eta {_duration(eta_s)}", flush=True)

    def say(self, text: str, always: bool = False) -> None:
        """A line for the user; `progress: off` silences all but the `always` ones (the summary)."""
        if not self.active or (self.mode == "off" and not always):
            return
        if self.bar is not None:
            self.bar.write(text)
        else:
            print(text, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        if self.writer is not None:
            self.writer.close()

    def offset(self) -> int:
        """Bytes of metrics.jsonl written so far: a checkpoint records it so a resume can cut what came after."""
        return self.metrics_file.stat().st_size if self.active and self.metrics_file.exists() else 0


def _scalar(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _flatten(section: Mapping[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    return [pair for key, value in section.items()
            for pair in (_flatten(value, f"{prefix}{key}.") if isinstance(value, Mapping) and value
                         else [(f"{prefix}{key}", value)])]


def summary_table(summary: Mapping[str, Any]) -> str:
    rows = [(key.replace("_", " "), _short(value)) for key, value in summary.items() if not isinstance(value, (dict, list))]
    width = max(len(k) for k, _ in rows)
    rule = "-" * (width + 2 + max(len(v) for _, v in rows))
    return "\n".join([rule, *(f"{k.ljust(width)}  {v}" for k, v in rows), rule])


def _short(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1e4 else f"{value:,.0f}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"  # 29,258 parameters, as `dlspec build` prints them
    return str(value)


def _duration(seconds: float) -> str:
    seconds = max(int(seconds), 0)
    return f"{seconds // 60}:{seconds % 60:02d}"
