"""Stage 4: static shape inference with symbolic dims."""
import pytest
import sympy
from support import ROOT

import dlspec
from dlspec.core.errors import DlspecError

SEED_CNN = ROOT / "specs" / "seed-cnn.yaml"


def test_seed_cnn_at_32x32_names_the_linear_line_and_both_numbers():
    with pytest.raises(DlspecError) as info:
        dlspec.load(SEED_CNN, ["model.inputs.x.shape=[B, 3, 32, 32]"])
    (p,) = info.value.problems
    line = next(i for i, text in enumerate(SEED_CNN.read_text().splitlines(), 1) if "id: fc1" in text)
    assert p.loc.line == line and "4096" in p.message and "16384" in p.message


def test_seed_cnn_at_16x16_validates_with_symbolic_batch():
    spec = dlspec.load(SEED_CNN)
    types = spec.graph.types
    assert str(types["pool"]) == "[B, 64, 8, 8]" and str(types["flatten_0"]) == "[B, 4096]"
    assert spec.outputs[0].shape == ("B", 10)


def test_symbolic_dims_flow_through_arithmetic():
    spec = dlspec.load(ROOT / "tests" / "specs" / "valid" / "layer-zoo.yaml")
    assert spec.outputs[2].shape == ("B", "L + 1", 6)
    spec = dlspec.load(ROOT / "specs" / "resnet18.yaml", ["model.inputs.image.shape=[B, 3, H, H]",
                                                             "model.dims={B: 2, H: {example: 64, min: 64}}"])
    conv1 = spec.graph.types["conv1"].shape[2]
    assert isinstance(conv1, sympy.Basic) and "floor" in str(conv1)


def test_symbolic_features_into_linear_are_rejected(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text("dlspec: 1\nname: s\nmodel:\n  inputs: {x: {shape: [B, T, 4]}}\n  layers:\n"
                    "    - flatten\n    - {op: linear, in: 16, out: 2}\n")
    with pytest.raises(DlspecError) as info:
        dlspec.load(path)
    assert "4*T" in info.value.problems[0].message


def test_integer_input_range_is_inferred_from_its_embedding():
    spec = dlspec.load(ROOT / "specs" / "gpt2-small.yaml")
    assert spec.inputs[0].range == (0, 50257)
    assert spec.dims["T"].example == 64 and spec.dims["T"].max == 1024 and spec.dims["B"].example == 2
