"""Learning-rate schedule kinds, and the `Schedule` that drives one.

Every schedule is a pure function of where the run is, as nanoGPT's `get_lr(it)`: a kind's `build` gives
`lr(u, n, base)`, the lr after `u` of its `n` intervals (steps, or epochs) from a group's base lr.
`Schedule` composes it with linear warm-up and hands the product to torch's `LambdaLR`, which sets each
param group's lr before every optimizer step; `plateau` keeps torch's `ReduceLROnPlateau` for the decision
and multiplies its reductions in. The curves are tested against torch's own schedulers.

A pure schedule makes resume simple and its extension defined. A checkpoint records the *plan*: which
span of the schedule each span of run steps covers. Resuming with more (or fewer) steps than the run was
planned for maps the steps left onto what is left of the schedule, stretched (or squeezed) linearly: the
lr continues from where it was and reaches the schedule's end on the new last step; it never jumps back.
A schedule that had already finished holds its final lr.
"""
from __future__ import annotations

import bisect
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Mapping

from dlspec.train.kinds import Kind, Kinded, Option, Registry

if TYPE_CHECKING:
    import torch

Curve = Callable[[float, float, float], float]  # (intervals done, intervals in all, base lr) -> lr


@dataclass(frozen=True)
class ScheduleKind(Kind):
    interval: str = "step"  # what `u` counts unless `interval` says otherwise: step | epoch | eval (plateau)
    # beta1 (adam) or momentum (sgd, rmsprop) at (u, n), for one-cycle's momentum cycling
    momentum: Callable[[Kinded], Callable[[float, float], float] | None] | None = None


SCHEDULES = Registry("scheduler", "Learning-rate schedule.", common=(
    Option("interval", "string", "What the schedule counts: optimizer steps or epochs.",
           default_doc="per step for cosine, cosine_restarts and one_cycle; per epoch for step, multistep and "
                       "exponential", choices=("step", "epoch")),
    Option("warmup_steps", "integer", "Linear warm-up over this many optimizer steps in front of the schedule.", 0,
           minimum=0),
    Option("warmup_start", "number", "Warm-up starts at this fraction of the schedule's first lr.", 0.01, minimum=0),
))


def _anneal(start: float, end: float, pct: float) -> float:
    """Cosine from `start` (pct 0) to `end` (pct 1)."""
    return end + (start - end) / 2 * (math.cos(math.pi * min(max(pct, 0.0), 1.0)) + 1)


