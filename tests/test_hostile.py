"""Hostile input (issue 10): no code runs from a file, verify proves the artifact, bounds hold before work,
checkpoints are sealed, and user errors are never internal errors."""
from __future__ import annotations

import io
import json
import os
import pickle
import shutil
import stat
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from support import ROOT

from dlspec.cli import main
from dlspec.core.errors import DlspecError
from dlspec.train import checkpoint, rundir

SPEC = ROOT / "specs" / "seed-mlp.yaml"


class Payload:
    """Unpickling this writes a marker file: if the marker ever exists, a file ran code."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def cli(capsys, *args) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    assert "internal error" not in err and "Traceback" not in err, err
    return code, out, err


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    out = tmp_path_factory.mktemp("export")
    assert main(["export", str(SPEC), "--out", str(out)]) == 0
    return out


def _replace_member(archive: Path, target: Path, suffix: str, data: bytes) -> None:
    with zipfile.ZipFile(archive) as src, zipfile.ZipFile(target, "w") as dst:
        for info in src.infolist():
            dst.writestr(info, data if info.filename.endswith(suffix) else src.read(info))


def test_a_payload_in_any_file_dlspec_reads_never_runs(exported, tmp_path, capsys):
    marker = tmp_path / "PWNED"
    evil = io.BytesIO()
    torch.save({"format": 2, "model": Payload(marker)}, evil)
    (tmp_path / "evil.pt").write_bytes(evil.getvalue())
    # .pt2: the sample inputs, and a weight said to be pickled; TorchScript: its data.pkl
    _replace_member(exported / "seed-mlp.pt2", tmp_path / "seed-mlp.pt2", "sample_inputs/model.pt", evil.getvalue())
    config = exported / "seed-mlp.pt2"
    with zipfile.ZipFile(config) as z:
        name = next(n for n in z.namelist() if n.endswith("model_weights_config.json"))
        weights = json.loads(z.read(name))
    weights["config"]["fc1.weight"]["use_pickle"] = True
    (tmp_path / "w").mkdir()
    _replace_member(exported / "seed-mlp.pt2", tmp_path / "w" / "seed-mlp.pt2", "model_weights_config.json",
                    json.dumps(weights).encode())
    _replace_member(exported / "seed-mlp.torchscript.pt", tmp_path / "seed-mlp.torchscript.pt", "data.pkl",
                    pickle.dumps(Payload(marker), protocol=2))
    for artifact in (tmp_path / "seed-mlp.pt2", tmp_path / "w" / "seed-mlp.pt2", tmp_path / "seed-mlp.torchscript.pt"):
        code, _, err = cli(capsys, "verify", artifact, "--spec", SPEC)
        assert code == 1 and "dlspec never loads a file that could run code" in err, err
    assert cli(capsys, "verify", exported / "seed-mlp.onnx", "--spec", SPEC, "--checkpoint", tmp_path / "evil.pt")[0] == 1
    assert cli(capsys, "export", SPEC, "--checkpoint", tmp_path / "evil.pt", "--out", tmp_path / "o")[0] == 1
    with pytest.raises(DlspecError, match="cannot read checkpoint"):
        checkpoint.load(tmp_path / "evil.pt")
    np.save(tmp_path / "objects.npy", np.array([Payload(marker)], dtype=object), allow_pickle=True)
    with zipfile.ZipFile(tmp_path / "data.npz", "w") as z:
        z.write(tmp_path / "objects.npy", "x.npy")
    data_spec = tmp_path / "data.yaml"
    for kind, file in (("pt", "evil.pt"), ("npz", "data.npz")):
        data_spec.write_text(SPEC.read_text() + f"training:\n  data: {{dataset: {{kind: {kind}, path: {file}}}}}\n"
                             "  optimizer: {kind: sgd, lr: 0.1}\n")
        assert cli(capsys, "train", data_spec, "--out", tmp_path / f"run-{kind}")[0] == 1
    assert not marker.exists()


def test_verify_fails_a_backdoored_onnx_naming_the_added_nodes(exported, tmp_path, capsys):
    model = onnx.load(str(exported / "seed-mlp.onnx"))
    graph = model.graph
    output, features = graph.output[0].name, graph.input[0].name
    for node in graph.node:
        node.output[:] = [o + "_clean" if o == output else o for o in node.output]
    graph.initializer.extend([numpy_helper.from_array(np.array([0], dtype=np.int64), "trigger_index"),
                              numpy_helper.from_array(np.array(3.25, dtype=np.float32), "trigger"),
                              numpy_helper.from_array(np.eye(10, dtype=np.float32)[3] * 1000, "boost")])
    graph.node.extend([helper.make_node("Gather", [features, "trigger_index"], ["f0"], axis=1, name="peek"),
                       helper.make_node("Equal", ["f0", "trigger"], ["hit"]),
                       helper.make_node("Cast", ["hit"], ["hitf"], to=TensorProto.FLOAT),
                       helper.make_node("Mul", ["hitf", "boost"], ["delta"]),
                       helper.make_node("Add", [output + "_clean", "delta"], [output])])
    onnx.save(model, str(tmp_path / "seed-mlp.onnx"))
    code, out, err = cli(capsys, "verify", tmp_path / "seed-mlp.onnx", "--spec", SPEC)
    assert code == 1 and "content: DIFFERS" in out and "parity: pass" not in out
    assert "node 'peek' (Gather, inputs x, trigger_index) is not in the re-derived export" in err
    assert "weight 'boost' is not in the re-derived export" in err


def test_verify_fails_one_flipped_bit_in_a_weight_naming_it(exported, tmp_path, capsys):
    """A 4-bit change to one value of one weight leaves random-input parity within tolerance often enough to
    pass it; the exact comparison with the re-derived file names the weight and the value."""
    model = onnx.load(str(exported / "seed-mlp.onnx"))
    weight = max(model.graph.initializer, key=lambda t: int(np.prod(t.dims)))
    values = numpy_helper.to_array(weight).copy()
    values.view(np.uint32).flat[7] ^= 0b1111  # the mantissa's lowest bits: a change of about 1e-6 relative
    weight.CopyFrom(numpy_helper.from_array(values, weight.name))
    onnx.save(model, str(tmp_path / "seed-mlp.onnx"))
    code, out, err = cli(capsys, "verify", tmp_path / "seed-mlp.onnx", "--spec", SPEC)
    assert code == 1 and "content: DIFFERS" in out
    assert f"weight '{weight.name}' differs in 1 of {values.size} values (first at flat index 7" in err


def test_exports_are_byte_identical_and_record_their_hashes(exported, tmp_path):
    assert main(["export", str(SPEC), "--out", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "parity.json").read_text())
    for artifact in report["artifacts"]:
        first, second = (exported / artifact["file"]).read_bytes(), (tmp_path / artifact["file"]).read_bytes()
        assert first == second, artifact["file"]
        assert len(artifact["sha256"]) == 64 and len(artifact["content_sha256"]) == 64
    assert json.loads((exported / "parity.json").read_text())["artifacts"] == report["artifacts"]


def test_an_export_from_another_installation_verifies_here(tmp_path, capsys):
    """dlspec installed elsewhere (a teammate's machine, CI) exports the same model: every file verifies here
    (the .onnx and .pt2 keep no stack trace naming where the packages live)."""
    elsewhere = tmp_path / "site"
    shutil.copytree(ROOT / "dlspec", elsewhere / "dlspec", ignore=shutil.ignore_patterns("__pycache__"))
    spec = ROOT / "specs" / "char-gpt.yaml"  # attention: a class of dlspec's own, scripted from its source file
    small = ["--set", "model.vars.layers=1", "--set", "model.vars.d_model=16", "--set", "model.dims.T.example=8"]
    script = "import sys, dlspec.cli; assert dlspec.cli.__file__.startswith(sys.argv[1]); sys.exit(dlspec.cli.main(sys.argv[2:]))"
    done = subprocess.run([sys.executable, "-c", script, str(elsewhere), "export", str(spec), "--out",
                           str(tmp_path / "there"), *small], cwd=tmp_path, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(elsewhere)}, timeout=600)
    assert done.returncode == 0, done.stderr
    for name in ("char-gpt.onnx", "char-gpt.pt2"):
        assert str(elsewhere).encode() not in (tmp_path / "there" / name).read_bytes(), name
    for name in ("char-gpt.onnx", "char-gpt.pt2", "char-gpt.torchscript.pt"):
        assert main(["verify", str(tmp_path / "there" / name), "--spec", str(spec), *small]) == 0, \
            capsys.readouterr().err


def test_verify_refuses_recorded_sizes_it_cannot_allocate(exported, tmp_path, capsys):
    model = onnx.load(str(exported / "seed-mlp.onnx"))
    props = {p.key: p for p in model.metadata_props}
    props["dlspec.export"].value = json.dumps({"dynamic": ["B"], "sizes": {"B": [10**9]}})
    onnx.save(model, str(tmp_path / "seed-mlp.onnx"))
    code, _, err = cli(capsys, "verify", tmp_path / "seed-mlp.onnx", "--spec", SPEC)
    assert code == 1 and "B=1000000000" in err and "more than the" in err


def test_a_model_too_big_to_allocate_is_refused_with_its_size_and_summarised_on_meta(tmp_path, capsys):
    spec = tmp_path / "big.yaml"
    spec.write_text("dlspec: 1\nmodel:\n  inputs: {x: {shape: [B, 1000000]}}\n"
                    "  layers: [{id: huge, op: linear, in: 1000000, out: 1000000}]\n")
    code, out, _ = cli(capsys, "build", spec)
    assert code == 0 and "1,000,001,000,000" in out
    code, _, err = cli(capsys, "build", spec, "--out", tmp_path / "w.pt")
    assert code == 1 and f"{spec}:4:" in err and "huge (linear) alone 3.6 TiB" in err
    assert not (tmp_path / "w.pt").exists()


def test_files_are_checked_before_reading(tmp_path, capsys):
    os.mkfifo(tmp_path / "fifo.yaml")
    with open(tmp_path / "sparse.yaml", "wb") as f:
        f.truncate(5 * 2**30)
    (tmp_path / "inc.yaml").write_text("dlspec: 1\ninclude: [fifo.yaml, sparse.yaml, /dev/zero]\n"
                                       "model: {inputs: {x: {shape: [B, 4]}}, layers: [relu]}\n")
    assert "is a FIFO" in cli(capsys, "validate", tmp_path / "fifo.yaml")[2]
    assert "5,368,709,120 bytes; specs are limited" in cli(capsys, "validate", tmp_path / "sparse.yaml")[2]
    code, _, err = cli(capsys, "validate", tmp_path / "inc.yaml")
    assert code == 1 and "inc.yaml:2:11: error:" in err and "inc.yaml:2:35: error: /dev/zero is a character device" in err


@pytest.mark.parametrize("expression, message", [
    ("sqrt(-1)", "math domain error"), ("max(1)", "takes two or more values"), ("min()", "takes two or more values"),
    ("round(1e400)", "not a finite number"), ("0**-1", "negative power"), ("10**64", "past the largest integer"),
    ("s * 1000000000", "not a number"), ("d ** 70", "exponent larger than 64"),
])
def test_expression_errors_are_located(tmp_path, capsys, expression, message):
    spec = tmp_path / "s.yaml"
    spec.write_text(f"dlspec: 1\nmodel:\n  vars: {{d: 4, s: hello, e: \"{expression}\"}}\n  inputs: {{x: {{shape: [B, 4]}}}}\n"
                    "  layers: [relu]\n")
    code, _, err = cli(capsys, "validate", spec)
    assert code == 1 and f"{spec}:3:" in err and message in err


def test_user_errors_are_never_internal(tmp_path, capsys):
    (tmp_path / "empty.yaml").write_text("")
    assert f"{tmp_path / 'empty.yaml'}:1:1: error: a spec must be a YAML mapping" in cli(capsys, "validate",
                                                                                          tmp_path / "empty.yaml")[2]
    (tmp_path / "u16.yaml").write_bytes("dlspec: 1\n".encode("utf-16"))
    assert "re-save the file as UTF-8" in cli(capsys, "validate", tmp_path / "u16.yaml")[2]
    (tmp_path / "alias.yaml").write_text("dlspec: 1\nx: &a [*a]\n")
    assert "alias *a refers to the collection it is inside" in cli(capsys, "validate", tmp_path / "alias.yaml")[2]
    (tmp_path / "long.yaml").write_text(f"dlspec: 1\nmodel:\n  vars: {{d: \"{'x' * 1_000_000}\"}}\n"
                                        "  inputs: {x: {shape: [B, d]}}\n  layers: [relu]\n")
    code, _, err = cli(capsys, "validate", tmp_path / "long.yaml")
    assert code == 1 and len(err) < 5000
    with pytest.raises(SystemExit) as exit_:
        main(["--bogus"])
    assert exit_.value.code == 2 and "unrecognized arguments: --bogus" in capsys.readouterr().err


def test_a_flipped_byte_in_a_checkpoint_names_the_file_and_tensor(tmp_path):
    path = tmp_path / "last.pt"
    checkpoint.save_atomic({"format": checkpoint.FORMAT, "kind": "weights",
                            "model": {"fc.weight": torch.arange(64, dtype=torch.float32)}}, path)
    raw = bytearray(path.read_bytes())
    at = raw.find(torch.arange(64, dtype=torch.float32).numpy().tobytes()[40:48])
    raw[at] ^= 0xFF
    path.write_bytes(bytes(raw))
    with pytest.raises(DlspecError, match=rf"checkpoint {path} is corrupted: tensor 'model.fc.weight'"):
        checkpoint.load(path)


def test_resume_housekeeping_keeps_metrics_and_removes_leftovers(tmp_path):
    run = rundir.RunDir(tmp_path)
    run.checkpoints.mkdir()
    checkpoint.save_atomic({"format": checkpoint.FORMAT, "kind": "checkpoint", "model": {}}, run.last)
    (run.checkpoints / ".last.pt.1234abcd.tmp").write_bytes(b"half a checkpoint")
    lines = '{"event": "start"}\n{"event": "checkpoint", "step": 5}\n{"event": "train", "step": 6}\n'
    run.metrics.write_text(lines)
    rundir.existing(tmp_path)
    assert not list(run.checkpoints.glob("*.tmp"))
    rundir.cut_metrics(run, 0)  # a crafted metrics_bytes: 0 is not the end of a checkpoint line
    assert run.metrics.read_text() == lines
    rundir.cut_metrics(run, len(lines.splitlines(True)[0]) + len(lines.splitlines(True)[1]))
    assert run.metrics.read_text() == "".join(lines.splitlines(True)[:2])


def test_written_files_respect_the_umask(tmp_path, capsys):
    old = os.umask(0o022)
    try:
        assert cli(capsys, "build", SPEC, "--out", tmp_path / "w.pt")[0] == 0
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "w.pt").stat().st_mode) == 0o644
