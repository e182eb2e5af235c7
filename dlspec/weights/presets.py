"""Named presets: the rules that map a library's checkpoints onto the shipped specs' layout.

A preset is defined once, here, in the same rule language a spec writes (`weights: {preset: NAME}` runs its
rules before the spec's own `map`); the schema's list of presets and the table in docs/weights.md follow
from PRESETS. Where a spec can name its modules as the library does (ResNet's `layer1.0.downsample.0`,
Llama's `q_proj`), it does, and the preset only covers what a spec cannot say: prefixes, `encoder_layer_N`
names, transposed Conv1D weights, [1, N, D] position tables, q/k/v kept apart or fused.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Preset:
    name: str
    doc: str
    rules: tuple[dict[str, Any], ...]
    specs: str  # the shipped specs it is for


def _vit_encoder_layer(prefix: str, renames: dict[str, str]) -> tuple[dict[str, Any], ...]:
    return tuple({"rename": f"{prefix}.{old}.**", "to": f"encoder.layers.*.{new}.**"} for old, new in renames.items())


_TORCHVISION = Preset(
    "torchvision", "torchvision.models state dicts (`torch.save(model.state_dict())`, the .pth files of its weights). "
                   "ResNets load as they are; ViT needs its `encoder_layer_N` names and [1, N, D] tables mapped.",
    ({"rename": "encoder.layers.encoder_layer_*.**", "to": "encoder.layers.*.**"},
     {"squeeze": "encoder.pos_embedding"},
     {"rename": "encoder.pos_embedding", "to": "encoder.pos_embedding.weight"},
     {"rename": "class_token", "to": "class_token.token"}),
    "resnet18.yaml, resnet50.yaml, vit-b-16.yaml")

_TIMM = Preset(
    "timm", "timm state dicts: ResNets have torchvision's names; ViT (`vit_base_patch16_224`) is mapped onto "
            "vit-b-16.yaml (its fused `qkv` is nn.MultiheadAttention's `in_proj_weight`).",
    ({"rename": "cls_token", "to": "class_token.token"},
     {"squeeze": "pos_embed"},
     {"rename": "pos_embed", "to": "encoder.pos_embedding.weight"},
     {"rename": "patch_embed.proj.**", "to": "conv_proj.**"},
     {"rename": "blocks.*.attn.qkv.weight", "to": "encoder.layers.*.self_attention.in_proj_weight"},
     {"rename": "blocks.*.attn.qkv.bias", "to": "encoder.layers.*.self_attention.in_proj_bias"})
    + _vit_encoder_layer("blocks.*", {"norm1": "ln_1", "attn.proj": "self_attention.out_proj", "norm2": "ln_2",
                                      "mlp.fc1": "mlp.0", "mlp.fc2": "mlp.3"})
    + ({"rename": "norm.**", "to": "encoder.ln.**"}, {"rename": "head.**", "to": "heads.head.**"}),
    "resnet18.yaml, resnet50.yaml, vit-b-16.yaml")

_HF_GPT2 = Preset(
    "hf-gpt2", "Hugging Face GPT2Model / GPT2LMHeadModel: the `transformer.` prefix goes, Conv1D weights are "
               "transposed, and c_attn, c_proj, c_fc become the standard blocks' qkv, out, fc, proj.",
    ({"rename": "transformer.**", "to": "**"},
     {"ignore": "h.*.attn.bias"}, {"ignore": "h.*.attn.masked_bias"},  # causal masks older checkpoints stored
     {"transpose": "h.*.attn.c_attn.weight"}, {"transpose": "h.*.attn.c_proj.weight"},
     {"transpose": "h.*.mlp.c_fc.weight"}, {"transpose": "h.*.mlp.c_proj.weight"},
     {"rename": "h.*.attn.c_attn.**", "to": "h.*.attn.qkv.**"}, {"rename": "h.*.attn.c_proj.**", "to": "h.*.attn.out.**"},
     {"rename": "h.*.mlp.c_fc.**", "to": "h.*.mlp.fc.**"}, {"rename": "h.*.mlp.c_proj.**", "to": "h.*.mlp.proj.**"}),
    "gpt2-small.yaml")


def _bert_layer(prefix: str, target: str) -> tuple[dict[str, Any], ...]:
    return ({"fuse": [f"{prefix}.attention.self.query.*", f"{prefix}.attention.self.key.*",
                      f"{prefix}.attention.self.value.*"], "to": f"{target}.attn.qkv.*"},
            {"rename": f"{prefix}.attention.output.dense.**", "to": f"{target}.attn.out.**"},
            {"rename": f"{prefix}.attention.output.LayerNorm.**", "to": f"{target}.norm1.**"},
            {"rename": f"{prefix}.intermediate.dense.**", "to": f"{target}.ff.fc.**"},
            {"rename": f"{prefix}.output.dense.**", "to": f"{target}.ff.proj.**"},
            {"rename": f"{prefix}.output.LayerNorm.**", "to": f"{target}.norm2.**"})


_HF_BERT = Preset(
    "hf-bert", "Hugging Face BertModel (or the `bert.` part of BertFor...; their heads are ignored): query, key "
               "and value fuse into the standard encoder layer's qkv.",
    ({"rename": "bert.**", "to": "**"}, {"ignore": "cls.**"}, {"ignore": "embeddings.position_ids"},
     {"rename": "embeddings.word_embeddings.**", "to": "word_embeddings.**"},
     {"rename": "embeddings.position_embeddings.**", "to": "position_embeddings.**"},
     {"rename": "embeddings.token_type_embeddings.**", "to": "token_type_embeddings.**"},
     {"rename": "embeddings.LayerNorm.**", "to": "embeddings_norm.**"})
    + _bert_layer("encoder.layer.*", "encoder.*")
    + ({"rename": "pooler.dense.**", "to": "pooler.**"},),
    "bert-base.yaml")

_HF_LLAMA = Preset(
    "hf-llama", "Hugging Face LlamaForCausalLM (and LlamaModel): the specs name every module as it does, so only "
                "the `model.` prefix goes.",
    ({"rename": "model.**", "to": "**"},),
    "llama2-7b.yaml, llama3-8b.yaml, char-llama.yaml")

_HF_VIT = Preset(
    "hf-vit", "Hugging Face ViTModel / ViTForImageClassification, mapped onto vit-b-16.yaml (torchvision's layout): "
              "query, key and value fuse into in_proj_weight; the pooler is ignored.",
    ({"rename": "vit.**", "to": "**"}, {"ignore": "pooler.**"},
     {"rename": "embeddings.cls_token", "to": "class_token.token"},
     {"squeeze": "embeddings.position_embeddings"},
     {"rename": "embeddings.position_embeddings", "to": "encoder.pos_embedding.weight"},
     {"rename": "embeddings.patch_embeddings.projection.**", "to": "conv_proj.**"},
     {"fuse": ["encoder.layer.*.attention.attention.query.weight", "encoder.layer.*.attention.attention.key.weight",
               "encoder.layer.*.attention.attention.value.weight"], "to": "encoder.layers.*.self_attention.in_proj_weight"},
     {"fuse": ["encoder.layer.*.attention.attention.query.bias", "encoder.layer.*.attention.attention.key.bias",
               "encoder.layer.*.attention.attention.value.bias"], "to": "encoder.layers.*.self_attention.in_proj_bias"})
    + _vit_encoder_layer("encoder.layer.*", {"layernorm_before": "ln_1", "attention.output.dense": "self_attention.out_proj",
                                             "layernorm_after": "ln_2", "intermediate.dense": "mlp.0",
                                             "output.dense": "mlp.3"})
    + ({"rename": "layernorm.**", "to": "encoder.ln.**"}, {"rename": "classifier.**", "to": "heads.head.**"}),
    "vit-b-16.yaml")

PRESETS: dict[str, Preset] = {p.name: p for p in (_TORCHVISION, _TIMM, _HF_GPT2, _HF_BERT, _HF_LLAMA, _HF_VIT)}
