"""What an export learns from the run that trained its weights: the preprocessing training applied, the names
of the classes, and real validation examples, raw as the data set gives them.

The run directory is read through `dlspec.train.rundir`; its data through `dlspec.train.data.prepare`, the code
training itself used (same split, same fields), with normalisation left off so that the examples are what the
data set gives. What a data kind records in run.json, and this module reads:

    normalize   {field: {mean: [...], std: [...]}}  one value, or one per channel (images) or feature
    inputs      {model input: field}                (else found as training finds it, from the data)
    data.raw    {field: {dtype, layout, scale}}     a kind whose table holds values converted from what it stores
                                                    (uint8 HWC images held as float CHW): value = raw * scale
    classes     {label field: [name, ...]}          (else: a text run's characters, or the class indices)
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from dlspec.core.dims import per_example
from dlspec.core.errors import DlspecError, shorten
from dlspec.train import rundir

from .preprocess import Labels, OutputStep, Preprocessing, Step, check_output, check_step


@dataclass(frozen=True)
class Validation:
    """Real examples, raw as the data set gives them, and what the eager model is judged by on them."""

    inputs: dict[str, torch.Tensor]  # model input -> raw examples, [N, ...] as the exported files take them
    target: torch.Tensor  # [N, ...], in the units the model was trained against
    output: int  # index of the output that the metric reads
    classes: int | None  # its class count when it gives class scores (on its last dim), else None
    ignore_index: int | None  # a target value that is not scored
    metric: str  # "accuracy" for class scores, else the loss kind
    loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # the training loss of that output
    total: int  # examples in the validation split (the check may take fewer)
    batch_size: int  # training's evaluation batch size

    def __len__(self) -> int:
        return len(self.target)


@dataclass(frozen=True)
class RunData:
    preprocessing: Preprocessing | None  # None: the weights come from no run (or the spec has no training data)
    validation: Validation | None
    notes: tuple[str, ...] = ()  # what was left out, and why


def load(spec, weights: Path | None, examples: int) -> RunData:
    """The run data of an export whose weights are `weights` (None: initialised, so no run), with at most
    `examples` validation examples (0: none are gathered)."""
    if weights is None or not (spec.training or {}).get("data"):
        return RunData(None, None)
    from dlspec.train import config as train_config
    from dlspec.train import data as D

    run = rundir.run_of(weights)
    record = run.record() if run else {}
    run_spec, base = _run_spec(spec, run)
    cfg = train_config.parse(run_spec.training, run_spec.locate)
    data = D.prepare(dataclasses.replace(cfg.data, normalize={}), run_spec, cfg.seed, base)
    where = f"{run.path / 'run.json'}" if run else f"the training data of {spec.path.name}"
    if "normalize" in record:
        stats, source = _dict(record["normalize"], "normalize", where), f"from {where}"
    elif cfg.data.normalize:  # a checkpoint outside its run: the statistics again, from the same split
        stats = D.prepare(cfg.data, run_spec, cfg.seed, base).stats
        source = f"recomputed from the training split ({weights} is not in a run directory)"
    else:
        stats, source = {}, ""
    fields = _dict(record["inputs"], "inputs", where) if "inputs" in record else \
        dict(zip((t.name for t in spec.inputs), data.input_fields))
    raw = _dict(_dict(record.get("data") or {}, "data", where).get("raw") or {}, "data.raw", where)
    steps = tuple(_step(t, fields.get(t.name), stats, raw, where) for t in spec.inputs)
    terms, term = _terms(cfg, run_spec, data)
    names = _dict(record.get("classes") or {}, "classes", where).get(term.target)
    labels = _labels(spec.outputs[term.output], term, names, data.vocab, where)
    prep = Preprocessing(steps, labels=labels, vocab="".join(data.vocab) if data.vocab else None, source=source,
                         outputs=_restored(spec, terms, stats, where))
    if data.val is None:
        return RunData(prep, None, ("no validation split: the real-data check needs one",))
    if examples == 0:
        return RunData(prep, None, ("real-data check off (export.agreement.examples: 0)",))
    return RunData(prep, _validation(spec, prep, data, term, cfg.data.eval_batch_size, examples))


def _run_spec(spec, run):
    """The spec the run trained with (its data section may have changed since) and where its paths start."""
    import dlspec
    if run is None:
        return spec, Path(spec.path).parent
    path, base = rundir.spec_of(run.path)
    return dlspec.load(path), base or Path(spec.path).parent


def _dict(value: Any, key: str, where: str) -> dict:
    if not isinstance(value, dict):
        raise DlspecError.single(f"{where}: `{key}` is {shorten(repr(value), 60)}", expected="a JSON object",
                                 hint="the run record is damaged: train again, or export without it")
    return value


def _step(tensor, field: Any, stats: dict, raw: dict, where: str) -> Step:
    form = raw.get(field) or {}
    stat = stats.get(field) or {}
    if not isinstance(form, dict) or not isinstance(stat, dict):
        raise DlspecError.single(f"{where}: the record of field '{shorten(str(field), 40)}' is not a JSON object")
    step = Step(tensor.name, field, form.get("dtype", tensor.dtype), form.get("layout"), form.get("scale"),
                _tuple(stat.get("mean")), _tuple(stat.get("std")))
    try:
        return check_step(step, tensor)
    except ValueError as e:
        raise DlspecError.single(f"{where}: the preprocessing of input '{tensor.name}' cannot be applied: {e}",
                                 hint="the run record is damaged: train again") from None


@dataclass(frozen=True)
class _Term:
    output: int
    target: str
    classes: bool
    ignore_index: int | None
    kind: str
    fn: Callable


def _terms(cfg, spec, data):
    """The run's loss terms, and the output and target its metrics compared (training.evaluation, else its
    first loss term)."""
    from dlspec.train import losses
    terms = losses.build(cfg.losses, spec, data.train, data.default_target)
    names = [o.name for o in spec.outputs]
    output = cfg.eval_output or terms[0].output_name
    term = next((t for t in terms if t.output_name == output), terms[0])
    return terms, _Term(names.index(output) if output in names else term.output, cfg.eval_target or term.target,
                        term.classes, term.ignore_index, term.kind, term.fn)


def _restored(spec, terms, stats: dict, where: str) -> tuple[OutputStep, ...]:
    """The outputs trained against a normalised target: the files give them back in the target's units."""
    found = {}
    for t in terms:
        stat = stats.get(t.target)
        if isinstance(stat, dict) and not t.classes and t.output_name not in found:
            step = OutputStep(t.output_name, t.target, _tuple(stat.get("mean")), _tuple(stat.get("std")))
            try:
                found[t.output_name] = check_output(step, spec)
            except ValueError as e:
                raise DlspecError.single(f"{where}: the normalisation of target '{t.target}' cannot be undone on "
                                         f"output '{t.output_name}': {e}",
                                         hint="the run record is damaged: train again") from None
    return tuple(found.values())


