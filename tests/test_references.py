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


def _from_hugging_face(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """LlamaForCausalLM's keys as the spec names them: no `model.` prefix, q/k/v fused into one projection."""
    out = {}
    for key, value in state.items():
        key = key.removeprefix("model.")
        if ".self_attn.k_proj." in key or ".self_attn.v_proj." in key:
            continue
        if ".self_attn.q_proj." in key:
            parts = [state["model." + key.replace("q_proj", p)] for p in ("q_proj", "k_proj", "v_proj")]
            out[key.replace("q_proj", "qkv")] = torch.cat(parts)
        else:
            out[key.replace("o_proj", "out")] = value
    return out


@pytest.mark.parametrize("name", ["llama2-7b", "llama3-8b"])
def test_llama_matches_hugging_face_with_the_same_weights(name):
    """Rotary positions in Hugging Face's rotate-half layout, grouped-query attention, RMSNorm and SwiGLU:
    the same logits from the same weights, so Llama checkpoints carry over."""
    torch.manual_seed(0)
    reference = transformers().LlamaForCausalLM(_llama_config()).eval()
    model = dlspec.build(ROOT / "specs" / f"{name}.yaml", LLAMA).eval()
    model.load_state_dict(_from_hugging_face(reference.state_dict()))
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
