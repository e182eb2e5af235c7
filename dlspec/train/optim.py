"""Optimizer kinds, and the parameter groups they step.

Parameter groups come from name patterns (first match wins) crossed with weight decay: by default only
parameters with 2 or more dims decay, which leaves out biases and norm weights (the usual recipe;
`decay_bias_and_norm` turns it off). A kind's `build(groups, options, device)` returns the torch optimizer.
"""
from __future__ import annotations

import fnmatch
from typing import TYPE_CHECKING, Any, Callable

from dlspec.core.errors import DlspecError
from dlspec.train.kinds import Kind, Kinded, Option, Registry

if TYPE_CHECKING:
    import torch

OPTIMIZERS = Registry("optimizer", "Optimizer (torch.optim).", common=(
    Option("decay_bias_and_norm", "boolean", "Apply weight decay to biases and norm weights too (false: only "
           "parameters with 2 or more dims decay).", False),
    Option("groups", "list", "Per-parameter-group options by name pattern.", schema={
        "type": "array", "items": {
            "type": "object", "additionalProperties": False, "required": ["params"],
            "description": "Options for the parameters whose names match `params`.", "properties": {
                "params": {"anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}],
                           "description": "Name pattern(s) (shell-style, e.g. `fc.*`); first matching group wins."},
                "lr": {"type": "number", "minimum": 0, "description": "Learning rate of this group."},
                "weight_decay": {"type": "number", "minimum": 0, "description": "Weight decay of this group."}}}}),
))
# Options every build passes through as they are; the rest are torch's keyword arguments.
_OURS = ("decay_bias_and_norm", "groups", "fused")


def _torch(name: str, fused: bool = False) -> Callable[..., Any]:
    """A builder for torch.optim.NAME; `fused` kinds take the fused kernel where the device has one, the
    multi-tensor (foreach) path elsewhere."""
    def build(groups: list[dict], o: Kinded, device: torch.device) -> torch.optim.Optimizer:
        import torch
        kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in o.options.items() if k not in _OURS}
        if fused:
            kwargs["fused" if fuses(o, device) else "foreach"] = True
        return getattr(torch.optim, name)(groups, **kwargs)
    return build


def fuses(o: Kinded, device: torch.device) -> bool:
    """Whether an Adam-family optimizer runs its fused kernel: as asked, else where torch has one."""
    return o["fused"] if o["fused"] is not None else device.type in ("cuda", "cpu", "mps")


def _nesterov_needs_momentum(o: Kinded, report) -> None:
    if o["nesterov"] and not o["momentum"]:
        report(o.path + ("nesterov",), "nesterov momentum needs a momentum > 0", hint="add `momentum: 0.9`")


def _lr(default: float) -> Option:
    return Option("lr", "number", "Learning rate.", default, minimum=0)


def _decay(default: float, how: str) -> Option:
    return Option("weight_decay", "number", f"Weight decay ({how}).", default, minimum=0)


_BETAS = Option("betas", "numbers", "Coefficients of the running averages of the gradient and its square.",
                [0.9, 0.999], schema={"type": "array", "items": {"type": "number", "minimum": 0, "maximum": 1},
                                      "minItems": 2, "maxItems": 2})
_EPS = Option("eps", "number", "Term added to the denominator for numerical stability.", 1e-8, minimum=0)
_AMSGRAD = Option("amsgrad", "boolean", "The AMSGrad variant.", False)
_FUSED = Option("fused", "boolean", "Fused kernel (false: the multi-tensor foreach path).",
                default_doc="fused where torch has the kernel (CUDA, CPU, MPS)")
_MOMENTUM = Option("momentum", "number", "Momentum.", 0.0, minimum=0)
OPTIMIZERS.add(Kind("sgd", "Stochastic gradient descent, with optional (Nesterov) momentum.",
                    (_lr(0.01), _decay(0.0, "L2"), _MOMENTUM,
                     Option("nesterov", "boolean", "Nesterov momentum.", False),
                     Option("dampening", "number", "Dampening of the momentum.", 0.0, minimum=0)),
                    _torch("SGD"), _nesterov_needs_momentum))
OPTIMIZERS.add(Kind("adam", "Adam.", (_lr(1e-3), _decay(0.0, "L2"), _BETAS, _EPS, _AMSGRAD, _FUSED),
                    _torch("Adam", fused=True)))
OPTIMIZERS.add(Kind("adamw", "Adam with decoupled weight decay (the transformer default).",
                    (_lr(1e-3), _decay(0.01, "decoupled"), _BETAS, _EPS, _AMSGRAD, _FUSED), _torch("AdamW", fused=True)))
OPTIMIZERS.add(Kind("rmsprop", "RMSprop.", (_lr(1e-3), _decay(0.0, "L2"), _MOMENTUM,
                                            Option("alpha", "number", "Smoothing constant.", 0.99, minimum=0), _EPS,
                                            Option("centered", "boolean", "Centered RMSprop.", False)),
                    _torch("RMSprop")))


def param_groups(named: list[tuple[str, torch.nn.Parameter]], o: Kinded, locate) -> list[dict]:
    """The optimizer's parameter groups: by `groups` pattern (first match wins), then by whether they decay."""
    patterns = o["groups"] or []
    buckets: dict[tuple[int, bool], list] = {}
    used = [False] * len(patterns)
    for name, param in named:
        group = next((i for i, g in enumerate(patterns) if _matches(name, g["params"])), -1)
        if group >= 0:
            used[group] = True
        buckets.setdefault((group, o["decay_bias_and_norm"] or param.ndim >= 2), []).append(param)
    for i, was_used in enumerate(used):
        if not was_used:
            raise DlspecError.single(f"parameter group {i} ({patterns[i]['params']}) matches no trainable parameter",
                                     locate(o.path + ("groups", i, "params")),
                                     hint="parameter names follow the node ids, e.g. `conv1.weight` or `h.0.attn.qkv.bias`")
    if not buckets:
        raise DlspecError.single("the model has no trainable parameters", locate(("training", "freeze")),
                                 hint="check `freeze`/`unfreeze` and `trainable: false` in the model")
    # `spec_group` (the index into `groups`, -1 for the rest) and `decays` say where a group's lr and weight
    # decay come from, so that a resume can apply the spec's current values (apply_hyper)
    return [{"params": params, "spec_group": index, "decays": decays, **_hyper(o, index, decays)}
            for (index, decays), params in sorted(buckets.items(), key=lambda kv: kv[0])]


def _hyper(o: Kinded, index: int, decays: bool) -> dict[str, float]:
    group = o["groups"][index] if index >= 0 else {}
    return {"lr": group.get("lr", o["lr"]), "weight_decay": group.get("weight_decay", o["weight_decay"]) if decays else 0.0}


def apply_hyper(optimizer: torch.optim.Optimizer, o: Kinded) -> None:
    """Each group's base lr (which the schedule scales) and weight decay, as the config says."""
    for group in optimizer.param_groups:
        hyper = _hyper(o, group["spec_group"], group["decays"])
        group["initial_lr"], group["weight_decay"] = hyper["lr"], hyper["weight_decay"]


def build(named: list[tuple[str, torch.nn.Parameter]], o: Kinded, device: torch.device, locate) -> torch.optim.Optimizer:
    optimizer = o.definition.build(param_groups(named, o, locate), o, device)
    apply_hyper(optimizer, o)
    return optimizer


def _matches(name: str, patterns: str | list[str]) -> bool:
    return any(fnmatch.fnmatchcase(name, p) for p in ([patterns] if isinstance(patterns, str) else patterns))
