"""Stage 3: lowering to the flat IR (blocks, repeats, residuals, variables, ties, regions)."""
import json
import subprocess
import sys

import pytest
from support import ROOT

import dlspec
from dlspec.core.errors import DlspecError

VALID_DIR = ROOT / "tests" / "specs" / "valid"


def nodes(spec):
    return {n.name: n for n in spec.graph.nodes}


def test_sequential_chain_and_auto_ids():
    spec = dlspec.load(ROOT / "specs" / "seed-mlp.yaml")
    names = [n.name for n in spec.graph.nodes]
    assert names == ["fc1", "relu_0", "fc2", "relu_1", "fc3"]
    assert nodes(spec)["fc2"].inputs == ("relu_0",)


def test_blocks_expand_with_defaults_repeat_and_copy_index():
    spec = dlspec.load(VALID_DIR / "blocks.yaml")
    n = nodes(spec)
    # res_ffn x3 -> body.0 .. body.2; ffn's `hidden` defaults to 2 * dim; act_tanh picks gelu
    assert n["body.2.ffn.up"].a == {"in": 16, "out": 32, "bias": True}
    assert n["body.0.ffn.gelu_0"].op == "gelu" and "body.0.ffn.relu_0" not in n
    # the first widen copy needs a projection shortcut, the second (i == 1) does not
    assert "steps.0.proj" in n and "steps.1.proj" not in n and "same.proj" not in n
    assert n["steps.0.residual_0"].inputs == ("steps.0.proj", "steps.0.fc")
    assert n["steps.1.residual_0"].inputs == ("steps.0.residual_0", "steps.1.fc")


def test_repeat_of_one_keeps_numbered_names_and_the_copy_index():
    # resnet50's stages say `in_ch: "64 if i == 0 else 256"`; cutting a stage to one copy keeps both working
    full = nodes(dlspec.load(ROOT / "specs" / "resnet50.yaml"))
    cut = nodes(dlspec.load(ROOT / "specs" / "resnet50.yaml", ["model.layers.4.repeat=1"]))
    assert "layer1.0.conv1" in full and "layer1.0.conv1" in cut and "layer1.1.conv1" not in cut
    assert cut["layer1.0.conv1"].a == full["layer1.0.conv1"].a


def test_named_outputs_and_indexed_references():
    n = nodes(dlspec.load(VALID_DIR / "dag.yaml"))
    assert n["parts"].outputs == ("parts.0", "parts.1")
    assert n["grow"].inputs == ("parts.0",) and n["right"].inputs == ("thirds.1",)
    assert n["summed"].inputs == ("gated", "parts.1", "grow")


def test_variables_expressions_and_overrides():
    spec = dlspec.load(ROOT / "specs" / "seed-transformer.yaml", ["model.vars.d_model=64"])
    assert nodes(spec)["encoder.0.ff.fc"].a["out"] == 256  # d_ff: 4 * d_model, after the override
    assert spec.document["model"]["vars"]["d_model"] == 64


def test_override_with_a_wrong_type_is_located_at_the_override():
    with pytest.raises(DlspecError) as info:
        dlspec.load(ROOT / "specs" / "seed-transformer.yaml", ["model.vars.heads=three"])
    (p,) = info.value.problems  # one problem: the nodes after the failed one do not pile on
    assert p.message == "expected int, got 'heads' = 'three'" and p.loc.line == 25


def test_ties_checkpoint_regions_freezing_and_init():
    n = nodes(dlspec.load(VALID_DIR / "training-features.yaml"))
    assert n["lm_head"].ties == (("weight", "wte", "weight"),)
    assert n["h.1.attn"].region == "h.1" and n["ln_f"].region == "ln_f" and n["proj"].region is None
    assert not n["wpe"].trainable and n["wte"].trainable
    assert n["wte"].init[0] == ("*weight", {"scheme": "normal", "std": 0.02})
    assert n["h.0.mlp.fc"].init == (("*weight", {"scheme": "xavier_uniform"}), ("*bias", {"scheme": "zeros"}))


def test_includes_resolve_relative_to_the_including_file():
    spec = dlspec.load(VALID_DIR / "include.yaml")
    assert "down.conv" in nodes(spec) and "classifier.fc" in nodes(spec)


