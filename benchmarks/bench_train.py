"""`dlspec train`'s loop against a plain PyTorch loop and Lightning's Trainer, on specs/digits-cnn.yaml's recipe.

    python benchmarks/bench_train.py [--rounds 3] [--epochs 12]

One job, three ways: the digits CNN (the same nn.Module, built from the spec), the digits with a seeded 20%
validation split and per-channel standardisation, a random crop with padding 1, batches of 32, label-smoothed
cross-entropy, AdamW (lr 3e-3, weight decay 0.01 on weights, none on biases and norms, fused), a one-cycle
schedule per step, 12 epochs, an evaluation after each epoch keeping the best weights, a checkpoint after
each epoch, the loss logged every 50 steps, one thread:

  dlspec       `dlspec.train.train(spec)`: the CLI's loop, metrics.jsonl, exact-resume checkpoints
  hand-written the loop a careful engineer writes in plain PyTorch (nanoGPT style)
  lightning    a LightningModule and Lightning's Trainer (CSV logger, ModelCheckpoint best + last); skipped
               when Lightning is not installed (`pip install -c constraints.txt -e ".[bench]"`). Lightning
               imports torchmetrics, which imports torchvision when it is installed, and PyPI's torchvision
               wheel does not load beside a CPU build of torch (the dev install has both): there, give it a
               virtual environment of its own, `--lightning-python VENV/bin/python`, made with
               `pip install -c constraints.txt torch==2.13.0 -e ".[bench]"`

Each run is a fresh process; the variants take turns round by round (the order rotating) so that load from
elsewhere on the machine hits them alike. `job` is the whole job once the libraries are imported (loading
the data, building the model, training, the final save), in wall-clock seconds and in the process's CPU
seconds (with one thread, the work done: the figure that other jobs on a shared machine disturb least);
`command` is the whole process, interpreter start-up and imports included. The table shows medians and
their ratio to the hand-written loop, and the least job CPU of any round (the least disturbed by others).
"""
from __future__ import annotations

import argparse
import importlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # measure this working tree's dlspec, installed or not
SPEC = ROOT / "specs" / "digits-cnn.yaml"
LR, DECAY, BATCH, EVAL_BATCH, LOG_EVERY, SEED = 3e-3, 0.01, 32, 256, 50, 0


def digits(seed: int):
    """The split and standardisation dlspec's data section describes: (x_train, y_train, x_val, y_val)."""
    import torch
    from sklearn.datasets import load_digits
    bunch = load_digits()
    x, y = torch.tensor(bunch.images, dtype=torch.float32)[:, None], torch.tensor(bunch.target)
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    n_val = round(len(x) * 0.2)
    (xt, yt), (xv, yv) = (x[order[n_val:]], y[order[n_val:]]), (x[order[:n_val]], y[order[:n_val]])
    mean, std = xt.mean(dim=(0, 2, 3), keepdim=True), xt.std(dim=(0, 2, 3), keepdim=True)
    return (xt - mean) / std, yt, (xv - mean) / std, yv


def random_crop(x, pad: int, generator):
    """Zero-pad by `pad`, then cut each image back to 8x8 at a random offset."""
    import torch
    import torch.nn.functional as F
    n, _, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad))
    dy, dx = (torch.randint(0, 2 * pad + 1, (n,), generator=generator) for _ in range(2))
    rows = (dy[:, None] + torch.arange(h))[:, None, :, None].expand(n, x.shape[1], h, w + 2 * pad)
    cols = (dx[:, None] + torch.arange(w))[:, None, None, :].expand(n, x.shape[1], h, w)
    return padded.gather(2, rows).gather(3, cols)


def model_and_optimizer(epochs: int, steps_per_epoch: int):
    import torch

    import dlspec
    model = dlspec.build(str(SPEC), seed=SEED)
    decay = [p for p in model.parameters() if p.ndim >= 2]
    rest = [p for p in model.parameters() if p.ndim < 2]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": DECAY}, {"params": rest, "weight_decay": 0.0}],
                                  lr=LR, fused=True)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=LR, total_steps=epochs * steps_per_epoch)
    return model, optimizer, schedule


