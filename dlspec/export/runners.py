"""Running a loaded torch artifact (TorchScript or torch.export) the way parity compares it: spec inputs
by name in, outputs as numpy arrays out, without gradients and without the runtime's chatter."""
from __future__ import annotations

import numpy as np
import torch

from .quiet import quiet


def as_numpy(outputs) -> tuple[np.ndarray, ...]:
    """A model's outputs (one tensor or a tuple) as numpy arrays."""
    outputs = outputs if isinstance(outputs, (tuple, list)) else (outputs,)
    return tuple(o.detach().cpu().numpy() for o in outputs)


def torch_runner(module):
    def run(inputs: dict[str, torch.Tensor]) -> tuple[np.ndarray, ...]:
        with torch.no_grad(), quiet():
            return as_numpy(module(*inputs.values()))
    return run
