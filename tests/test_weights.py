"""Pretrained weights in and out (dlspec/weights): each reference is built by its own library with random
weights (nothing is downloaded), saved in its native format (torch.save(state_dict), save_pretrained), and
loaded through dlspec: eval-mode outputs equal within 1e-5 (max abs). Saved back in the source's layout,
the library itself loads the file strictly and gives the same outputs again."""
from __future__ import annotations

import json
import shutil
import warnings

import numpy as np
import pytest
import torch
from references import timm, torchvision_module, transformers
from support import ROOT

import dlspec
import dlspec.weights
from dlspec.cli import main
from dlspec.core.errors import DlspecError

TOLERANCE = 1e-5


def _max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a - b).abs().max().item()


def _random_statistics(model: torch.nn.Module) -> torch.nn.Module:
    """Batch norm with running statistics that are not 0 and 1, so it is not the identity in eval mode."""
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    return model


@pytest.mark.parametrize("name, blocks", [("resnet18", None), ("resnet50", [1, 1, 1, 1])])
def test_torchvision_resnets_load_their_state_dict_as_it_is(name, blocks, tmp_path):
    """The specs name every module as torchvision does (`layer1.0.downsample.0`), so no mapping is needed."""
    resnet = torchvision_module("resnet")
    torch.manual_seed(0)
    reference = resnet.resnet18(num_classes=10) if blocks is None else resnet.ResNet(resnet.Bottleneck, blocks, num_classes=10)
    _random_statistics(reference).eval()
    torch.save(reference.state_dict(), tmp_path / f"{name}.pth")
    overrides = ["model.vars.image=32", "model.vars.classes=10", "model.dims.B={example: 2, min: 2}"]
    overrides += [f"model.layers.{i}.repeat={n}" for i, n in zip((4, 5, 6, 7), blocks)] if blocks else []
    model = dlspec.build(ROOT / "specs" / f"{name}.yaml", overrides, weights=tmp_path / f"{name}.pth").eval()
    report = model.weights_report
    assert len(report.loaded) == len(reference.state_dict()) and report.ok
    assert all(e.origin == (e.name,) for e in report.loaded)  # name for name
    image = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert _max_diff(model(image), reference(image)) <= TOLERANCE


VIT = ["model.vars.image=32", "model.vars.dim=32", "model.vars.heads=4", "model.vars.layers=2", "model.vars.mlp=48",
       "model.vars.classes=10"]


def test_torchvision_vit_loads_through_its_preset_and_saves_back(tmp_path):
    """`encoder_layer_N`, a [1, 5, 32] position table and nn.MultiheadAttention's in_proj_weight: mapped by
    the torchvision preset; the file saved back is torchvision's state dict again."""
    torch.manual_seed(0)
    reference = torchvision_module("vision_transformer").VisionTransformer(
        image_size=32, patch_size=16, num_layers=2, num_heads=4, hidden_dim=32, mlp_dim=48, num_classes=10).eval()
    torch.save(reference.state_dict(), tmp_path / "vit.pth")
    model = dlspec.build(ROOT / "specs" / "vit-b-16.yaml", VIT, weights=tmp_path / "vit.pth").eval()
    pos = next(e for e in model.weights_report.loaded if e.name == "encoder.pos_embedding.weight")
    assert pos.origin == ("encoder.pos_embedding",) and "preset torchvision" in pos.note
    image = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        expected = reference(image)
        assert _max_diff(model(image), expected) <= TOLERANCE
    dlspec.weights.save(model, tmp_path / "back.safetensors")
    from safetensors.torch import load_file
    again = torchvision_module("vision_transformer").VisionTransformer(
        image_size=32, patch_size=16, num_layers=2, num_heads=4, hidden_dim=32, mlp_dim=48, num_classes=10).eval()
    again.load_state_dict(load_file(tmp_path / "back.safetensors"), strict=True)
    with torch.no_grad():
        assert _max_diff(again(image), expected) == 0


