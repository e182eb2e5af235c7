"""Resume semantics: extending a run continues its schedule without a jump; a --set on resume takes effect
from the resume step and the run's record says so, or it is refused naming the key; the record never says
what did not happen. (Bit-exact kill-and-resume is in test_train.py.)"""
from __future__ import annotations

import json
import math
import shutil

import pytest
import yaml
from test_train import DIGITS_FLAT, assert_user_error, events, mlp, write_spec

import dlspec
import dlspec.train
from dlspec.cli import main

# 1438 training digits in batches of 64: 23 steps an epoch
DATA = {**DIGITS_FLAT, "batch_size": 64}


def _spec(tmp_path, **training):
    return write_spec(tmp_path, mlp(), {"threads": 1, "data": DATA, "logging": {"every_steps": 1, "progress": "off"},
                                        **training})


def _lrs(run) -> dict[int, float]:
    return {e["step"]: e["lr"] for e in events(run, "train")}


def _cosine(step: float, total: float, base: float = 0.01) -> float:
    return base * (1 + math.cos(math.pi * step / total)) / 2


def test_extending_a_stopped_run_stretches_the_rest_of_its_schedule(tmp_path):
    spec = _spec(tmp_path, max_steps=12, optimizer={"kind": "sgd", "lr": 0.01}, scheduler={"kind": "cosine"},
                 checkpoint={"every_steps": 4})
    run = tmp_path / "run"
    assert main(["train", str(spec), "--out", str(run)]) == 0
    # as if the run had been stopped at step 4: resume from there, asking for 20 steps in all
    shutil.copy(run / "checkpoints" / "step-00000004.pt", run / "checkpoints" / "last.pt")
    assert main(["train", "--resume", str(run), "--set", "training.max_steps=20"]) == 0
    lrs = _lrs(run)
    assert sorted(lrs) == list(range(1, 21))  # the log was cut back to step 4 and goes on from there
    for step in range(1, 21):  # step s (1-based) uses the lr of schedule time t(s - 1)
        t = step - 1 if step <= 4 else 4 + (step - 1 - 4) * (12 - 4) / (20 - 4)
        assert math.isclose(lrs[step], _cosine(t, 12), rel_tol=1e-9), step
    assert all(b <= a for a, b in zip(list(lrs.values()), list(lrs.values())[1:]))  # never back up
    resumed = events(run, "resume")[0]
    assert resumed["step"] == 4 and resumed["total_steps"] == 20
    assert resumed["changes"] == [{"key": "training.max_steps", "from": 12, "to": 20}]
    assert "steps 4..20 follow the schedule from 4 to its end 12" in resumed["schedule"]


def test_extending_a_finished_run_holds_the_final_lr_and_never_crashes(tmp_path):
    spec = _spec(tmp_path, epochs=1, scheduler={"kind": "one_cycle"})
    run = tmp_path / "run"
    assert main(["train", str(spec), "--out", str(run)]) == 0
    final = _lrs(run)[23]
    assert main(["train", "--resume", str(run), "--set", "training.epochs=2"]) == 0
    lrs = _lrs(run)
    assert sorted(lrs) == list(range(1, 47)) and all(lrs[s] == final for s in range(24, 47))
    summary = json.loads((run / "summary.json").read_text())
    assert summary["steps"] == 46 and summary["epochs"] == 2
    assert "the schedule had finished" in events(run, "resume")[0]["schedule"]


def test_a_new_lr_on_resume_takes_effect_and_the_record_says_from_which_step(tmp_path, capsys):
    spec = _spec(tmp_path, max_steps=10, optimizer={"kind": "adamw", "lr": 0.003}, checkpoint={"every_steps": 5})
    run = tmp_path / "run"
    assert main(["train", str(spec), "--out", str(run)]) == 0
    shutil.copy(run / "checkpoints" / "step-00000005.pt", run / "checkpoints" / "last.pt")
    capsys.readouterr()
    assert main(["train", "--resume", str(run), "--set", "training.optimizer.lr=5e-4", "--progress", "lines"]) == 0
    assert "  training.optimizer.lr: 0.003 -> 0.0005 from step 5" in capsys.readouterr().out
    lrs = _lrs(run)
    assert [lrs[s] for s in range(1, 11)] == [0.003] * 5 + [0.0005] * 5
    assert events(run, "resume")[0]["changes"] == [{"key": "training.optimizer.lr", "from": 0.003, "to": 0.0005}]
    text = (run / "spec.yaml").read_text()
    assert text.startswith("# changed on --resume (the values below are the latest):\n"
                           "#   training.optimizer.lr: 0.003 -> 0.0005 from step 5\n")
    assert yaml.safe_load(text)["training"]["optimizer"]["lr"] == 0.0005
    record = json.loads((run / "run.json").read_text())
    assert record["changes"] == [{"key": "training.optimizer.lr", "from": 0.003, "to": 0.0005, "step": 5}]
    assert dlspec.load(run / "spec.yaml").training["optimizer"]["lr"] == 0.0005  # the record still loads


@pytest.mark.parametrize("override, key", [
    ("training.scheduler={kind: cosine}", "training.scheduler"),
    ("training.optimizer.betas=[0.8, 0.9]", "training.optimizer.betas"),
    ("training.data.batch_size=16", "training.data.batch_size"),
    ("training.loss.label_smoothing=0.1", "training.loss.label_smoothing"),
    ("training.max_steps=3", "training.max_steps"),  # fewer steps than the run has done
])
def test_a_change_that_cannot_take_effect_is_refused_and_changes_nothing(tmp_path, capsys, override, key):
    spec = _spec(tmp_path, max_steps=6, optimizer={"kind": "adamw"}, loss={"kind": "cross_entropy"})
    run = tmp_path / "run"
    assert main(["train", str(spec), "--out", str(run)]) == 0
    before = {p.name: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    capsys.readouterr()
    code = main(["train", "--resume", str(run), "--set", override])
    err = capsys.readouterr().err
    assert_user_error(code, err, f"<--set {key}" if key != "training.max_steps" else "already done 6", exit_code=2)
    if key != "training.max_steps":
        assert f"{key} cannot change on --resume" in err
    assert {p.name: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before


def test_resuming_without_changes_records_none(tmp_path):
    spec = _spec(tmp_path, max_steps=6, checkpoint={"every_steps": 3})
    run = tmp_path / "run"
    assert main(["train", str(spec), "--out", str(run)]) == 0
    spec_text = (run / "spec.yaml").read_text()
    shutil.copy(run / "checkpoints" / "step-00000003.pt", run / "checkpoints" / "last.pt")
    assert main(["train", "--resume", str(run)]) == 0
    assert (run / "spec.yaml").read_text() == spec_text and "changes" not in events(run, "resume")[0]
    assert json.loads((run / "run.json").read_text())["changes"] == []
    # every checkpoint the log names is one that was written, once, in order
    assert [e["step"] for e in events(run, "checkpoint")] == [3, 6]
