"""Shape rules that are never wrong, over every layer kind in the registry.

For each kind, seeded random attributes and inputs with symbolic dims make a one-layer spec. A spec that
validates must build, and at every allowed size of each symbolic dim (its min and max, the sizes between,
so odd sizes and 1 too) its forward pass, in training and in eval mode, must give exactly the shapes and
dtypes shape inference gave. Its torch.export trace (the dims dynamic as a default export makes them)
must run at each of those sizes too, and for a sample of kinds the whole export with parity: ONNX,
TorchScript and .pt2 (every case of every kind with DLSPEC_PROPERTY_FULL=1). A spec that does not
validate must say why at a line of the spec.
"""
from __future__ import annotations

import os
import random
import warnings

import pytest
import torch
import yaml

import dlspec
from dlspec.backend.inputs import random_inputs
from dlspec.core.errors import DlspecError
from dlspec.core.layers import REGISTRY
from dlspec.export import export
from dlspec.front.spec import concrete_shape

CASES = 6  # random attribute sets per kind
FULL = os.environ.get("DLSPEC_PROPERTY_FULL") == "1"
# kinds whose whole export (three formats, parity) runs in the normal suite: one or two per family
# (not log or sqrt: N(0, 1) inputs give them NaN, which parity rightly refuses to compare)
EXPORTED = {"conv2d", "conv_transpose1d", "max_pool3d", "batch_norm2d", "instance_norm2d", "embedding", "hardswish",
            "exp", "reshape", "slice", "masked_fill", "concat", "chunk", "attention", "rope", "lstm", "gru", "arange",
            "gather", "expand", "interpolate", "pad", "pixel_shuffle", "cumsum"}


# ---- the random cases -----------------------------------------------------------------------------------------
# A case is (inputs, attrs, dims): inputs as [shape, dtype] (symbolic dims by name), the layer's attributes
# (an attribute naming an input, like `mask: x1`, makes it a reference instead of a `from:` input), and the
# declared range of each symbolic dim.

def _dim(r: random.Random, name: str, low: tuple = (1, 1, 2, 3), span: int = 4) -> dict:
    lo = r.choice(low)
    return {"min": lo, "max": lo + r.randint(0, span), "example": lo}


def _seq(r, features=None, dtype="float32"):
    f = features or r.choice([1, 3, 4, 8])
    return [["B", "T", f], dtype], {"B": _dim(r, "B"), "T": _dim(r, "T")}


def _unary(kind):
    def make(r):
        dtype = r.choice(["float32", "float32", "int64", "bool", "float64"])
        shape = r.choice([["B", "T", 3], ["B", 5], ["B", "T"]])
        attrs = {}
        if kind == "gelu":
            attrs["approximate"] = r.choice(["none", "tanh"])
        if kind == "elu":
            attrs["alpha"] = r.choice([0.5, 1.0])
        if kind == "softplus":
            attrs.update(beta=r.choice([1.0, 2.0]), threshold=r.choice([1.0, 20.0]))
        if kind == "leaky_relu":
            attrs["slope"] = r.choice([0.01, 0.2])
        if kind == "clamp":
            attrs.update({k: r.choice([None, -0.5, 0.5]) for k in ("min", "max")})
        if kind == "dropout":
            attrs["p"] = r.choice([0.0, 0.3, 1.0])
        if kind in ("softmax", "log_softmax"):
            attrs["dim"] = r.randint(-3, 2)
        if kind == "pow":
            attrs["exponent"] = r.choice([2.0, 0.5, 3.0])
        return [[shape, dtype]], attrs, {"B": _dim(r, "B"), "T": _dim(r, "T")}
    return make


def _prelu(r):
    c = r.choice([1, 3])
    return [[["B", c, "T"], "float32"]], {"num": r.choice([1, c, 2])}, {"B": _dim(r, "B"), "T": _dim(r, "T")}


def _linear(r):
    f = r.choice([1, 4])
    x, dims = _seq(r, f)
    return [x], {"in": r.choice([f, f, 5]), "out": r.randint(1, 5), "bias": r.random() < 0.5}, dims


