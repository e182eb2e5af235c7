"""Validation metric kinds, accumulated as sums so that ranks can add theirs with one all-reduce.

Each metric is a (sum, count) pair: loss is example-weighted, accuracy counts examples (tokens for
sequences, skipping ignore_index), MAE/RMSE count elements, and perplexity is exp of the token-level
cross-entropy. A kind's `build(k)` gives `part(loss, out, target, n, ignore_index) -> (sum, count)` for one
batch, and `finish(mean) -> value`. `topK_accuracy` is one kind for every K.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

from dlspec.core.errors import DlspecError
from dlspec.train.kinds import Kind, Registry

if TYPE_CHECKING:
    import torch

    from dlspec.train.losses import LossTerm

Part = Callable[..., tuple[Any, Any]]


@dataclass(frozen=True)
class MetricKind(Kind):
    needs: str | None = None  # "classes": a classification loss term; "numbers": a regression one
    higher_is_better: bool = False
    pattern: str | None = None  # a name with a parameter, such as top5_accuracy; group 1 is the parameter
    finish: Callable[[float], float] = lambda mean: mean


METRICS = Registry("metric", "Validation metric.", key="name")


def _loss(k: int | None) -> Part:
    return lambda loss, out, target, n, ignore: (loss.detach() * n, n)


def _error(square: bool) -> Callable[[int | None], Part]:
    def build(k: int | None) -> Part:
        def part(loss, out, target, n, ignore):
            err = out - target.to(out.dtype).reshape(out.shape)
            return (err.square() if square else err.abs()).sum(), err.numel()
        return part
    return build


def _labelled(logits: torch.Tensor, target: torch.Tensor, ignore: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Class scores and labels, one row per example (or token), without the ignored ones."""
    logits, labels = logits.reshape(-1, logits.shape[-1]), target.reshape(-1)
    keep = labels != (ignore if ignore is not None else -100)
    return logits[keep], labels[keep]


def _top(k: int | None) -> Part:
    def part(loss, out, target, n, ignore):
        logits, labels = _labelled(out, target, ignore)
        return (logits.topk(k or 1, dim=-1).indices == labels[:, None]).any(dim=-1).sum(), len(labels)
    return part


def _perplexity(k: int | None) -> Part:
    def part(loss, out, target, n, ignore):
        import torch.nn.functional as F
        logits, labels = _labelled(out, target, ignore)
        return F.cross_entropy(logits, labels, reduction="sum"), len(labels)
    return part


METRICS.add(MetricKind("loss", "The training loss (all its terms) on the validation set.", build=_loss))
METRICS.add(MetricKind("accuracy", "Fraction of examples (tokens, for sequences) whose top class is the label.",
                       build=_top, needs="classes", higher_is_better=True))
METRICS.add(MetricKind("topK_accuracy", "Fraction whose label is among the K top classes (top5_accuracy, ...).",
                       build=_top, needs="classes", higher_is_better=True, pattern=r"top([1-9][0-9]*)_accuracy"))
METRICS.add(MetricKind("perplexity", "exp of the token-level cross-entropy.", build=_perplexity, needs="classes",
                       finish=lambda mean: math.exp(min(mean, 700.0))))
METRICS.add(MetricKind("mae", "Mean absolute error per element.", build=_error(square=False), needs="numbers"))
METRICS.add(MetricKind("rmse", "Root of the mean squared error per element.", build=_error(square=True),
                       needs="numbers", finish=math.sqrt))


def pattern() -> str:
    """The JSON Schema pattern of a metric name."""
    return "^(" + "|".join(k.pattern or re.escape(k.name) for k in METRICS) + ")$"


def resolve(name: str) -> tuple[MetricKind, int | None]:
    """A metric name's kind and its parameter (K of topK_accuracy)."""
    for kind in METRICS:
        match = re.fullmatch(kind.pattern or re.escape(kind.name), name)
        if match:
            return kind, int(match.group(1)) if kind.pattern else None
    raise KeyError(name)


def higher_is_better(logged: str) -> bool:
    """Whether a logged metric (`val_accuracy`, `loss`) improves upwards."""
    try:
        return resolve(logged.removeprefix("val_"))[0].higher_is_better
    except KeyError:
        return False


def check(metrics: tuple[str, ...], term: LossTerm, n_classes: int | None, locate) -> None:
    """Classification metrics need a classification term, error metrics a regression one."""
    for i, metric in enumerate(metrics):
        where = ("training", "evaluation", "metrics", i)
        kind, k = resolve(metric)
        if kind.needs == "classes" and not term.classes:
            raise DlspecError.single(f"metric '{metric}' needs a classification loss, but output '{term.output_name}' "
                                     f"is trained with {term.kind}", locate(where),
                                     expected=", ".join(m.name for m in METRICS if m.needs != "classes"),
                                     hint="accuracy and perplexity compare class scores with labels")
        if kind.needs == "numbers" and term.classes:
            raise DlspecError.single(f"metric '{metric}' needs a regression output; '{term.output_name}' is "
                                     "classified", locate(where),
                                     expected=", ".join(m.name for m in METRICS if m.needs != "numbers"),
                                     hint="mae and rmse compare numbers with numeric targets")
        if k is not None and n_classes is not None and k > n_classes:
            raise DlspecError.single(f"{metric} needs at least {k} classes; the output has {n_classes}",
                                     locate(where), hint=f"K in topK_accuracy can be at most {n_classes}")


class Meter:
    """Sums over one evaluation pass, kept on the device until the end."""

    def __init__(self, metrics: tuple[str, ...], term: LossTerm, device: torch.device):
        import torch
        self.metrics = metrics
        self.term = term
        self.kinds = [resolve(m) for m in metrics]
        self.parts = [kind.build(k) for kind, k in self.kinds]
        self.sums = torch.zeros(2 * len(metrics), dtype=torch.float64, device=device)

    def update(self, loss: torch.Tensor, out: torch.Tensor, target: torch.Tensor, n: int) -> None:
        """`loss` is the batch's mean total loss over its `n` examples; `out`/`target` the metric pair."""
        import torch
        parts = [part(loss, out.float(), target, n, self.term.ignore_index) for part in self.parts]
        self.sums += torch.stack([torch.stack([torch.as_tensor(s, dtype=torch.float64, device=self.sums.device),
                                               torch.as_tensor(c, dtype=torch.float64, device=self.sums.device)])
                                  for s, c in parts]).reshape(-1)

    def result(self) -> dict[str, float]:
        sums = self.sums.tolist()
        return {f"val_{metric}": kind.finish(sums[2 * i] / max(sums[2 * i + 1], 1.0))
                for i, (metric, (kind, _)) in enumerate(zip(self.metrics, self.kinds))}
