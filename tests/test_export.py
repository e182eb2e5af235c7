"""Every spec in specs/ exports to ONNX, TorchScript and .pt2 with parity proven.

The big architectures are reduced through the same --set overrides users have.
Each export runs once per spec (a module-scoped fixture); the tests then check
what a user relies on: the files, their provenance, the ONNX checks, the axis
names, and the parity report.
"""
from __future__ import annotations

import json
from pathlib import Path

import onnx
import pytest

import dlspec
from dlspec.export import export
from dlspec.export.formats import FORMATS

REPO = Path(__file__).resolve().parents[1]
SPECS = sorted((REPO / "specs").glob("*.yaml"))

_TRANSFORMER = ["model.vars.heads=2", "model.vars.layers=2"]
# spec name -> overrides that make it small enough for CI (the model's structure is unchanged)
REDUCED = {
    "bert-base": _TRANSFORMER + ["model.vars.vocab=100", "model.vars.positions=32", "model.vars.dim=32",
                                 "model.vars.hidden=64", "model.dims.T.max=32"],
    "char-gpt": _TRANSFORMER + ["model.vars.d_model=32", "model.dims.B=4", "model.dims.T.example=16"],
    "gpt2-small": _TRANSFORMER + ["model.vars.vocab=64", "model.vars.context=32", "model.vars.d_model=32",
                                  "model.dims.T.example=16", "model.dims.T.max=32"],
    "resnet18": ["model.vars.image=32", "model.vars.classes=10"],
    "resnet50": ["model.vars.image=32", "model.vars.classes=10"],
    "vit-b-16": _TRANSFORMER + ["model.vars.image=32", "model.vars.dim=32", "model.vars.mlp=64",
                                "model.vars.classes=10"],
}


def overrides(path: Path) -> list[str]:
    return REDUCED.get(path.stem, [])


@pytest.fixture(scope="module", params=SPECS, ids=[p.stem for p in SPECS])
def exported(request, tmp_path_factory):
    path = request.param
    spec = dlspec.load(path, overrides(path))
    out = tmp_path_factory.mktemp(path.stem)
    return spec, out, export(spec, out)


def test_every_format_is_written_and_passes_parity(exported):
    spec, out, result = exported
    assert result.ok, "\n".join(p.format() for p in result.problems)
    assert [a.format for a in result.report.artifacts] == list(FORMATS)
    for artifact in result.report.artifacts:
        assert artifact.file.is_file() and artifact.file.parent == out
        assert [o.name for o in artifact.outputs] == [t.name for t in spec.outputs]
        assert all(o.ok for o in artifact.outputs), artifact
    report = json.loads((out / "parity.json").read_text())
    assert report["ok"] is True and report["spec_hash"] == spec.spec_hash
    assert {a["file"] for a in report["artifacts"]} == {a.file.name for a in result.report.artifacts}


def test_parity_covers_size_one_the_example_and_an_odd_size(exported):
    spec, _, result = exported
    cases = result.report.cases
    assert result.report.seeds == 3
    for name, dim in spec.dims.items():
        checked = {case[name] for case in cases}
        assert {1, dim.example} <= checked, (name, checked)
        assert any(size % 2 == 1 and size > 1 for size in checked), (name, checked)


def test_onnx_file_is_checked_named_and_traceable_to_its_spec(exported):
    spec, out, result = exported
    path = next(a.file for a in result.report.artifacts if a.format == "onnx")
    onnx.checker.check_model(str(path), full_check=True)
    model = onnx.load(str(path))
    meta = {p.key: p.value for p in model.metadata_props}
    assert meta["dlspec.spec_name"] == spec.name
    assert meta["dlspec.spec_hash"] == spec.spec_hash
    assert meta["dlspec.version"] == dlspec.__version__
    assert json.loads(meta["dlspec.spec"]) == json.loads(json.dumps(spec.document, default=str))
    assert json.loads(meta["dlspec.weights"]) == {"source": "initialised", "seed": 0}
    # input and output names from the spec; symbolic dims keep their names as dynamic axes
    inputs = {i.name: i for i in model.graph.input}
    for tensor in spec.inputs:
        dims = inputs[tensor.name].type.tensor_type.shape.dim
        assert [d.dim_param or d.dim_value for d in dims] == list(tensor.shape)
    assert [o.name for o in model.graph.output] == [t.name for t in spec.outputs]
    first = model.graph.output[0].type.tensor_type.shape.dim[0]
    assert first.dim_param == spec.outputs[0].shape[0] == "B"


def test_torchscript_and_pt2_carry_the_same_provenance(exported):
    spec, _, result = exported
    for artifact in result.report.artifacts:
        record = FORMATS[artifact.format].read_record(artifact.file)
        assert record["spec_hash"] == spec.spec_hash and record["spec_name"] == spec.name
        assert record["export"]["dynamic"] == list(spec.dims)
