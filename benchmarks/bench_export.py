"""How fast do the exports run, and what does `dlspec export` cost?

For each example spec in specs/, in one process on CPU:

1. `dlspec.export.export` writes ONNX, TorchScript and .pt2 and runs the parity check; its wall
   time is reported (after one untimed warm-up export), and the part of it spent in the parity
   check, with the largest errors parity found.
2. The exported .onnx file in ONNX Runtime (CPU provider) against the eager PyTorch model
   (eval mode, `torch.inference_mode`), at batch 1 and batch 64, other dims at their example size.
   The two are measured side by side: each round times ONNX Runtime then eager, the next round
   eager then ONNX Runtime, and so on; each time is the median over rounds of the mean over a
   round's calls. The ratio is ONNX Runtime / eager (below 1: ONNX Runtime is faster).

Both runtimes get the same number of threads (--threads, default 1), since other work may share
the machine: interleaving spreads its noise over both columns alike.

The big architectures run at reduced sizes (the overrides are printed), the same way
`dlspec export --set ...` reduces them: at full size one batch-64 forward of ViT-B/16 alone takes
tens of seconds on one core. `--full` runs them as written.

Usage:  python benchmarks/bench_export.py [--quick] [--full] [--threads N] [--json FILE] [SPEC_NAME ...]
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # measure this working tree's dlspec, installed or not

import dlspec  # noqa: E402
from dlspec.backend.inputs import random_inputs  # noqa: E402
from dlspec.export import api, pipeline  # noqa: E402

# Reduced sizes of the big example specs (same structure, fewer layers, smaller vocabulary/images).
_TRANSFORMER = ["model.vars.layers=2"]
REDUCED = {
    "bert-base": _TRANSFORMER + ["model.vars.vocab=8192", "model.dims.T.example=32"],
    "gpt2-small": _TRANSFORMER + ["model.vars.vocab=8192", "model.dims.T.example=32"],
    "vit-b-16": _TRANSFORMER + ["model.vars.image=64"],
    "resnet18": ["model.vars.image=64"],
    "resnet50": ["model.vars.image=64"],
    "char-gpt": ["model.dims.T.example=64"],
}
BATCHES = (1, 64)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("specs", nargs="*", help="spec names (default: every spec in specs/)")
    parser.add_argument("--quick", action="store_true", help="3 rounds instead of 9")
    parser.add_argument("--full", action="store_true", help="no reduced sizes")
    parser.add_argument("--threads", type=int, default=1, help="threads of both runtimes (default 1)")
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    args = parser.parse_args()

    torch.manual_seed(0)
    torch.set_num_threads(args.threads)  # dlspec's ONNX Runtime sessions use as many threads as torch
    rounds = 3 if args.quick else 9
    paths = sorted((ROOT / "specs").glob("*.yaml"))
    if args.specs:
        paths = [p for p in paths if p.stem in args.specs]
    print(f"torch {torch.__version__}, onnxruntime {ort.__version__}, {args.threads} thread(s), "
          f"{rounds} interleaved rounds per measurement\n", flush=True)

    with tempfile.TemporaryDirectory() as out:  # untimed: the first export pays for imports and caches
        api.export(dlspec.load(ROOT / "specs" / "digits-mlp.yaml"), out, formats=["onnx", "torchscript", "pt2"])
    rows = []
    for path in paths:
        overrides = [] if args.full else REDUCED.get(path.stem, [])
        rows.append(bench_spec(path, overrides, rounds, args.threads))
        print(row_text(rows[-1]), flush=True)
    print()
    print(table(rows))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2) + "\n")


def bench_spec(path: Path, overrides: list[str], rounds: int, threads: int) -> dict:
    spec = dlspec.load(path, overrides)
    parity_time = []
    check = pipeline.parity.check

    def timed_check(*a, **kw):  # the parity part of the export's wall time
        start = time.perf_counter()
        try:
            return check(*a, **kw)
        finally:
            parity_time.append(time.perf_counter() - start)

    with tempfile.TemporaryDirectory() as out:
        pipeline.parity.check = timed_check
        try:
            start = time.perf_counter()
            result = api.export(spec, out)
            export_s = time.perf_counter() - start
        finally:
            pipeline.parity.check = check
        if not result.ok:
            raise SystemExit(f"{path.name}: export failed:\n" + "\n".join(p.format() for p in result.problems))
        model = dlspec.build(spec).eval()
        onnx_file = next(a.file for a in result.report.artifacts if a.format == "onnx")
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        session = ort.InferenceSession(str(onnx_file), options, providers=["CPUExecutionProvider"])
        latency = {batch: compare(spec, model, session, batch, rounds) for batch in BATCHES}
    return {
        "spec": path.stem,
        "overrides": overrides,
        "parameters": sum(p.numel() for p in model.parameters()),
        "export_s": export_s,
        "parity_s": sum(parity_time),
        # the largest errors of any artifact and output, against the default tolerance (atol 1e-5, rtol 1e-4)
        "max_abs": max(o.max_abs for a in result.report.artifacts for o in a.outputs),
        "max_rel": max(o.max_rel for a in result.report.artifacts for o in a.outputs),
        "latency_ms": latency,
    }


def compare(spec, model: torch.nn.Module, session: ort.InferenceSession, batch: int, rounds: int) -> dict:
    """Median latency (ms) of ONNX Runtime and eager PyTorch at this batch, measured interleaved."""
    sizes = spec.example_sizes() | ({"B": batch} if "B" in spec.dims else {})
    inputs = random_inputs(spec, sizes, seed=0)
    names = {i.name for i in session.get_inputs()}
    feed = {t.name: x.numpy() for t, x in zip(spec.inputs, inputs) if t.name in names}

    def run_ort():
        session.run(None, feed)

    def run_eager():
        with torch.inference_mode():
            model(*inputs)

    for fn in (run_ort, run_eager):  # warm up: first-call allocations, ORT's lazy init
        fn(), fn()
    calls = max(1, min(50, int(0.1 / max(_once(run_eager), 1e-6))))  # ~0.1 s of eager per round
    times = {"onnxruntime": [], "eager": []}
    for r in range(rounds):
        order = [("onnxruntime", run_ort), ("eager", run_eager)]
        for name, fn in order if r % 2 == 0 else order[::-1]:
            start = time.perf_counter()
            for _ in range(calls):
                fn()
            times[name].append((time.perf_counter() - start) / calls * 1e3)
    ort_ms, eager_ms = statistics.median(times["onnxruntime"]), statistics.median(times["eager"])
    # the spread of the per-round ratios says how much to trust the median one
    ratios = [o / e for o, e in zip(times["onnxruntime"], times["eager"])]
    return {"onnxruntime": ort_ms, "eager": eager_ms, "ratio": ort_ms / eager_ms,
            "ratio_range": [float(np.min(ratios)), float(np.max(ratios))], "calls_per_round": calls}


def _once(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def row_text(row: dict) -> str:
    lat = row["latency_ms"]
    return (f"{row['spec']}: export+parity {row['export_s']:.1f} s (parity {row['parity_s']:.1f} s); "
            + "; ".join(f"batch {b}: ORT {lat[b]['onnxruntime']:.3g} ms, eager {lat[b]['eager']:.3g} ms, "
                        f"ratio {lat[b]['ratio']:.2f}" for b in BATCHES))


def _ms(value: float) -> str:
    return f"{value:.0f}" if value >= 100 else f"{value:.3g}"


def table(rows: list[dict]) -> str:
    header = ("spec", "params", "ORT b1 ms", "eager b1 ms", "ratio b1", "ORT b64 ms", "eager b64 ms", "ratio b64",
              "export+parity s", "of which parity s", "parity max abs", "parity max rel")
    body = []
    for row in rows:
        lat = row["latency_ms"]
        cells = [row["spec"] + (" *" if row["overrides"] else ""), f"{row['parameters'] / 1e6:.2f}M"]
        for b in BATCHES:
            r = lat[b]
            cells += [_ms(r["onnxruntime"]), _ms(r["eager"]),
                      f"{r['ratio']:.2f} ({r['ratio_range'][0]:.2f}-{r['ratio_range'][1]:.2f})"]
        cells += [f"{row['export_s']:.1f}", f"{row['parity_s']:.1f}", f"{row['max_abs']:.1e}", f"{row['max_rel']:.1e}"]
        body.append(cells)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cells) + " |" for cells in body]
    reduced = [f"{row['spec']}: {' '.join(row['overrides'])}" for row in rows if row["overrides"]]
    if reduced:
        lines += ["", "ratio: ONNX Runtime / eager, median over rounds (range of the per-round ratios)",
                  "* reduced with --set: " + "; ".join(reduced)]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
