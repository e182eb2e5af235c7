"""Shipped specs against the reference implementations they follow, with the same weights: Hugging Face's
LlamaForCausalLM, torchvision's MobileNetV2 and EfficientNet-B0, and torch.nn's LSTM and GRU. Each reference
is built from its own library with random weights (nothing is downloaded)."""
from __future__ import annotations

import pytest
import torch
from references import transformers
from support import ROOT

import dlspec
from dlspec.backend.summary import summarize

LLAMA = ["model.vars.vocab=64", "model.vars.dim=32", "model.vars.layers=2", "model.vars.heads=4",
         "model.vars.kv_heads=2", "model.vars.hidden=48", "model.vars.rope_theta=500000.0"]


def _llama_config(**extra):
    hf = transformers()
    return hf.LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                          num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                          rope_theta=500000.0, rms_norm_eps=1e-5, attention_bias=False, tie_word_embeddings=False,
                          **extra)


@pytest.mark.parametrize("name", ["llama2-7b", "llama3-8b"])
def test_llama_matches_hugging_face_with_the_same_weights(name, tmp_path):
    """Rotary positions in Hugging Face's rotate-half layout, grouped-query attention, RMSNorm and SwiGLU:
    the same logits from the same weights, loaded from save_pretrained's folder (the hf-llama preset)."""
    torch.manual_seed(0)
    reference = transformers().LlamaForCausalLM(_llama_config()).eval()
    reference.save_pretrained(tmp_path)
    model = dlspec.build(ROOT / "specs" / f"{name}.yaml", LLAMA, weights=tmp_path).eval()
    assert len(model.weights_report.loaded) == len(reference.state_dict())
    tokens = torch.randint(0, 64, (3, 11))
    with torch.no_grad():
        expected = reference(tokens).logits
        got = model(tokens)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    assert summarize(model.dlspec_spec)["params"] == sum(p.numel() for p in reference.parameters())


@pytest.mark.parametrize("scaling", [
    {"kind": "linear", "factor": 4.0},
    {"kind": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_context": 16},
])
def test_rope_scaling_gives_hugging_face_frequencies(scaling, tmp_path):
    hf_type = {"linear": {"rope_type": "linear", "factor": scaling["factor"]},
               "llama3": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                          "original_max_position_embeddings": 16}}[scaling["kind"]]
    config = _llama_config(rope_parameters={"rope_theta": 500000.0, **hf_type})
    reference = transformers().LlamaForCausalLM(config).eval()
    spec = tmp_path / "rope.yaml"
    fields = ", ".join(f"{k}: {v}" for k, v in scaling.items())
    spec.write_text("dlspec: 1\nname: rope\nmodel:\n  inputs: {x: {shape: [B, T, 32]}}\n  layers:\n"
                    "    - {id: attn, op: attention, dim: 32, heads: 4, kv_heads: 2, causal: true, bias: false,\n"
                    f"       rope: {{theta: 500000.0, scaling: {{{fields}}}}}}}\n")
    model = dlspec.build(spec)
    torch.testing.assert_close(model.attn.rope.inv_freq, reference.model.rotary_emb.inv_freq)


def _load_in_order(model: torch.nn.Module, reference: torch.nn.Module) -> None:
    """Copy the reference's weights and buffers into the model entry by entry: the spec declares its layers
    in torchvision's order, so the two state dicts line up (shapes are checked one by one)."""
    ours, theirs = model.state_dict(), reference.state_dict()
    assert len(ours) == len(theirs)
    for (key, mine), (their_key, value) in zip(ours.items(), theirs.items()):
        assert mine.shape == value.shape, (key, their_key)
    model.load_state_dict(dict(zip(ours, theirs.values())))


@pytest.mark.parametrize("name, module, builder", [("mobilenet-v2", "mobilenetv2", "mobilenet_v2"),
                                                    ("efficientnet-b0", "efficientnet", "efficientnet_b0")])
def test_torchvision_architectures_give_the_same_outputs(name, module, builder):
    from references import torchvision_module
    torch.manual_seed(0)
    reference = getattr(torchvision_module(module), builder)().eval()
    model = dlspec.build(ROOT / "specs" / f"{name}.yaml", ["model.vars.image=64"]).eval()
    assert summarize(model.dlspec_spec)["params"] == sum(p.numel() for p in reference.parameters())
    for m in reference.modules():  # random running statistics, so batch norm is not the identity
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    _load_in_order(model, reference)
    image = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model(image), reference(image), atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("kind", ["lstm", "gru"])
@pytest.mark.parametrize("output", ["sequence", "last", "state"])
def test_recurrent_layers_match_torch_nn_on_each_unpadded_sequence(kind, output, tmp_path):
    """With a padding mask, each sequence's result equals nn.LSTM / nn.GRU run on its real steps alone."""
    spec = tmp_path / "rnn.yaml"
    spec.write_text("dlspec: 1\nname: rnn\nmodel:\n  inputs: {x: {shape: [B, T, 4]}, mask: {shape: [B, T], dtype: bool}}\n"
                    f"  layers:\n    - {{id: rnn, op: {kind}, in: 4, hidden: 6, layers: 2, bidirectional: true,"
                    f" output: {output}, mask: mask, from: x}}\n")
    model = dlspec.build(spec).eval()
    reference = getattr(torch.nn, kind.upper())(4, 6, num_layers=2, bidirectional=True, batch_first=True).eval()
    reference.load_state_dict(model.rnn.state_dict())
    x = torch.randn(3, 5, 4)
    lengths = [5, 2, 3]
    mask = torch.arange(5)[None, :] < torch.tensor(lengths)[:, None]
    with torch.no_grad():
        got = model(x, mask)
        for b, n in enumerate(lengths):
            steps, state = reference(x[b:b + 1, :n])
            state = state[0] if kind == "lstm" else state
            want = {"sequence": steps[0], "last": steps[0, -1], "state": torch.cat([state[-2], state[-1]], -1)[0]}[output]
            torch.testing.assert_close(got[b, :n] if output == "sequence" else got[b], want)
            if output == "sequence":
                assert not got[b, n:].any()  # padding gives zeros