def run_hand(out: Path, epochs: int) -> dict:
    import torch
    import torch.nn.functional as F
    torch.set_num_threads(1)
    torch.manual_seed(SEED)
    xt, yt, xv, yv = digits(SEED)
    steps_per_epoch = -(-len(xt) // BATCH)
    model, optimizer, schedule = model_and_optimizer(epochs, steps_per_epoch)
    started, step, best, accuracy = time.perf_counter(), 0, 0.0, 0.0
    for epoch in range(epochs):
        model.train()
        generator = torch.Generator().manual_seed(SEED + epoch)
        order = torch.randperm(len(xt), generator=generator)
        for i in range(0, len(xt), BATCH):
            index = order[i:i + BATCH]
            logits = model(random_crop(xt[index], 1, generator))
            loss = F.cross_entropy(logits, yt[index], label_smoothing=0.05)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            step += 1
            if step % LOG_EVERY == 0:
                print(f"step {step} loss {loss.item():.4f} lr {schedule.get_last_lr()[0]:.4g}", flush=True)
        model.eval()
        with torch.no_grad():
            logits = torch.cat([model(xv[i:i + EVAL_BATCH]) for i in range(0, len(xv), EVAL_BATCH)])
        accuracy = (logits.argmax(-1) == yv).float().mean().item()
        print(f"epoch {epoch + 1} val_loss {F.cross_entropy(logits, yv).item():.4f} val_accuracy {accuracy:.4f}", flush=True)
        if accuracy > best:
            best = accuracy
            torch.save(model.state_dict(), out / "best.pt")
        torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "schedule": schedule.state_dict(),
                    "epoch": epoch + 1, "rng": torch.get_rng_state()}, out / "last.pt")
    torch.save(model.state_dict(), out / "weights.pt")
    return {"loop": time.perf_counter() - started, "val_accuracy": accuracy}


def run_dlspec(out: Path, epochs: int) -> dict:
    import dlspec
    import dlspec.train
    # no curves.png: neither other loop draws one (it costs a matplotlib import and two drawings, ~1 s)
    summary = dlspec.train.train(dlspec.load(SPEC, [f"training.epochs={epochs}", "training.logging.curves=false"]), out,
                                 progress="off")
    return {"loop": summary["train_seconds"], "val_accuracy": summary["val_accuracy"]}