def _conv(n, transposed=False):
    def make(r):
        c = r.choice([2, 4])
        spatial = ["H"] + [r.randint(3, 6) for _ in range(n - 1)]
        kernel = r.randint(1, 3)
        stride = r.randint(1, 2)
        attrs = {"in": c, "out": r.choice([2, 4]), "kernel": kernel, "stride": stride, "dilation": r.choice([1, 1, 2]),
                 "groups": r.choice([1, 2]), "bias": r.random() < 0.5,
                 "padding": r.choice([0, 1, "same", "valid"] if not transposed else [0, 1])}
        if transposed:
            attrs["output_padding"] = r.choice([0, 1])
        return [[["B", c] + spatial, "float32"]], attrs, {"B": _dim(r, "B"), "H": _dim(r, "H", (1, 2, 4, 5), 5)}
    return make


def _pool(n, adaptive=False):
    def make(r):
        spatial = ["H"] + [r.randint(2, 5) for _ in range(n - 1)]
        rank_prefix = r.choice([["B", 2], [2]])
        if adaptive:
            attrs = {"size": r.choice([1, 2, 3])}
        else:
            kernel = r.randint(1, 3)
            attrs = {"kernel": kernel, "stride": r.choice([None, 1, 2]), "padding": r.choice([0, 1]),
                     "ceil_mode": r.random() < 0.3}
        dims = {"H": _dim(r, "H", (1, 2, 3, 4), 5)}
        if "B" in rank_prefix:
            dims["B"] = _dim(r, "B")
        return [[rank_prefix + spatial, "float32"]], attrs, dims
    return make


def _norm(kind):
    def make(r):
        c = r.choice([2, 4])
        n = int(kind[-2]) if kind[-2].isdigit() else 1
        spatial = {"batch_norm1d": r.choice([[], ["T"]])}.get(kind, ["T"] + [r.randint(1, 3) for _ in range(n - 1)])
        shape = ["B", c] + spatial
        attrs = {"dim": r.choice([c, c, 3])}
        if kind == "group_norm":
            attrs["groups"] = r.choice([1, 2, 3])
        if kind in ("layer_norm", "rms_norm"):
            shape = ["B", "T", c]
        return [[shape, "float32"]], attrs, {"B": _dim(r, "B", (1, 2)), "T": _dim(r, "T")}
    return make


def _embedding(r):
    num = r.randint(1, 9)
    return [[["B", "T"], r.choice(["int64", "int64", "int32", "float32"])]], \
        {"num": num, "dim": r.randint(1, 4), "padding_idx": r.choice([None, 0, num - 1, num, -num])}, \
        {"B": _dim(r, "B"), "T": _dim(r, "T")}


def _pos_embedding(r):
    d = r.choice([2, 4])
    dims = {"B": _dim(r, "B"), "T": _dim(r, "T")}
    return [[["B", "T", d], "float32"]], {"max_len": r.randint(3, 10), "dim": d,
                                           "kind": r.choice(["learned", "sinusoidal"])}, dims


def _class_token(r):
    d = r.choice([2, 4])
    return [[["B", "T", d], "float32"]], {"dim": d}, {"B": _dim(r, "B"), "T": _dim(r, "T")}


