"""The training preprocessing, carried into the exported files: they take inputs as the data set gives them.

A run records in run.json, as plain data, what turned the data set's raw examples into model inputs
(`rundata.py` reads it): the data field that feeds each model input, the normalisation statistics of
each field (`(x - mean) / std`, per channel or per feature, as training applied them), and, for a data
kind whose stored values are not what its table holds (images kept as uint8 HWC), the dtype, layout
and scale of the raw values. `Preprocessing` is that record for one model; it is written into every
exported file's metadata (and into preprocess.json beside them with `export.preprocessing: external`),
and `Preprocessed` is the eager model that takes raw inputs: what is exported by default, and what the
exported files are compared with.

Per model input, in training's order: the raw value is converted to the model's dtype (after moving the
channels first, for `channels_last`), multiplied by `scale`, then normalised. An output trained against a
normalised target (a regression's `normalize: {target: standard}`) is given back in the target's own units:
`y * std + mean`.
"""
from __future__ import annotations

import dataclasses
import hashlib
import linecache
import math
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np
import torch

from dlspec.core.errors import DlspecError, shorten

LAYOUTS = ("channels_last",)  # the data set gives [..., H, W, C]; the model takes [C, H, W]
PREPROCESS_FILE = "preprocess.json"
_MAX_VALUES = 1 << 16  # statistics per field: one per channel or feature
_MAX_CLASSES = 1 << 20


@dataclass(frozen=True)
class Step:
    """How one model input is computed from what the data set gives."""

    input: str  # the model input
    field: str  # the data field that feeds it
    dtype: str  # what the data set gives (a torch dtype name)
    layout: str | None = None  # a key of LAYOUTS, or None: the model's own layout
    scale: float | None = None  # value = raw * scale
    mean: tuple[float, ...] | None = None  # normalisation: (value - mean) / std
    std: tuple[float, ...] | None = None

    @property
    def identity(self) -> bool:
        return self.layout is None and self.scale is None and self.mean is None

    def describe(self, model_dtype: str) -> str:
        parts = [f"{self.input}: the data set's field '{self.field}'" + (f" ({self.dtype})" if self.dtype != model_dtype else "")]
        if self.layout:
            parts.append("channels moved first ([..., H, W, C] -> [C, H, W])")
        if self.dtype != model_dtype:
            parts.append(f"as {model_dtype}")
        if self.scale is not None:
            parts.append(f"times {self.scale:.6g}")
        if self.mean is not None:
            per = "" if len(self.mean) == 1 else f" per {'channel' if self.layout else 'channel or feature'} (axis 1)"
            parts.append(f"minus mean {_numbers(self.mean)}, divided by std {_numbers(self.std)}{per}")
        return ", ".join(parts)


@dataclass(frozen=True)
class OutputStep:
    """An output trained against a normalised target field: given back in that field's units."""

    output: str
    field: str
    mean: tuple[float, ...]
    std: tuple[float, ...]

    def describe(self) -> str:
        return (f"{self.output}: times std {_numbers(self.std)}, plus mean {_numbers(self.mean)} (the units of the "
                f"data set's field '{self.field}')")


@dataclass(frozen=True)
class Labels:
    """The class names of a classifier's output: names[i] is class i on the output's last dim."""

    output: str
    names: tuple[str, ...]


@dataclass(frozen=True)
class Preprocessing:
    steps: tuple[Step, ...]  # one per model input, in declared order
    embedded: bool = True  # in the exported graph, else applied by the caller (preprocess.json)
    labels: Labels | None = None
    vocab: str | None = None  # character-level text: the model's token id i is vocab[i]
    source: str = ""  # where the numbers come from, for the report
    outputs: tuple[OutputStep, ...] = ()  # outputs given back in their target's units

    @property
    def identity(self) -> bool:
        return all(s.identity for s in self.steps) and not self.outputs

    def output_step(self, name: str) -> OutputStep | None:
        return next((s for s in self.outputs if s.output == name), None)

    def step(self, name: str) -> Step | None:
        return next((s for s in self.steps if s.input == name), None)

    def to_json(self) -> dict:
        """Plain data: the `dlspec.preprocessing` metadata of exported files, and preprocess.json."""
        return {
            "embedded": self.embedded,
            "inputs": {s.input: {"field": s.field, "dtype": s.dtype, "layout": s.layout, "scale": s.scale,
                                 "mean": list(s.mean) if s.mean is not None else None,
                                 "std": list(s.std) if s.std is not None else None} for s in self.steps},
            "outputs": {s.output: {"field": s.field, "mean": list(s.mean), "std": list(s.std)} for s in self.outputs},
            "labels": {"output": self.labels.output, "classes": list(self.labels.names)} if self.labels else None,
            "vocab": self.vocab,
        }


