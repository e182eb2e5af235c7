"""Optimizer with parameter groups, and the learning-rate schedule around it.

Parameter groups come from name patterns (first match wins) crossed with
weight decay: by default only parameters with 2 or more dims decay, which
leaves out biases and norm weights (the usual recipe; `decay_bias_and_norm`
turns it off).

The schedule is one of torch's, stepped at its own interval (batch, epoch or
evaluation). Linear warm-up sits in front of it: during warm-up the schedule
does not step and the lr is scaled for the optimizer step only, then put back,
so any torch schedule keeps seeing its own lr.
"""
from __future__ import annotations

import fnmatch
import math
from dataclasses import dataclass
from typing import Any, Mapping

import torch
from torch.optim import lr_scheduler as S

from dlspec.core.errors import DlspecError
from dlspec.train.config import DEFAULT_INTERVAL, Kinded, TrainConfig, metric_mode

_OPTIMIZERS = {"sgd": torch.optim.SGD, "adam": torch.optim.Adam, "adamw": torch.optim.AdamW,
               "rmsprop": torch.optim.RMSprop}


def build_optimizer(named: list[tuple[str, torch.nn.Parameter]], cfg: TrainConfig, device: torch.device,
                    locate) -> torch.optim.Optimizer:
    opt = cfg.optimizer
    lr = opt.get("lr", 0.01 if opt.kind == "sgd" else 1e-3)
    decay = opt.get("weight_decay", 0.01 if opt.kind == "adamw" else 0.0)
    buckets: dict[tuple[int, bool], list[torch.nn.Parameter]] = {}
    used = [False] * len(cfg.groups)
    for name, param in named:
        group = next((i for i, g in enumerate(cfg.groups) if _matches(name, g["params"])), -1)
        if group >= 0:
            used[group] = True
        decays = opt.get("decay_bias_and_norm", False) or param.ndim >= 2
        buckets.setdefault((group, decays), []).append(param)
    for i, was_used in enumerate(used):
        if not was_used:
            raise DlspecError.single(f"parameter group {i} ({cfg.groups[i]['params']}) matches no trainable parameter",
                                     locate(("training", "optimizer", "groups", i, "params")),
                                     hint="parameter names follow the node ids, e.g. `conv1.weight` or `h.0.attn.qkv.bias`")
    if not buckets:
        raise DlspecError.single("the model has no trainable parameters", locate(("training", "freeze")),
                                 hint="check `freeze`/`unfreeze` and `trainable: false` in the model")
    groups = []
    for (index, decays), params in sorted(buckets.items(), key=lambda kv: kv[0]):
        spec = cfg.groups[index] if index >= 0 else {}
        groups.append({"params": params, "lr": spec.get("lr", lr),
                       "weight_decay": spec.get("weight_decay", decay) if decays else 0.0})
    kwargs = {k: opt.get(k) for k in ("momentum", "nesterov", "dampening", "eps", "amsgrad", "alpha", "centered")
              if k in opt.options}
    if "betas" in opt.options:
        kwargs["betas"] = tuple(opt.get("betas"))
    if opt.kind in ("adam", "adamw"):
        # Fused kernels where the device has them (CUDA), the multi-tensor path otherwise.
        fused = opt.get("fused", device.type == "cuda")
        kwargs["fused" if fused else "foreach"] = True
    return _OPTIMIZERS[opt.kind](groups, lr=lr, **kwargs)


def _matches(name: str, patterns: str | list[str]) -> bool:
    return any(fnmatch.fnmatchcase(name, p) for p in ([patterns] if isinstance(patterns, str) else patterns))


