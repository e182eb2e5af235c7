"""Validation metrics, accumulated as sums so that ranks can add theirs with one all-reduce.

Each metric is a (sum, count) pair: loss is example-weighted, accuracy counts
examples (tokens for sequences, skipping ignore_index), MAE/RMSE count elements,
and perplexity is exp of the token-level cross-entropy.
"""
from __future__ import annotations

import math
import re
from typing import Any

import torch
import torch.nn.functional as F

from dlspec.core.errors import DlspecError
from dlspec.train.losses import CLASSIFICATION, LossTerm

_TOPK = re.compile(r"^top(\d+)_accuracy$")


def check(metrics: tuple[str, ...], term: LossTerm, n_classes: int | None, locate) -> None:
    """Classification metrics need a classification term, error metrics a regression one."""
    for i, metric in enumerate(metrics):
        where = ("training", "evaluation", "metrics", i)
        needs_classes = metric in ("accuracy", "perplexity") or _TOPK.match(metric)
        if needs_classes and term.kind not in CLASSIFICATION:
            raise DlspecError.single(f"metric '{metric}' needs a classification loss, but output '{term.output_name}' "
                                     f"is trained with {term.kind}", locate(where), expected="mae, rmse or loss",
                                     hint="accuracy and perplexity compare class scores with labels")
        if metric in ("mae", "rmse") and term.kind in CLASSIFICATION:
            raise DlspecError.single(f"metric '{metric}' needs a regression output; '{term.output_name}' is "
                                     "classified", locate(where), expected="accuracy, topK_accuracy, perplexity or loss",
                                     hint="mae and rmse compare numbers with numeric targets")
        top = _TOPK.match(metric)
        if top and n_classes is not None and int(top.group(1)) > n_classes:
            raise DlspecError.single(f"{metric} needs at least {top.group(1)} classes; the output has {n_classes}",
                                     locate(where), hint=f"K in topK_accuracy can be at most {n_classes}")


class Meter:
    """Sums over one evaluation pass, kept on the device until the end."""

    def __init__(self, metrics: tuple[str, ...], term: LossTerm, device: torch.device):
        self.metrics = metrics
        self.term = term
        self.sums = torch.zeros(2 * len(metrics), dtype=torch.float64, device=device)

    def update(self, loss: torch.Tensor, out: torch.Tensor, target: torch.Tensor, n: int) -> None:
        """`loss` is the batch's mean total loss over its `n` examples; `out`/`target` the metric pair."""
        parts = [self._part(m, loss, out.float(), target, n) for m in self.metrics]
        self.sums += torch.stack([torch.stack([s.double(), torch.as_tensor(c, dtype=torch.float64, device=s.device)])
                                  for s, c in parts]).reshape(-1)

    def _part(self, metric: str, loss: torch.Tensor, out: torch.Tensor, target: torch.Tensor, n: int):
        if metric == "loss":
            return loss.detach() * n, n
        if metric in ("mae", "rmse"):
            err = out - target.to(out.dtype).reshape(out.shape)
            return (err.abs().sum() if metric == "mae" else err.square().sum()), err.numel()
        logits, labels = out.reshape(-1, out.shape[-1]), target.reshape(-1)
        keep = labels != (self.term.ignore_index if self.term.ignore_index is not None else -100)
        logits, labels = logits[keep], labels[keep]
        if metric == "perplexity":
            return F.cross_entropy(logits, labels, reduction="sum"), len(labels)
        k = int(_TOPK.match(metric).group(1)) if metric != "accuracy" else 1
        hits = (logits.topk(k, dim=-1).indices == labels[:, None]).any(dim=-1)
        return hits.sum(), len(labels)

    def result(self) -> dict[str, float]:
        sums = self.sums.tolist()
        out = {}
        for i, metric in enumerate(self.metrics):
            total, count = sums[2 * i], max(sums[2 * i + 1], 1.0)
            value = total / count
            out[f"val_{metric}"] = (math.exp(min(value, 700.0)) if metric == "perplexity"
                                    else math.sqrt(value) if metric == "rmse" else value)
        return out


def metric_pair(term: LossTerm, outputs: tuple[torch.Tensor, ...], batch: dict[str, Any]):
    return outputs[term.output], batch[term.target]