def from_json(data: Any, spec, where: str) -> Preprocessing:
    """A recorded preprocessing (an exported file's metadata, preprocess.json), checked against the spec:
    a crafted record is refused with an error naming `where`, never run."""
    def bad(why: str) -> DlspecError:
        return DlspecError.single(f"{where} records a preprocessing dlspec never writes: {why}",
                                  hint="export it again with `dlspec export`")
    if not isinstance(data, dict) or not isinstance(data.get("inputs"), dict) or not isinstance(data.get("embedded"), bool):
        raise bad("expected {embedded: true|false, inputs: {...}}")
    names = [t.name for t in spec.inputs]
    if sorted(data["inputs"]) != sorted(names):
        raise bad(f"inputs {shorten(str(sorted(data['inputs'])), 80)}, the spec's are {names}")
    steps = []
    for tensor in spec.inputs:
        entry = data["inputs"][tensor.name]
        if not isinstance(entry, dict):
            raise bad(f"input '{tensor.name}' is {shorten(repr(entry), 40)}")
        try:
            steps.append(check_step(Step(tensor.name, entry.get("field"), entry.get("dtype"), entry.get("layout"),
                                         entry.get("scale"), _tuple(entry.get("mean")), _tuple(entry.get("std"))), tensor))
        except ValueError as e:
            raise bad(f"input '{tensor.name}': {e}") from None
    labels = data.get("labels")
    if labels is not None:
        outputs = {t.name: t for t in spec.outputs}
        names = labels.get("classes") if isinstance(labels, dict) else None
        output = outputs.get(labels.get("output")) if isinstance(labels, dict) else None
        if output is None or not isinstance(names, list) or not all(isinstance(n, str) for n in names) \
                or len(names) != _classes(output):
            raise bad("labels must name an output and one class name per entry of its last dim")
        labels = Labels(output.name, tuple(names))
    vocab = data.get("vocab")
    if vocab is not None and (not isinstance(vocab, str) or not vocab or len(vocab) > _MAX_CLASSES):
        raise bad("vocab must be a non-empty string")
    outputs = data.get("outputs") or {}
    if not isinstance(outputs, dict) or not all(isinstance(e, dict) for e in outputs.values()):
        raise bad("outputs must map output names to {field, mean, std}")
    after = []
    for name, entry in outputs.items():
        try:
            after.append(check_output(OutputStep(name, entry.get("field"), _tuple(entry.get("mean")),
                                                 _tuple(entry.get("std"))), spec))
        except ValueError as e:
            raise bad(str(e)) from None
    return Preprocessing(tuple(steps), data["embedded"], labels, vocab, where, tuple(after))


def check_output(step: OutputStep, spec) -> OutputStep:
    """An output step that applies to one of the spec's floating-point outputs: raises ValueError if not."""
    tensor = next((t for t in spec.outputs if t.name == step.output), None)
    if tensor is None or not getattr(torch, tensor.dtype).is_floating_point:
        raise ValueError(f"output {shorten(repr(step.output), 40)} is not a floating-point output of the model")
    _check_stats(step.mean, step.std, tensor)
    return step


def _tuple(values: Any) -> tuple | None:
    return tuple(values) if isinstance(values, list) else values


def check_step(step: Step, tensor) -> Step:
    """A step that can apply to `tensor` (the model input): raises ValueError saying what does not fit."""
    if not isinstance(step.field, str) or not step.field:
        raise ValueError("no data field")
    if not isinstance(getattr(torch, str(step.dtype), None), torch.dtype) or (step.dtype == "bool") != (tensor.dtype == "bool"):
        raise ValueError(f"dtype {shorten(repr(step.dtype), 40)} is not a torch dtype it can be converted from")
    if step.layout is not None and (step.layout not in LAYOUTS or len(tensor.shape) < 3):
        raise ValueError(f"layout {shorten(repr(step.layout), 40)} is not one of {', '.join(LAYOUTS)} "
                         "for an input with channels")
    if step.scale is not None and not _finite(step.scale, positive=True):
        raise ValueError(f"scale {shorten(repr(step.scale), 40)} is not a positive number")
    if (step.mean is None) != (step.std is None):
        raise ValueError("mean and std go together")
    if step.mean is not None:
        _check_stats(step.mean, step.std, tensor)
    if (step.layout or step.scale is not None or step.mean is not None) and not getattr(torch, tensor.dtype).is_floating_point:
        raise ValueError(f"input '{tensor.name}' is {tensor.dtype}: only floating-point inputs are scaled or normalised")
    return step