def run_lightning(out: Path, epochs: int) -> dict:
    import lightning as L
    import torch
    import torch.nn.functional as F
    from lightning.pytorch.callbacks import ModelCheckpoint
    from lightning.pytorch.loggers import CSVLogger
    from torch.utils.data import DataLoader, TensorDataset
    torch.set_num_threads(1)
    L.seed_everything(SEED, verbose=False)
    xt, yt, xv, yv = digits(SEED)
    steps_per_epoch = -(-len(xt) // BATCH)

    class Digits(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.model, self.optimizer, self.schedule = model_and_optimizer(epochs, steps_per_epoch)

        def training_step(self, batch, index):
            x, y = batch
            loss = F.cross_entropy(self.model(random_crop(x, 1, None)), y, label_smoothing=0.05)
            self.log("loss", loss)
            return loss

        def validation_step(self, batch, index):
            x, y = batch
            logits = self.model(x)
            self.log_dict({"val_loss": F.cross_entropy(logits, y), "val_accuracy": (logits.argmax(-1) == y).float().mean()})

        def configure_optimizers(self):
            return {"optimizer": self.optimizer, "lr_scheduler": {"scheduler": self.schedule, "interval": "step"}}

    trainer = L.Trainer(max_epochs=epochs, accelerator="cpu", devices=1, logger=CSVLogger(out), log_every_n_steps=LOG_EVERY,
                        callbacks=[ModelCheckpoint(out, monitor="val_accuracy", mode="max", save_last=True)],
                        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0)
    started = time.perf_counter()
    trainer.fit(Digits(), DataLoader(TensorDataset(xt, yt), batch_size=BATCH, shuffle=True),
                DataLoader(TensorDataset(xv, yv), batch_size=EVAL_BATCH))
    return {"loop": time.perf_counter() - started, "val_accuracy": trainer.callback_metrics["val_accuracy"].item()}


RUNNERS = {"hand-written": run_hand, "dlspec": run_dlspec, "lightning": run_lightning}
# imported before the clock starts: each variant's own library, and what all of them use (the spec's front end
# builds the model; torch.optim imports torch._dynamo at its first step, Lightning at its import): imports are
# no part of a training loop
COMMON = ("torch", "torch._dynamo", "sklearn.datasets", "dlspec.front.spec", "dlspec.backend.builder")
IMPORTS = {"hand-written": COMMON, "dlspec": COMMON + ("dlspec.train.loop",), "lightning": COMMON + ("lightning",)}


def one(variant: str, out: Path, epochs: int) -> dict:
    """A run in this process, timed once its libraries are imported."""
    for module in IMPORTS[variant]:
        importlib.import_module(module)
    wall, cpu = time.perf_counter(), time.process_time()
    result = RUNNERS[variant](out, epochs)
    return {**result, "job": time.perf_counter() - wall, "cpu": time.process_time() - cpu}


def measure(variant: str, epochs: int, folder: Path, python: str) -> dict:
    """One run in a fresh process of `python`: its own figures, and the process's wall time."""
    out = folder / f"{variant}-{len(list(folder.iterdir()))}"
    out.mkdir()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    started = time.perf_counter()
    done = subprocess.run([python, __file__, "--one", variant, "--out", str(out), "--epochs", str(epochs)],
                          cwd=ROOT, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        sys.exit(f"{variant} failed:\n{done.stderr[-3000:]}")
    return {**json.loads(done.stdout.strip().splitlines()[-1]), "command": wall}


COLUMNS = ("job", "cpu", "command")


def table(results: dict[str, list[dict]]) -> str:
    """Medians and their ratios to the hand-written loop's; `best` is the least disturbed round's job CPU."""
    base = {key: statistics.median(r[key] for r in results["hand-written"]) for key in COLUMNS}
    best = min(r["cpu"] for r in results["hand-written"])
    head = "".join(f" {name + ' s':>10} {'ratio':>6}" for name in ("job", "job cpu", "command"))
    lines = [f"{'variant':<13}{head} {'best cpu':>9} {'ratio':>6} {'val acc':>8}   rounds (job cpu s)", "-" * 112]
    for variant, runs in results.items():
        cells = ""
        for key in COLUMNS:
            value = statistics.median(r[key] for r in runs)
            cells += f" {value:>10.2f} {value / base[key]:>6.3f}"
        least = min(r["cpu"] for r in runs)
        rounds = " ".join(f"{r['cpu']:.2f}" for r in runs)
        lines.append(f"{variant:<13}{cells} {least:>9.2f} {least / best:>6.3f} "
                     f"{statistics.median(r['val_accuracy'] for r in runs):>8.4f}   {rounds}")
    return "\n".join(lines)


def _lightning_missing(python: str) -> str:
    """Why Lightning cannot run in `python`, or "" (see the module's docstring)."""
    try:
        done = subprocess.run([python, "-c", "import lightning, dlspec, sklearn"], capture_output=True, text=True)
    except OSError as exc:
        return f"--lightning-python {python} does not run ({exc.strerror})"
    if done.returncode == 0:
        return ""
    if "No module named 'lightning'" in done.stderr:
        return 'Lightning is not installed (pip install -c constraints.txt -e ".[bench]" adds it)'
    return (f"Lightning does not import in {python} ({done.stderr.strip().splitlines()[-1][:160]}); "
            "--lightning-python names an environment where it does")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="runs of each variant (the median is shown)")
    parser.add_argument("--epochs", type=int, default=12, help="epochs per run (the spec's 12)")
    parser.add_argument("--lightning-python", default=sys.executable,
                        help="the interpreter of an environment with Lightning (default: this one)")
    parser.add_argument("--one", choices=tuple(RUNNERS), help=argparse.SUPPRESS)  # a single run, in this process
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one(args.one, args.out, args.epochs)))
        return
    missing = _lightning_missing(args.lightning_python)
    variants = [v for v in RUNNERS if v != "lightning" or not missing]
    if missing:
        print(f"{missing}: comparing dlspec with the hand-written loop only")
    results: dict[str, list[dict]] = {v: [] for v in variants}
    with tempfile.TemporaryDirectory(prefix="dlspec-bench-") as tmp:
        for round_ in range(args.rounds):
            for variant in variants[round_ % len(variants):] + variants[:round_ % len(variants)]:
                python = args.lightning_python if variant == "lightning" else sys.executable
                results[variant].append(measure(variant, args.epochs, Path(tmp), python))
                print(f"round {round_ + 1}: {variant} {results[variant][-1]['job']:.2f} s", file=sys.stderr)
    print(f"digits-cnn recipe, {args.epochs} epochs, 1 thread, {args.rounds} interleaved rounds, torch "
          f"{__import__('torch').__version__}, {os.cpu_count()} cores")
    print(table(results))


if __name__ == "__main__":
    main()