def test_errors_inside_blocks_name_the_instance(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text("dlspec: 1\nname: s\nblocks:\n  b:\n    params: {d: int}\n    layers:\n"
                    "      - {op: linear, in: d, out: 4}\nmodel:\n  inputs: {x: {shape: [B, 8]}}\n"
                    "  layers:\n    - {id: first, op: b, d: 8}\n    - {id: second, op: b, d: 8}\n")
    with pytest.raises(DlspecError) as info:
        dlspec.load(path)
    (p,) = info.value.problems
    assert (p.loc.line, p.loc.col) == (7, 26)  # the `in:` inside the block definition
    assert "second" in p.message and "11:7" not in p.message and "12:7" in p.message


def test_block_recursion_is_an_error(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text("dlspec: 1\nname: s\nblocks:\n  loop:\n    layers: [loop]\nmodel:\n"
                    "  inputs: {x: {shape: [B, 8]}}\n  layers: [loop]\n")
    with pytest.raises(DlspecError) as info:
        dlspec.load(path)
    assert "nest deeper" in info.value.problems[0].message


def test_spec_hash_follows_the_model_not_the_training_section():
    base = dlspec.load(ROOT / "specs" / "seed-mlp.yaml")
    assert dlspec.load(ROOT / "specs" / "seed-mlp.yaml").spec_hash == base.spec_hash
    wider = dlspec.load(ROOT / "specs" / "seed-mlp.yaml", ["model.layers.0.out=255", "model.layers.2.in=255"])
    assert wider.spec_hash != base.spec_hash


def test_block_instances_are_recorded_over_their_nodes():
    spec = dlspec.load(ROOT / "specs" / "gpt2-small.yaml", ["model.vars.layers=2"])
    graph = spec.graph
    assert [(i.name, i.block) for i in graph.instances] == [("h.0", "gpt_block"), ("h.0.mlp", "mlp"),
                                                            ("h.1", "gpt_block"), ("h.1.mlp", "mlp")]
    for inst in graph.instances:  # its nodes are exactly those under its name
        inside = [n.name for n in graph.nodes if n.name.startswith(inst.name + ".")]
        assert [graph.nodes[k].name for k in inst.nodes] == inside
    h1 = graph.instances[2]
    assert h1.input_names == ("x",) and h1.inputs == graph.instances[0].outputs == ("h.0.residual_1",)
    assert dict(h1.params)["hidden"] == 3072 and dict(h1.params)["approximate"] == "tanh"
    assert graph.init == (("*weight", {"scheme": "normal", "std": 0.02}), ("*bias", {"scheme": "zeros"}))
    checkpointed = dlspec.load(VALID_DIR / "training-features.yaml").graph.instances
    assert [(i.name, i.checkpoint) for i in checkpointed] == [("h.0", True), ("h.0.mlp", False), ("h.1", True),
                                                              ("h.1.mlp", False)]


def test_node_ids_may_be_any_module_name():
    """Digits included, so a spec reproduces nn.Sequential keys (torchvision's `layer1.0.downsample.0.weight`)."""
    spec = dlspec.load(VALID_DIR / "module-names.yaml")
    n = nodes(spec)
    assert n["layer1.0.downsample.0"].op == "conv2d" and n["features.1.conv.0.1"].op == "batch_norm2d"
    assert "layer1.1.downsample.0" not in n and n["3"].op == "conv2d"  # `id: 3` at the top level
    assert n["features.1.residual_0"].inputs == ("features.0.1", "features.1.conv.2")  # `from: 0` in a block
    keys = dlspec.build(spec).state_dict()
    assert {"layer1.0.downsample.0.weight", "layer1.0.downsample.1.running_mean", "features.1.conv.0.0.weight",
            "features.1.conv.2.bias", "3.weight"} <= set(keys)


def test_reserved_module_names_cover_the_installed_torch():
    """An id may not be an attribute of the generated classes: the list in dlspec/core/names.py holds every
    attribute nn.Module and FSDP give a module, so an id cannot hide one (or be refused by add_module)."""
    from dlspec.core.names import MODULE_ATTRIBUTES

    # a fresh interpreter: libraries other tests import (transformers) add attributes to nn.Module
    script = ("import json, torch.nn as nn\nfrom torch.distributed.fsdp import FSDPModule\n"
              "print(json.dumps(sorted(set(dir(nn.Module)) | set(vars(nn.Module())) | set(dir(FSDPModule)))))")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    have = {name for name in json.loads(done.stdout) if not name.startswith("___")}  # torch.compile's marks
    assert have - MODULE_ATTRIBUTES == set(), "add these to dlspec/core/names.py"
