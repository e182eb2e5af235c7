"""Normalization and dropout."""
from __future__ import annotations

from typing import Callable

from .. import dims as D
from ..ir import TensorType, dim_str
from .base import Attr, LayerKind, ShapeError, features, floating, module_call, opt, rank, register


def _norm_kind(name: str, doc: str, ranks: tuple[int, ...], axis: int, attrs: tuple[Attr, ...],
               construct: Callable[[dict], str], params: Callable[[dict], dict],
               extra_check: Callable[[dict, TensorType], None] | None = None) -> LayerKind:
    def rule(a, ins):
        t = ins[0]
        floating(t)
        if ranks:
            rank(t, ranks)
        if t.rank < (axis + 1 if axis >= 0 else -axis):
            raise ShapeError(f"expects an input with a dim {axis} (channels), got {t}")
        features(t, axis, a["dim"], "dim")
        if extra_check:
            extra_check(a, t)
        return [t]

    return register(LayerKind(name, doc, attrs, rule, module_call, construct, params))


def _affine(a):
    return {"weight": (a["dim"],), "bias": (a["dim"],)} if a["affine"] else {}


def _batch_values(a, t: TensorType) -> None:
    # training-mode statistics need two values per channel: torch raises at N * (spatial) == 1
    _two_values(t.shape[:1] + t.shape[2:], "in training, the values per channel (batch x spatial)",
                "batch norm needs two or more values per channel while training: declare a batch min of 2 "
                "(`dims: {B: {min: 2}}`) or use layer_norm / group_norm")


def _spatial_values(a, t: TensorType) -> None:
    # instance statistics are over the spatial dims of each example: torch raises when there is only one
    _two_values(t.shape[2:], "the spatial values per channel",
                "instance norm needs two or more spatial positions: declare larger spatial mins under model.dims")


def _two_values(sizes: tuple, what: str, hint: str) -> None:
    least = D.smallest_product(sizes)
    if least is None or least < 2:
        shown = "the product of [" + ", ".join(dim_str(s) for s in sizes) + "]" if sizes else "1"
        raise ShapeError(f"{what}, {shown}, may be {least if least is not None else 'unbounded'} at the smallest "
                         f"allowed sizes", expected="2 or more at every allowed size", hint=hint)


_BATCH_RANKS = {1: (2, 3), 2: (4,), 3: (5,)}
for _n, _ranks in _BATCH_RANKS.items():
    _norm_kind(f"batch_norm{_n}d", f"Batch normalization over channels (nn.BatchNorm{_n}d); running stats in eval mode.",
               _ranks, 1,
               (Attr("dim", "int", "channels (dim 1)", minimum=1), Attr("eps", "float", "added to the variance", 1e-5),
                Attr("momentum", "float", "running-stat update factor", 0.1),
                Attr("affine", "bool", "learn scale and shift", True)),
               lambda a, n=_n: f"nn.BatchNorm{n}d({a['dim']}{opt(a, eps=1e-5, momentum=0.1, affine=True)})", _affine,
               _batch_values)
    _norm_kind(f"instance_norm{_n}d", f"Instance normalization: each example's channels over their own spatial "
                                      f"values (nn.InstanceNorm{_n}d, no running stats).",
               (_n + 2,), 1,
               (Attr("dim", "int", "channels (dim 1)", minimum=1), Attr("eps", "float", "added to the variance", 1e-5),
                Attr("affine", "bool", "learn scale and shift", False)),
               lambda a, n=_n: f"nn.InstanceNorm{n}d({a['dim']}{opt(a, eps=1e-5, affine=False)})", _affine,
               _spatial_values)

_norm_kind("layer_norm", "Layer normalization over the last dim (nn.LayerNorm).", (), -1,
           (Attr("dim", "int", "size of the last dim", minimum=1), Attr("eps", "float", "added to the variance", 1e-5),
            Attr("bias", "bool", "learn an additive bias", True)),
           lambda a: f"nn.LayerNorm({a['dim']}{opt(a, eps=1e-5, bias=True)})",
           lambda a: {"weight": (a["dim"],), **({"bias": (a["dim"],)} if a["bias"] else {})})


def _group_check(a, t):
    rank(t, (2, 3, 4, 5))
    if a["dim"] % a["groups"]:
        raise ShapeError(f"dim ({a['dim']}) must be divisible by groups ({a['groups']})", attr="groups")


_norm_kind("group_norm", "Group normalization over channels in groups (nn.GroupNorm).", (), 1,
           (Attr("groups", "int", "number of channel groups", minimum=1), Attr("dim", "int", "channels (dim 1)", minimum=1),
            Attr("eps", "float", "added to the variance", 1e-5), Attr("affine", "bool", "learn scale and shift", True)),
           lambda a: f"nn.GroupNorm({a['groups']}, {a['dim']}{opt(a, eps=1e-5, affine=True)})", _affine, _group_check)
_norm_kind("rms_norm", "Root-mean-square normalization over the last dim (nn.RMSNorm).", (), -1,
           (Attr("dim", "int", "size of the last dim", minimum=1),
            Attr("eps", "float", "added to the mean square (default: dtype eps)", None)),
           lambda a: f"nn.RMSNorm({a['dim']}{opt(a, eps=None)})", lambda a: {"weight": (a["dim"],)})


def _dropout_rule(a, ins):
    if not 0 <= a["p"] < 1:
        raise ShapeError(f"dropout p must be in [0, 1), got {a['p']}", attr="p")
    floating(ins[0])
    return [ins[0]]


register(LayerKind("dropout", "Randomly zeroes elements with probability p during training (nn.Dropout).",
                   (Attr("p", "float", "probability of zeroing an element", 0.5),),
                   _dropout_rule, module_call, construct=lambda a: f"nn.Dropout({a['p']!r})"))