def _shape_op(kind):
    def make(r):
        x = [["B", "T", 4, 1], r.choice(["float32", "int64", "bool"])]
        attrs = {
            "flatten": lambda: {"start": r.choice([0, 1, 2]), "end": r.choice([-1, 2, 3])},
            "reshape": lambda: {"shape": r.choice([["B", "T", 4], ["B", -1], ["B", 2, -1], ["B", 3, -1], [-1, 4]])},
            "permute": lambda: {"dims": r.choice([[0, 2, 1, 3], [3, 2, 1, 0], [0, 1, 2]])},
            "transpose": lambda: {"dim0": r.randint(-4, 3), "dim1": r.randint(-4, 3)},
            "squeeze": lambda: {"dim": r.choice([3, 1, -1])},
            "unsqueeze": lambda: {"dim": r.randint(-5, 4)},
            "select": lambda: {"dim": r.choice([1, 2]), "index": r.choice([0, 1, 3, -1, -2])},
            "slice": lambda: {"dim": r.choice([1, 2]), "start": r.choice([0, 1, 2]), "end": r.choice([None, 2, 3, 5]),
                              "step": r.choice([1, 2])},
            "mean": lambda: {"dims": r.choice([1, [1, 2], -1]), "keepdim": r.random() < 0.5},
            "sum": lambda: {"dims": r.choice([1, [1, 2], -1, [1, 1]]), "keepdim": r.random() < 0.5},
            "tril": lambda: {"diagonal": r.randint(-1, 1)},
            "triu": lambda: {"diagonal": r.randint(-1, 1)},
            "cumsum": lambda: {"dim": r.randint(-2, 2)},
            "arange": lambda: {"dim": r.randint(0, 3), "dtype": r.choice(["int64", "float32"])},
            "ones_like": lambda: {"dtype": r.choice([None, "bool", "float32"])},
            "zeros_like": lambda: {"dtype": r.choice([None, "int64"])},
            "repeat": lambda: {"times": r.choice([[1, 2, 1, 1], [2, 1, 1, 3, 1], [1, 1]])},
            "constant": lambda: {"value": r.choice([0.0, 1.0, 2.5]), "shape": r.choice([["T", "T"], [3, "B"], ["Q"]]),
                                 "dtype": r.choice(["float32", "bool", "int64"])},
            "scale": lambda: {"factor": r.choice([0.5, 2.0])},
        }[kind]()
        return [x], attrs, {"B": _dim(r, "B"), "T": _dim(r, "T")}
    return make


def _broadcastable(r, dtypes):
    a = ["B", r.choice(["T", 1]), 3]
    b = r.choice([["T", 3], [1, 3], ["B", 1, 1], [3], ["B", "T", 2]])
    return [[a, r.choice(dtypes)], [b, r.choice(dtypes)]]


def _binary(kind):
    def make(r):
        ins = _broadcastable(r, ["float32", "float32", "int64", "bool"])
        if kind in ("add", "mul") and r.random() < 0.3:
            ins.append([["B", "T", 3], "float32"])
        if kind == "pow":
            ins = [[ins[0][0], "float32"], [ins[1][0], r.choice(["float32", "int64"])]]
        return ins, {}, {"B": _dim(r, "B"), "T": _dim(r, "T")}
    return make


def _where(r):
    x, y = _broadcastable(r, ["float32", "int64"])
    return [[["B", "T", 1], r.choice(["bool", "bool", "int64"])], x, y], {}, {"B": _dim(r, "B"), "T": _dim(r, "T")}


def _masked_fill(r):
    mask = r.choice([["B", "T", 1], ["T", 3], ["B", "T", 3], ["B", "T", 3, 1]])
    return [[["B", "T", 3], r.choice(["float32", "int64"])], [mask, r.choice(["bool", "bool", "bool", "float32"])]], \
        {"value": r.choice([0.0, -1.5, float("-inf")])}, {"B": _dim(r, "B"), "T": _dim(r, "T")}


def _join(kind):
    def make(r):
        a = ["B", "T", 3]
        b = r.choice([["B", "T", 3], ["B", 2, 3], ["B", "T", 1]])
        attrs = {"dim": r.randint(-3, 2)} if kind == "concat" else {"dim": r.randint(-4, 3)}
        return [[a, "float32"], [b, r.choice(["float32", "int64"])]], attrs, {"B": _dim(r, "B"), "T": _dim(r, "T")}
    return make


def _split(r):
    return [[["B", "T", 6], "float32"]], {"sizes": r.choice([[2, 4], [3, 3], [1, 2], [6]]), "dim": r.choice([-1, 1])}, \
        {"B": _dim(r, "B"), "T": _dim(r, "T")}


