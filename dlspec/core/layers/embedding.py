"""Embeddings: token lookup tables, positions, class tokens."""
from __future__ import annotations

from .. import dims as D
from ..ir import TensorType
from .base import Attr, LayerKind, ShapeError, features, floating, module_call, opt, rank, register

INDEX_DTYPES = ("int64", "int32")  # what nn.Embedding and gather accept as indices


def _embedding_rule(a, ins):
    t = ins[0]
    if t.dtype not in INDEX_DTYPES:
        raise ShapeError(f"expects integer indices (int64 or int32), got {t.dtype}", expected="an int64 input",
                         hint="declare the input with dtype: int64")
    if a["padding_idx"] is not None and not -a["num"] <= a["padding_idx"] < a["num"]:
        raise ShapeError(f"padding_idx {a['padding_idx']} is not an id of the table (0 to {a['num'] - 1})",
                         attr="padding_idx", expected=f"-{a['num']} <= padding_idx < {a['num']}")
    return [TensorType(t.shape + (a["dim"],), "float32")]


register(LayerKind(
    "embedding", "Lookup table from integer ids in [0, num) to vectors (nn.Embedding).",
    (Attr("num", "int", "number of ids (vocabulary size)", minimum=1), Attr("dim", "int", "vector size", minimum=1),
     Attr("padding_idx", "int", "an id whose vector stays zero and gets no gradient", None)),
    _embedding_rule, module_call,
    construct=lambda a: f"nn.Embedding({a['num']}, {a['dim']}{opt(a, padding_idx=None)})",
    params=lambda a: {"weight": (a["num"], a["dim"])},
    index_range=lambda a, ins: {0: (0, a["num"])},
))


def _pos_rule(a, ins):
    t = ins[0]
    floating(t)
    rank(t, (3,))
    features(t, -1, a["dim"], "dim")
    if D.is_static(t.shape[1]) and t.shape[1] > a["max_len"]:
        raise ShapeError(f"sequence length {t.shape[1]} exceeds max_len {a['max_len']}", attr="max_len")
    return [t]


_POSITIONS = {"learned": "PositionalEmbedding", "sinusoidal": "SinusoidalPositions"}

register(LayerKind(
    "pos_embedding", "Adds position embeddings to a (B, T, D) sequence: learned (a [max_len, D] table) or sinusoidal (fixed).",
    (Attr("max_len", "int", "longest sequence supported", minimum=1), Attr("dim", "int", "model width D", minimum=1),
     Attr("kind", "str", "learned or sinusoidal", "learned", choices=("learned", "sinusoidal"))),
    _pos_rule, module_call,
    construct=lambda a: f"{_POSITIONS[a['kind']]}({a['max_len']}, {a['dim']})",
    params=lambda a: {"weight": (a["max_len"], a["dim"])} if a["kind"] == "learned" else {},
    module_classes=tuple(_POSITIONS.values()),
    limits=lambda a, ins: [(ins[0].shape[1], a["max_len"], "max_len")],
))


def _cls_rule(a, ins):
    t = ins[0]
    floating(t)
    rank(t, (3,))
    features(t, -1, a["dim"], "dim")
    return [TensorType((t.shape[0], D.normalize(t.shape[1] + 1), t.shape[2]), t.dtype)]


register(LayerKind(
    "class_token", "Prepends a learned token to a (B, T, D) sequence, giving (B, T+1, D) (ViT, BERT-style [CLS]).",
    (Attr("dim", "int", "model width D", minimum=1),),
    _cls_rule, module_call, construct=lambda a: f"ClassToken({a['dim']})",
    params=lambda a: {"token": (1, 1, a["dim"])}, module_classes=("ClassToken",),
))