@dataclass
class Schedule:
    """The torch scheduler plus warm-up; `interval` says when the scheduler steps."""
    optimizer: torch.optim.Optimizer
    scheduler: Any  # an LRScheduler, ReduceLROnPlateau, or None for a constant lr
    interval: str  # step | epoch | eval
    warmup_steps: int
    warmup_start: float
    metric: str | None  # plateau only

    def begin_step(self, step: int) -> None:
        """Before optimizer step number `step` (0-based): scale the lr during warm-up."""
        self._saved = [g["lr"] for g in self.optimizer.param_groups]
        if step < self.warmup_steps:
            factor = self.warmup_start + (1 - self.warmup_start) * step / self.warmup_steps
            for g in self.optimizer.param_groups:
                g["lr"] *= factor

    def end_step(self, step: int) -> None:
        """After optimizer step `step`: undo the warm-up scaling, then step a per-batch schedule."""
        for g, lr in zip(self.optimizer.param_groups, self._saved):
            g["lr"] = lr
        if self.interval == "step" and self.scheduler is not None and step >= self.warmup_steps:
            self.scheduler.step()

    def end_epoch(self) -> None:
        if self.interval == "epoch" and self.scheduler is not None:
            self.scheduler.step()

    def after_eval(self, metrics: Mapping[str, float]) -> None:
        if self.interval == "eval" and self.metric in metrics:
            self.scheduler.step(metrics[self.metric])

    def state_dict(self) -> dict:
        return {"scheduler": self.scheduler.state_dict() if self.scheduler is not None else None}

    def load_state_dict(self, state: dict) -> None:
        if self.scheduler is not None and state.get("scheduler") is not None:
            self.scheduler.load_state_dict(state["scheduler"])


def build_schedule(cfg: Kinded | None, optimizer: torch.optim.Optimizer, total_steps: int,
                   steps_per_epoch: int) -> Schedule:
    if cfg is None:
        return Schedule(optimizer, None, "step", 0, 1.0, None)
    warmup = cfg.get("warmup_steps", 0)
    interval = cfg.get("interval", DEFAULT_INTERVAL[cfg.kind])
    # The schedule's length in its own unit; warm-up comes in front of a per-batch schedule.
    length = max(total_steps - warmup, 1) if interval == "step" else max(math.ceil(total_steps / steps_per_epoch), 1)
    min_lr = cfg.get("min_lr", 0.0)
    kind = cfg.kind
    if kind == "constant":
        scheduler = None
    elif kind == "step":
        scheduler = S.StepLR(optimizer, cfg.get("step_size", 1), gamma=cfg.get("gamma", 0.1))
    elif kind == "multistep":
        scheduler = S.MultiStepLR(optimizer, cfg.get("milestones", []), gamma=cfg.get("gamma", 0.1))
    elif kind == "exponential":
        scheduler = S.ExponentialLR(optimizer, gamma=cfg.get("gamma", 0.9))
    elif kind == "cosine":
        scheduler = S.CosineAnnealingLR(optimizer, T_max=cfg.get("t_max", length), eta_min=min_lr)
    elif kind == "cosine_restarts":
        scheduler = S.CosineAnnealingWarmRestarts(optimizer, T_0=cfg.get("t_0", max(length // 4, 1)),
                                                  T_mult=cfg.get("t_mult", 1), eta_min=min_lr)
    elif kind == "one_cycle":
        scheduler = S.OneCycleLR(optimizer, max_lr=cfg.get("max_lr", [g["lr"] for g in optimizer.param_groups]),
                                 total_steps=length, pct_start=cfg.get("pct_start", 0.3),
                                 div_factor=cfg.get("div_factor", 25.0),
                                 final_div_factor=cfg.get("final_div_factor", 1e4))
    else:  # plateau
        metric = cfg.get("metric", "val_loss")
        scheduler = S.ReduceLROnPlateau(optimizer, mode=cfg.get("mode", metric_mode(metric)),
                                        factor=cfg.get("factor", 0.1), patience=cfg.get("patience", 10),
                                        threshold=cfg.get("threshold", 1e-4), min_lr=min_lr)
    return Schedule(optimizer, scheduler, interval, warmup, cfg.get("warmup_start", 0.01),
                    cfg.get("metric", "val_loss") if kind == "plateau" else None)
