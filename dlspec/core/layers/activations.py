"""Activations and other element-wise functions of one input."""
from __future__ import annotations

from typing import Callable

from ..ir import TensorType
from .base import DEFAULT_FLOAT, FLOATS, INTS, Attr, LayerKind, ShapeError, axis, features, floating, module_call, register


def unary(name: str, doc: str, fn: str, attrs: tuple[Attr, ...] = (), extra: Callable[[dict], str] = lambda a: "",
          dtypes: tuple[str, ...] = FLOATS, to_float: bool = False,
          check: Callable[[dict], None] = lambda a: None) -> LayerKind:
    """An element-wise function of one input: the same shape out. `dtypes` are the inputs it takes;
    with `to_float`, an integer input gives float32 (as torch.exp does); `check` vets the attributes."""
    def rule(a, ins):
        t = ins[0]
        if t.dtype not in dtypes:
            if dtypes == FLOATS:
                floating(t)
            raise ShapeError(f"expects a {' or '.join(sorted({_family(d) for d in dtypes}))} input, got {t.dtype}")
        check(a)
        return [TensorType(t.shape, DEFAULT_FLOAT if to_float and t.dtype not in FLOATS else t.dtype)]

    def call(a, args, mod, ins):
        more = extra(a)
        return f"{fn}({args[0]}{', ' + more if more else ''})"

    return register(LayerKind(name, doc, attrs, rule, call))


def _family(dtype: str) -> str:
    return "floating-point" if dtype in FLOATS else "integer" if dtype in INTS else "bool"


def _clamp_check(a):
    if a["min"] is None and a["max"] is None:
        raise ShapeError("clamp needs a min, a max or both", attr="min")


unary("relu", "max(x, 0).", "F.relu")
unary("relu6", "min(max(x, 0), 6) (MobileNetV2).", "F.relu6")
unary("gelu", "Gaussian error linear unit; approximate: tanh gives the GPT-2 form.", "F.gelu",
      (Attr("approximate", "str", "none or tanh", "none", choices=("none", "tanh")),),
      lambda a: "" if a["approximate"] == "none" else "approximate='tanh'")
unary("silu", "x * sigmoid(x) (swish).", "F.silu")
unary("mish", "x * tanh(softplus(x)).", "F.mish")
unary("hardswish", "x * relu6(x + 3) / 6 (MobileNetV3, EfficientNet-lite).", "F.hardswish")
unary("hardsigmoid", "relu6(x + 3) / 6.", "F.hardsigmoid")
unary("elu", "x if x > 0 else alpha * (exp(x) - 1).", "F.elu", (Attr("alpha", "float", "scale of the negative part", 1.0),),
      lambda a: "" if a["alpha"] == 1.0 else f"alpha={a['alpha']!r}")
unary("softplus", "log(1 + exp(beta * x)) / beta, linear past `threshold`.", "F.softplus",
      (Attr("beta", "float", "sharpness", 1.0), Attr("threshold", "float", "beta * x above which it is linear", 20.0)),
      lambda a: ", ".join(f"{k}={a[k]!r}" for k, d in (("beta", 1.0), ("threshold", 20.0)) if a[k] != d))
unary("tanh", "Hyperbolic tangent.", "torch.tanh")
unary("sigmoid", "Logistic sigmoid.", "torch.sigmoid")
unary("leaky_relu", "max(x, 0) + slope * min(x, 0).", "F.leaky_relu",
      (Attr("slope", "float", "slope for negative inputs", 0.01),), lambda a: f"{a['slope']!r}")
unary("exp", "e ** x; integer inputs give float32.", "torch.exp", dtypes=FLOATS + INTS + ("bool",), to_float=True)
unary("log", "Natural logarithm (-inf at 0, nan below); integer inputs give float32.", "torch.log",
      dtypes=FLOATS + INTS + ("bool",), to_float=True)
unary("sqrt", "Square root (nan below 0); integer inputs give float32.", "torch.sqrt",
      dtypes=FLOATS + INTS + ("bool",), to_float=True)
unary("abs", "Absolute value.", "torch.abs", dtypes=FLOATS + INTS)
unary("neg", "-x.", "torch.neg", dtypes=FLOATS + INTS)
unary("clamp", "Limits values to [min, max] (either may be left out).", "torch.clamp",
      (Attr("min", "float", "lower limit", None), Attr("max", "float", "upper limit", None)),
      lambda a: ", ".join(f"{k}={a[k]!r}" for k in ("min", "max") if a[k] is not None), check=_clamp_check)


def _prelu_rule(a, ins):
    t = ins[0]
    floating(t)
    if a["num"] > 1:
        if t.rank < 2:
            raise ShapeError(f"num {a['num']} learns one slope per channel (dim 1), but the input {t} has none",
                             attr="num")
        features(t, 1, a["num"], "num", hint="num is 1 (one shared slope) or the number of channels (dim 1)")
    return [t]


register(LayerKind(
    "prelu", "Leaky ReLU with a learned negative slope: one shared, or one per channel (nn.PReLU).",
    (Attr("num", "int", "number of slopes: 1 or the channels (dim 1)", 1, minimum=1),
     Attr("init", "float", "initial slope", 0.25)),
    _prelu_rule, module_call,
    construct=lambda a: f"nn.PReLU({a['num']}{'' if a['init'] == 0.25 else ', init=' + repr(a['init'])})",
    params=lambda a: {"weight": (a["num"],)}))


def _softmax_kind(name: str) -> LayerKind:
    def rule(a, ins):
        floating(ins[0])
        axis(a["dim"], ins[0].rank)
        return [ins[0]]

    return register(LayerKind(name, f"{name.replace('_', ' ')} over one dim.",
                              (Attr("dim", "int", "the dim to normalise over", -1),),
                              rule, lambda a, args, mod, ins: f"F.{name}({args[0]}, dim={a['dim']})"))


_softmax_kind("softmax")
_softmax_kind("log_softmax")
register(LayerKind("identity", "Passes its input through unchanged.", (), lambda a, ins: [ins[0]],
                   lambda a, args, mod, ins: args[0]))
