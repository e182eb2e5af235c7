"""Loss terms: which output, which target field, which function; checked against the spec and the data.

Classes are on the last dim of an output, so cross-entropy over [B, T, V]
logits with [B, T] targets is token-level cross-entropy with no extra option.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Callable

import torch
import torch.nn.functional as F

from dlspec.core.errors import DlspecError, Problem, did_you_mean, format_path
from dlspec.front.spec import per_example
from dlspec.train.config import Kinded
from dlspec.train.datasets import Table

CLASSIFICATION = ("cross_entropy", "nll")


@dataclass(frozen=True)
class LossTerm:
    kind: str
    output: int  # index into the model's outputs
    output_name: str
    target: str  # data field
    scale: float
    fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # mean over examples (and tokens)
    ignore_index: int | None


def build(terms: tuple[Kinded, ...], spec: Any, table: Table, default_target: str | None,
          split: str = "training") -> tuple[LossTerm, ...]:
    """The loss terms, checked against the targets of `table` (the `split` named in messages)."""
    problems: list[Problem] = []
    built = []
    outputs = [o.name for o in spec.outputs]
    for term in terms:
        where = term.path
        output = term.get("output", outputs[0] if len(outputs) == 1 else None)
        if output not in outputs:
            problems.append(Problem(f"loss '{term.kind}' reads output '{output}', which the model does not have"
                                    if output else f"loss '{term.kind}' must say which output it reads",
                                    spec.locate(where + ("output",)), format_path(where + ("output",)),
                                    f"one of {', '.join(outputs)}", did_you_mean(output or "", outputs)))
            continue
        target = term.get("target", default_target)
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
            built.append(LossTerm(term.kind, outputs.index(output), output, target, term.get("scale", 1.0),
                                  _function(term), term.get("ignore_index")))
    if problems:
        if split != "training":
            problems = [replace(p, message=f"{p.message} (in the {split} data)") for p in problems]
        raise DlspecError(problems)
    return tuple(built)


def total(terms: tuple[LossTerm, ...], outputs: tuple[torch.Tensor, ...], batch: dict[str, torch.Tensor]) -> torch.Tensor:
    return sum(t.scale * t.fn(outputs[t.output], batch[t.target]) for t in terms)


def classes(tensor: Any) -> int | None:
    """The class count of an output (its last dim), when it is a number."""
    return tensor.shape[-1] if tensor.shape and isinstance(tensor.shape[-1], int) else None


def _check_target(term: Kinded, tensor: Any, table: Table, target: str, spec: Any, source: tuple) -> list[Problem]:
    where = term.path + ("target",)
    # The target's own line if the spec names it, else the data set the labels come from.
    loc = spec.locate(where if "target" in term.options else source)
    shape, dtype = table.example_shape(target), table.dtype(target)
    out_example = per_example(tensor.shape)
    if term.kind in CLASSIFICATION:
        n = classes(tensor)
        if dtype.is_floating_point:
            if len(shape) != len(out_example):
                return [Problem(f"{term.kind} needs integer class labels (or class probabilities shaped like the "
                                f"output); field '{target}' is {str(dtype).removeprefix('torch.')} of shape {list(shape)}",
                                loc, format_path(where), "int64 labels")]
            return []
        problems = []
        if len(shape) != len(out_example) - 1:
            problems.append(Problem(f"labels '{target}' of shape {list(shape)} do not fit output '{tensor.name}' "
                                    f"{list(tensor.shape)}: classes are on its last dim", loc, format_path(where),
                                    f"labels of shape {list(out_example[:-1])} per example"))
        lo, hi = table.value_range(target)
        ignore = term.get("ignore_index")
        if n is not None and (hi >= n or (lo < 0 and lo != ignore)):
            problems.append(Problem(f"label out of range: field '{target}' holds labels {int(lo)}..{int(hi)}, but "
                                    f"output '{tensor.name}' has {n} classes", loc, format_path(where),
                                    f"labels in [0, {n})", f"set the last layer's size to {int(hi) + 1}"
                                    if hi >= n else "negative labels need `ignore_index`"))
        weights = term.get("class_weights")
        if weights is not None and n is not None and len(weights) != n:
            problems.append(Problem(f"{len(weights)} class weights for {n} classes",
                                    spec.locate(term.path + ("class_weights",)),
                                    format_path(term.path + ("class_weights",)), f"{n} weights"))
        return problems
    numel = _numel(shape)
    if _numel(out_example) not in (numel, None):
        return [Problem(f"target '{target}' of shape {list(shape)} does not match output '{tensor.name}' "
                        f"{list(tensor.shape)}", loc, format_path(where), f"targets of shape {list(out_example)}")]
    return []


def _numel(shape: tuple) -> int | None:
    out = 1
    for d in shape:
        if not isinstance(d, int):
            return None
        out *= d
    return out


def _function(term: Kinded) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    kind = term.kind
    if kind in CLASSIFICATION:
        weights = term.get("class_weights")
        weight = torch.tensor(weights, dtype=torch.float32) if weights is not None else None
        ignore = term.get("ignore_index", -100)
        smoothing = term.get("label_smoothing", 0.0)

        def classify(out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
            n = out.shape[-1]
            w = weight.to(out.device) if weight is not None else None
            flat = out.reshape(-1, n)
            labels = target.reshape(-1, n) if target.is_floating_point() else target.reshape(-1)
            if kind == "nll":
                return F.nll_loss(flat, labels, weight=w, ignore_index=ignore)
            return F.cross_entropy(flat, labels, weight=w, ignore_index=ignore, label_smoothing=smoothing)
        return classify

    def regress(out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        target = target.to(out.dtype).reshape(out.shape)  # [B] labels for a [B, 1] output, ints for BCE
        if kind == "mse":
            return F.mse_loss(out, target)
        if kind == "l1":
            return F.l1_loss(out, target)
        if kind == "smooth_l1":
            return F.smooth_l1_loss(out, target, beta=term.get("beta", 1.0))
        pos = term.get("pos_weight")
        return F.binary_cross_entropy_with_logits(out, target, pos_weight=torch.tensor(pos, device=out.device)
                                                  if pos is not None else None)
    return regress