def _chunk(r):
    t = _dim(r, "T")
    if r.random() < 0.5:
        t = {"min": 2, "max": 8, "example": 4, "multiple_of": 2}
    return [[["B", "T", 6], "float32"]], {"chunks": r.choice([1, 2, 3]), "dim": r.choice([-1, 1])}, \
        {"B": _dim(r, "B"), "T": t}


def _matmul(r):
    a = [["B", "T", 4], "float32"]
    b = r.choice([[[4, 2], "float32"], [["B", 4, "T"], "float32"], [[4, 2], "int64"], [[3, 2], "float32"]])
    return [a, b], {}, {"B": _dim(r, "B"), "T": _dim(r, "T")}


def _attention(r):
    heads = r.choice([1, 2, 4])
    dim = heads * r.choice([2, 4])
    attrs = {"dim": dim, "heads": heads, "kv_heads": r.choice([None, 1, heads]), "causal": r.random() < 0.5,
             "bias": r.random() < 0.5}
    ins = [[["B", "T", dim], "float32"]]
    if r.random() < 0.5:
        attrs["rope"] = r.choice([{}, {"theta": 500.0, "fraction": 0.5},
                                  {"scaling": {"kind": "llama3", "factor": 4.0, "original_context": 8}}])
    elif r.random() < 0.5:
        attrs.update(memory="x1", kv_dim=3)
        ins.append([["B", "S", 3], "float32"])
    if r.random() < 0.5:
        attrs["mask"] = f"x{len(ins)}"
        ins.append([["B", "S" if "memory" in attrs else "T"], r.choice(["bool", "int64"])])
    return ins, attrs, {"B": _dim(r, "B"), "T": _dim(r, "T"), "S": _dim(r, "S")}


def _rope(r):
    hd = r.choice([2, 4, 6])
    shape = r.choice([["B", 2, "T", hd], ["B", "T", hd]])
    ins = [[shape, "float32"]]
    if r.random() < 0.4:
        ins.append([r.choice([["T"], ["B", "T"]]), "int64"])
    return ins, {"head_dim": hd, "theta": r.choice([10000.0, 100.0]), "fraction": r.choice([1.0, 0.5, 0.25])}, \
        {"B": _dim(r, "B"), "T": _dim(r, "T")}


def _recurrent(r):
    f = r.choice([1, 3])
    attrs = {"in": f, "hidden": r.randint(1, 4), "layers": r.choice([1, 2]), "bidirectional": r.random() < 0.5,
             "dropout": r.choice([0.0, 0.0, 0.2]), "output": r.choice(["sequence", "last", "state"]),
             "bias": r.random() < 0.7}
    ins = [[["B", "T", f], "float32"]]
    which = r.choice([None, "mask", "lengths"])
    if which:
        attrs[which] = "x1"
        ins.append([["B", "T"] if which == "mask" else ["B"], "bool" if which == "mask" else "int64"])
    return ins, attrs, {"B": _dim(r, "B"), "T": _dim(r, "T")}


def _index(kind):
    def make(r):
        x = [["B", "T", 4], r.choice(["float32", "int64"])]
        dim = r.randint(-3, 2)
        if kind == "gather":
            index = [r.choice([["B", "T", 2], ["B", 1, 4], ["B", "T"]]), r.choice(["int64", "int64", "int32"])]
        else:
            index = [r.choice([[3], ["B"], [2, 2]]), "int64"]
        return [x, index], {"dim": dim}, {"B": _dim(r, "B"), "T": _dim(r, "T")}
    return make


def _expand(r):
    x = [["B", 1, r.choice([1, 3])], "float32"]
    shape = r.choice([["B", "T", -1], [2, "B", "T", 3], ["B", 4, 3], [-1, "T", -1]])
    return [x, [["B", "T"], "float32"]], {"shape": shape}, {"B": _dim(r, "B"), "T": _dim(r, "T")}