def test_timm_vit_loads_through_the_timm_preset(tmp_path):
    """timm's ViT onto vit-b-16.yaml: its fused qkv is nn.MultiheadAttention's in_proj_weight, its [1, 5, 32]
    position table is squeezed."""
    torch.manual_seed(0)
    vit = timm().create_model("vit_base_patch16_224", pretrained=False, img_size=32, depth=2, embed_dim=32, num_heads=4,
                              mlp_ratio=1.5, num_classes=10).eval()
    torch.save(vit.state_dict(), tmp_path / "vit.pth")
    model = dlspec.build(ROOT / "specs" / "vit-b-16.yaml", VIT + ["weights.preset=timm"], weights=tmp_path / "vit.pth")
    image = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert _max_diff(model.eval()(image), vit(image)) <= TOLERANCE


def _gpt2():
    hf = transformers()
    config = hf.GPT2Config(vocab_size=64, n_positions=32, n_embd=32, n_layer=2, n_head=4)
    overrides = ["model.vars.vocab=64", "model.vars.context=32", "model.vars.d_model=32", "model.vars.heads=4",
                 "model.vars.layers=2", "model.dims.T={example: 9, max: 32}"]
    tokens = torch.randint(0, 64, (2, 9))
    return hf.GPT2LMHeadModel(config), "gpt2-small", overrides, (tokens,), lambda m: m(tokens).logits


def _bert():
    hf = transformers()
    config = hf.BertConfig(vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                           intermediate_size=48, max_position_embeddings=32)
    overrides = ["model.vars.vocab=64", "model.vars.positions=32", "model.vars.dim=32", "model.vars.heads=4",
                 "model.vars.layers=2", "model.vars.hidden=48", "model.dims.T={example: 9, max: 32}"]
    tokens, types = torch.randint(0, 64, (2, 9)), torch.randint(0, 2, (2, 9))
    mask = torch.ones(2, 9, dtype=torch.bool)
    mask[1, 6:] = False

    def outputs(m):
        out = m(input_ids=tokens, token_type_ids=types, attention_mask=mask.long())
        return torch.cat([out.last_hidden_state[mask], out.pooler_output])
    return hf.BertModel(config), "bert-base", overrides, (tokens, types, mask), outputs


def _hf_vit():
    hf = transformers()
    config = hf.ViTConfig(image_size=32, patch_size=16, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                          intermediate_size=48, num_labels=10, layer_norm_eps=1e-6)
    image = torch.randn(2, 3, 32, 32)
    return (hf.ViTForImageClassification(config), "vit-b-16", VIT + ["weights.preset=hf-vit"], (image,),
            lambda m: m(image).logits)


def _dlspec_outputs(model, inputs):
    out = model(*inputs)
    if isinstance(out, tuple):  # bert-base: last_hidden_state, pooled
        return torch.cat([out[0][inputs[2]], out[1]])
    return out


@pytest.mark.parametrize("make", [_gpt2, _bert, _hf_vit], ids=["hf-gpt2", "hf-bert", "hf-vit"])
def test_hugging_face_checkpoints_load_through_presets_and_save_back(make, tmp_path):
    """GPT-2's transposed Conv1D weights and `transformer.` prefix, BERT's and ViT's separate query, key and
    value fused into one projection: loaded from save_pretrained's folder, and written back in a folder
    from_pretrained reads (with the same config.json)."""
    torch.manual_seed(0)
    reference, spec, overrides, inputs, outputs = make()
    reference.eval().save_pretrained(tmp_path / "hf")
    model = dlspec.build(ROOT / "specs" / f"{spec}.yaml", overrides, weights=tmp_path / "hf").eval()
    assert model.weights_report.ok
    with torch.no_grad():
        expected = outputs(reference)
        assert _max_diff(_dlspec_outputs(model, inputs), expected) <= TOLERANCE
    (tmp_path / "back").mkdir()
    dlspec.weights.save(model, tmp_path / "back" / "model.safetensors")
    shutil.copy(tmp_path / "hf" / "config.json", tmp_path / "back")
    again = type(reference).from_pretrained(tmp_path / "back").eval()
    unloaded = {k for k, v in again.state_dict().items() if not torch.equal(v, reference.state_dict()[k])}
    assert not unloaded
    with torch.no_grad():
        assert _max_diff(outputs(again), expected) == 0


def _mlp_spec(tmp_path, extra: str = ""):
    path = tmp_path / "mlp.yaml"
    path.write_text("dlspec: 1\nname: mlp\nmodel:\n  inputs: {x: {shape: [B, 4]}}\n  layers:\n"
                    "    - {id: fc1, op: linear, in: 4, out: 8}\n    - relu\n"
                    "    - {id: head, op: linear, in: 8, out: 3}\n" + extra)
    return path


