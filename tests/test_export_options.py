"""`dlspec export` and `dlspec verify` options, settings and failures, as a user meets them.

Each test runs the command line in-process (`dlspec.cli.main`, the same code path as
`python -m dlspec`, without starting Python again) on a tiny spec written for it, so
every option gets its own export and the suite stays fast. The run-directory flow
(a trained checkpoint) is in test_export_cli.py.
"""
from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
import torch.nn.functional as F
from onnx import numpy_helper

import dlspec
import dlspec.front.spec
from dlspec.backend.inputs import random_inputs
from dlspec.cli import main
from dlspec.export import to_onnx
from dlspec.export.formats import FORMATS

REPO = Path(__file__).resolve().parents[1]

# Dims B and T (T bounded), a dropout that must be off in the export, a layer norm and a GELU
# whose ONNX kernels round differently from torch's (so a tolerance of ~0 fails).
TINY = """\
dlspec: 1
name: tiny
model:
  vars: {d: 16}
  dims:
    B: 2
    T: {example: 4, min: 1, max: 16}
  inputs:
    x: {shape: [B, T, d], dtype: float32}
  layers:
    - {id: proj, op: linear, in: d, out: 2 * d}
    - {id: norm, op: layer_norm, dim: 2 * d}
    - gelu
    - {op: dropout, p: 0.5}
    - {id: head, op: linear, in: 2 * d, out: 3}
  outputs: {y: head}
"""


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # see test_export.one_thread
    yield
    torch.set_num_threads(threads)


def write_spec(folder: Path, export: str = "", text: str = TINY) -> Path:
    path = folder / "tiny.yaml"
    path.write_text(text + (f"export:\n{export}" if export else ""))
    return path


def cli(capsys, *args) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err and "internal error" not in captured.err, captured.err
    return code, captured.out, captured.err


def line_of(path: Path, text: str) -> int:
    """The 1-based line of `path` that contains `text`."""
    return next(i for i, line in enumerate(path.read_text().splitlines(), 1) if text in line)


def opset(path: Path) -> int:
    return next(o.version for o in onnx.load(str(path), load_external_data=False).opset_import if o.domain == "")


# ---- weights, formats, opset -------------------------------------------------------------------------

