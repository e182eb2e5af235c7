"""The command line as users see it: exit codes, messages, JSON, files; never a traceback."""
import json
import subprocess
import sys

import pytest
import torch
from support import INVALID, ROOT, SPECS, TRAINABLE, run_dlspec

from dlspec.cli import main

INVALID_DIR = ROOT / "tests" / "specs" / "invalid"


def test_validate_all_example_specs(capsys):
    """Their data too, but for a spec that starts from a user's files (resnet18-finetune: --no-data)."""
    assert main(["validate", *map(str, TRAINABLE)]) == 0
    out = capsys.readouterr().out
    assert f"{len(TRAINABLE)} valid, 0 invalid" in out and "124,439,808 parameters" in out
    users = [p for p in SPECS if p not in TRAINABLE]
    assert main(["validate", "--no-data", *map(str, users)]) == 0 and main(["validate", *map(str, users)]) == 1


def test_validate_invalid_exits_1_with_location_and_hint():
    done = run_dlspec("validate", "tests/specs/invalid/linear-in-mismatch.yaml")
    assert done.returncode == 1 and "Traceback" not in done.stderr
    expected = "tests/specs/invalid/linear-in-mismatch.yaml:14:33: error: fc1 (linear): in is 4096 but the input has 16384"
    assert expected in done.stderr
    assert "hint:" in done.stderr


@pytest.mark.parametrize("path", INVALID, ids=lambda p: p.name)
def test_no_invalid_spec_crashes_the_cli(path, capsys):
    assert main(["validate", str(path)]) == 1
    err = capsys.readouterr().err
    assert f"{path}:" in err and "error:" in err and "Traceback" not in err


def test_usage_errors_exit_2(capsys):
    done = run_dlspec("validate")  # argparse's own exit, in a real process
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert main(["validate", "no/such/file.yaml"]) == 2
    with pytest.raises(SystemExit) as exited:
        main(["frobnicate"])
    assert exited.value.code == 2
    assert main(["validate", str(ROOT / "specs" / "seed-mlp.yaml"), "--set", "nonsense"]) == 2
    assert "key.path=value" in capsys.readouterr().err


def test_json_format_lists_every_error_for_editors(capsys):
    files = [str(INVALID_DIR / "unknown-attribute.yaml"), str(ROOT / "specs" / "seed-mlp.yaml")]
    code = main(["validate", "--format", "json", *files])
    report = json.loads(capsys.readouterr().out)
    assert code == 1 and report["ok"] is False
    bad, good = report["specs"]
    assert good["ok"] and good["params"] == 235_146
    assert {"file", "line", "column", "path", "message", "expected", "hint"} <= set(bad["errors"][0])
    typo = next(e for e in bad["errors"] if "kernal" in e["message"])
    assert (typo["line"], typo["column"], typo["hint"]) == (7, 35, "did you mean 'kernel'?")


def test_set_overrides_on_the_command_line(capsys):
    assert main(["validate", str(ROOT / "specs" / "seed-cnn.yaml"), "--set", "model.inputs.x.shape=[B, 3, 32, 32]"]) == 1
    assert "16384" in capsys.readouterr().err


def test_build_prints_a_summary(capsys):
    assert main(["build", str(ROOT / "specs" / "gpt2-small.yaml")]) == 0
    out = capsys.readouterr().out
    assert "parameters:        124,439,808" in out and "lm_head" in out and "[B, T, 50257]" in out
    assert "MACs" in out and "size (fp32):       497.76 MB" in out
    assert "(weight tied to wte.weight)" in out  # the head's 0 parameters are explained
    # the twelve blocks are one row, with their parameters and MACs summed; every node has its own with --expand
    row = next(line for line in out.splitlines() if line.startswith("h.0–h.11"))
    assert row.split()[1:] == ["gpt_block", "×12", "[B,", "T,", "768]", "85,054,464", "5.51G"]
    assert "100 nodes in 5 rows" in out and "h.3.attn" not in out
    assert main(["build", str(ROOT / "specs" / "gpt2-small.yaml"), "--expand"]) == 0
    expanded = capsys.readouterr().out
    assert "h.3.mlp.proj" in expanded and "h.0–h.11" not in expanded and "parameters:        124,439,808" in expanded