def _state(**changes):
    torch.manual_seed(0)
    state = {"fc1.weight": torch.randn(8, 4), "fc1.bias": torch.randn(8), "head.weight": torch.randn(3, 8),
             "head.bias": torch.randn(3)}
    state.update(changes)
    return {k: v for k, v in state.items() if v is not None}


def test_a_sharded_hugging_face_folder_loads_through_its_index(tmp_path):
    hf = transformers()
    torch.manual_seed(0)
    config = hf.LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                            num_attention_heads=4, num_key_value_heads=2, rms_norm_eps=1e-5, tie_word_embeddings=False)
    reference = hf.LlamaForCausalLM(config).eval()
    reference.save_pretrained(tmp_path, max_shard_size="20KB")
    index = json.loads((tmp_path / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) > 1
    overrides = ["model.vars.vocab=64", "model.vars.dim=32", "model.vars.layers=2", "model.vars.heads=4",
                 "model.vars.kv_heads=2", "model.vars.hidden=48"]
    model = dlspec.build(ROOT / "specs" / "llama2-7b.yaml", overrides, weights=tmp_path).eval()
    assert "shards" in model.weights_report.kind and len(model.weights_report.loaded) == len(index["weight_map"])
    tokens = torch.randint(0, 64, (2, 7))
    with torch.no_grad():
        assert _max_diff(model(tokens), reference(tokens).logits) <= TOLERANCE
    # a shard named outside the folder is refused before anything is read
    index["weight_map"] = {k: "../elsewhere.safetensors" for k in index["weight_map"]}
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(DlspecError, match="outside its folder"):
        dlspec.build(ROOT / "specs" / "llama2-7b.yaml", overrides, weights=tmp_path)


def test_strict_loading_names_every_problem_at_its_spec_line(tmp_path):
    spec = _mlp_spec(tmp_path)
    torch.save(_state(**{"head.bias": None, "extra.weight": torch.zeros(2), "fc1.weight": torch.zeros(4, 8)}),
               tmp_path / "w.bin")
    with pytest.raises(DlspecError) as caught:
        dlspec.build(spec, weights=tmp_path / "w.bin")
    text = caught.value.format()
    assert f"{spec}:8:7: error: head.bias [3] is not in the checkpoint" in text
    assert "the checkpoint's extra.weight [2] has no place in the model" in text and 'ignore: "extra.weight"' in text
    assert f"{spec}:6:7: error: fc1.weight: the checkpoint's fc1.weight is [4, 8], the model's is [8, 4]" in text
    # not strict: what fits is loaded, and the report says the rest
    model = dlspec.build(spec, weights=tmp_path / "w.bin", strict=False)
    report = model.weights_report
    assert [e.name for e in report.loaded] == ["fc1.bias", "head.weight"]
    assert [e.name for e in report.missing] == ["head.bias"] and [e.name for e in report.unexpected] == ["extra.weight"]
    assert torch.equal(model.head.weight, _state()["head.weight"])


def test_sources_a_wrapped_state_dict_a_dlspec_run_and_what_is_not_weights(tmp_path):
    spec = _mlp_spec(tmp_path)
    torch.save({"epoch": 3, "state_dict": _state()}, tmp_path / "wrapped.pt")  # as many training scripts save
    model = dlspec.build(spec, weights=tmp_path / "wrapped.pt")
    assert torch.equal(model.fc1.weight, _state()["fc1.weight"])
    assert main(["build", str(spec), "--out", str(tmp_path / "weights.pt"), "--seed", "5"]) == 0
    mine = dlspec.build(spec, weights=tmp_path / "weights.pt")
    assert mine.weights_report.kind == "dlspec weights"
    assert torch.equal(mine.fc1.weight, dlspec.build(spec, seed=5).fc1.weight)
    torch.save([1, 2, 3], tmp_path / "list.pt")
    with pytest.raises(DlspecError, match="holds a list, not a state dict"):
        dlspec.build(spec, weights=tmp_path / "list.pt")
    torch.save({"fc1.weight": torch.zeros(8, 4), "note": "text"}, tmp_path / "mixed.pt")
    with pytest.raises(DlspecError, match="is not a state dict: 'note' holds a str"):
        dlspec.build(spec, weights=tmp_path / "mixed.pt")
    (tmp_path / "bad.safetensors").write_bytes(b"\xff" * 64)
    with pytest.raises(DlspecError, match="not a readable .safetensors file"):
        dlspec.build(spec, weights=tmp_path / "bad.safetensors")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DlspecError, match="holds no weights"):
        dlspec.build(spec, weights=tmp_path / "empty")


