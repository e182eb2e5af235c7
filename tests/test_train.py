"""`dlspec train` as users run it: the main job, the run directory, checkpoints, exact resume after a
SIGKILL, refusals and bad-input errors, seeds, transfer learning, and the character-level GPT.

Runs are tiny (a small MLP on the bundled digits, a few hundred steps at most) so the whole file takes
seconds; the one full run is the README's main job, `dlspec train specs/digits-cnn.yaml`. The helpers at
the top are shared with test_train_features.py.
"""
from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

import dlspec
import dlspec.train
from dlspec.cli import main

ROOT = Path(__file__).resolve().parent.parent
# Children get one thread each: the machine running the suite may be small and shared.
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore",
       "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}


# ---- helpers --------------------------------------------------------------------------------------------------

def mlp(features: int = 64, hidden: int = 32, classes: int = 10, *, dropout: float = 0.0, field: str = "features",
        tail: tuple = ()) -> dict:
    """A two-layer perceptron `fc1 -> relu [-> dropout] -> head [-> tail]` as a model section; its output `out`
    is the last layer (tail layers need an id)."""
    layers = [{"id": "fc1", "op": "linear", "in": features, "out": hidden}, "relu"]
    if dropout:
        layers.append({"op": "dropout", "p": dropout})
    layers += [{"id": "head", "op": "linear", "in": hidden, "out": classes}, *tail]
    return {"inputs": {field: {"shape": ["B", features], "dtype": "float32"}}, "layers": layers,
            "outputs": {"out": layers[-1]["id"]}}


DIGITS_FLAT = {"dataset": {"kind": "digits", "layout": "flat"}, "batch_size": 32,
               "normalize": {"features": "standard"}}


def write_spec(folder: Path, model: dict, training: dict, name: str = "tiny") -> Path:
    """A spec file; its runs draw no curves.png unless `training` asks (drawing is a third of a tiny run's CPU)."""
    path = folder / f"{name}.yaml"
    training = {**training, "logging": {"curves": False, **training.get("logging", {})}}
    path.write_text(yaml.safe_dump({"dlspec": 1, "name": name, "model": model, "training": training},
                                   sort_keys=False))
    return path


def train(folder: Path, model: dict, training: dict, *, run: str = "run", name: str = "tiny",
          overrides: tuple = ()) -> tuple[dict, Path]:
    """Train in this process through the API, on the CPU unless `training` says otherwise; returns the summary
    and the run directory."""
    spec = write_spec(folder, model, {"threads": 1, "device": "cpu", **training}, name)
    out = folder / run
    summary = dlspec.train.train(dlspec.load(spec, overrides), out, progress="off")
    return summary, out