def _check_stats(mean: Any, std: Any, tensor) -> None:
    if not isinstance(mean, tuple) or not isinstance(std, tuple):
        raise ValueError("mean and std must be lists of numbers")
    channels = tensor.shape[1] if len(tensor.shape) > 1 else 1
    if not 1 <= len(mean) <= _MAX_VALUES or len(std) != len(mean) or (len(mean) > 1 and len(mean) != channels):
        raise ValueError(f"{len(mean)} means and {len(std)} stds, for '{tensor.name}' of shape {list(tensor.shape)} "
                         "(expected one value, or one per entry of axis 1)")
    if not all(_finite(v) for v in mean) or not all(_finite(v, positive=True) for v in std):
        raise ValueError("means must be finite numbers and stds positive ones")


def _finite(value: Any, positive: bool = False) -> bool:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    return ok and (value > 0 if positive else True)


def _classes(tensor) -> int | None:
    return tensor.shape[-1] if tensor.shape and isinstance(tensor.shape[-1], int) else None


def _numbers(values) -> str:
    shown = ", ".join(f"{v:.6g}" for v in values[:4]) + (f", ... ({len(values)} values)" if len(values) > 4 else "")
    return shown if len(values) == 1 else f"[{shown}]"


# ---- the inputs the exported files take ---------------------------------------------------------------------------

def raw_spec(spec, prep: Preprocessing | None):
    """The spec seen from outside the preprocessing: each input as the data set gives it (its dtype, its
    layout, and for integers the range of that dtype). The model, its dims and its hash are the spec's."""
    if prep is None or prep.identity:
        return spec
    inputs = []
    for tensor in spec.inputs:
        step = prep.step(tensor.name)
        if step is None or step.identity and step.dtype == tensor.dtype:
            inputs.append(tensor)
            continue
        shape = tuple(tensor.shape)
        if step.layout == "channels_last":
            shape = (shape[0],) + shape[2:] + (shape[1],)
        dtype = getattr(torch, step.dtype)
        value_range = (0, 256) if dtype == torch.uint8 else None if dtype.is_floating_point else tensor.range
        inputs.append(dataclasses.replace(tensor, shape=shape, dtype=step.dtype, range=value_range))
    return dataclasses.replace(spec, inputs=tuple(inputs))


def files_spec(spec, prep: Preprocessing | None):
    """The spec of the inputs the exported files take: raw ones when the preprocessing is in their graph."""
    return raw_spec(spec, prep) if prep is not None and prep.embedded else spec


class InputTransform(torch.nn.Module):
    """Raw input -> model input, with training's arithmetic: layout, dtype, scale, (x - mean) / std."""

    def __init__(self, step: Step, rank: int, dtype: torch.dtype):
        super().__init__()
        self.order = [0, rank - 1] + list(range(1, rank - 1)) if step.layout == "channels_last" else list(range(rank))
        self.moves = step.layout is not None
        self.dtype = dtype
        self.scaled = step.scale is not None
        self.scale = float(step.scale) if step.scale is not None else 1.0
        self.normalised = step.mean is not None
        shape = [1, -1] + [1] * (rank - 2) if step.mean is not None and len(step.mean) > 1 else [1]  # as training broadcasts
        self.register_buffer("mean", torch.tensor(step.mean or (0.0,), dtype=dtype).reshape(shape))
        self.register_buffer("std", torch.tensor(step.std or (1.0,), dtype=dtype).reshape(shape))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.moves:
            x = x.permute(self.order)
        x = x.to(self.dtype)
        if self.scaled:
            x = x * self.scale
        if self.normalised:
            x = (x - self.mean) / self.std
        return x


class OutputTransform(torch.nn.Module):
    """Model output -> the units of the target it was trained against: y * std + mean."""

    def __init__(self, step: OutputStep, rank: int, dtype: torch.dtype):
        super().__init__()
        shape = [1, -1] + [1] * (rank - 2) if len(step.mean) > 1 else [1]
        self.register_buffer("mean", torch.tensor(step.mean, dtype=dtype).reshape(shape))
        self.register_buffer("std", torch.tensor(step.std, dtype=dtype).reshape(shape))

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        return y * self.std + self.mean


