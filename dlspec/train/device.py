"""Which device a run uses, and the autocast/GradScaler pair its precision needs."""
from __future__ import annotations

import contextlib
import os

import torch

from dlspec.core.errors import DlspecError

_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def pick(preference: str, local_rank: int, locate) -> torch.device:
    """auto: cuda > mps > cpu. Under torchrun each process takes the GPU of its local rank."""
    if preference == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", local_rank % torch.cuda.device_count())
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if preference.startswith("cuda") and not torch.cuda.is_available():
        raise DlspecError.single(f"device '{preference}' was asked for, but this torch sees no CUDA device",
                                 locate(("training", "device")), hint="use `device: auto` to fall back to the CPU")
    if preference == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise DlspecError.single("device 'mps' was asked for, but MPS is not available here",
                                 locate(("training", "device")), hint="use `device: auto`")
    if preference == "cuda":
        return torch.device("cuda", local_rank % torch.cuda.device_count())
    return torch.device(preference)


def autocast(device: torch.device, precision: str):
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=_DTYPES[precision])


def scaler(device: torch.device, precision: str) -> torch.amp.GradScaler:
    # fp16 gradients underflow without loss scaling; bf16 has fp32's range and needs none.
    return torch.amp.GradScaler(device.type, enabled=precision == "fp16")


def make_deterministic(on: bool) -> None:
    if on:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # cuBLAS needs it for deterministic GEMMs
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False