def _interpolate(r):
    mode = r.choice(["nearest", "bilinear", "linear", "bicubic", "nearest-exact", "trilinear"])
    rank = {"linear": 3, "bilinear": 4, "bicubic": 4, "trilinear": 5}.get(mode, r.choice([3, 4, 5]))
    shape = ["B", 2, "H"] + [3] * (rank - 3)
    attrs = {"mode": mode, "align_corners": r.choice([None, True]) if mode not in ("nearest", "nearest-exact") else None}
    if r.random() < 0.5:
        attrs["size"] = r.choice([2, 5])
    else:
        attrs["scale"] = r.choice([2.0, 0.5, 1.5])
    return [[shape, "float32"]], attrs, {"B": _dim(r, "B"), "H": _dim(r, "H", (1, 2, 3), 5)}


def _pad(r):
    mode = r.choice(["constant", "reflect", "replicate", "circular"])
    shape = r.choice([["B", 2, "H"], ["B", 2, "H", 3]])
    return [[shape, "float32"]], {"pad": r.choice([[1, 1], [0, 2, 1, 0], [2, 1]]), "mode": mode,
                                  "value": r.choice([0.0, 1.5])}, {"B": _dim(r, "B"), "H": _dim(r, "H", (1, 2, 3), 4)}


def _pixel_shuffle(r):
    factor = r.choice([1, 2])
    return [[["B", r.choice([4, 8, 2]), "H", 3], "float32"]], {"factor": factor}, \
        {"B": _dim(r, "B"), "H": _dim(r, "H")}


GENERATORS = {
    **{k: _unary(k) for k in ("relu", "relu6", "gelu", "silu", "mish", "hardswish", "hardsigmoid", "elu", "softplus",
                              "tanh", "sigmoid", "leaky_relu", "exp", "log", "sqrt", "abs", "neg", "clamp", "identity",
                              "dropout", "softmax", "log_softmax")},
    "pow": lambda r: (_binary("pow") if r.random() < 0.5 else _unary("pow"))(r),
    "prelu": _prelu, "linear": _linear,
    **{f"conv{n}d": _conv(n) for n in (1, 2, 3)}, **{f"conv_transpose{n}d": _conv(n, True) for n in (1, 2, 3)},
    **{f"{k}_pool{n}d": _pool(n) for k in ("max", "avg") for n in (1, 2, 3)},
    **{f"adaptive_avg_pool{n}d": _pool(n, adaptive=True) for n in (1, 2, 3)},
    **{k: _norm(k) for k in ("batch_norm1d", "batch_norm2d", "batch_norm3d", "instance_norm1d", "instance_norm2d",
                             "instance_norm3d", "layer_norm", "group_norm", "rms_norm")},
    "embedding": _embedding, "pos_embedding": _pos_embedding, "class_token": _class_token,
    **{k: _shape_op(k) for k in ("flatten", "reshape", "permute", "transpose", "squeeze", "unsqueeze", "select",
                                 "slice", "mean", "sum", "tril", "triu", "cumsum", "arange", "ones_like",
                                 "zeros_like", "repeat", "constant", "scale")},
    **{k: _binary(k) for k in ("add", "mul", "sub", "div", "maximum", "minimum")},
    "where": _where, "masked_fill": _masked_fill, "concat": _join("concat"), "stack": _join("stack"),
    "split": _split, "chunk": _chunk, "matmul": _matmul, "attention": _attention, "rope": _rope,
    "lstm": _recurrent, "gru": _recurrent, "gather": _index("gather"), "index_select": _index("index_select"),
    "expand": _expand, "interpolate": _interpolate, "pad": _pad, "pixel_shuffle": _pixel_shuffle,
}


def test_every_kind_has_a_generator():
    assert sorted(GENERATORS) == sorted(REGISTRY)


