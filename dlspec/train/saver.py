"""Checkpoint files written in the background while training goes on.

A checkpoint is serialised on the training thread between optimizer steps: the bytes are the snapshot
(training goes on changing the tensors in place), and pickling holds Python's lock wherever it runs, so
a writer thread doing it would only take turns with the training thread for it. One writer thread then
writes the bytes atomically and durably (checkpoint.save_atomic's file), in the order they were taken: the
fsync releases the lock and costs about as much as the serialisation, so on a small model a dozen of them
in line would be several percent of the run.

The log stays true: a checkpoint's `checkpoint` event is appended only once its file is on disk, by
`drain()`, which the trainer calls before it writes anything else to metrics.jsonl. So the event is the
next line after the snapshot, and the offset a checkpoint records (where a resume cuts the log) is
known when the snapshot is taken. A write that failed raises from `drain()`.
"""
from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Sequence

from dlspec.core.files import atomic_write_bytes
from dlspec.train import checkpoint
from dlspec.train.progress import Reporter


class Saver:
    def __init__(self, reporter: Reporter):
        self.reporter = reporter
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="dlspec-checkpoint")
        self.pending: list[tuple[Future, dict | None, str | None]] = []

    def save(self, blob: dict, paths: Sequence[Path], event: dict | None = None, line: str | None = None,
             then: Callable[[], None] | None = None) -> None:
        """Serialise `blob` now; write it to each of `paths` in the background, then run `then`; log `event`
        (as `line`) once done."""
        self.pending.append((self.pool.submit(_write, checkpoint.serialise(blob), tuple(paths), then), event, line))

    def drain(self, everything: bool = False) -> None:
        """Wait for the writes under way whose event is due (all of them, with `everything`), and log those
        events in order. A write with no event (best.pt) holds up nothing after it: it goes on in the background."""
        due = len(self.pending) if everything else max(
            (i + 1 for i, (_, event, _) in enumerate(self.pending) if event is not None), default=0)
        done, self.pending = self.pending[:due], self.pending[due:]
        for future, event, line in done:
            future.result()
            if event is not None:
                self.reporter.event(event, line)


def _write(data: bytes, paths: tuple[Path, ...], then: Callable[[], None] | None) -> None:
    for path in paths:
        atomic_write_bytes(path, data)
    if then is not None:
        then()
