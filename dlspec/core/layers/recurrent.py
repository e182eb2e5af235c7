"""Recurrent layers: LSTM and GRU, batch first, with padding masks or lengths."""
from __future__ import annotations

from .. import dims as D
from ..ir import TensorType, dim_str
from .base import INTS, Attr, LayerKind, ShapeError, features, floating, rank, register

_GATES = {"lstm": 4, "gru": 3}
_OUTPUTS = ("sequence", "last", "state")


def _recurrent_kind(name: str) -> LayerKind:
    gates = _GATES[name]

    def width(a) -> int:
        return a["hidden"] * (2 if a["bidirectional"] else 1)

    def rule(a, ins):
        x = ins[0]
        floating(x)
        rank(x, (3,))
        features(x, -1, a["in"], "in", hint="the input is (batch, time, features)")
        if a["dropout"] and a["layers"] == 1:
            raise ShapeError("dropout applies between stacked layers; with one layer it does nothing", attr="dropout",
                             hint="remove it, or stack layers: 2 or more")
        if not 0 <= a["dropout"] < 1:
            raise ShapeError(f"dropout must be in [0, 1), got {a['dropout']}", attr="dropout")
        if a["mask"] and a["lengths"]:
            raise ShapeError("give a padding mask or lengths, not both", attr="lengths")
        if len(ins) == 2:
            _check_padding(a, x, ins[1])
        if a["output"] == "sequence":
            return [TensorType(x.shape[:2] + (width(a),), x.dtype)]
        return [TensorType((x.shape[0], width(a)), x.dtype)]

    def call(a, args, mod, ins):
        if len(args) == 1:
            return f"{mod}({args[0]})"
        return f"{mod}({args[0]}, {'mask' if a['mask'] else 'lengths'}={args[1]})"

    def construct(a):
        args = [repr(name.upper()), str(a["in"]), str(a["hidden"])]
        for key, torch_name, default in (("layers", "num_layers", 1), ("bidirectional", "bidirectional", False),
                                         ("dropout", "dropout", 0.0), ("bias", "bias", True),
                                         ("output", "output", "sequence")):
            if a[key] != default:
                args.append(f"{torch_name}={a[key]!r}")
        return f"Recurrent({', '.join(args)})"

    def params(a):
        out = {}
        for layer in range(a["layers"]):
            for suffix in ("", "_reverse") if a["bidirectional"] else ("",):
                inputs = a["in"] if layer == 0 else width(a)
                out[f"weight_ih_l{layer}{suffix}"] = (gates * a["hidden"], inputs)
                out[f"weight_hh_l{layer}{suffix}"] = (gates * a["hidden"], a["hidden"])
                if a["bias"]:
                    out[f"bias_ih_l{layer}{suffix}"] = (gates * a["hidden"],)
                    out[f"bias_hh_l{layer}{suffix}"] = (gates * a["hidden"],)
        return out

    def macs(a, i, o):
        steps = i[0].shape[0] * i[0].shape[1]
        return steps * sum(D.product(s) for p, s in params(a).items() if p.startswith("weight"))

    def lengths_range(a, ins):
        # lengths count real steps: 1 up to the shortest allowed T
        low, _ = D.bounds(ins[0].shape[1])
        return {1: (1, (low or 1) + 1)} if a["lengths"] else {}

    return register(LayerKind(
        name, f"{name.upper()} over (B, T, in) (nn.{name.upper()}'s parameters, batch first). `output` picks "
              "every step's output [B, T, D*hidden], the last real step's [B, D*hidden], or the top layer's final "
              "state [B, D*hidden] (both directions: the backward pass ends at step 0); D = 2 when bidirectional. "
              "With a [B, T] padding mask or [B] lengths (padding at the end) each sequence runs over its real "
              "steps only. Exports run at a fixed T: torch.export unrolls the time loop.",
        (Attr("in", "int", "input features (last dim)", minimum=1),
         Attr("hidden", "int", "hidden size per direction", minimum=1),
         Attr("layers", "int", "stacked layers", 1, minimum=1),
         Attr("bidirectional", "bool", "also run backward in time, concatenating both directions", False),
         Attr("dropout", "float", "dropout between stacked layers while training", 0.0),
         Attr("bias", "bool", "learn biases", True),
         Attr("output", "str", "sequence, last or state", "sequence", choices=_OUTPUTS),
         Attr("mask", "ref", "node giving a [B, T] padding mask, true (or 1) = real step", None),
         Attr("lengths", "ref", "node giving [B] integer lengths (1 to T)", None)),
        rule, call, construct, params, macs, module_classes=("Recurrent",),
        static_dims=lambda a, ins: [ins[0].shape[1]], index_range=lengths_range))


def _check_padding(a, x: TensorType, padding: TensorType) -> None:
    if a["mask"]:
        if padding.rank != 2 or D.equal(padding.shape[0], x.shape[0]) is not True or \
                D.equal(padding.shape[1], x.shape[1]) is not True:
            raise ShapeError(f"mask must be [batch, time] = [{dim_str(x.shape[0])}, {dim_str(x.shape[1])}], got {padding}",
                             attr="mask")
        if padding.dtype not in ("bool",) + INTS:
            raise ShapeError(f"mask must be bool (true = real step) or integer 0/1, got {padding.dtype}", attr="mask")
    else:
        if padding.rank != 1 or D.equal(padding.shape[0], x.shape[0]) is not True:
            raise ShapeError(f"lengths must be [batch] = [{dim_str(x.shape[0])}], got {padding}", attr="lengths")
        if padding.dtype not in INTS:
            raise ShapeError(f"lengths must be integers, got {padding.dtype}", attr="lengths")


_recurrent_kind("lstm")
_recurrent_kind("gru")
