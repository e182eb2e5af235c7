"""Every spec in specs/ exports to ONNX, TorchScript and .pt2 with parity proven.

The big architectures are reduced through the same --set overrides users have.
Three example specs of tests/specs/valid/ add the features the specs/ models
leave out: cross-attention with a padding mask and grouped-query heads, a
multi-output DAG, and gradient-checkpointed blocks with tied weights.
Each export runs once per spec (a module-scoped fixture); the tests then check
what a user relies on: the files, their provenance, the ONNX checks, the axis
names, the TorchScript method, tied weights, and the parity report.
"""
from __future__ import annotations

import json
from pathlib import Path

import onnx
import pytest
import torch

import dlspec
from dlspec.export import export
from dlspec.export.config import static_dims
from dlspec.export.formats import FORMATS
from dlspec.front.spec import concrete_shape

REPO = Path(__file__).resolve().parents[1]
FEATURES = [REPO / "tests" / "specs" / "valid" / f"{name}.yaml" for name in ("attention", "dag", "training-features")]
SPECS = sorted((REPO / "specs").glob("*.yaml")) + FEATURES

_TRANSFORMER = ["model.vars.heads=2", "model.vars.layers=2"]
# spec name -> overrides that make it small enough for CI (the model's structure is unchanged)
REDUCED = {
    "bert-base": _TRANSFORMER + ["model.vars.vocab=100", "model.vars.positions=32", "model.vars.dim=32",
                                 "model.vars.hidden=64", "model.dims.T.max=32"],
    "char-gpt": _TRANSFORMER + ["model.vars.d_model=32", "model.dims.B=4", "model.dims.T.example=16"],
    "gpt2-small": _TRANSFORMER + ["model.vars.vocab=64", "model.vars.context=32", "model.vars.d_model=32",
                                  "model.dims.T.example=16", "model.dims.T.max=32"],
    # at 32x32 the last stage is 1x1: batch norm then needs two examples a batch to train
    "resnet18": ["model.vars.image=32", "model.vars.classes=10", "model.dims.B={example: 2, min: 2}"],
    "resnet18-finetune": ["model.vars.image=32"],
    # two bottleneck blocks per stage (a strided projection block, then an identity block) instead
    # of 3, 4, 6, 3: the exporters' time grows with the graph, not with the weights
    "resnet50": ["model.vars.image=32", "model.vars.classes=10", "model.dims.B={example: 2, min: 2}"]
    + [f"model.layers.{i}.repeat=2" for i in (4, 5, 6, 7)],
    "char-llama": ["model.vars.layers=2", "model.vars.dim=32", "model.vars.hidden=64", "model.dims.B=4",
                   "model.dims.T.example=16"],
    "llama2-7b": ["model.vars.layers=2", "model.vars.vocab=64", "model.vars.dim=32", "model.vars.heads=4",
                  "model.vars.kv_heads=4", "model.vars.hidden=64", "model.dims.T.example=16", "model.dims.T.max=32"],
    "llama3-8b": ["model.vars.layers=2", "model.vars.vocab=64", "model.vars.dim=32", "model.vars.heads=4",
                  "model.vars.kv_heads=2", "model.vars.hidden=64", "model.dims.T.example=16", "model.dims.T.max=32"],
    # 64x64 keeps every stage's map at 2x2 or more; two blocks in the longer stages (the graph, not the
    # weights, sets the exporters' time)
    "mobilenet-v2": ["model.vars.image=64", "model.vars.classes=10"] + [f"model.layers.{i}.repeat=2" for i in (3, 4, 6)],
    "efficientnet-b0": ["model.vars.image=64", "model.vars.classes=10"] + [f"model.layers.{i}.repeat=2" for i in (4, 5, 6)],
    "unet": ["model.vars.width=8"],
    "vit-b-16": _TRANSFORMER + ["model.vars.image=32", "model.vars.dim=32", "model.vars.mlp=64",
                                "model.vars.classes=10"],
    # its 64 learned positions bound T: exported unbounded, torch.export refuses it (as
    # test_export_options checks), and the hint dlspec gives is this override
}


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One torch (and so ONNX Runtime) thread: on a shared 2-core machine, threads waiting on each
    other cost more than these small models compute."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


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


