"""Resampling and padding of spatial dims: interpolate, pad, pixel_shuffle."""
from __future__ import annotations

import sympy

from .. import dims as D
from ..ir import TensorType, dim_str
from .base import Attr, LayerKind, ShapeError, at_least, floating, literal, pair, register

_MODE_RANKS = {"nearest": (3, 4, 5), "nearest-exact": (3, 4, 5), "linear": (3,), "bilinear": (4,), "bicubic": (4,),
               "trilinear": (5,)}
_ALIGNED = ("linear", "bilinear", "bicubic", "trilinear")


def _interpolate_rule(a, ins):
    t = ins[0]
    floating(t)
    mode = a["mode"]
    if t.rank not in _MODE_RANKS[mode]:
        raise ShapeError(f"mode {mode} takes a rank-{' or '.join(map(str, _MODE_RANKS[mode]))} input "
                         f"(N, C, spatial...), got {t}", attr="mode")
    if (a["size"] is None) == (a["scale"] is None):
        raise ShapeError("give either size or scale", attr="size")
    if a["align_corners"] is not None and mode not in _ALIGNED:
        raise ShapeError(f"align_corners applies to {', '.join(_ALIGNED)}, not {mode}", attr="align_corners")
    n = t.rank - 2
    if a["size"] is not None:
        spatial = pair(a["size"], n)
        if len(spatial) != n or any(s < 1 for s in spatial):
            raise ShapeError(f"size needs {n} positive value(s), got {a['size']}", attr="size")
    else:
        if a["scale"] <= 0:
            raise ShapeError(f"scale must be positive, got {a['scale']}", attr="scale")
        factor = sympy.Rational(a["scale"])  # the double's exact value: torch computes floor(size * scale) in double
        spatial = tuple(D.normalize(sympy.floor(sympy.sympify(s) * factor)) for s in t.shape[2:])
        for s in spatial:
            at_least(s, 1, f"an output size (input {t}, scale {a['scale']})", attr="scale")
    return [TensorType(t.shape[:2] + tuple(spatial), t.dtype)]


def _interpolate_call(a, args, mod, ins):
    how = f"size={literal(a['size'])}" if a["size"] is not None else f"scale_factor={a['scale']!r}"
    extra = "" if a["align_corners"] is None else f", align_corners={a['align_corners']}"
    return f"F.interpolate({args[0]}, {how}, mode={a['mode']!r}{extra})"


register(LayerKind(
    "interpolate", "Resizes the spatial dims of (N, C, ...) to a size or by a scale (F.interpolate: nearest, bilinear, "
                   "...): upsampling in U-Nets and FPNs.",
    (Attr("size", "ints", "output spatial size (one int, or one per spatial dim)", None),
     Attr("scale", "float", "multiplier of each spatial size (the output is floor(size * scale))", None),
     Attr("mode", "str", "resampling", "nearest", choices=tuple(_MODE_RANKS)),
     Attr("align_corners", "bool", "linear modes: align the corner pixels (default: false)", None)),
    _interpolate_rule, _interpolate_call))

_PAD_MODES = ("constant", "reflect", "replicate", "circular")


def _pad_rule(a, ins):
    t = ins[0]
    pad = a["pad"] if isinstance(a["pad"], list) else [a["pad"]]
    if not pad or len(pad) % 2 or len(pad) // 2 > t.rank or any(p < 0 for p in pad):
        raise ShapeError(f"pad needs non-negative (before, after) pairs, last dim first, at most one per dim of {t}; "
                         f"got {a['pad']}", attr="pad")
    n = len(pad) // 2
    if a["mode"] != "constant":
        floating(t)
        if t.rank not in (n + 1, n + 2) or n > 3:
            raise ShapeError(f"{a['mode']} padding of {n} dim(s) takes a rank-{n + 1} or rank-{n + 2} input, got {t}",
                             attr="mode")
    elif a["value"] != 0 and t.dtype not in ("float32", "float16", "bfloat16", "float64") and \
            not float(a["value"]).is_integer():
        raise ShapeError(f"value {a['value']} does not fit the {t.dtype} input", attr="value")
    shape = list(t.shape)
    for k in range(n):
        before, after = pad[2 * k], pad[2 * k + 1]
        size = shape[-1 - k]
        if a["mode"] == "reflect":
            at_least(D.normalize(size - max(before, after)), 1,
                     f"reflect padding {max(before, after)} must be below the dim's size {dim_str(size)}; the margin",
                     attr="pad")
        elif a["mode"] == "circular":
            at_least(D.normalize(size - max(before, after) + 1), 1,
                     f"circular padding {max(before, after)} must be at most the dim's size {dim_str(size)}; the margin",
                     attr="pad")
        shape[-1 - k] = D.normalize(size + before + after)
    return [TensorType(tuple(shape), t.dtype)]


def _pad_call(a, args, mod, ins):
    pad = a["pad"] if isinstance(a["pad"], list) else [a["pad"]]
    mode = "" if a["mode"] == "constant" else f", mode={a['mode']!r}"
    value = f", value={a['value']!r}" if a["mode"] == "constant" and a["value"] != 0 else ""
    return f"F.pad({args[0]}, {tuple(pad)!r}{mode}{value})"


register(LayerKind(
    "pad", "Pads dims, last dim first: `pad: [left, right, top, bottom]` (F.pad); constant, reflect, replicate or "
           "circular.",
    (Attr("pad", "ints", "(before, after) pairs, starting from the last dim"),
     Attr("mode", "str", "how new values are made", "constant", choices=_PAD_MODES),
     Attr("value", "float", "constant mode: the fill value", 0.0)),
    _pad_rule, _pad_call))


def _pixel_shuffle_rule(a, ins):
    t = ins[0]
    r = a["factor"]
    if t.rank < 3:
        raise ShapeError(f"expects (..., C, H, W), got {t}")
    channels = t.shape[-3]
    if not D.divisible(channels, r * r):
        raise ShapeError(f"channels ({dim_str(channels)}) must be divisible by factor**2 = {r * r}", attr="factor")
    return [TensorType(t.shape[:-3] + (D.normalize(channels // (r * r)) if D.is_static(channels) else
                                       D.normalize(channels / (r * r)), D.normalize(t.shape[-2] * r),
                                       D.normalize(t.shape[-1] * r)), t.dtype)]


register(LayerKind("pixel_shuffle", "(..., C*r*r, H, W) -> (..., C, H*r, W*r): sub-pixel upsampling (F.pixel_shuffle).",
                   (Attr("factor", "int", "the upscale factor r", minimum=1),), _pixel_shuffle_rule,
                   lambda a, args, mod, ins: f"F.pixel_shuffle({args[0]}, {a['factor']})"))
