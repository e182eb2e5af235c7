"""Linear maps, convolutions and pooling."""
from __future__ import annotations

from .. import dims as D
from ..ir import TensorType
from .base import Attr, LayerKind, ShapeError, at_least, features, floating, literal, module_call, pair, rank, register


def _linear_rule(a, ins):
    t = ins[0]
    floating(t)
    if t.rank < 1:
        raise ShapeError("linear expects at least a rank-1 input")
    features(t, -1, a["in"], "in", hint="the previous layer's output size is the last dim shown")
    return [TensorType(t.shape[:-1] + (a["out"],), t.dtype)]


register(LayerKind(
    "linear", "Affine map y = x W^T + b over the last dim (nn.Linear).",
    (Attr("in", "int", "input features (size of the last dim)", minimum=1),
     Attr("out", "int", "output features", minimum=1),
     Attr("bias", "bool", "learn an additive bias", True)),
    _linear_rule, module_call,
    construct=lambda a: f"nn.Linear({a['in']}, {a['out']}{'' if a['bias'] else ', bias=False'})",
    params=lambda a: {"weight": (a["out"], a["in"]), **({"bias": (a["out"],)} if a["bias"] else {})},
    macs=lambda a, i, o: D.product(o[0].shape[:-1]) * a["in"] * a["out"],
))

_SPATIAL = {1: "L", 2: "H, W", 3: "D, H, W"}


def _conv_attrs(transposed: bool = False) -> tuple[Attr, ...]:
    attrs = [
        Attr("in", "int", "input channels", minimum=1),
        Attr("out", "int", "output channels", minimum=1),
        Attr("kernel", "ints", "kernel size (one int, or one per spatial dim)"),
        Attr("stride", "ints", "stride", 1),
        Attr("padding", "padding", "zero padding: an int, one per spatial dim, 'same' or 'valid'", 0),
    ]
    if transposed:
        attrs.append(Attr("output_padding", "ints", "extra size added to one side of the output "
                                                    "(less than the stride or the dilation)", 0))
    attrs += [Attr("dilation", "ints", "spacing between kernel elements", 1),
              Attr("groups", "int", "blocked connections from input to output channels", 1, minimum=1),
              Attr("bias", "bool", "learn an additive bias", True)]
    return tuple(attrs)


def _positive_ints(a: dict, n: int, *names: str) -> None:
    for name in names:
        values = pair(a[name], n)
        if len(values) != n:
            raise ShapeError(f"{name} has {len(values)} values for {n} spatial dims", attr=name)
        if any(v < 1 for v in values):
            raise ShapeError(f"{name} must be positive, got {a[name]}", attr=name)


def _not_empty(spatial, t: TensorType, hint: str) -> None:
    for size in spatial:
        if D.is_static(size) and size < 1:
            raise ShapeError(f"output would be empty: spatial size {size} for input {t}", attr="kernel", hint=hint)
        at_least(size, 1, f"a spatial size of the output (input {t})", attr="kernel")