def _tuple(values: Any) -> Any:
    return tuple(values) if isinstance(values, list) else values


def _labels(output, term: _Term, names: Any, vocab, where: str) -> Labels | None:
    classes = output.shape[-1] if output.shape and isinstance(output.shape[-1], int) else None
    if not term.classes or classes is None:
        return None
    if names is None and vocab and len(vocab) <= classes:  # ids past the alphabet never occur in the data
        names = list(vocab) + [f"<unused {i}>" for i in range(len(vocab), classes)]
    elif names is None:
        names = [str(i) for i in range(classes)]
    if not isinstance(names, list) or len(names) != classes or not all(isinstance(n, str) for n in names):
        raise DlspecError.single(f"{where}: the class names of '{term.target}' are {shorten(repr(names), 60)}",
                                 expected=f"{classes} names, one per class of output '{output.name}'")
    return Labels(output.name, tuple(names))


def _validation(spec, prep: Preprocessing, data, term: _Term, batch_size: int, limit: int) -> Validation:
    """The first `limit` validation examples, raw: each field as the data set gives it (the targets too: the
    files give an output trained against a normalised target back in the target's units)."""
    val = data.val
    n = min(len(val), limit)
    fields = val.gather(torch.arange(n))
    inputs = {s.input: _raw(fields[s.field], s, spec) for s in prep.steps}
    target = fields[term.target]
    classes = spec.outputs[term.output].shape[-1] if term.classes else None
    return Validation(inputs, target, term.output, classes, term.ignore_index if term.classes else None,
                      "accuracy" if term.classes else term.kind, term.fn, len(val), batch_size)


def _raw(values: torch.Tensor, step: Step, spec) -> torch.Tensor:
    """The examples as the data kind stores them: its table's values with the kind's conversion undone (the
    conversion must then give the table's values back exactly, or the check would judge other inputs)."""
    if step.layout is None and step.scale is None and step.dtype == str(values.dtype).removeprefix("torch."):
        return values
    raw = values / step.scale if step.scale is not None else values
    dtype = getattr(torch, step.dtype)
    raw = (raw.round() if not dtype.is_floating_point else raw).to(dtype)
    if step.layout == "channels_last":
        raw = raw.movedim(1, -1)
    again = (raw.movedim(-1, 1) if step.layout else raw).to(values.dtype) * (step.scale if step.scale is not None else 1)
    if not torch.equal(again, values):
        raise DlspecError.single(f"the data field '{step.field}' is not {step.dtype} values times {step.scale}: the raw "
                                 "examples cannot be rebuilt for the real-data check",
                                 hint="the data kind's record (run.json `data.raw`) does not describe its values")
    return raw


def example_sizes(spec, validation: Validation) -> dict[str, int]:
    """The sizes the examples give the spec's symbolic dims (T of [B, T] windows of 64: 64)."""
    sizes: dict[str, int] = {}
    for tensor in spec.inputs:
        for dim, size in zip(per_example(tensor.shape), validation.inputs[tensor.name].shape[1:]):
            if isinstance(dim, str) and dim.isidentifier():
                sizes[dim] = size
    return sizes