def wrap(model: torch.nn.Module, spec, prep: Preprocessing | None) -> torch.nn.Module:
    """The model taking raw inputs (itself when there is nothing to apply). Its forward is generated with the
    inputs as named arguments, so TorchScript can script it; its submodule `model` is the model."""
    if prep is None or prep.identity:
        return model
    names = [t.name for t in spec.inputs]
    steps = {s.input: s for s in prep.steps if not s.identity}
    calls = ", ".join(f"self.preprocess_{n}({n})" if n in steps else n for n in names)
    outs = [t.name for t in spec.outputs]
    after = {s.output: s for s in prep.outputs}
    given = [f"self.postprocess_{n}({v})" if n in after else v
             for n, v in zip(outs, ["outputs"] if len(outs) == 1 else [f"outputs[{i}]" for i in range(len(outs))])]
    text = (f"def forward(self, {', '.join(names)}):\n"
            f"    outputs = self.model({calls})\n"
            f"    return {given[0] if len(outs) == 1 else '(' + ', '.join(given) + ')'}\n")
    transforms = {f"preprocess_{n}": InputTransform(steps[n], len(t.shape), getattr(torch, t.dtype))
                  for n, t in zip(names, spec.inputs) if n in steps}
    transforms |= {f"postprocess_{n}": OutputTransform(after[n], len(t.shape), getattr(torch, t.dtype))
                   for n, t in zip(outs, spec.outputs) if n in after}
    wrapped = _wrapper_class(text)(model, transforms)
    return wrapped.train(model.training)


_BY_SOURCE: dict[str, type] = {}


def _wrapper_class(forward_source: str) -> type:
    """One class per forward source, in a module named after its hash: TorchScript names the class the same
    in every process, so exports stay byte-identical. The source is in linecache for TorchScript to read."""
    if forward_source not in _BY_SOURCE:
        digest = hashlib.sha256(forward_source.encode()).hexdigest()[:16]
        filename = f"<dlspec:preprocess:{digest}>"
        linecache.cache[filename] = (len(forward_source), None, forward_source.splitlines(True), filename)
        namespace: dict = {"__name__": f"dlspec_preprocess_{digest}"}
        exec(compile(forward_source, filename, "exec"), namespace)

        def __init__(self, model: torch.nn.Module, transforms: dict[str, torch.nn.Module]):
            torch.nn.Module.__init__(self)
            self.model = model
            for name, module in transforms.items():
                self.add_module(name, module)
        cls = type("Preprocessed", (torch.nn.Module,), {"__init__": __init__, "forward": namespace["forward"],
                                                          "__module__": namespace["__name__"],
                                                          "__doc__": "The model after the training preprocessing."})
        _BY_SOURCE[forward_source] = cls
    return _BY_SOURCE[forward_source]


def inner(model: torch.nn.Module) -> torch.nn.Module:
    """The model itself, inside a preprocessing wrapper or not."""
    return model.model if type(model).__name__ == "Preprocessed" and hasattr(model, "model") else model


# ---- applied outside the graph (export.preprocessing: external, dlspec predict) ----------------------------------

def apply(prep: Preprocessing, spec, raw: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Raw inputs -> model inputs in numpy, as a deployment applies preprocess.json: the same float32
    arithmetic as the embedded graph and as training."""
    out = {}
    for tensor in spec.inputs:
        x = np.asarray(raw[tensor.name])
        step = prep.step(tensor.name)
        dtype = torch.empty((), dtype=getattr(torch, tensor.dtype)).numpy().dtype
        if step is not None and step.layout == "channels_last":
            x = np.moveaxis(x, -1, 1)
        x = x.astype(dtype)
        if step is not None and step.scale is not None:
            x = x * dtype.type(step.scale)
        if step is not None and step.mean is not None:
            shape = [1, -1] + [1] * (x.ndim - 2) if len(step.mean) > 1 else [1]
            x = (x - np.asarray(step.mean, dtype).reshape(shape)) / np.asarray(step.std, dtype).reshape(shape)
        out[tensor.name] = np.ascontiguousarray(x)
    return out


def restore(prep: Preprocessing, spec, outputs: tuple[np.ndarray, ...]) -> tuple[np.ndarray, ...]:
    """Model outputs -> the units of their targets, in numpy, as a deployment applies preprocess.json."""
    result = []
    for tensor, y in zip(spec.outputs, outputs):
        step = prep.output_step(tensor.name)
        if step is not None:
            shape = [1, -1] + [1] * (y.ndim - 2) if len(step.mean) > 1 else [1]
            y = y * np.asarray(step.std, y.dtype).reshape(shape) + np.asarray(step.mean, y.dtype).reshape(shape)
        result.append(y)
    return tuple(result)


def preprocess_json(prep: Preprocessing, spec) -> dict:
    """preprocess.json: the numbers, and in words what to do with them."""
    return {**prep.to_json(), "apply": {s.input: s.describe(t.dtype) for s, t in zip(prep.steps, spec.inputs)},
            "restore": {s.output: s.describe() for s in prep.outputs}}
