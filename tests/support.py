"""Shared test helpers: the reduced sizes used for big specs, and running the CLI as a user does."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
SPECS = sorted((ROOT / "specs").glob("*.yaml"))
# the training sections of specs/ (None where a spec has none)
TRAINING = {p: yaml.safe_load(p.read_text()).get("training") for p in SPECS}
# specs the suite trains (on their own data, or on random data): not one that starts from a user's checkpoint
# file (resnet18-finetune), which test_weights.py trains from a file it makes
TRAINABLE = [p for p in SPECS if "init_from" not in (TRAINING[p] or {})]
VALID = sorted((ROOT / "tests" / "specs" / "valid").glob("*.yaml"))
INVALID = sorted((ROOT / "tests" / "specs" / "invalid").glob("*.yaml"))

# Big architectures are checked at reduced sizes through the same --set overrides users have.
REDUCED = {
    # at 32x32 the last stage is 1x1: batch norm then needs two examples a batch to train
    "resnet18": ["model.vars.image=32", "model.dims.B={example: 2, min: 2}"],
    "resnet50": ["model.vars.image=32", "model.dims.B={example: 2, min: 2}"],
    "resnet18-finetune": ["model.vars.image=32"],
    "vit-b-16": ["model.vars.image=32", "model.vars.layers=2"],
    "tokens-gpt": ["model.vars.layers=1"],
    "gpt2-small": ["model.vars.layers=2", "model.vars.vocab=256", "model.vars.context=64", "model.dims.T.max=64"],
    "bert-base": ["model.vars.layers=2", "model.vars.vocab=256"],
    "llama2-7b": ["model.vars.layers=2", "model.vars.vocab=256", "model.vars.dim=64", "model.vars.heads=4",
                  "model.vars.kv_heads=4", "model.vars.hidden=128"],
    "llama3-8b": ["model.vars.layers=2", "model.vars.vocab=256", "model.vars.dim=64", "model.vars.heads=4",
                  "model.vars.kv_heads=2", "model.vars.hidden=128"],
    # 64x64 keeps every map at 2x2 or more; two blocks a stage (the strided one, then an identity one)
    "mobilenet-v2": ["model.vars.image=64"] + [f"model.layers.{i}.repeat=2" for i in (3, 4, 5, 6)],
    "efficientnet-b0": ["model.vars.image=64"] + [f"model.layers.{i}.repeat=2" for i in (4, 5, 6)],
}


def overrides_for(path: Path) -> list[str]:
    return REDUCED.get(path.stem, [])


def run_dlspec(*args: str, cwd: Path | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    """Run the CLI as a user does, in a child process."""
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    return subprocess.run([sys.executable, "-m", "dlspec", *args], capture_output=True, text=True,
                          cwd=cwd or ROOT, env=env, timeout=timeout)