def _write(tmp_path, kind: str, case: int, inputs, attrs, dims) -> object:
    used = {d for shape, _ in inputs for d in shape if isinstance(d, str)}
    refs = {v for v in attrs.values() if isinstance(v, str) and v.startswith("x") and v[1:].isdigit()}
    node = {"id": "node", "op": kind, "from": [f"x{i}" for i in range(len(inputs)) if f"x{i}" not in refs],
            **{k: v for k, v in attrs.items() if v is not None}}
    outputs = REGISTRY[kind].outputs({**{a.name: a.default for a in REGISTRY[kind].attrs if not a.required}, **attrs})
    model = {"dims": {name: d for name, d in dims.items() if name in used},
             "inputs": {f"x{i}": {"shape": shape, "dtype": dtype} for i, (shape, dtype) in enumerate(inputs)},
             "layers": [node],
             "outputs": {"out": "node"} if outputs == 1 else {f"out{k}": f"node.{k}" for k in range(outputs)}}
    path = tmp_path / f"{kind}-{case}.yaml"
    path.write_text(yaml.safe_dump({"dlspec": 1, "name": f"{kind}-{case}", "model": model}, sort_keys=False))
    return path


def _allowed_sizes(spec) -> list[dict[str, int]]:
    """The example sizes; each dim at each of its allowed sizes (the others at their example); all at
    their smallest, and all at their largest."""
    base = spec.example_sizes()
    cases = [base]
    for name, dim in spec.dims.items():
        cases += [{**base, name: size} for size in range(dim.min, dim.max + 1) if dim.allows(size)]
    cases += [{name: dim.min for name, dim in spec.dims.items()}, {name: dim.max for name, dim in spec.dims.items()}]
    return list({tuple(sorted(c.items())): c for c in cases}.values())


def _check_outputs(spec, outs, sizes, where: str) -> None:
    outs = outs if isinstance(outs, tuple) else (outs,)
    for tensor, declared in zip(outs, spec.outputs):
        assert tuple(tensor.shape) == concrete_shape(declared.shape, sizes), (where, sizes, declared.shape)
        assert str(tensor.dtype).removeprefix("torch.") == declared.dtype, (where, sizes, declared.dtype)


def _exported_runs(spec, model, sizes_list) -> None:
    """The torch.export trace every exporter starts from, with all dims dynamic, at every allowed size."""
    from dlspec.export.config import resolve
    from dlspec.export.pipeline import trace
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        config, program = trace(spec, model, resolve(spec))
        module = program().module()
    static = {name: spec.dims[name].example for name in spec.dims if name not in config.dynamic}
    for sizes in sizes_list:
        if any(sizes[n] != v for n, v in static.items()):
            continue
        inputs = random_inputs(spec, sizes)
        with torch.no_grad():
            got, want = module(*inputs), model(*inputs)
        _check_outputs(spec, got, sizes, "torch.export")
        for a, b in zip(got if isinstance(got, tuple) else (got,), want if isinstance(want, tuple) else (want,)):
            torch.testing.assert_close(a, b, equal_nan=True, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("kind", sorted(REGISTRY))
def test_inferred_shapes_are_what_the_built_module_returns(kind, tmp_path):
    accepted = 0
    for case in range(CASES):
        r = random.Random(f"{kind}/{case}")
        inputs, attrs, dims = GENERATORS[kind](r)
        path = _write(tmp_path, kind, case, inputs, attrs, dims)
        try:
            spec = dlspec.load(path)
        except DlspecError as exc:  # refused: at a line of the spec, saying what is wrong
            assert all(p.loc is not None and p.loc.file == str(path) for p in exc.problems), exc.format()
            continue
        accepted += 1
        model = dlspec.build(spec)
        sizes_list = _allowed_sizes(spec)
        for sizes in sizes_list:
            inputs_ = random_inputs(spec, sizes)
            for training in (True, False):
                model.train(training)
                with torch.no_grad():
                    _check_outputs(spec, model(*inputs_), sizes, f"{path.name} {'train' if training else 'eval'}")
        model.eval()
        if FULL or accepted <= 2:  # torch.export takes most of the time: two cases per kind in a normal run
            _exported_runs(spec, model, sizes_list)
        if FULL or (kind in EXPORTED and accepted == 1):
            result = export(spec, tmp_path / f"export-{case}")
            assert result.ok, "\n".join(p.format() for p in result.problems)
    assert accepted, f"no random {kind} case validated: widen its generator"
