"""`dlspec export` and `dlspec verify` as a user runs them: the main job's hand-off.

Train the digits CNN briefly, export it from its run directory, verify the
deployed ONNX file, then break one exported weight and watch verify fail.
"""
from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import numpy_helper

import dlspec as dlspec_api
from dlspec.cli import main

REPO = Path(__file__).resolve().parents[1]
DIGITS = REPO / "specs" / "digits-cnn.yaml"


def dlspec(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}  # see test_export.one_thread
    return subprocess.run([sys.executable, "-m", "dlspec", *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A one-epoch run of the digits CNN: its batch norms hold running statistics from training."""
    run = tmp_path_factory.mktemp("run") / "digits"
    done = dlspec("train", DIGITS, "--set", "training.epochs=1", "--out", run, "--progress", "off")
    assert done.returncode == 0, done.stderr
    return run


@pytest.fixture(scope="module")
def exported(trained, tmp_path_factory):
    out = tmp_path_factory.mktemp("export")
    done = dlspec("export", DIGITS, "--checkpoint", trained, "--out", out)
    return trained, out, done


@pytest.fixture
def in_process(capsys):
    """The command line in this process (same code as `python -m dlspec`, no new interpreter)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)

    def run(*args):
        code = main([str(a) for a in args])
        captured = capsys.readouterr()
        assert "Traceback" not in captured.err, captured.err
        return code, captured.out, captured.err
    yield run
    torch.set_num_threads(threads)


def test_export_from_a_run_directory_prints_the_parity_table(exported):
    run, out, done = exported
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""  # torch's deprecation warnings and exporter logs are kept out
    assert f"weights from checkpoint {run / 'checkpoints' / 'best.pt'}" in done.stdout
    for name in ("digits-cnn.onnx", "digits-cnn.torchscript.pt", "digits-cnn.pt2"):
        assert (out / name).is_file()
        assert name in done.stdout
    assert "(scripted)" in done.stdout  # how the TorchScript file was made
    assert "max abs" in done.stdout and "parity: pass" in done.stdout
    report = json.loads((out / "parity.json").read_text())
    assert report["ok"] and report["weights"]["source"] == "checkpoint"
    assert {o["name"] for a in report["artifacts"] for o in a["outputs"]} == {"logits"}


def test_exported_onnx_computes_with_the_trained_batch_norm_statistics(exported):
    """The exporter folds batch norm into the convolutions, so the statistics are checked by what
    the file computes: the trained model's outputs, not those of the same weights with fresh statistics.
    The file takes raw images and normalises them with the run's numbers, as training did."""
    run, out, _ = exported
    stats = json.loads((run / "run.json").read_text())["normalize"]["image"]
    spec = dlspec_api.load(DIGITS)
    trained = dlspec_api.build(spec)
    trained.load_state_dict(torch.load(run / "checkpoints" / "best.pt", weights_only=True)["model"])
    trained.eval()
    fresh = copy.deepcopy(trained)
    for module in fresh.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            assert not torch.allclose(module.running_mean, torch.zeros_like(module.running_mean))  # training moved them
            module.reset_running_stats()
    raw = 16 * torch.rand(16, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    image = (raw - stats["mean"][0]) / stats["std"][0]
    session = ort.InferenceSession(str(out / "digits-cnn.onnx"), providers=["CPUExecutionProvider"])
    logits = session.run(None, {"image": raw.numpy()})[0]
    with torch.no_grad():
        np.testing.assert_allclose(logits, trained(image).numpy(), atol=1e-4, rtol=1e-4)
        assert np.abs(logits - fresh(image).numpy()).max() > 1e-2


def test_verify_passes_on_the_deployed_file(exported, in_process):
    run, out, _ = exported
    code, stdout, err = in_process("verify", out / "digits-cnn.onnx", "--spec", DIGITS, "--checkpoint", run)
    assert code == 0 and err == "", err
    assert "weights from checkpoint" in stdout and "parity: pass" in stdout


def test_verify_fails_when_one_exported_weight_is_perturbed(exported, tmp_path, in_process):
    run, out, _ = exported
    model = onnx.load(str(out / "digits-cnn.onnx"))
    weight = next(init for init in model.graph.initializer if numpy_helper.to_array(init).ndim == 2)  # fc
    array = numpy_helper.to_array(weight).copy()
    array.flat[0] += 0.05
    weight.CopyFrom(numpy_helper.from_array(array, weight.name))
    broken = tmp_path / "digits-cnn.onnx"
    onnx.save(model, str(broken))

    code, stdout, err = in_process("verify", broken, "--spec", DIGITS, "--checkpoint", run,
                                   "--report", tmp_path / "parity.json")
    assert code == 1
    assert "content: DIFFERS" in stdout and "parity: pass" not in stdout  # a file that differs is never run
    assert f"weight '{weight.name}' differs in 1 of {array.size} values (first at flat index 0" in err
    report = json.loads((tmp_path / "parity.json").read_text())
    assert report["ok"] is False and report["content"]["identical"] is False


def test_verify_needs_the_checkpoint_the_file_was_exported_with(exported, in_process):
    _, out, _ = exported
    code, _, err = in_process("verify", out / "digits-cnn.onnx", "--spec", DIGITS)
    assert code == 2
    assert "was exported with the weights of" in err and "--checkpoint" in err


def test_usage_errors_exit_2_with_a_hint(tmp_path, in_process):
    code, _, err = in_process("export", DIGITS, "--format", "onnx,tflite", "--out", tmp_path)
    assert code == 2
    assert "unknown export format 'tflite'" in err and "expected: onnx, torchscript, pt2" in err
    code, _, err = in_process("export", DIGITS, "--checkpoint", tmp_path / "missing", "--out", tmp_path)
    assert code == 2
    assert "does not exist" in err and "hint:" in err
    code, _, err = in_process("export", DIGITS, "--last", "--out", tmp_path)
    assert code == 2
    assert "--last needs --checkpoint RUN_DIR" in err and "hint:" in err
    code, _, err = in_process("verify", tmp_path / "model.tflite", "--spec", DIGITS)
    assert code == 2 and "does not exist" in err
    assert not list(tmp_path.iterdir())  # nothing written


def test_last_takes_the_run_directory_last_checkpoint(trained, tmp_path, in_process):
    code, out, err = in_process("export", DIGITS, "--checkpoint", trained, "--last", "--format", "onnx",
                                "--out", tmp_path)
    assert code == 0, err
    assert f"weights from checkpoint {trained / 'checkpoints' / 'last.pt'}" in out and "parity: pass" in out
    meta = {p.key: p.value for p in onnx.load(str(tmp_path / "digits-cnn.onnx")).metadata_props}
    weights = json.loads(meta["dlspec.weights"])
    assert weights["source"] == "checkpoint" and weights["path"].endswith("last.pt") and len(weights["sha256"]) == 64


def test_a_checkpoint_of_another_spec_is_refused(trained, tmp_path, in_process):
    code, _, err = in_process("export", DIGITS, "--checkpoint", trained, "--set", "model.vars.width=16",
                              "--out", tmp_path)
    assert code == 1
    assert f"checkpoint {trained / 'checkpoints' / 'best.pt'} was trained from a different spec" in err
    assert "hint: pass the spec and the same --set overrides the run was trained with" in err
    assert not list(tmp_path.iterdir())  # nothing written


def test_no_tolerance_lets_a_changed_weight_through(exported, tmp_path, in_process):
    run, out, _ = exported
    model = onnx.load(str(out / "digits-cnn.onnx"))
    weight = next(init for init in model.graph.initializer if numpy_helper.to_array(init).ndim == 2)
    array = numpy_helper.to_array(weight).copy()
    array.flat[0] += 0.05
    weight.CopyFrom(numpy_helper.from_array(array, weight.name))
    onnx.save(model, str(tmp_path / "digits-cnn.onnx"))
    code, stdout, err = in_process("verify", tmp_path / "digits-cnn.onnx", "--spec", DIGITS, "--checkpoint", run,
                                   "--atol", "1", "--rtol", "0")
    assert code == 1 and "content: DIFFERS" in stdout and f"weight '{weight.name}' differs" in err


def test_verify_checks_the_torchscript_and_pt2_files_too(exported, in_process):
    run, out, _ = exported
    for name in ("digits-cnn.torchscript.pt", "digits-cnn.pt2"):
        code, stdout, err = in_process("verify", out / name, "--spec", DIGITS, "--checkpoint", run)
        assert code == 0, err
        assert name in stdout and "parity: pass" in stdout