def cli(*args, cwd: Path = ROOT, timeout: int = 300) -> subprocess.CompletedProcess:
    """`python -m dlspec ...` in a child process, as a user runs it."""
    return subprocess.run([sys.executable, "-m", "dlspec", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, env=ENV, timeout=timeout)


def events(run: Path, kind: str | None = None) -> list[dict]:
    """metrics.jsonl, every line parsed (a line that is not JSON fails the test)."""
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [r for r in records if kind is None or r["event"] == kind]


def load(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def weights(run: Path, file: str = "weights.pt") -> dict[str, torch.Tensor]:
    return load(run / file)["model"]


def assert_same_tensors(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, f"tensors differ: {different}"


def assert_user_error(code: int, err: str, *needles: str, exit_code: int = 1) -> None:
    """One clear error as the CLI prints it: the exit code, every needle, a hint, no traceback."""
    assert code == exit_code, err
    assert "Traceback" not in err and "internal error" not in err, err
    for needle in needles:
        assert needle in err, f"{needle!r} not in:\n{err}"
    assert "hint:" in err, err


# ---- the main job ---------------------------------------------------------------------------------------------

def test_main_job_digits_cnn_reaches_97_percent(tmp_path):
    """The README's command, unchanged: the default spec trains to >= 97% validation accuracy."""
    done = cli("train", "specs/digits-cnn.yaml", "--out", tmp_path / "cnn")
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    run = tmp_path / "cnn"
    summary = json.loads((run / "summary.json").read_text())
    assert summary["spec"] == "digits-cnn" and summary["stopped_by"] == "epochs" and summary["epochs"] == 12
    assert summary["val_accuracy"] >= 0.97, summary
    final_eval = events(run, "eval")[-1]
    assert final_eval["step"] == summary["steps"] and final_eval["val_accuracy"] == summary["val_accuracy"]
    # not a terminal: plain progress lines and the summary table, no bar redraws
    lines = done.stdout.splitlines()
    assert lines[0].startswith(f"training digits-cnn: 29,258 parameters on {summary['device']}, 1 thread (a small model: "
                               "0.23 GFLOP a step), 1438 train / 359 validation")
    assert any(line.startswith("step 50  loss ") and " lr " in line and " eta " in line for line in lines)
    assert "\r" not in done.stdout + done.stderr
    assert any(line.startswith("val accuracy") for line in lines) and lines[-1].startswith("---")
    # its curves, drawn at the end with every evaluation (test_look checks pictures as pictures)
    assert (run / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # the best weights are kept by validation accuracy
    best = load(run / "checkpoints" / "best.pt")
    assert best["metric"] == "val_accuracy" and best["value"] == max(e["val_accuracy"] for e in events(run, "eval"))


def test_digits_mlp_reaches_97_percent(tmp_path):
    summary = dlspec.train.train(ROOT / "specs" / "digits-mlp.yaml", tmp_path / "mlp", progress="off")
    assert summary["val_accuracy"] >= 0.97 and summary["val_top3_accuracy"] >= 0.99, summary


# ---- exact resume ---------------------------------------------------------------------------------------------

# Everything a resume must restore: dropout (global RNG), noise augmentation (per-batch seeds), shuffled epochs,
# accumulation groups, AdamW moments, warm-up then cosine, evaluation, best tracking and step checkpoints.
RESUME_TRAINING = {
    "seed": 3, "max_steps": 300, "device": "cpu",
    "data": {**DIGITS_FLAT, "batch_size": 16, "validation": {"fraction": 0.2}, "augment": [{"op": "noise", "std": 0.05}]},
    "accumulate": 2,
    "optimizer": {"kind": "adamw", "lr": 0.003},
    "scheduler": {"kind": "cosine", "warmup_steps": 30},
    "evaluation": {"every_steps": 50},
    "checkpoint": {"every_steps": 10, "keep": 3, "best_metric": "val_accuracy"},
    "logging": {"every_steps": 25},
}


def _wait_for_checkpoint(child: subprocess.Popen, run: Path, step: int, timeout: float = 240.0) -> None:
    """Until a checkpoint of `step` or later is on disk (or the child has ended)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if child.poll() is not None:
            return
        if any(int(p.stem.split("-")[1]) >= step for p in (run / "checkpoints").glob("step-*.pt")):
            return
        time.sleep(0.01)
    child.kill()
    pytest.fail(f"no checkpoint of step {step} within {timeout} s")


def kill_after_checkpoint(spec: Path, run: Path, step: int) -> int:
    """Train `spec` into `run` in a child process, SIGKILL it once a checkpoint of `step` or later is on disk;
    the step of its last.pt."""
    child = subprocess.Popen([sys.executable, "-m", "dlspec", "train", str(spec), "--out", str(run)],
                             cwd=ROOT, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        _wait_for_checkpoint(child, run, step)
        os.kill(child.pid, signal.SIGKILL)
    finally:
        if child.poll() is None:
            child.kill()
        _, err = child.communicate(timeout=60)
    assert child.returncode in (-signal.SIGKILL, 0), err.decode()
    checkpointed = load(run / "checkpoints" / "last.pt")["step"]
    assert checkpointed >= step
    return checkpointed


def test_kill_and_resume_is_bit_exact(tmp_path):
    """SIGKILL a training child after a checkpoint, resume it, and get the uninterrupted run's exact weights."""
    spec = write_spec(tmp_path, mlp(dropout=0.2), {"threads": 1, **RESUME_TRAINING}, "resume")
    killed = tmp_path / "killed"
    checkpointed = kill_after_checkpoint(spec, killed, 20)

    # The uninterrupted run, in this process.
    reference = dlspec.train.train(dlspec.load(spec), tmp_path / "reference", progress="off")
    assert reference["steps"] == 300

    done = cli("train", "--resume", killed)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("resuming resume: ")
    assert_same_tensors(weights(killed), weights(tmp_path / "reference"))
    assert_same_tensors(weights(killed, "checkpoints/best.pt"), weights(tmp_path / "reference", "checkpoints/best.pt"))
    # metrics.jsonl was cut back to the checkpoint: one event per step as if the run had never stopped
    resumed = events(killed)
    assert [e["event"] for e in resumed].count("resume") == 1
    resume_at = next(e for e in resumed if e["event"] == "resume")["step"]
    assert resume_at == checkpointed
    trains = [e["step"] for e in resumed if e["event"] == "train"]
    assert trains == [e["step"] for e in events(tmp_path / "reference", "train")]
    evals = [(e["step"], e["val_loss"]) for e in resumed if e["event"] == "eval"]
    assert evals == [(e["step"], e["val_loss"]) for e in events(tmp_path / "reference", "eval")]
    summary = json.loads((killed / "summary.json").read_text())
    assert summary["val_accuracy"] == reference["val_accuracy"] and summary["steps"] == 300


def _model_with_vars(hidden: int = 16, drop: float = 0.1) -> dict:
    return {"vars": {"hidden": hidden, "drop": drop},
            "inputs": {"features": {"shape": ["B", 64], "dtype": "float32"}},
            "layers": [{"id": "fc1", "op": "linear", "in": 64, "out": "hidden"}, "relu",
                       {"op": "dropout", "p": "drop"}, {"id": "head", "op": "linear", "in": "hidden", "out": 10}],
            "outputs": {"logits": "head"}}


SHORT = {"max_steps": 20, "data": {**DIGITS_FLAT, "validation": {"fraction": 0.2}},
         "checkpoint": {"every_steps": 10}, "evaluation": {"every_steps": 10}}


def test_resume_with_a_changed_model_is_refused_unless_forced(tmp_path, capsys):
    _, run = train(tmp_path, _model_with_vars(), SHORT)
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    code = main(["train", "--resume", str(run), "--set", "model.vars.drop=0.3", "--set", "training.max_steps=30"])
    err = capsys.readouterr().err
    assert_user_error(code, err, "the model changed since this run was checkpointed", "model.vars.drop: 0.1 -> 0.3",
                      "--force", exit_code=2)
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before  # nothing touched
    # a changed shape is named too, and --force cannot load parameters that no longer fit
    code = main(["train", "--resume", str(run), "--set", "model.vars.hidden=24", "--force"])
    assert_user_error(code, capsys.readouterr().err, f"cannot load {run / 'checkpoints' / 'last.pt'} into this model")
    # --force with a change the parameters survive: the run goes on, and the log records what changed
    code = main(["train", "--resume", str(run), "--set", "model.vars.drop=0.3", "--set", "training.max_steps=30",
                 "--force", "--progress", "off"])
    assert code == 0, capsys.readouterr().err
    resume = events(run, "resume")[0]
    assert resume["step"] == 20 and resume["model_changes"] == ["model.vars.drop: 0.1 -> 0.3"]
    assert json.loads((run / "summary.json").read_text())["steps"] == 30
    assert yaml.safe_load((run / "spec.yaml").read_text())["model"]["vars"]["drop"] == 0.3


def test_corrupt_checkpoint_is_one_clear_error_and_destroys_nothing(tmp_path, capsys):
    _, run = train(tmp_path, _model_with_vars(), SHORT)
    last = run / "checkpoints" / "last.pt"
    last.write_bytes(last.read_bytes()[: last.stat().st_size // 2])  # as a full disk or a copy cut short leaves it
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    done = cli("train", "--resume", run)
    assert_user_error(done.returncode, done.stderr, f"error: cannot read checkpoint {last}: the file is damaged",
                      f"hint: the newest step checkpoint is {run / 'checkpoints' / 'step-00000020.pt'}")
    assert done.stderr.count("error:") == 1
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before
    # an empty file (a crash of another tool, not ours: our writes are atomic) reads the same way
    last.write_bytes(b"")
    code = main(["train", "--resume", str(run)])
    assert code == 1
    # a weights file is not something a run can continue from
    last.write_bytes((run / "weights.pt").read_bytes())
    code = main(["train", "--resume", str(run)])
    assert_user_error(code, capsys.readouterr().err, "holds weights data, not a training checkpoint")
    # a directory that is not a run is a usage error
    code = main(["train", "--resume", str(tmp_path / "nowhere")])
    err = capsys.readouterr().err
    assert code == 2 and "is not a run directory" in err and "Traceback" not in err


# ---- the run directory and checkpoints --------------------------------------------------------------------------

def test_run_directory_layout(tmp_path, capsys):
    spec = write_spec(tmp_path, _model_with_vars(), {"threads": 1, **SHORT, "max_steps": 40,
                                                     "checkpoint": {"every_steps": 10, "keep": 2}})
    run = tmp_path / "run"
    assert main(["train", str(spec), "--out", str(run), "--set", "model.vars.hidden=12"]) == 0
    out = capsys.readouterr().out
    assert sorted(p.relative_to(run).as_posix() for p in run.rglob("*") if p.is_file()) == [
        "checkpoints/best.pt", "checkpoints/last.pt", "checkpoints/step-00000030.pt", "checkpoints/step-00000040.pt",
        "metrics.jsonl", "run.json", "spec.yaml", "summary.json", "weights.pt"]
    # the resolved spec: the override applied, and it loads and builds as it is
    resolved = dlspec.load(run / "spec.yaml")
    assert resolved.document["model"]["vars"]["hidden"] == 12 and resolved.spec_hash == load(run / "weights.pt")["spec_hash"]
    assert weights(run)["fc1.weight"].shape == (12, 64)
    # metrics.jsonl: one JSON object per event, in order
    kinds = [e["event"] for e in events(run)]
    assert kinds[0] == "start" and kinds[-1] == "end"
    assert [e["step"] for e in events(run, "checkpoint")] == [10, 20, 30, 40]
    assert [e["step"] for e in events(run, "eval")] == [10, 20, 30, 40]
    train_events = events(run, "train")
    assert train_events and {"loss", "lr", "grad_norm", "examples_per_s"} <= set(train_events[0])
    summary = json.loads((run / "summary.json").read_text())
    assert summary == {k: v for k, v in events(run, "end")[0].items() if k not in ("event", "step", "time")}
    assert summary["steps"] == 40 and summary["stopped_by"] == "max_steps"
    assert json.loads((run / "run.json").read_text())["spec"] == str(spec.resolve())
    # the summary table closes the output
    assert "stopped by" in out and out.rstrip().endswith("-" * len(out.rstrip().splitlines()[-1]))


def test_checkpoint_contents_load_without_running_code(tmp_path):
    _, run = train(tmp_path, _model_with_vars(), {**SHORT, "optimizer": {"kind": "sgd", "lr": 0.05, "momentum": 0.9},
                                                 "scheduler": {"kind": "step", "interval": "step", "step_size": 5}})
    state = load(run / "checkpoints" / "last.pt")  # weights_only=True: plain data and tensors only
    assert state["kind"] == "checkpoint" and state["format"] == 2 and state["step"] == 20
    assert set(state["model"]) == {"fc1.weight", "fc1.bias", "head.weight", "head.bias"}
    assert torch.equal(state["model"]["head.weight"], weights(run)["head.weight"])
    assert all("momentum_buffer" in s for s in state["optimizer"]["state"].values())
    assert state["schedule"]["plan"] == {"spans": [[0, 0.0, 20, 20.0]], "length": 20.0}  # as planned: no resume
    rng = state["rng"][0]
    assert {"python", "numpy", "torch"} <= set(rng) and rng["torch"].dtype == torch.uint8
    position = state["state"]
    assert (position["epoch"], position["batch"]) == (0, 20)  # 45 batches of 32 an epoch: the next batch is number 20
    assert position["best_step"] in (10, 20) and position["best"] is not None
    assert state["spec_hash"] == dlspec.load(run / "spec.yaml").spec_hash
    assert state["versions"]["torch"] == str(torch.__version__) and "dlspec" in state["versions"]
    assert state["spec_document"]["training"]["max_steps"] == 20
    assert state["metrics_bytes"] <= (run / "metrics.jsonl").stat().st_size


def test_one_process_writes_the_state_torch_distributed_checkpoint_gives():
    """One process names its optimizer state itself (torch.distributed.checkpoint took 3.5 ms a checkpoint, and
    ~50 ms to import): it must be what get_state_dict writes, so runs move between strategies. Tied weights,
    two groups (decay and none), a frozen parameter the optimizer does not hold."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict
    from torch.utils._pytree import tree_flatten

    from dlspec.train import distributed
    from dlspec.train.config import parse
    from dlspec.train.optim import build
    spec = dlspec.load(ROOT / "specs" / "char-gpt.yaml")
    model = dlspec.build(spec, seed=0)
    model.get_parameter("ln_f.bias").requires_grad_(False)
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    optimizer = build(trainable, parse(spec.training, spec.locate).optimizer, torch.device("cpu"), spec.locate)
    assert len(optimizer.param_groups) == 2
    model(torch.randint(0, 128, (2, 16))).square().mean().backward()
    optimizer.step()
    ours = distributed.full_state(model, optimizer, distributed.World())
    theirs = get_state_dict(model, optimizer, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    (ours_leaves, ours_tree), (their_leaves, their_tree) = tree_flatten(ours), tree_flatten(theirs)
    assert ours_tree == their_tree and len(ours_leaves) == len(their_leaves)
    for a, b in zip(ours_leaves, their_leaves):
        assert torch.equal(a, b) if isinstance(a, torch.Tensor) else a == b
    assert distributed.model_state(model, distributed.World()).keys() == theirs[0].keys()


# ---- length and seeds -----------------------------------------------------------------------------------------

def test_epochs_or_max_steps(tmp_path):
    data = {**DIGITS_FLAT, "batch_size": 100, "validation": {"fraction": 0.2}}  # 1438 train: 15 batches an epoch
    summary, run = train(tmp_path, mlp(), {"epochs": 2, "data": data}, run="epochs")
    assert (summary["steps"], summary["epochs"], summary["stopped_by"]) == (30, 2.0, "epochs")
    assert [e["step"] for e in events(run, "eval")] == [15, 30]  # evaluation after each epoch by default
    summary, _ = train(tmp_path, mlp(), {"epochs": 5, "max_steps": 20, "data": data}, run="steps")
    assert (summary["steps"], summary["stopped_by"]) == (20, "max_steps")
    data["drop_last"] = True
    summary, _ = train(tmp_path, mlp(), {"epochs": 2, "data": data}, run="drop_last")
    assert summary["steps"] == 28


def test_same_seed_same_weights(tmp_path):
    training = {"seed": 7, "max_steps": 30, "data": {**DIGITS_FLAT, "augment": [{"op": "noise", "std": 0.1}]}}
    _, a = train(tmp_path, mlp(dropout=0.3), training, run="a")
    _, b = train(tmp_path, mlp(dropout=0.3), training, run="b")
    _, c = train(tmp_path, mlp(dropout=0.3), {**training, "seed": 8}, run="c")
    assert_same_tensors(weights(a), weights(b))
    assert not torch.equal(weights(a)["fc1.weight"], weights(c)["fc1.weight"])
    # deterministic: true gives the same result on CPU
    _, d = train(tmp_path, mlp(dropout=0.3), {**training, "deterministic": True}, run="d")
    torch.use_deterministic_algorithms(False)
    assert_same_tensors(weights(a), weights(d))


# ---- transfer learning ------------------------------------------------------------------------------------------

def test_init_from_a_checkpoint_then_freeze_and_unfreeze(tmp_path, capsys):
    _, source = train(tmp_path, mlp(hidden=32), {"max_steps": 20, "data": DIGITS_FLAT}, run="source")
    learned = weights(source)
    # a new head for 3 classes: fc1 comes from the source run and stays frozen, the head starts fresh
    training = {"max_steps": 10, "data": {**DIGITS_FLAT, "validation": {"fraction": 0.2}},
                "optimizer": {"kind": "adamw", "lr": 0.01}, "init_from": {"checkpoint": "source", "ignore": ["head.*"]},
                "freeze": ["*"], "unfreeze": ["head.*"]}
    model = mlp(hidden=32, classes=10)
    model["layers"][-1]["out"] = 3
    # digits labels go to 9, so keep the first three classes through a csv file instead of touching the data
    import sklearn.datasets
    bunch = sklearn.datasets.load_digits()
    keep = bunch.target < 3
    rows = ["label," + ",".join(f"p{i}" for i in range(64))]
    rows += [f"{y}," + ",".join(str(v) for v in x) for x, y in zip(bunch.data[keep], bunch.target[keep])]
    (tmp_path / "three.csv").write_text("\n".join(rows) + "\n")
    training["data"] = {"dataset": {"kind": "csv", "path": "three.csv",
                                    "columns": {"features": [f"p{i}" for i in range(64)], "label": "label"}},
                        "batch_size": 32, "validation": {"fraction": 0.2}, "normalize": {"features": "standard"}}
    spec = write_spec(tmp_path, model, {"threads": 1, **training, "max_steps": 30}, "finetune")
    assert main(["train", str(spec), "--out", str(tmp_path / "finetune")]) == 0
    out = capsys.readouterr().out
    report = events(tmp_path / "finetune", "init_from")[0]
    assert [e["name"] for e in report["loaded"]] == ["fc1.weight", "fc1.bias"]
    # the model's new head and the checkpoint's old one are both left out
    assert sorted((e["name"], e.get("shape") or e.get("checkpoint_shape")) for e in report["ignored"]) == [
        ("head.bias", [3]), ("head.bias", [10]), ("head.weight", [3, 32]), ("head.weight", [10, 32])]
    assert report["missing"] == report["unexpected"] == report["mismatched"] == []
    assert "init_from: weights from" in out and "2 tensors loaded, 4 ignored" in out
    start = events(tmp_path / "finetune", "start")[0]
    assert start["trainable_parameters"] == 3 * 32 + 3
    tuned = weights(tmp_path / "finetune")
    assert torch.equal(tuned["fc1.weight"], learned["fc1.weight"]) and torch.equal(tuned["fc1.bias"], learned["fc1.bias"])
    assert tuned["head.weight"].shape == (3, 32)
    assert json.loads((tmp_path / "finetune" / "summary.json").read_text())["val_accuracy"] > 0.8
    # strict otherwise: the new head without `ignore` is an error at its spec line, before any step
    del training["init_from"]["ignore"]
    spec = write_spec(tmp_path, model, {"threads": 1, **training, "max_steps": 1}, "strict")
    code = main(["train", str(spec), "--out", str(tmp_path / "strict")])
    assert_user_error(code, capsys.readouterr().err, "head.weight: the checkpoint's head.weight is [10, 32], the "
                      "model's is [3, 32]", f"{spec}:")
    assert not (tmp_path / "strict").exists()
    # an ignore pattern that matches nothing, and a freeze pattern that matches nothing, are errors at their line
    spec = write_spec(tmp_path, mlp(hidden=32), {"threads": 1, "max_steps": 1, "data": DIGITS_FLAT,
                                                 "init_from": {"checkpoint": "source", "ignore": ["fc9.*"]}}, "part")
    code = main(["train", str(spec), "--out", str(tmp_path / "part")])
    assert_user_error(code, capsys.readouterr().err, "init_from ignore pattern 'fc9.*' matches no tensor", f"{spec}:")
    spec = write_spec(tmp_path, mlp(hidden=32), {"threads": 1, "max_steps": 1, "data": DIGITS_FLAT,
                                                 "freeze": ["conv1.*"]}, "nomatch")
    code = main(["train", str(spec), "--out", str(tmp_path / "nomatch")])
    assert_user_error(code, capsys.readouterr().err, "freeze pattern 'conv1.*' matches no parameter", f"{spec}:")


# ---- bad input: one clear error before training starts ------------------------------------------------------------

BAD_SPEC = """\
dlspec: 1
name: bad
model:
  inputs:
    features: {shape: [B, 4], dtype: float32}
  layers:
    - {id: fc1, op: linear, in: 4, out: 8}
    - relu
    - {id: head, op: linear, in: 8, out: 3}
  outputs: {logits: head}
training:
  seed: 0
  data:
    dataset: {kind: npz, path: data.npz}
    batch_size: 8
  optimizer: {kind: sgd, lr: 0.1, momentum: 0.9}
"""


def _where(text: str, needle: str, nth_line_match: str | None = None) -> str:
    """line:col (1-based) of `needle` in the first line containing `nth_line_match or needle`."""
    for number, line in enumerate(text.splitlines(), start=1):
        if (nth_line_match or needle) in line:
            return f"{number}:{line.index(needle) + 1}"
    raise AssertionError(needle)


def _npz(path: Path, features: torch.Tensor | None = None, label: torch.Tensor | None = None) -> None:
    import numpy as np
    g = torch.Generator().manual_seed(0)
    features = torch.randn(40, 4, generator=g) if features is None else features
    label = torch.randint(0, 3, (40,), generator=g) if label is None else label
    np.savez(path, features=features.numpy(), label=label.numpy())


BAD_INPUTS = {
    # case: (how the spec changes, the data written, the message, where it points)
    "missing data file": (None, None, "data file 'data.npz' does not exist", ("data.npz", None)),
    "wrong shape": (None, {"features": torch.randn(40, 5)},
                    "data field 'features' has examples of shape [5], but input 'features' is declared ['B', 4]",
                    ("{shape", "features: {shape")),
    "wrong dtype": (None, {"features": torch.randint(0, 9, (40, 4))},
                    "data field 'features' has dtype int64, but input 'features' is declared float32",
                    ("{shape", "features: {shape")),
    "label out of range": (None, {"label": torch.arange(40) % 5},
                           "label out of range: field 'label' holds labels 0..4, but output 'logits' has 3 classes",
                           ("{kind: npz", "dataset:")),
    "unknown optimizer option": (("momentum: 0.9}", "momentum: 0.9, eps: 1.0e-8}"), {},
                                 "'eps' is not an option of optimizer kind 'sgd'", ("1.0e-8", "eps:")),
    "unknown training key": (("  seed: 0\n", "  seed: 0\n  epoch: 3\n"), {},
                             "unknown key 'epoch' in training", ("epoch", "epoch: 3")),
}


@pytest.mark.parametrize("case", BAD_INPUTS, ids=lambda c: c.replace(" ", "-"))
def test_bad_input_is_reported_before_training(tmp_path, capsys, case):
    change, data, message, where = BAD_INPUTS[case]
    text = BAD_SPEC.replace(*change) if change else BAD_SPEC
    spec = tmp_path / "bad.yaml"
    spec.write_text(text)
    if data is not None:
        _npz(tmp_path / "data.npz", **data)
    out = tmp_path / "run"
    code = main(["train", str(spec), "--out", str(out)])
    err = capsys.readouterr().err
    assert_user_error(code, err, message)
    assert err.count("error:") == 1
    if case == "unknown training key":
        assert "hint: did you mean 'epochs'?" in err
    if case == "label out of range":
        assert "hint: set the last layer's size to 5" in err
    if where is not None:
        assert f"{spec}:{_where(text, *where)}: error: {message}" in err
    assert not out.exists()  # nothing was trained, no run directory was made


def test_bad_input_as_the_user_sees_it(tmp_path):
    """One of them end to end in a child process: stderr, exit code, no traceback."""
    spec = tmp_path / "bad.yaml"
    spec.write_text(BAD_SPEC)
    done = cli("train", spec, "--out", tmp_path / "run")
    assert_user_error(done.returncode, done.stderr, f"{spec}:{_where(BAD_SPEC, 'data.npz')}: error: data file "
                      f"'data.npz' does not exist (looked for {tmp_path / 'data.npz'})",
                      "hint: paths are relative to the spec file")
    assert done.stdout == "" and not (tmp_path / "run").exists()


# ---- the character-level GPT ----------------------------------------------------------------------------------------

def test_char_gpt_trains_on_python_source_and_samples_text(tmp_path, capsys):
    """specs/char-gpt.yaml at reduced size (the same --set a user has), then `dlspec generate`."""
    import argparse
    run = tmp_path / "gpt"
    done = cli("train", "specs/char-gpt.yaml", "--out", run, "--set", "training.max_steps=8",
               "--set", "training.scheduler.warmup_steps=2", "--set", "training.optimizer.lr=0.01",
               "--set", "model.vars.layers=1", "--set", "model.vars.d_model=32", "--set", "training.data.batch_size=8")
    assert done.returncode == 0, done.stderr
    text = Path(argparse.__file__).read_text(encoding="utf-8")  # the text ships with Python: no download
    vocab = json.loads((run / "vocab.json").read_text())
    assert vocab == {"chars": "".join(sorted(set(text))), "block": 64}
    start = events(run, "start")[0]
    cut = int(len(text) * 0.9)
    assert start["train_examples"] == cut - 64 and start["val_examples"] == (len(text) - cut - 65) // 64 + 1
    summary = json.loads((run / "summary.json").read_text())
    assert summary["steps"] == 8 and math.isfinite(summary["val_perplexity"])
    assert summary["val_perplexity"] < len(vocab["chars"])  # better than guessing uniformly after 8 steps

    done = cli("generate", run, "--prompt", "def ", "--tokens", "120", "--seed", "1")
    assert done.returncode == 0, done.stderr
    sample = done.stdout[:-1]  # print's newline
    assert len(sample) == 4 + 120 and sample.startswith("def ") and set(sample) <= set(vocab["chars"])
    # sampling is seeded: the API gives the CLI's text
    from dlspec.train.generate import generate
    assert generate(run, "def ", 120, seed=1) == sample
    assert generate(run, "def ", 120, seed=2) != sample
    # a prompt the model cannot read is a usage error, not a crash
    code = main(["generate", str(run), "--prompt", "λx"])
    assert_user_error(code, capsys.readouterr().err, "the prompt has characters the model never saw: 'λ'",
                      "vocab.json", exit_code=2)
