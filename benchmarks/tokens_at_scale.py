"""The tokens data kind at scale: a GPT trains 50 steps on a generated 1 GB token file, within 1.5 GB of memory.

Writes a 1 GiB nanoGPT-style train.bin (uint16: 512 Mi tokens of a learnable sequence, written in chunks),
then runs `dlspec train` on it in a child process (max_steps 50, validation on a held-out tail capped at 64
windows) and reports the child's peak resident memory (its VmHWM, read from /proc when it ends), the first
and last training loss, and the rate. The file is memory-mapped and never read whole: the only pass over it
is the id-range check, which reads it in 4 Mi-token chunks with plain reads (no page stays resident).

Usage:  python benchmarks/tokens_at_scale.py [--gib 1.0] [--keep DIR]      (needs about 1 GiB of free disk)
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parent.parent
LIMIT_MIB = 1536
VOCAB = 251

SPEC = {
    "dlspec": 1, "name": "gpt-1gb",
    "model": {
        "vars": {"vocab": 256, "context": 128, "d": 128, "heads": 4, "layers": 2},
        "dims": {"B": 16, "T": {"example": 128, "min": 1, "max": 128}},
        "inputs": {"tokens": {"shape": ["B", "T"], "dtype": "int64"}},
        "init": {"weight": {"scheme": "normal", "std": 0.02}, "bias": "zeros"},
        "layers": [{"id": "wte", "op": "embedding", "num": "vocab", "dim": "d"},
                   {"id": "wpe", "op": "pos_embedding", "max_len": "context", "dim": "d"},
                   {"id": "h", "op": "gpt_block", "dim": "d", "heads": "heads", "repeat": "layers"},
                   {"id": "ln_f", "op": "layer_norm", "dim": "d"},
                   {"id": "lm_head", "op": "linear", "in": "d", "out": "vocab", "bias": False, "tie": {"weight": "wte"}}],
        "outputs": {"logits": "lm_head"}},
    "training": {
        "seed": 0, "max_steps": 50, "device": "cpu",
        "data": {"dataset": {"kind": "tokens", "path": "train.bin", "block": 128, "eval_windows": 64},
                 "validation": {"fraction": 0.0001}, "batch_size": 16},
        "optimizer": {"kind": "adamw", "lr": 0.003}, "logging": {"every_steps": 10}, "evaluation": {"every_steps": 50}},
}

# run the CLI, then report this process's peak resident memory (VmHWM: of this process alone)
CHILD = ("import re, sys\nfrom dlspec.cli import main\ncode = main(sys.argv[1:])\n"
         "print('VmHWM', re.search(r'VmHWM:\\s+(\\d+)', open('/proc/self/status').read()).group(1), file=sys.stderr)\n"
         "sys.exit(code)\n")


def write_tokens(path: Path, tokens: int) -> None:
    """Runs of t -> t + 3 (mod 251) from a random start every 1,000 tokens: the next id follows from the last."""
    rng = np.random.default_rng(0)
    chunk = 1 << 24  # a multiple of the run length
    with open(path, "wb") as f:
        for start in range(0, tokens, chunk):
            position = np.arange(min(chunk, tokens - start))
            first = rng.integers(VOCAB, size=-(-len(position) // 1000))
            f.write(((first[position // 1000] + 3 * (position % 1000)) % VOCAB).astype(np.uint16).tobytes())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gib", type=float, default=1.0, help="size of the token file in GiB (default 1)")
    parser.add_argument("--keep", type=Path, help="write the file and the run here (default: a temporary folder)")
    args = parser.parse_args()
    folder = args.keep or Path(tempfile.mkdtemp(prefix="dlspec-tokens-"))
    folder.mkdir(parents=True, exist_ok=True)
    data = folder / "train.bin"
    tokens = int(args.gib * 2**30) // 2
    if not data.is_file() or data.stat().st_size != tokens * 2:
        started = time.perf_counter()
        write_tokens(data, tokens)
        print(f"wrote {data}: {tokens:,} tokens, {data.stat().st_size / 2**30:.2f} GiB in "
              f"{time.perf_counter() - started:.0f} s")
    spec = folder / "gpt-1gb.yaml"
    spec.write_text(yaml.safe_dump(SPEC, sort_keys=False))
    run = folder / f"run-{int(time.time())}"
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", CHILD, "train", str(spec), "--out", str(run), "--progress", "lines"],
                          capture_output=True, text=True, cwd=ROOT)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        print(done.stdout, done.stderr, file=sys.stderr)
        return 1
    peak_mib = int(done.stderr.split("VmHWM")[-1].split()[0]) / 1024
    events = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    losses = [e["loss"] for e in events if e["event"] == "train"]
    summary = json.loads((run / "summary.json").read_text())
    print(done.stdout.splitlines()[0])
    print(f"peak resident memory of the training process: {peak_mib:,.0f} MiB (limit {LIMIT_MIB} MiB)")
    print(f"loss {losses[0]:.3f} at step 10 -> {losses[-1]:.3f} at step {summary['steps']}; val_loss "
          f"{summary['val_loss']:.3f}; {summary['tokens_per_s']:,.0f} tokens/s; {wall:.0f} s in all")
    ok = peak_mib < LIMIT_MIB and losses[-1] < losses[0]
    print("pass" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