def _conv_kind(n: int, transposed: bool = False) -> LayerKind:
    name = f"conv_transpose{n}d" if transposed else f"conv{n}d"
    torch_name = f"nn.ConvTranspose{n}d" if transposed else f"nn.Conv{n}d"

    def rule(a, ins):
        t = ins[0]
        floating(t)
        rank(t, (n + 2,))
        features(t, 1, a["in"], "in", hint="channels are dim 1 (N, C, ...)")
        for attr in ("in", "out"):
            if a[attr] % a["groups"]:
                raise ShapeError(f"{attr} ({a[attr]}) must be divisible by groups ({a['groups']})", attr="groups")
        _positive_ints(a, n, "kernel", "stride", "dilation")
        k, s, d = pair(a["kernel"], n), pair(a["stride"], n), pair(a["dilation"], n)
        if a["padding"] in ("same", "valid"):
            if transposed:
                raise ShapeError(f"takes integer padding, not '{a['padding']}'", attr="padding")
            if a["padding"] == "same" and any(x != 1 for x in s):
                raise ShapeError("padding 'same' needs stride 1 (PyTorch refuses it otherwise)", attr="padding",
                                 hint="use an integer padding, e.g. kernel // 2")
            spatial = t.shape[2:] if a["padding"] == "same" else tuple(
                D.window_out(size, k[i], s[i], 0, d[i]) for i, size in enumerate(t.shape[2:]))
        elif transposed:
            p, op = pair(a["padding"], n), pair(a["output_padding"], n)
            for i in range(n):
                if not 0 <= op[i] < max(s[i], d[i]):
                    raise ShapeError(f"output_padding {op[i]} must be smaller than the stride ({s[i]}) or the "
                                     f"dilation ({d[i]})", attr="output_padding",
                                     expected=f"0 <= output_padding < {max(s[i], d[i])}")
            spatial = tuple(D.normalize((size - 1) * s[i] - 2 * p[i] + d[i] * (k[i] - 1) + op[i] + 1)
                            for i, size in enumerate(t.shape[2:]))
        else:
            p = pair(a["padding"], n)
            if any(v < 0 for v in p):
                raise ShapeError(f"padding must not be negative, got {a['padding']}", attr="padding")
            spatial = tuple(D.window_out(size, k[i], s[i], p[i], d[i]) for i, size in enumerate(t.shape[2:]))
        _not_empty(spatial, t, "the input is smaller than the kernel; pad it or use a smaller kernel/stride")
        return [TensorType((t.shape[0], a["out"]) + tuple(spatial), t.dtype)]

    def construct(a):
        args = [str(a["in"]), str(a["out"]), literal(a["kernel"])]
        for key, default in (("stride", 1), ("padding", 0), ("output_padding", 0), ("dilation", 1), ("groups", 1)):
            if key in a and a[key] != default:
                args.append(f"{key}={literal(a[key])}")
        if not a["bias"]:
            args.append("bias=False")
        return f"{torch_name}({', '.join(args)})"

    def params(a):
        k = pair(a["kernel"], n)
        w = (a["in"], a["out"] // a["groups"]) if transposed else (a["out"], a["in"] // a["groups"])
        return {"weight": w + tuple(k), **({"bias": (a["out"],)} if a["bias"] else {})}

    def macs(a, i, o):
        k = D.product(pair(a["kernel"], n))
        return D.product(o[0].shape) * (a["in"] // a["groups"]) * k if not transposed else \
            D.product(i[0].shape) * (a["out"] // a["groups"]) * k

    doc = (f"{n}-D transposed convolution over (N, C, {_SPATIAL[n]}) ({torch_name})." if transposed else
           f"{n}-D convolution over (N, C, {_SPATIAL[n]}) ({torch_name}).")
    return register(LayerKind(name, doc, _conv_attrs(transposed), rule, module_call, construct, params, macs))


for _n in (1, 2, 3):
    _conv_kind(_n)
    _conv_kind(_n, transposed=True)


def _pool_kind(kind: str, n: int) -> LayerKind:
    name = f"{kind}_pool{n}d"
    torch_name = f"F.{kind}_pool{n}d"

    def rule(a, ins):
        t = ins[0]
        floating(t)
        rank(t, (n + 1, n + 2))
        _positive_ints(a, n, "kernel", *(("stride",) if a["stride"] is not None else ()))
        k = pair(a["kernel"], n)
        s = pair(a["stride"] if a["stride"] is not None else a["kernel"], n)
        p = pair(a["padding"], n)
        for i in range(n):
            if not 0 <= p[i] * 2 <= k[i]:
                raise ShapeError(f"padding {p[i]} must be from 0 to half the kernel {k[i]}", attr="padding")
        spatial = []
        for i, size in enumerate(t.shape[-n:]):
            out = D.window_out(size, k[i], s[i], p[i], 1, a["ceil_mode"])
            if a["ceil_mode"]:
                out = _last_window_inside(out, size, k[i], s[i], p[i])
            spatial.append(out)
        _not_empty(spatial, t, "the input is smaller than the pooling window")
        return [TensorType(t.shape[:-n] + tuple(spatial), t.dtype)]

    def call(a, args, mod, ins):
        extra = ""
        if a["stride"] is not None:
            extra += f", stride={literal(a['stride'])}"
        if a["padding"]:
            extra += f", padding={literal(a['padding'])}"
        if a["ceil_mode"]:
            extra += ", ceil_mode=True"
        return f"{torch_name}({args[0]}, {literal(a['kernel'])}{extra})"

    return register(LayerKind(
        name, f"{n}-D {kind} pooling ({torch_name}).",
        (Attr("kernel", "ints", "window size"), Attr("stride", "ints", "stride (default: the kernel size)", None),
         Attr("padding", "ints", "implicit padding on both sides", 0),
         Attr("ceil_mode", "bool", "round output sizes up instead of down", False)),
        rule, call))


def _last_window_inside(out, size, kernel: int, stride: int, padding: int):
    """ceil_mode drops a last window that would start in the right padding (PyTorch's rule)."""
    if D.is_static(out):
        return out - 1 if (out - 1) * stride >= size + padding else out
    # ceil((span)/s)*s < size + 2p - k + s, so the last window starts inside whenever p + s <= k
    if padding + stride <= kernel:
        return out
    raise ShapeError(f"ceil_mode with a symbolic input size {size} and stride {stride} > kernel {kernel} - padding "
                     f"{padding}: the output size depends on whether the last window fits", attr="ceil_mode",
                     hint="use ceil_mode: false, or a static size for this dim")


for _k in ("max", "avg"):
    for _n in (1, 2, 3):
        _pool_kind(_k, _n)


def _adaptive_kind(n: int) -> LayerKind:
    name = f"adaptive_avg_pool{n}d"

    def rule(a, ins):
        t = ins[0]
        floating(t)
        rank(t, (n + 1, n + 2))
        size = pair(a["size"], n)
        if len(size) != n or any(v < 1 for v in size):
            raise ShapeError(f"size must be {n} positive int(s), got {a['size']}", attr="size")
        return [TensorType(t.shape[:-n] + size, t.dtype)]

    return register(LayerKind(
        name, f"{n}-D adaptive average pooling to a fixed output size.",
        (Attr("size", "ints", "output size (one int, or one per spatial dim)"),),
        rule, lambda a, args, mod, ins: f"F.adaptive_avg_pool{n}d({args[0]}, {literal(a['size'])})"))


for _n in (1, 2, 3):
    _adaptive_kind(_n)