def test_without_a_checkpoint_the_initialised_weights_are_exported_and_it_says_so(tmp_path, capsys):
    spec = write_spec(tmp_path)
    code, out, err = cli(capsys, "export", spec, "--out", tmp_path / "out", "--seed", "3")
    assert code == 0 and err == "", err
    assert "no checkpoint given: initialised weights (seed 3)" in out
    # every format, with how it was made
    assert re.search(r"onnx +\S+tiny\.onnx +\(opset 22\)", out)
    assert re.search(r"torchscript +\S+tiny\.torchscript\.pt +\((scripted|traced; not scriptable: .+)\)", out)
    assert re.search(r"pt2 +\S+tiny\.pt2 +\(torch\.export\)", out)
    assert len(re.findall(r"  pass$", out, re.M)) == 3 and "parity: pass" in out
    report = json.loads((tmp_path / "out" / "parity.json").read_text())
    assert report["weights"] == {"source": "initialised", "seed": 3}
    meta = {p.key: p.value for p in onnx.load(str(tmp_path / "out" / "tiny.onnx")).metadata_props}
    assert json.loads(meta["dlspec.weights"]) == {"source": "initialised", "seed": 3}
    # the export holds the weights of seed 3 (not of another seed): its outputs are the eager model's
    model = dlspec.build(dlspec.load(spec), seed=3).eval()
    x = random_inputs(model.dlspec_spec, {"B": 3, "T": 5}, seed=7)[0]
    session = ort.InferenceSession(str(tmp_path / "out" / "tiny.onnx"), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(session.run(None, {"x": x.numpy()})[0], model(x).detach().numpy(), atol=1e-5)


def test_opset_is_chosen_on_the_command_line_or_in_the_spec(tmp_path, capsys):
    spec = write_spec(tmp_path)
    code, out, _ = cli(capsys, "export", spec, "--format", "onnx", "--opset", "18", "--out", tmp_path / "a")
    assert code == 0 and "(opset 18)" in out and opset(tmp_path / "a" / "tiny.onnx") == 18

    spec = write_spec(tmp_path, "  opset: 20\n")
    code, out, _ = cli(capsys, "export", spec, "--format", "onnx", "--out", tmp_path / "b")
    assert code == 0 and "(opset 20)" in out and opset(tmp_path / "b" / "tiny.onnx") == 20
    code, out, _ = cli(capsys, "export", spec, "--format", "onnx", "--opset", "21", "--out", tmp_path / "c")
    assert code == 0 and opset(tmp_path / "c" / "tiny.onnx") == 21  # the command line wins


def test_an_unsupported_opset_is_refused_before_anything_is_written(tmp_path, capsys):
    spec = write_spec(tmp_path)
    code, _, err = cli(capsys, "export", spec, "--opset", "30", "--out", tmp_path / "out")
    assert code == 2
    assert "error: opset 30 is not supported" in err and "expected: 18 to 23" in err and "hint:" in err
    assert not (tmp_path / "out").exists()

    spec = write_spec(tmp_path, "  opset: 30\n")
    code, _, err = cli(capsys, "export", spec, "--out", tmp_path / "out")
    assert code == 1
    assert f"{spec}:{line_of(spec, 'opset: 30')}:10: error:" in err and "opset" in err
    assert not (tmp_path / "out").exists()


# ---- the export: section ----------------------------------------------------------------------------

def test_the_export_section_sets_formats_dims_sizes_seeds_and_tolerance(tmp_path, capsys):
    spec = write_spec(tmp_path, "  formats: [onnx, pt2]\n  dynamic: [T]\n  sizes: {T: [1, 5, 16]}\n"
                                "  seeds: 2\n  tolerance: {atol: 1.0e-4, rtol: 1.0e-3}\n")
    out_dir = tmp_path / "out"
    code, out, err = cli(capsys, "export", spec, "--out", out_dir)
    assert code == 0, err
    assert sorted(p.name for p in out_dir.iterdir()) == ["README.md", "parity.json", "tiny.onnx", "tiny.pt2"]
    report = json.loads((out_dir / "parity.json").read_text())
    assert report["seeds"] == 2 and report["tolerance"] == {"atol": 1e-4, "rtol": 1e-3}
    assert {case["B"] for case in report["cases"]} == {2}  # B is not dynamic: only its example size
    assert {case["T"] for case in report["cases"]} == {1, 4, 5, 16}  # the sizes given, and the example
    assert "1e-04  1e-03  pass" in out and "4 size cases x 2 seeds: B in {2}, T in {1, 4, 5, 16}" in out
    # B is fixed at its example size in the file, T is a dynamic axis named T
    model = onnx.load(str(out_dir / "tiny.onnx"))
    x, = model.graph.input
    assert [d.dim_param or d.dim_value for d in x.type.tensor_type.shape.dim] == [2, "T", 16]
    session = ort.InferenceSession(str(out_dir / "tiny.onnx"), providers=["CPUExecutionProvider"])
    assert session.run(None, {"x": np.zeros((2, 9, 16), np.float32)})[0].shape == (2, 9, 3)
    with pytest.raises(Exception, match="invalid dimensions for input: x"):  # B is fixed at 2 in this file
        session.run(None, {"x": np.zeros((3, 4, 16), np.float32)})


def test_the_command_line_tolerance_overrides_the_spec(tmp_path, capsys):
    spec = write_spec(tmp_path, "  formats: [onnx]\n  tolerance: {atol: 1.0e-4, rtol: 1.0e-3}\n")
    code, out, err = cli(capsys, "export", spec, "--atol", "2e-5", "--rtol", "0", "--out", tmp_path / "out")
    assert code == 0, err
    report = json.loads((tmp_path / "out" / "parity.json").read_text())
    assert report["tolerance"] == {"atol": 2e-5, "rtol": 0.0}
    code, _, err = cli(capsys, "export", spec, "--atol", "-1", "--out", tmp_path / "bad")
    assert code == 2 and "error: --atol -1 is not a tolerance" in err and "hint:" in err
    assert not (tmp_path / "bad").exists()


def test_every_error_of_the_export_section_is_reported_at_its_line(tmp_path, capsys):
    spec = write_spec(tmp_path, "  dynamic: [B, Tt]\n  sizes: {B: [1, 3]}\n")
    code, _, err = cli(capsys, "export", spec, "--out", tmp_path / "out")
    assert code == 1
    assert f"{spec}:{line_of(spec, 'dynamic:')}:16: error: unknown dim 'Tt'" in err
    assert "did you mean 'T'" in err
    spec = write_spec(tmp_path, "  sizes: {T: [1, 32]}\n")
    code, _, err = cli(capsys, "export", spec, "--out", tmp_path / "out")
    assert code == 1
    assert f"{spec}:{line_of(spec, 'sizes:')}:" in err and "size 32 is outside the range of dim 'T'" in err
    assert "expected: sizes from 1 to 16" in err
    assert not (tmp_path / "out").exists()


# ---- parity failures --------------------------------------------------------------------------------

def test_past_tolerance_export_exits_1_naming_artifact_output_sizes_and_amount(tmp_path, capsys):
    spec = write_spec(tmp_path)
    out_dir = tmp_path / "out"
    code, out, err = cli(capsys, "export", spec, "--format", "onnx", "--atol", "1e-12", "--rtol", "0",
                         "--out", out_dir)
    assert code == 1
    assert "FAIL" in out and "parity: FAIL" in out
    match = re.search(r"error: parity failed: tiny\.onnx, output 'y': \|error\| (\S+) where eager is \S+ exceeds "
                      r"atol 1e-12 \+ rtol 0 \* \|eager\| by (\S+) at B=(\d+), T=(\d+), seed (\d)", err)
    assert match, err
    assert "hint: a tolerance can be widened with --atol/--rtol" in err
    report = json.loads((out_dir / "parity.json").read_text())
    artifact, = report["artifacts"]
    assert report["ok"] is False and artifact["ok"] is False
    # the amount printed is the real error of that case, not a placeholder
    error, by = float(match.group(1)), float(match.group(2))
    assert 0 < error <= artifact["outputs"][0]["max_abs"] and by == pytest.approx(error - 1e-12, rel=1e-2)
    B, T, seed = (int(match.group(i)) for i in (3, 4, 5))
    x = random_inputs(dlspec.load(spec), {"B": B, "T": T}, seed)[0]
    session = ort.InferenceSession(str(out_dir / "tiny.onnx"), providers=["CPUExecutionProvider"])
    eager = dlspec.build(dlspec.load(spec)).eval()(x).detach().numpy()
    assert np.abs(session.run(None, {"x": x.numpy()})[0] - eager).max() > 1e-12


def test_a_file_that_does_not_run_in_its_runtime_fails(tmp_path, capsys, monkeypatch):
    """As ONNX Runtime 1.32 fails on opset 23's Attention with a padding mask: written, but not deployable."""
    def load(path, spec):
        def run(inputs):
            raise RuntimeError("[ONNXRuntimeError] : 1 : FAIL : Non-zero status code")
        return run
    monkeypatch.setitem(FORMATS, "onnx", dataclasses.replace(FORMATS["onnx"], load=load))
    spec = write_spec(tmp_path)
    code, out, err = cli(capsys, "export", spec, "--out", tmp_path)
    assert code == 1
    assert re.search(r"^tiny\.onnx +opset 22 +- .*ERROR$", out, re.M) and "parity: FAIL" in out
    assert "error: parity not checked: tiny.onnx failed to run at B=2, T=4, seed 0: [ONNXRuntimeError]" in err
    assert "hint: the file was written but does not run in its own runtime: do not deploy it" in err
    assert "parity failed" not in err  # TorchScript and .pt2 pass
    report = json.loads((tmp_path / "parity.json").read_text())
    assert [a["ok"] for a in report["artifacts"]] == [False, True, True]


def test_nan_or_inf_in_an_exported_file_fails_verify(tmp_path, capsys):
    spec = write_spec(tmp_path, "  formats: [onnx]\n")
    assert cli(capsys, "export", spec, "--out", tmp_path)[0] == 0
    model = onnx.load(str(tmp_path / "tiny.onnx"))
    bias = next(i for i in model.graph.initializer if i.name == "head.bias")
    values = numpy_helper.to_array(bias).copy()
    values[1] = np.inf
    bias.CopyFrom(numpy_helper.from_array(values, bias.name))
    onnx.save(model, str(tmp_path / "broken.onnx"))
    code, out, err = cli(capsys, "verify", tmp_path / "broken.onnx", "--spec", spec, "--atol", "1e3")
    assert code == 1 and "content: DIFFERS" in out and "parity" not in out  # never run
    assert "weight 'head.bias' differs in 1 of 3 values (first at flat index 1: inf," in err


def test_verify_of_a_damaged_file_is_a_clear_error(tmp_path, capsys):
    spec = write_spec(tmp_path, "  formats: [onnx]\n")
    assert cli(capsys, "export", spec, "--out", tmp_path)[0] == 0
    (tmp_path / "cut.onnx").write_bytes((tmp_path / "tiny.onnx").read_bytes()[:500])
    code, _, err = cli(capsys, "verify", tmp_path / "cut.onnx", "--spec", spec)
    assert code == 1
    assert f"error: cannot read {tmp_path / 'cut.onnx'} as onnx:" in err and "hint: the file is damaged" in err


def test_verify_refuses_a_file_exported_from_another_spec(tmp_path, capsys):
    spec = write_spec(tmp_path, "  formats: [onnx]\n")
    assert cli(capsys, "export", spec, "--out", tmp_path)[0] == 0
    code, _, err = cli(capsys, "verify", tmp_path / "tiny.onnx", "--spec", spec, "--set", "model.vars.d=8")
    assert code == 1
    assert "tiny.onnx was exported from another model" in err and "hint: pass the spec it was exported from" in err


# ---- formats that cannot be produced, and atomic files ----------------------------------------------

def _data_dependent_head(monkeypatch):
    """Builds models whose `head` branches on a tensor's value: torch.export (so ONNX and .pt2) cannot
    trace that, TorchScript's tracer can. Both branches compute the same, so parity still holds."""
    build = dlspec.build

    def patched(spec, *args, **kwargs):
        model = build(spec, *args, **kwargs)
        head = model.head

        def forward(x):
            if x.sum() > 0:
                return F.linear(x, head.weight, head.bias)
            return F.linear(x, head.weight, head.bias)
        head.forward = forward
        return model
    monkeypatch.setattr(dlspec, "build", patched)


def test_a_format_that_cannot_be_produced_names_the_spec_node_and_the_others_are_written(
        tmp_path, capsys, monkeypatch):
    spec = write_spec(tmp_path)
    out_dir = tmp_path / "out"
    assert cli(capsys, "export", spec, "--out", out_dir)[0] == 0
    before = {name: (out_dir / name).read_bytes() for name in ("tiny.onnx", "tiny.pt2")}
    (out_dir / "tiny.torchscript.pt").unlink()

    _data_dependent_head(monkeypatch)
    code, out, err = cli(capsys, "export", spec, "--out", out_dir)
    assert code == 1
    line = line_of(spec, "id: head")
    assert f"{spec}:{line}:7: error: cannot export node 'head' (linear) to onnx and pt2: " in err
    assert "data-dependent" in err and "hint: the other formats were still exported" in err
    assert "def forward" not in err + out  # torch's dump of the partial graph is kept out
    # TorchScript was still written and passes parity; the older ONNX and .pt2 files are untouched
    assert (out_dir / "tiny.torchscript.pt").is_file() and "parity: pass" in out
    assert {name: (out_dir / name).read_bytes() for name in before} == before
    report = json.loads((out_dir / "parity.json").read_text())
    assert [a["format"] for a in report["artifacts"]] == ["torchscript"] and report["ok"]
    assert not [p.name for p in out_dir.iterdir() if p.name.startswith(".")]  # no scratch files left


BLOCKS = """\
dlspec: 1
name: blocky
model:
  dims: {T: {example: 4, max: 8}}
  inputs: {x: {shape: [B, T, 16]}}
  layers:
    - {id: h, op: gpt_block, dim: 16, heads: 2, repeat: 2}
    - {id: head, op: linear, in: 16, out: 3}
"""


def test_a_node_inside_a_block_that_cannot_be_exported_is_named_with_its_instance(tmp_path, capsys, monkeypatch):
    """A line of a block's class runs in every copy: the failing copy comes from the module that ran it."""
    build = dlspec.build

    def patched(spec, *args, **kwargs):
        model = build(spec, *args, **kwargs)
        fc = model.h[1].mlp.fc

        def forward(x):
            if x.sum() > 0:  # data-dependent control flow: torch.export cannot trace it
                return F.linear(x, fc.weight, fc.bias)
            return F.linear(x, fc.weight, fc.bias)
        fc.forward = forward
        return model
    monkeypatch.setattr(dlspec, "build", patched)
    spec = write_spec(tmp_path, text=BLOCKS)
    code, _, err = cli(capsys, "export", spec, "--out", tmp_path / "out", "--format", "pt2")
    assert code == 1
    stdlib = REPO / "dlspec" / "stdlib" / "transformer.yaml"
    assert f"{stdlib}:{line_of(stdlib, '{id: fc, op: linear')}:9: error: cannot export node 'h.1.mlp.fc' (linear) " \
           f"(in h.1.mlp, a mlp block used at {stdlib}:" in err


def test_the_node_of_a_failing_line_in_a_block_class_is_found_in_the_instance_that_ran_it(tmp_path, monkeypatch):
    from dlspec.export.blame import culprit
    spec = dlspec.load(write_spec(tmp_path, text=BLOCKS))
    model = dlspec.build(spec)

    def broken(*args, **kwargs):
        raise RuntimeError("no kernel")
    monkeypatch.setattr(F, "gelu", broken)
    with pytest.raises(RuntimeError) as info:
        model(*random_inputs(spec))
    node = culprit(info.value, spec, model)
    assert node.name == "h.0.mlp.gelu_0" and node.op == "gelu"
    with pytest.raises(RuntimeError) as info:
        model.h[1].mlp(torch.randn(2, 4, 16))
    assert culprit(info.value, spec, model).name == "h.1.mlp.gelu_0"


def test_a_dynamic_dim_the_model_cannot_take_is_reported_at_the_dim(tmp_path, capsys, monkeypatch):
    """The front end refuses an unbounded T before a 64-position embedding; behind that check, a dim
    constraint torch.export finds is still a located error, not torch's message."""
    spec = REPO / "tests" / "specs" / "invalid" / "pos-embedding-unbounded.yaml"
    assert cli(capsys, "export", spec, "--out", tmp_path)[0] == 1  # the front end's error
    monkeypatch.setattr(dlspec.front.spec, "_check_limits", lambda *args: [])  # as if it had missed this one
    code, out, err = cli(capsys, "export", spec, "--out", tmp_path)
    assert code == 1
    assert (f"{spec}:8:5: error: dim T is declared with min 1, max unbounded, but the model works only for "
            "max 64 (torch.export)") in err
    assert "hint: set it in the spec, or pass --set 'model.dims.T={max: 64}'" in err
    assert (tmp_path / "pos-embedding-unbounded.torchscript.pt").is_file()
    assert not (tmp_path / "pos-embedding-unbounded.onnx").exists()
    assert not (tmp_path / "pos-embedding-unbounded.pt2").exists()


def test_a_failed_check_leaves_the_previous_export_intact(tmp_path, capsys, monkeypatch):
    spec = write_spec(tmp_path, "  formats: [onnx]\n")
    assert cli(capsys, "export", spec, "--out", tmp_path / "out")[0] == 0
    before = (tmp_path / "out" / "tiny.onnx").read_bytes()

    def failing_check(path, spec):
        raise onnx.checker.ValidationError("a check failed")
    monkeypatch.setattr(to_onnx, "check", failing_check)
    code, _, err = cli(capsys, "export", spec, "--opset", "18", "--out", tmp_path / "out")
    assert code == 1 and "cannot export to onnx: a check failed" in err
    assert (tmp_path / "out" / "tiny.onnx").read_bytes() == before  # still the opset-22 file
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["README.md", "parity.json", "tiny.onnx"]
    assert "tiny.onnx" in (tmp_path / "out" / "README.md").read_text()  # the card of the file still there


# ---- external data ----------------------------------------------------------------------------------

def _runs_like_eager(path: Path, spec: Path) -> None:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = random_inputs(dlspec.load(spec), {"B": 5, "T": 3}, seed=1)[0]
    eager = dlspec.build(dlspec.load(spec)).eval()(x).detach().numpy()
    np.testing.assert_allclose(session.run(None, {"x": x.numpy()})[0], eager, atol=1e-5, rtol=1e-4)


def test_external_data_when_the_spec_asks_for_it(tmp_path, capsys):
    spec = write_spec(tmp_path, "  formats: [onnx]\n  external_data: true\n")
    code, out, err = cli(capsys, "export", spec, "--out", tmp_path / "out")
    assert code == 0, err
    onnx_file, data = tmp_path / "out" / "tiny.onnx", tmp_path / "out" / "tiny.onnx.data"
    assert "(opset 22; weights in tiny.onnx.data)" in out
    assert data.stat().st_size >= 4 * (16 * 32 + 32 * 3)  # the two weight matrices, fp32
    matrices = [i for i in onnx.load(str(onnx_file), load_external_data=False).graph.initializer if len(i.dims) == 2]
    assert len(matrices) == 2 and all(i.data_location == onnx.TensorProto.EXTERNAL for i in matrices)
    onnx.checker.check_model(str(onnx_file), full_check=True)
    _runs_like_eager(onnx_file, spec)
    code, out, _ = cli(capsys, "verify", onnx_file, "--spec", spec)
    assert code == 0 and "parity: pass" in out


def test_external_data_past_the_size_limit_and_not_below_it(tmp_path, capsys, monkeypatch):
    """The 2 GB protobuf limit, lowered to 1 kB: the same code path a 2 GB model takes."""
    spec = write_spec(tmp_path, "  formats: [onnx]\n")
    onnx_file, data = tmp_path / "tiny.onnx", tmp_path / "tiny.onnx.data"
    monkeypatch.setattr(to_onnx, "EXTERNAL_DATA_THRESHOLD", 1000)
    code, out, err = cli(capsys, "export", spec, "--out", tmp_path)
    assert code == 0, err
    assert data.is_file() and "weights in tiny.onnx.data" in out
    _runs_like_eager(onnx_file, spec)

    monkeypatch.undo()  # back to the real limit: this model is far below it
    assert cli(capsys, "export", spec, "--out", tmp_path)[0] == 0
    assert not data.exists()  # the older export's weights file is gone with it
    assert all(not i.HasField("data_location") or i.data_location == onnx.TensorProto.DEFAULT
               for i in onnx.load(str(onnx_file)).graph.initializer)
    _runs_like_eager(onnx_file, spec)


# ---- inputs parity feeds --------------------------------------------------------------------------

def test_parity_inputs_are_valid_for_the_model(tmp_path):
    """Token ids within each embedding's range, masks with at least one real token per row, and the
    same (sizes, seed) always giving the same inputs."""
    spec = dlspec.load(REPO / "specs" / "bert-base.yaml", ["model.vars.vocab=50"])
    ranges = {t.name: t.range for t in spec.inputs}
    assert ranges["input_ids"] == (0, 50) and ranges["token_type_ids"] == (0, 2)
    masks = []
    for seed in range(3):
        for T in (1, 3, 16):
            ids, types, mask = random_inputs(spec, {"B": 17, "T": T}, seed)
            assert ids.dtype == torch.int64 and 0 <= int(ids.min()) and int(ids.max()) < 50
            assert set(types.unique().tolist()) <= {0, 1}
            assert mask.dtype == torch.bool and mask.shape == (17, T) and mask.any(dim=-1).all()
            masks.append(mask)
    assert not all(bool(m.all()) for m in masks)  # padding does occur
    first, again = random_inputs(spec, {"B": 2, "T": 5}, 1), random_inputs(spec, {"B": 2, "T": 5}, 1)
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    assert not torch.equal(first[0], random_inputs(spec, {"B": 2, "T": 5}, 2)[0])