def test_a_mapping_file_with_every_rule_kind_round_trips(tmp_path):
    """rename, ignore, transpose, squeeze, reshape, fuse: a checkpoint from an imagined library, mapped by a
    file the spec names; saving back (unsqueeze, split, ...) gives that library's layout again, less what
    was ignored."""
    (tmp_path / "mapping.yaml").write_text(
        '- {rename: "net.**", to: "**"}\n'
        '- {ignore: "step"}\n'
        '- {transpose: "hidden.kernel"}\n'
        '- {squeeze: "hidden.offset"}\n'
        '- {reshape: "out.kernel", from: [24], to: [3, 8]}\n'
        '- {fuse: ["out.b1", "out.b2"], to: "out.bias", sizes: [1, 2]}\n'
        '- {rename: "hidden.*", to: "fc1.*"}\n'
        '- {rename: "out.*", to: "head.*"}\n'
        '- {rename: "*.kernel", to: "*.weight"}\n'
        '- {rename: "fc1.offset", to: "fc1.bias"}\n')
    spec = _mlp_spec(tmp_path, "weights:\n  map: mapping.yaml\n")
    want = _state()
    theirs = {"net.hidden.kernel": want["fc1.weight"].t().contiguous(), "net.out.kernel": want["head.weight"].reshape(24),
              "net.hidden.offset": want["fc1.bias"][None], "net.out.b1": want["head.bias"][:1],
              "net.out.b2": want["head.bias"][1:], "step": torch.tensor(7)}
    from safetensors.torch import load_file, save_file
    save_file(theirs, tmp_path / "theirs.safetensors")
    model = dlspec.build(spec, weights=tmp_path / "theirs.safetensors")
    for name, value in want.items():
        assert torch.equal(model.state_dict()[name], value), name
    assert [e.name for e in model.weights_report.ignored] == ["step"]
    dlspec.weights.save(model, tmp_path / "back.safetensors")
    back = load_file(tmp_path / "back.safetensors")
    assert back.keys() == theirs.keys() - {"step"} and all(torch.equal(back[k], theirs[k]) for k in back)


def test_mapping_mistakes_are_located_in_the_file_that_has_them(tmp_path):
    (tmp_path / "mapping.yaml").write_text('- {rename: "net.**", to: "*"}\n- {fuse: "a", to: "b"}\n')
    spec = _mlp_spec(tmp_path, "weights:\n  map: mapping.yaml\n")
    torch.save(_state(), tmp_path / "w.pt")
    with pytest.raises(DlspecError) as caught:
        dlspec.build(spec, weights=tmp_path / "w.pt")
    text = caught.value.format()
    assert f"{tmp_path / 'mapping.yaml'}:1:" in text and "has the wildcards *, but 'net.**' has **" in text
    assert f"{tmp_path / 'mapping.yaml'}:2:" in text and "a list of two or more names" in text
    spec = _mlp_spec(tmp_path, 'weights:\n  map:\n    - {transpose: "fc1.bias"}\n')
    with pytest.raises(DlspecError, match=r"mlp.yaml:11:7: error: transpose rule: 'fc1.bias' is \[8\]; transpose takes 2-D"):
        dlspec.build(spec, weights=tmp_path / "w.pt")


