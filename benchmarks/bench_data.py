"""How fast does data reach the model? Image folders with 0, 1 and 2 loader workers; token files memory-mapped
against the same tokens held in memory.

Part 1. An image folder of generated 64x64 RGB PNGs (10 classes) goes through the loader a training run uses
(`dlspec.train.data.Loader`): decode with Pillow, per-example random resized crop, colour jitter and random
erasing, normalisation; batches of 64. One epoch with 0 workers (everything in this process), 1 and 2 worker
processes (persistent), in interleaved rounds; examples/s are medians over rounds.

Part 2. Random windows of 256 + 1 tokens, batches of 64, as nanoGPT draws them: from a memory-mapped
train.bin (`TokenTable`, the `tokens` data kind) and from the same ids as an int64 tensor in memory
(`TextTable`, which indexes one tensor), through the same pipeline, in interleaved rounds; tokens/s.

Usage:  python benchmarks/bench_data.py [--rounds N] [--quick]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # measure this working tree's dlspec, installed or not

from dlspec.train import augment, config  # noqa: E402
from dlspec.train import data as D  # noqa: E402
from dlspec.train.kinds import Kinded  # noqa: E402
from dlspec.train.tables import ImageTable, Shard, TextTable, TokenTable  # noqa: E402

AUGMENT = [{"op": "random_resized_crop"}, {"op": "color_jitter", "brightness": 0.4, "contrast": 0.4, "saturation": 0.4},
           {"op": "random_erasing"}]


def image_folder(root: Path, count: int, size: int = 64) -> ImageTable:
    from PIL import Image
    rng = np.random.default_rng(0)
    files, labels = [], []
    for i in range(count):
        label = i % 10
        folder = root / f"class{label}"
        folder.mkdir(parents=True, exist_ok=True)
        pixels = (rng.random((size, size, 3)) * 64 + label * 19).astype(np.uint8)
        Image.fromarray(pixels, "RGB").save(folder / f"{i:05d}.png")
        files.append(str(folder / f"{i:05d}.png"))
        labels.append(label)
    return ImageTable(tuple(files), torch.tensor(labels), {"label": tuple(f"class{c}" for c in range(10))},
                      {"size": [size, size], "channels": 3, "resize": "shorter_side"})


def _data_config(workers: int, batch: int) -> config.DataConfig:
    doc = {"data": {"dataset": {"kind": "digits"}, "batch_size": batch, "num_workers": workers,
                    "augment": AUGMENT, **({"persistent_workers": True} if workers else {})}}
    return config.parse(doc, lambda path: None).data


def _examples(augmentations: tuple[Kinded, ...]) -> tuple:
    built = augment.build(augmentations, {"image": (3, 64, 64), "label": ()}, "image", lambda p: None)
    return augment.per_example(built, normalized=False), augment.per_example(built, normalized=True)


def images(rounds: int, count: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        table = image_folder(Path(tmp), count)
        stats = {"image": {"mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}}
        loaders = {}
        for workers in (0, 1, 2):
            cfg = _data_config(workers, 64)
            loaders[workers] = D.Loader(D.Pipeline(table, stats, 0, *_examples(cfg.augment)), cfg)
        batches = [list(range(i, min(i + 64, count))) for i in range(0, count, 64)]
        times: dict[int, list[float]] = {w: [] for w in loaders}
        for r in range(rounds + 1):
            order = list(loaders) if r % 2 else list(reversed(loaders))
            for workers in order:
                start = time.perf_counter()
                n = sum(len(b["label"]) for b in loaders[workers](batches, r))
                if r:  # the first round starts the workers and warms the caches
                    times[workers].append(n / (time.perf_counter() - start))
        print(f"image folder: {count} PNGs 64x64 RGB, batches of 64, random resized crop + colour jitter + erasing, "
              f"{rounds} rounds")
        print(f"{'workers':>8} {'examples/s':>11} {'vs 0':>6}")
        base = statistics.median(times[0])
        for workers, rates in times.items():
            print(f"{workers:>8} {statistics.median(rates):>11,.0f} {statistics.median(rates) / base:>6.2f}")


def tokens(rounds: int, count: int, batches: int = 200, block: int = 256, batch: int = 64) -> None:
    ids = (np.random.default_rng(0).integers(0, 50257, size=count)).astype(np.uint16)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "train.bin"
        ids.tofile(path)
        mapped = TokenTable((Shard(str(path), "uint16", 0, 0, count),), block)
        memory = TextTable(torch.from_numpy(ids.astype(np.int64)), block, ())
        cfg = _data_config(0, batch)
        sides = {"memory-mapped": D.Loader(D.Pipeline(mapped, {}, 0), cfg),
                 "in memory": D.Loader(D.Pipeline(memory, {}, 0), cfg)}
        times: dict[str, list[float]] = {k: [] for k in sides}
        for r in range(rounds + 1):
            drawn = D.Drawn(len(mapped), batches * batch, batch, batch, 0, r, 0)
            order = list(sides) if r % 2 else list(reversed(sides))
            for name in order:
                start = time.perf_counter()
                n = sum(b["tokens"].numel() for b in sides[name](drawn, r))
                if r:
                    times[name].append(n / (time.perf_counter() - start))
        print(f"\ntoken windows: {count:,} uint16 ids ({count * 2 / 2**20:.0f} MiB), {batches} batches of {batch} x "
              f"{block} drawn at random, {rounds} rounds")
        print(f"{'source':>14} {'tokens/s':>13} {'vs memory':>10}")
        base = statistics.median(times["in memory"])
        for name, rates in times.items():
            print(f"{name:>14} {statistics.median(rates):>13,.0f} {statistics.median(rates) / base:>10.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="fewer images and tokens (a smoke run)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    images(args.rounds, 256 if args.quick else 2048)
    tokens(args.rounds, 2**20 if args.quick else 2**26)


if __name__ == "__main__":
    main()