def _step(o: Kinded) -> Curve:
    return lambda u, n, base: base * o["gamma"] ** (u // o["step_size"])


def _multistep(o: Kinded) -> Curve:
    milestones = sorted(o["milestones"])
    return lambda u, n, base: base * o["gamma"] ** bisect.bisect_right(milestones, math.floor(u))


def _exponential(o: Kinded) -> Curve:
    return lambda u, n, base: base * o["gamma"] ** math.floor(u)


def _cosine(o: Kinded) -> Curve:
    """Anneals over t_max intervals (the whole run by default), then holds min_lr."""
    return lambda u, n, base: _anneal(base, o["min_lr"], u / (o["t_max"] or n))


def _restarts(o: Kinded) -> Curve:
    def lr(u: float, n: float, base: float) -> float:
        t_0, mult = o["t_0"] or max(int(n) // 4, 1), o["t_mult"]
        if mult == 1:
            t_cur, t_i = u % t_0, t_0
        else:  # periods t_0, t_0 * mult, t_0 * mult^2, ...: which one u falls in
            k = int(math.log(u / t_0 * (mult - 1) + 1, mult))
            t_cur, t_i = u - t_0 * (mult ** k - 1) / (mult - 1), t_0 * mult ** k
        return _anneal(base, o["min_lr"], t_cur / t_i)
    return lr


def _fraction(done: float, span: float) -> float:
    return done / span if span > 0 else 1.0


def _cycle_points(o: Kinded, n: float) -> tuple[float, float]:
    """torch's OneCycleLR phases: the peak's step, and the last step."""
    return o["pct_start"] * n - 1, n - 1


def _one_cycle(o: Kinded) -> Curve:
    def lr(u: float, n: float, base: float) -> float:
        peak = o["max_lr"] or base
        start = peak / o["div_factor"]
        up, last = _cycle_points(o, n)
        if u <= up:
            return _anneal(start, peak, _fraction(u, up))
        return _anneal(peak, start / o["final_div_factor"], _fraction(u - up, last - up))
    return lr


def _one_cycle_momentum(o: Kinded) -> Callable[[float, float], float] | None:
    if not o["cycle_momentum"]:
        return None

    def momentum(u: float, n: float) -> float:
        high, low = o["max_momentum"], o["base_momentum"]
        up, last = _cycle_points(o, n)
        return _anneal(high, low, _fraction(u, up)) if u <= up else _anneal(low, high, _fraction(u - up, last - up))
    return momentum


def _plateau_metric(o: Kinded, report) -> None:
    if "interval" in o.given:
        report(o.path + ("interval",), "a plateau schedule steps after each evaluation", hint="remove `interval`")


_GAMMA = Option("gamma", "number", "Decay factor.", 0.1, minimum=0)
_MIN_LR = Option("min_lr", "number", "Lowest learning rate.", 0.0, minimum=0)
SCHEDULES.add(ScheduleKind("constant", "The optimizer's lr throughout.", (), lambda o: lambda u, n, base: base))
SCHEDULES.add(ScheduleKind("step", "Multiply the lr by `gamma` every `step_size` intervals (torch's StepLR).",
                           (Option("step_size", "integer", "Decay every this many intervals.", 1, minimum=1), _GAMMA),
                           _step, interval="epoch"))
SCHEDULES.add(ScheduleKind("multistep", "Multiply the lr by `gamma` at each milestone (MultiStepLR).",
                           (Option("milestones", "integers", "Intervals at which to decay.", [],
                                   schema={"type": "array", "items": {"type": "integer", "minimum": 1}}), _GAMMA),
                           _multistep, interval="epoch"))
SCHEDULES.add(ScheduleKind("exponential", "Multiply the lr by `gamma` every interval (ExponentialLR).",
                           (Option("gamma", "number", "Decay factor.", 0.9, minimum=0),), _exponential,
                           interval="epoch"))
SCHEDULES.add(ScheduleKind("cosine", "Cosine from the lr down to `min_lr` (CosineAnnealingLR), then `min_lr`.",
                           (_MIN_LR, Option("t_max", "integer", "Intervals to anneal over.", minimum=1,
                                            default_doc="the whole run")), _cosine))
SCHEDULES.add(ScheduleKind("cosine_restarts", "Cosine annealing with warm restarts (CosineAnnealingWarmRestarts).",
                           (Option("t_0", "integer", "Intervals before the first restart.", minimum=1,
                                   default_doc="a quarter of the run"),
                            Option("t_mult", "integer", "Growth of the period after each restart.", 1, minimum=1),
                            _MIN_LR), _restarts))
SCHEDULES.add(ScheduleKind("one_cycle", "Up from max_lr / div_factor to max_lr, then down to far below (OneCycleLR), "
                           "with momentum cycled the other way.",
                           (Option("max_lr", "number", "Peak learning rate.", minimum=0, default_doc="the optimizer's lr"),
                            Option("pct_start", "number", "Fraction of the run spent increasing the lr.", 0.3, minimum=0,
                                   maximum=1),
                            Option("div_factor", "number", "Initial lr = max_lr / div_factor.", 25.0, minimum=1),
                            Option("final_div_factor", "number", "Final lr = initial lr / final_div_factor.", 1e4,
                                   minimum=1),
                            Option("cycle_momentum", "boolean", "Cycle momentum (adam's beta1) inversely to the lr.",
                                   True),
                            Option("base_momentum", "number", "Lowest momentum, at the peak lr.", 0.85, minimum=0),
                            Option("max_momentum", "number", "Highest momentum, at the ends.", 0.95, minimum=0)),
                           _one_cycle, momentum=_one_cycle_momentum))
SCHEDULES.add(ScheduleKind("plateau", "Multiply the lr by `factor` when a metric stops improving "
                           "(ReduceLROnPlateau), checked after each evaluation.",
                           (Option("metric", "string", "The logged metric to watch.", "val_loss"),
                            Option("mode", "string", "Whether the metric should go down or up.", choices=("min", "max"),
                                   default_doc="from the metric"),
                            Option("factor", "number", "Factor applied to the lr on a plateau.", 0.1, minimum=0),
                            Option("patience", "integer", "Evaluations without improvement before the lr drops.", 10,
                                   minimum=0),
                            Option("threshold", "number", "Smallest relative change that counts as improvement.", 1e-4,
                                   minimum=0),
                            _MIN_LR), lambda o: lambda u, n, base: base, interval="eval", check=_plateau_metric))


@dataclass(frozen=True)
class Plan:
    """Which part of the schedule (in steps of the schedule's own time) each span of run steps covers.

    `spans` are (first run step, schedule time there, last run step, schedule time there), in order; a new
    run has one span, the identity. `length` is the schedule's own length in steps.
    """
    spans: tuple[tuple[float, float, float, float], ...]
    length: float

    @staticmethod
    def new(total_steps: int) -> "Plan":
        return Plan(((0, 0.0, total_steps, float(total_steps)),), float(total_steps))

    def time(self, step: float) -> float:
        first, t0, last, t1 = next((s for s in reversed(self.spans) if s[0] <= step), self.spans[0])
        return t0 + (step - first) * (t1 - t0) / (last - first) if last > first else t0

    def last_step(self) -> float:
        return self.spans[-1][2]

    def resized(self, step: int, total_steps: int) -> "Plan":
        """The plan after a resume at `step` with `total_steps` in all: what is left, over the steps left."""
        if total_steps == self.last_step():
            return self
        keep = tuple(s if s[2] <= step else (s[0], s[1], step, self.time(step)) for s in self.spans if s[0] < step)
        return Plan(keep + ((step, self.time(step), total_steps, self.length),), self.length)

    def as_data(self) -> dict:
        return {"spans": [list(s) for s in self.spans], "length": self.length}

    @staticmethod
    def from_data(data: Mapping) -> "Plan":
        return Plan(tuple(tuple(s) for s in data["spans"]), data["length"])


class Schedule:
    """The lr of every optimizer step: each group's base lr x warm-up x the kind's curve x plateau reductions."""

    def __init__(self, o: Kinded | None, optimizer: torch.optim.Optimizer, plan: Plan, steps_per_epoch: int,
                 step: int = 0, scales: list[float] | None = None):
        from torch.optim.lr_scheduler import LambdaLR
        self.kind, self.optimizer, self.plan = o, optimizer, plan
        self.warmup = o["warmup_steps"] if o is not None else 0
        self.warmup_start = o["warmup_start"] if o is not None else 1.0
        self.interval = (o["interval"] or o.definition.interval) if o is not None else "step"
        self.steps_per_epoch = steps_per_epoch
        self.curve = o.definition.build(o) if o is not None else (lambda u, n, base: base)
        self.momentum = o.definition.momentum(o) if o is not None and o.definition.momentum else None
        self.scales = scales or [1.0] * len(optimizer.param_groups)  # what plateau took off each group
        self.plateau = self._plateau() if o is not None and o.definition.interval == "eval" else None
        self.step_count = step
        self.lambda_lr = LambdaLR(optimizer, [self._factor(i) for i in range(len(optimizer.param_groups))],
                                  last_epoch=step - 1)  # sets the lr of `step`
        self._set_momentum()

    def _factor(self, index: int) -> Callable[[int], float]:
        def factor(step: int) -> float:
            base = self.optimizer.param_groups[index]["initial_lr"]
            return self.lr_at(step, base) * self.scales[index] / base if base else 0.0
        return factor

    def _units(self, t: float) -> tuple[float, float]:
        """Where the kind's curve is at schedule time `t`: (intervals done, intervals in all)."""
        if self.interval == "epoch":
            return t // self.steps_per_epoch, max(math.ceil(self.plan.length / self.steps_per_epoch), 1)
        return max(t - self.warmup, 0.0), max(self.plan.length - self.warmup, 1.0)

    def lr_at(self, step: float, base: float) -> float:
        """The lr of optimizer step `step` (0-based) for a group whose base lr is `base`, before plateau."""
        t = self.plan.time(step)
        lr = self.curve(*self._units(t), base)
        if t < self.warmup:  # linear warm-up to where the schedule starts
            lr *= self.warmup_start + (1 - self.warmup_start) * t / self.warmup
        return lr

    def step(self) -> None:
        """After an optimizer step: set the lr (and momentum) of the next one."""
        self.step_count += 1
        self.lambda_lr.step()
        self._set_momentum()

    def _set_momentum(self) -> None:
        if self.momentum is None:
            return
        value = self.momentum(*self._units(self.plan.time(self.step_count)))
        for group in self.optimizer.param_groups:
            if "betas" in group:
                group["betas"] = (value, *group["betas"][1:])
            else:
                group["momentum"] = value

    def after_eval(self, metrics: Mapping[str, float]) -> None:
        """Feed the plateau schedule; its reductions become part of every later step's lr."""
        if self.plateau is None or self.kind["metric"] not in metrics:
            return
        before = [g["lr"] for g in self.optimizer.param_groups]
        self.plateau.step(metrics[self.kind["metric"]])
        for i, (group, lr) in enumerate(zip(self.optimizer.param_groups, before)):
            self.scales[i] *= group["lr"] / lr if lr else 1.0

    def _plateau(self):
        from torch.optim.lr_scheduler import ReduceLROnPlateau

        from dlspec.train.config import metric_mode
        o = self.kind
        return ReduceLROnPlateau(self.optimizer, mode=o["mode"] or metric_mode(o["metric"]), factor=o["factor"],
                                 patience=o["patience"], threshold=o["threshold"], min_lr=o["min_lr"])

    def state_dict(self) -> dict:
        return {"plan": self.plan.as_data(), "scales": list(self.scales),
                "plateau": self.plateau.state_dict() if self.plateau is not None else None}

    def load_plateau(self, state: Mapping) -> None:
        if self.plateau is not None and state.get("plateau") is not None:
            self.plateau.load_state_dict(state["plateau"])
