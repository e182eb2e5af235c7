"""Loss kinds, and loss terms: which output, which target field, which function; checked against the spec
and the data before training starts.

Classes are on the last dim of an output, so cross-entropy over [B, T, V] logits with [B, T] targets is
token-level cross-entropy with no extra option. A kind's `build(options)` returns a function
`(output, target) -> mean loss`.
"""
from __future__ import annotations

import functools
import operator
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Callable

from dlspec.core.dims import per_example
from dlspec.core.errors import DlspecError, Problem, did_you_mean, format_path
from dlspec.train.kinds import Kind, Kinded, Option, Registry

if TYPE_CHECKING:
    import torch

    from dlspec.train.tables import Table

LossFn = Callable[["torch.Tensor", "torch.Tensor"], "torch.Tensor"]


@dataclass(frozen=True)
class LossKind(Kind):
    classes: bool = False  # compares class scores (on the output's last dim) with labels


LOSSES = Registry("loss", "Loss function.", common=(
    Option("output", "string", "Model output it reads.", default_doc="the only output"),
    Option("target", "string", "Data field holding the target.", default_doc="the data set's target field"),
    Option("scale", "number", "Factor of this term in the total loss.", 1.0),
))


def _classify(functional: str) -> Callable[[Kinded], LossFn]:
    def build(o: Kinded) -> LossFn:
        import torch
        import torch.nn.functional as F
        fn = getattr(F, functional)
        weight = torch.tensor(o["class_weights"], dtype=torch.float32) if o["class_weights"] is not None else None
        extra = {"label_smoothing": o["label_smoothing"]} if "label_smoothing" in o.options else {}

        def loss(out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
            # [B, T, V] scores and [B, T] labels: every position is an example (a [B, V] output is left as it is)
            n = out.shape[-1]
            out = out if out.ndim == 2 else out.reshape(-1, n)
            labels = (-1, n) if target.is_floating_point() else (-1,)  # probabilities, or class indices
            target = target if target.ndim == len(labels) else target.reshape(labels)
            w = weight.to(out.device) if weight is not None else None
            return fn(out, target, weight=w, ignore_index=o["ignore_index"], **extra)
        return loss
    return build


def _regress(functional: str, **options: str) -> Callable[[Kinded], LossFn]:
    """A loss between an output and a target of the same size; `options` maps torch's keywords to ours."""
    def build(o: Kinded) -> LossFn:
        import torch
        import torch.nn.functional as F
        fn = getattr(F, functional)
        kwargs = {ours: o[theirs] for ours, theirs in options.items() if o[theirs] is not None}

        def loss(out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
            target = target.to(out.dtype).reshape(out.shape)  # [B] labels for a [B, 1] output, ints for BCE
            return fn(out, target, **{k: torch.as_tensor(v, device=out.device) if k == "pos_weight" else v
                                      for k, v in kwargs.items()})
        return loss
    return build


_IGNORE = Option("ignore_index", "integer", "Target value that adds no loss (and is skipped by accuracy).", -100)
_WEIGHTS = Option("class_weights", "numbers", "One weight per class.")
LOSSES.add(LossKind("cross_entropy", "Cross-entropy of class scores (logits) against class indices or probabilities.",
                    (Option("label_smoothing", "number", "Label smoothing.", 0.0, minimum=0, maximum=1), _IGNORE,
                     _WEIGHTS), _classify("cross_entropy"), classes=True))
LOSSES.add(LossKind("nll", "Negative log-likelihood of log-probabilities (after a log_softmax layer).",
                    (_IGNORE, _WEIGHTS), _classify("nll_loss"), classes=True))
LOSSES.add(LossKind("mse", "Mean squared error.", (), _regress("mse_loss")))
LOSSES.add(LossKind("l1", "Mean absolute error.", (), _regress("l1_loss")))
LOSSES.add(LossKind("smooth_l1", "Huber-like: quadratic below `beta`, linear above.",
                    (Option("beta", "number", "Where the loss turns from quadratic to linear.", 1.0, minimum=0),),
                    _regress("smooth_l1_loss", beta="beta")))
LOSSES.add(LossKind("bce_with_logits", "Binary cross-entropy of logits against 0/1 targets, per element.",
                    (Option("pos_weight", "number", "Weight of positive examples.", minimum=0),),
                    _regress("binary_cross_entropy_with_logits", pos_weight="pos_weight")))


@dataclass(frozen=True)
class LossTerm:
    kind: str
    output: int  # index into the model's outputs
    output_name: str
    target: str  # data field
    scale: float
    fn: LossFn  # mean over examples (and tokens)
    classes: bool
    ignore_index: int | None


def build(terms: tuple[Kinded, ...], spec: Any, table: Table, default_target: str | None,
          split: str = "training") -> tuple[LossTerm, ...]:
    """The loss terms, checked against the targets of `table` (the `split` named in messages)."""
    problems: list[Problem] = []
    built = []
    outputs = [o.name for o in spec.outputs]
    for term in terms:
        where = term.path
        output = term["output"] or (outputs[0] if len(outputs) == 1 else None)
        if output not in outputs:
            problems.append(Problem(f"loss '{term.kind}' reads output '{output}', which the model does not have"
                                    if output else f"loss '{term.kind}' must say which output it reads",
                                    spec.locate(where + ("output",)), format_path(where + ("output",)),
                                    f"one of {', '.join(outputs)}", did_you_mean(output or "", outputs)))
            continue
        target = term["target"] or default_target
        if target not in table.names:
            problems.append(Problem(f"loss '{term.kind}' needs a target field" + (f"; '{target}' is not one" if target else ""),
                                    spec.locate(where + ("target",)), format_path(where + ("target",)),
                                    f"one of {', '.join(table.names)}", did_you_mean(target or "", table.names)))
            continue
        tensor = spec.outputs[outputs.index(output)]
        found = _check_target(term, tensor, table, target, spec,
                              ("training", "data") + (("dataset",) if split == "training" else ("validation", "dataset")))
        problems.extend(found)
        if not found:
            built.append(LossTerm(term.kind, outputs.index(output), output, target, term["scale"],
                                  term.definition.build(term), term.definition.classes, term.options.get("ignore_index")))
    if problems:
        if split != "training":
            problems = [replace(p, message=f"{p.message} (in the {split} data)") for p in problems]
        raise DlspecError(problems)
    return tuple(built)


def total(terms: tuple[LossTerm, ...], outputs: tuple[torch.Tensor, ...], batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """The weighted sum of the terms, with no op a hand-written loss would not have (no `0 +`, no `1.0 *`):
    each is a node in the autograd graph of every step."""
    parts = [t.fn(outputs[t.output], batch[t.target]) for t in terms]
    parts = [part if t.scale == 1.0 else t.scale * part for t, part in zip(terms, parts)]
    return functools.reduce(operator.add, parts)


def classes(tensor: Any) -> int | None:
    """The class count of an output (its last dim), when it is a number."""
    return tensor.shape[-1] if tensor.shape and isinstance(tensor.shape[-1], int) else None


def _check_target(term: Kinded, tensor: Any, table: Table, target: str, spec: Any, source: tuple) -> list[Problem]:
    where = term.path + ("target",)
    # The target's own line if the spec names it, else the data set the labels come from.
    loc = spec.locate(where if "target" in term.given else source)
    shape, dtype = table.example_shape(target), table.dtype(target)
    out_example = per_example(tensor.shape)
    if term.definition.classes:
        return _check_labels(term, tensor, table, target, loc, shape, dtype, spec)
    numel = _numel(shape)
    if _numel(out_example) not in (numel, None):
        return [Problem(f"target '{target}' of shape {list(shape)} does not match output '{tensor.name}' "
                        f"{list(tensor.shape)}", loc, format_path(where), f"targets of shape {list(out_example)}")]
    return []


def _check_labels(term: Kinded, tensor: Any, table: Table, target: str, loc, shape, dtype, spec) -> list[Problem]:
    """Class labels (or class probabilities) that fit an output with classes on its last dim."""
    where = format_path(term.path + ("target",))
    out_example = per_example(tensor.shape)
    n = classes(tensor)
    if dtype.is_floating_point:
        if len(shape) != len(out_example):
            return [Problem(f"{term.kind} needs integer class labels (or class probabilities shaped like the "
                            f"output); field '{target}' is {str(dtype).removeprefix('torch.')} of shape {list(shape)}",
                            loc, where, "int64 labels")]
        return []
    problems = []
    if len(shape) != len(out_example) - 1:
        problems.append(Problem(f"labels '{target}' of shape {list(shape)} do not fit output '{tensor.name}' "
                                f"{list(tensor.shape)}: classes are on its last dim", loc, where,
                                f"labels of shape {list(out_example[:-1])} per example"))
    lo, hi = table.value_range(target)
    if n is not None and (hi >= n or (lo < 0 and lo != term["ignore_index"])):
        problems.append(Problem(f"label out of range: field '{target}' holds labels {int(lo)}..{int(hi)}, but "
                                f"output '{tensor.name}' has {n} classes", loc, where, f"labels in [0, {n})",
                                f"set the last layer's size to {int(hi) + 1}" if hi >= n
                                else "negative labels need `ignore_index`"))
    weights = term["class_weights"]
    if weights is not None and n is not None and len(weights) != n:
        problems.append(Problem(f"{len(weights)} class weights for {n} classes", spec.locate(term.path + ("class_weights",)),
                                format_path(term.path + ("class_weights",)), f"{n} weights"))
    return problems


def _numel(shape: tuple) -> int | None:
    out = 1
    for d in shape:
        if not isinstance(d, int):
            return None
        out *= d
    return out
