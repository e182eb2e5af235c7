"""Run CLI cases in forked children under a memory cap and a time limit, and say how each ended.

A server process imports dlspec and torch once, runs no tensor op (so forking it is safe), and forks one
child per case: the child caps its address space, writes the case's files into a fresh folder, runs
`dlspec.cli.main(argv)` there and exits with its code. The server kills a child past the time limit.
"""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
KINDS = ("clean", "internal", "hang", "memory", "unlocated", "crash")
_LOCATED = re.compile(r"^(.+?):(\d+):(\d+): error: ", re.M)


@dataclass(frozen=True)
class Case:
    name: str
    argv: tuple[str, ...]
    files: dict = field(default_factory=dict)  # relative path -> bytes (or str)


@dataclass(frozen=True)
class Outcome:
    case: Case
    kind: str
    code: int | None
    stderr: str
    seconds: float

    def describe(self) -> str:
        return f"{self.case.name}: {self.kind} (exit {self.code}) dlspec {' '.join(self.case.argv)}\n{self.stderr[-1500:]}"


def classify(case: Case, code: int | None, stderr: str, signalled: int | None, timed_out: bool = False) -> str:
    if timed_out:
        return "hang"
    if signalled == signal.SIGKILL:  # the kernel's OOM killer
        return "memory"
    if signalled is not None:
        return "memory" if "bad_alloc" in stderr or signalled == signal.SIGABRT else "crash"
    if code == 3:
        return "memory" if re.search(r"MemoryError|can't allocate memory|not enough memory|bad_alloc", stderr) \
            else "internal"
    if code not in (0, 1, 2) or "Traceback" in stderr:
        return "crash"
    if code == 0:
        return "clean"
    if "error:" not in stderr:
        return "unlocated"
    # exit 1 is a located message: file:line:col, or an error line naming one of the files involved
    named = [str(p) for p in case.files] + [a for a in case.argv if not a.startswith("-")]
    errors = [line for line in stderr.splitlines() if "error:" in line]
    if code == 1 and not _LOCATED.search(stderr) and not any(n and n in line for line in errors for n in named):
        return "unlocated"
    return "clean"


class Runner:
    """Talks to the fork server; restarts it if it dies."""

    def __init__(self, memory_mb: int = 3072, timeout_s: float = 60.0):
        self.memory_mb, self.timeout_s = memory_mb, timeout_s
        self.process: subprocess.Popen | None = None

    def _start(self) -> None:
        env = {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}
        self.process = subprocess.Popen([sys.executable, "-m", "fuzz.server", str(self.memory_mb), str(self.timeout_s)],
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=ROOT, env=env)
        assert self.process.stdout.readline().strip() == b"ready"

    def run(self, case: Case) -> Outcome:
        if self.process is None or self.process.poll() is not None:
            self._start()
        files = {k: (v if isinstance(v, str) else v.hex()) for k, v in case.files.items()}
        binary = [k for k, v in case.files.items() if not isinstance(v, str)]
        message = json.dumps({"argv": list(case.argv), "files": files, "binary": binary})
        self.process.stdin.write(message.encode() + b"\n")
        self.process.stdin.flush()
        reply = json.loads(self.process.stdout.readline())
        kind = classify(case, reply["code"], reply["stderr"], reply["signal"], reply["timeout"])
        return Outcome(case, kind, reply["code"], reply["stderr"], reply["seconds"])

    def close(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.stdin.close()
            self.process.wait(timeout=30)


def tally(outcomes: list[Outcome]) -> dict[str, int]:
    counts = {"cases": len(outcomes), **{k: 0 for k in KINDS}}
    for o in outcomes:
        counts[o.kind] += 1
    return counts


def now() -> float:
    return time.perf_counter()