def test_build_on_the_meta_device_runs_no_initialiser():
    """`normal_` on the meta device imports torch._dynamo (a second per summary): the meta build skips it."""
    done = run_dlspec("build", "specs/gpt2-small.yaml", "--json")
    script = ("import sys, dlspec\nm = dlspec.build('specs/gpt2-small.yaml', device='meta')\n"
              "assert next(m.parameters()).is_meta\nprint('torch._dynamo' in sys.modules)")
    imported = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert imported.stdout.strip() == "False", imported.stderr
    summary = json.loads(done.stdout)
    assert [b["id"] for b in summary["blocks"]] == ["wte", "wpe", "h.0–h.11", "ln_f", "lm_head"]
    assert sum(b["macs"] for b in summary["blocks"]) == summary["macs_per_example"]


def test_build_json_and_saved_weights(tmp_path, capsys):
    weights = tmp_path / "w.pt"
    assert main(["build", str(ROOT / "specs" / "seed-convnet.yaml"), "--json", "--out", str(weights)]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert {"name", "params", "trainable_params", "inputs", "outputs", "nodes"} <= set(summary)
    assert summary["params"] == 421_642 and summary["nodes"][0] == {
        "id": "conv1", "op": "conv2d", "shape": "[B, 32, 28, 28]", "params": 320, "trainable": True, "macs": 225_792,
        "tied": {}}
    saved = torch.load(weights, weights_only=True)
    assert saved["spec_hash"] == summary["spec_hash"] and "fc2.weight" in saved["model"]


def test_emit_python(tmp_path, capsys):
    out = tmp_path / "gpt.py"
    assert main(["build", str(ROOT / "specs" / "gpt2-small.yaml"), "--set", "model.vars.layers=1",
                 "--emit-python", str(out)]) == 0
    text = out.read_text()
    assert "class Gpt2Small(nn.Module)" in text and "class MultiHeadAttention(nn.Module)" in text
    assert "dlspec" not in "\n".join(line for line in text.splitlines() if line.startswith(("import", "from")))
    compile(text, str(out), "exec")


def test_schema_command_prints_the_committed_schema(capsys):
    assert main(["schema"]) == 0
    assert capsys.readouterr().out == (ROOT / "schemas" / "dlspec.schema.json").read_text()


def _pickled_object(path):
    import argparse
    torch.save({"model": {}, "args": argparse.Namespace(lr=0.1)}, path)  # a Python object, not plain data


@pytest.mark.parametrize("write, says", [
    (lambda path: path.write_bytes(b"garbage"), "Unsupported operand"),
    (_pickled_object, "Unsupported global: GLOBAL argparse.Namespace"),
], ids=["garbage", "python-object"])
def test_an_unreadable_checkpoint_says_why_in_one_line(tmp_path, capsys, write, says):
    bad = tmp_path / "bad.pt"
    write(bad)
    out = tmp_path / "export"
    assert main(["export", str(ROOT / "specs" / "seed-mlp.yaml"), "--checkpoint", str(bad), "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert f"cannot read checkpoint {bad}" in err and says in err
    assert "PyTorch 2.6" not in err and "Traceback" not in err  # torch's advice stays out; the reason stays in
    assert not out.exists()


def test_validate_and_the_command_line_load_neither_torch_nor_onnx():
    """Every command's arguments are registered without its work's imports: validate stays a second, not six."""
    code = ("import sys; from dlspec.cli import main; code = main(['validate', 'specs/gpt2-small.yaml', '--no-data']); "
            "loaded = sorted({'torch', 'onnx', 'onnxruntime', 'matplotlib'} & set(sys.modules)); "
            "sys.exit(code or (f'loaded {loaded}' if loaded else 0))")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