def test_parity_covers_the_smallest_size_the_example_and_an_odd_size(exported):
    """Every dynamic dim at its smallest size (1 unless the spec says otherwise), its example and an odd
    size (an odd multiple for a dim declared a multiple of an even number); a dim a recurrent layer steps
    over is exported at its example size only."""
    spec, _, result = exported
    cases = result.report.cases
    assert result.report.seeds == 3
    static = static_dims(spec)
    for name, dim in spec.dims.items():
        checked = {case[name] for case in cases}
        if name in static:
            assert checked == {dim.example}, (name, checked)
            continue
        assert {dim.min, dim.example} <= checked, (name, checked)
        assert any((size // dim.multiple_of) % 2 == 1 and size > dim.min for size in checked), (name, checked)


def test_onnx_file_is_checked_named_and_traceable_to_its_spec(exported):
    spec, out, result = exported
    path = next(a.file for a in result.report.artifacts if a.format == "onnx")
    onnx.checker.check_model(str(path), full_check=True)
    model = onnx.load(str(path))
    meta = {p.key: p.value for p in model.metadata_props}
    assert meta["dlspec.spec_name"] == spec.name
    assert meta["dlspec.spec_hash"] == spec.spec_hash
    assert meta["dlspec.version"] == dlspec.__version__
    assert json.loads(meta["dlspec.front.spec"]) == json.loads(json.dumps(spec.document, default=str))
    assert json.loads(meta["dlspec.weights"]) == {"source": "initialised", "seed": 0}
    assert model.opset_import[0].domain == "" and model.opset_import[0].version == 22  # the default opset
    # input and output names from the spec; symbolic dims keep their names as dynamic axes, also
    # after ONNX's own strict shape inference
    # (a dim exported static, as an LSTM's T, is its example size)
    inferred = onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True, data_prop=True)
    dynamic = json.loads(meta["dlspec.export"])["dynamic"] if "dlspec.export" in meta else list(spec.dims)
    inputs = {i.name: i for i in inferred.graph.input}
    for tensor in spec.inputs:
        dims = inputs[tensor.name].type.tensor_type.shape.dim
        assert [d.dim_param or d.dim_value for d in dims] == _axes(spec, tensor.shape, dynamic)
    assert [o.name for o in inferred.graph.output] == [t.name for t in spec.outputs]
    for output, tensor in zip(inferred.graph.output, spec.outputs):
        dims = output.type.tensor_type.shape.dim
        assert [d.dim_param or d.dim_value for d in dims] == _axes(spec, tensor.shape, dynamic), output.name


def _axes(spec, shape, dynamic) -> list:
    """The ONNX axes of a spec shape: dynamic dims by name, the others at their example sizes."""
    sizes = spec.example_sizes()
    return [d if isinstance(d, int) or d in dynamic else concrete_shape([d], sizes)[0] for d in shape]


def test_torchscript_and_pt2_carry_the_same_provenance(exported):
    spec, _, result = exported
    for artifact in result.report.artifacts:
        record = FORMATS[artifact.format].read_record(artifact.file)
        assert record["spec_hash"] == spec.spec_hash and record["spec_name"] == spec.name
        assert record["export"]["dynamic"] == [name for name in spec.dims if name not in static_dims(spec)]


def test_torchscript_says_whether_it_was_scripted_or_traced(exported):
    _, out, result = exported
    artifact = next(a for a in result.report.artifacts if a.format == "torchscript")
    assert artifact.method in ("scripted", "traced")
    if artifact.method == "traced":  # and why scripting was not possible
        assert artifact.note.startswith("not scriptable: ") and len(artifact.note) > len("not scriptable: ")
    else:
        assert artifact.note == ""
    written = json.loads((out / "parity.json").read_text())
    assert {a["format"]: a["made_by"] for a in written["artifacts"]}["torchscript"] == artifact.method


def _tied(spec) -> list[tuple[str, str]]:
    """(parameter, parameter it is tied to) for every `tie:` of the spec's layers."""
    return [(f"{layer['id']}.{param}", f"{target}.{param}") for layer in spec.document["model"]["layers"]
            if isinstance(layer, dict) for param, target in layer.get("tie", {}).items()]


def _shared(module: torch.nn.Module) -> set[frozenset[str]]:
    """The groups of state-dict entries that are one tensor."""
    groups: dict[int, set[str]] = {}
    for name, tensor in module.state_dict(keep_vars=True).items():
        if tensor.numel():
            groups.setdefault(tensor.data_ptr(), set()).add(name)
    return {frozenset(group) for group in groups.values() if len(group) > 1}


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:DeprecationWarning")
def test_tied_weights_stay_one_tensor_in_every_format(exported):
    """The spec's ties, and no others, in the eager model, the TorchScript and .pt2 modules; a tied
    weight is stored once in the .onnx file."""
    spec, _, result = exported
    files = {a.format: a.file for a in result.report.artifacts}
    model = dlspec.build(spec)
    ties = {frozenset(pair) for pair in _tied(spec)}
    assert _shared(model) == ties
    assert _shared(torch.jit.load(str(files["torchscript"]))) == ties
    assert _shared(torch.export.load(files["pt2"]).module()) == ties
    onnx_weights = [onnx.numpy_helper.to_array(i) for i in onnx.load(str(files["onnx"])).graph.initializer]
    for param, _ in _tied(spec):
        tied = model.get_parameter(param).detach().numpy()
        assert sum(w.shape == tied.shape and (w == tied).all() for w in onnx_weights) == 1, param


def test_the_schema_offers_exactly_the_formats_there_are():
    from dlspec.export import schema
    from dlspec.export.formats import format_of
    assert schema.FORMATS == tuple(FORMATS)
    for name, fmt in FORMATS.items():
        assert format_of(Path("model" + fmt.suffix)) is fmt, name
    assert format_of(Path("model.txt")) is None