def test_build_command_loads_reports_and_saves_back(tmp_path, capsys):
    spec = _mlp_spec(tmp_path, 'weights:\n  map:\n    - {rename: "model.**", to: "**"}\n')
    from safetensors.torch import load_file, save_file
    save_file({f"model.{k}": v for k, v in _state().items()}, tmp_path / "w.safetensors")
    assert main(["build", str(spec), "--weights", str(tmp_path / "w.safetensors"), "--save",
                 str(tmp_path / "out.safetensors"), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert [e["name"] for e in summary["weights"]["loaded"]] == list(_state())
    assert summary["weights"]["loaded"][0]["from"] == ["model.fc1.weight"]
    back = load_file(tmp_path / "out.safetensors")
    assert set(back) == {f"model.{k}" for k in _state()}
    assert main(["build", str(spec), "--weights", str(tmp_path / "nothing.pt")]) == 2
    assert "no weights at" in capsys.readouterr().err


def test_export_takes_weights_and_verify_asks_for_them(tmp_path, capsys):
    spec = _mlp_spec(tmp_path)
    torch.save(_state(), tmp_path / "w.pth")
    out = tmp_path / "export"
    assert main(["export", str(spec), "--weights", str(tmp_path / "w.pth"), "--format", "torchscript",
                 "--out", str(out)]) == 0
    assert f"weights from {tmp_path / 'w.pth'}" in capsys.readouterr().out
    parity = json.loads((out / "parity.json").read_text())
    assert parity["weights"]["source"] == "weights" and parity["weights"]["tensors"] == 4
    with warnings.catch_warnings():  # TorchScript's deprecation notice
        warnings.simplefilter("ignore")
        exported = torch.jit.load(str(out / "mlp.torchscript.pt"))
    x = torch.randn(3, 4)
    expected = torch.relu(x @ _state()["fc1.weight"].t() + _state()["fc1.bias"]) @ _state()["head.weight"].t()
    torch.testing.assert_close(exported(x), expected + _state()["head.bias"])
    assert main(["verify", str(out / "mlp.torchscript.pt"), "--spec", str(spec)]) == 2
    assert f"pass --weights {tmp_path / 'w.pth'}" in capsys.readouterr().err
    assert main(["verify", str(out / "mlp.torchscript.pt"), "--spec", str(spec), "--weights", str(tmp_path / "w.pth")]) == 0


def test_fine_tuning_example_starts_from_a_resnet_file_and_unfreezes_after_two_epochs(tmp_path):
    """specs/resnet18-finetune.yaml: torchvision's ResNet-18 (random weights, saved as its .pth would be), a new
    10-class head, the backbone frozen for 2 epochs, then everything trains; on small generated images."""
    torch.manual_seed(0)
    reference = torchvision_module("resnet").resnet18().eval()  # 1000 classes, as ImageNet's file has
    torch.save(reference.state_dict(), tmp_path / "resnet18.pth")
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 10, 30)
    images = (rng.random((30, 3, 32, 32)) * 0.2 + labels[:, None, None, None] / 10.0).astype(np.float32)
    np.savez(tmp_path / "images.npz", image=images, label=labels)
    run = tmp_path / "run"
    assert main(["train", str(ROOT / "specs" / "resnet18-finetune.yaml"), "--out", str(run), "--progress", "off",
                 "--set", "model.vars.image=32", "--set", "training.epochs=3", "--set", "training.data.batch_size=16",
                 "--set", "training.threads=1", "--set", f"training.init_from.checkpoint={tmp_path / 'resnet18.pth'}",
                 "--set", f"training.data.dataset.path={tmp_path / 'images.npz'}",
                 "--set", "training.checkpoint.every_steps=4"]) == 0  # 2 steps an epoch: step 4 ends epoch 2
    events = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    init = next(e for e in events if e["event"] == "init_from")
    assert len(init["loaded"]) == len(reference.state_dict()) - 2 and not init["missing"]
    start = next(e for e in events if e["event"] == "start")
    assert start["trainable_parameters"] == 512 * 10 + 10  # the head alone
    thaw = next(e for e in events if e["event"] == "unfreeze")
    assert thaw["epoch"] == 2 and thaw["parameters"] == sum(p.numel() for p in reference.parameters()) - 512 * 1000 - 1000
    # the backbone's weights move only after the thaw; the head from the first step
    frozen = torch.load(run / "checkpoints" / "step-00000004.pt", weights_only=True)["model"]
    final = torch.load(run / "weights.pt", weights_only=True)["model"]
    start_conv = reference.state_dict()["layer1.0.conv1.weight"]
    assert torch.equal(frozen["layer1.0.conv1.weight"], start_conv)
    assert not torch.equal(final["layer1.0.conv1.weight"], start_conv)


def test_weights_docs_follow_the_rule_kinds_and_presets():
    from dlspec.reference import WEIGHTS_DOC, weights_text
    text = WEIGHTS_DOC.read_text()
    assert "| `fuse` |" in text and "### `hf-gpt2`" in text
    assert text == weights_text(text), "docs/weights.md drifted: run `python -m dlspec.reference`"
