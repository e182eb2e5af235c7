"""Scaling of `dlspec train --nproc 2` against one process, on the CPU, for specs/digits-cnn.yaml.

    python benchmarks/bench_distributed.py [--steps 150] [--rounds 3]

Three variants run side by side, interleaved round by round so that a change in the machine's load hits them
all alike:
  1 process,  batch 32                     the baseline
  2 processes, batch 32 (16 per process)   same global batch: the same training, is it faster?
  2 processes, batch 64 (32 per process)   same per-process batch: twice the examples per step
Throughput is examples per second of training, read from the run's own `train` log events (one every 10
steps; the median window, so the per-epoch evaluation and checkpoint do not count). Each process uses one
thread (the spec's `threads: 1`), so 2 processes want 2 free cores; the table says how many this machine has.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SPEC = ROOT / "specs" / "digits-cnn.yaml"
VARIANTS = (  # (label, processes, global batch)
    ("1 process, batch 32", 1, 32),
    ("2 processes, same global batch 32 (16 each)", 2, 32),
    ("2 processes, same per-process batch 32 (64 global)", 2, 64),
)


def run_once(processes: int, batch: int, steps: int, folder: Path) -> float:
    """Median examples/s over the run's logging windows, skipping the first (start-up)."""
    out = folder / f"p{processes}-b{batch}-{len(list(folder.iterdir()))}"
    command = [sys.executable, "-m", "dlspec", "train", str(SPEC), "--out", str(out), "--progress", "off",
               "--set", f"training.max_steps={steps}", "--set", "training.logging.every_steps=10",
               "--set", f"training.data.batch_size={batch}"]
    if processes > 1:
        command += ["--nproc", str(processes)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"benchmark run failed ({' '.join(command[3:])}):\n{result.stderr}")
    events = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    rates = [e["examples_per_s"] for e in events if e["event"] == "train"][1:]
    return statistics.median(rates)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=150, help="optimizer steps per run")
    parser.add_argument("--rounds", type=int, default=3, help="times each variant runs (the median is shown)")
    args = parser.parse_args()
    results: dict[str, list[float]] = {label: [] for label, _, _ in VARIANTS}
    with tempfile.TemporaryDirectory(prefix="dlspec-bench-") as tmp:
        for round_ in range(args.rounds):
            for label, processes, batch in VARIANTS:
                results[label].append(run_once(processes, batch, args.steps, Path(tmp)))
                print(f"round {round_ + 1}/{args.rounds}  {label}: {results[label][-1]:,.0f} examples/s",
                      file=sys.stderr, flush=True)
    base = statistics.median(results[VARIANTS[0][0]])
    cores = os.cpu_count()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"\ndigits-cnn on the CPU, gloo, {args.steps} steps per run, median of {args.rounds} interleaved rounds")
    print(f"machine: {cores} CPU cores (2 processes x 1 thread need 2 free cores), load average {load:.2f} "
          f"at the end; other work on the machine lowers the 2-process figures")
    header = f"{'variant':<52} {'examples/s':>11} {'vs 1 process':>13} {'efficiency':>11}"
    print(header)
    print("-" * len(header))
    for label, processes, _ in VARIANTS:
        rate = statistics.median(results[label])
        ratio = rate / base
        print(f"{label:<52} {rate:>11,.0f} {ratio:>12.2f}x {ratio / processes:>10.0%}")
    print("efficiency = (examples/s with N processes) / (N x examples/s with 1 process)")


if __name__ == "__main__":
    main()
