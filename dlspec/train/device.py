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


# A training step under this many FLOPs runs its ops on small tensors, where more threads cost more in
# synchronisation than they save (a 0.1 GFLOP step of the digits MLP took 10-20x longer on 2 busy cores).
SMALL_STEP_FLOPS = 2e9


def cpu_cores() -> int:
    """The cores this process may use: its affinity, capped by a cgroup CPU quota (containers, CI)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    try:
        quota, period = open("/sys/fs/cgroup/cpu.max").read().split()
        if quota != "max":
            cores = min(cores, max(int(int(quota) / int(period)), 1))
    except (OSError, ValueError):
        pass
    return cores


def threads(requested: int | None, device: torch.device, step_flops: float, local_processes: int) -> tuple[int, str]:
    """CPU threads for tensor ops, and why: as the spec says, else 1 for a small model, else this process's
    share of the cores. Sets torch's thread count."""
    if requested:
        count, why = requested, "training.threads"
    elif device.type != "cpu":
        count, why = torch.get_num_threads(), "torch's default; the work runs on the accelerator"
    elif step_flops < SMALL_STEP_FLOPS:
        count, why = 1, f"a small model: {step_flops / 1e9:.2g} GFLOP a step"
    else:
        count = max(cpu_cores() // local_processes, 1)
        why = f"{step_flops / 1e9:.3g} GFLOP a step on {cpu_cores()} cores" + (
            f" shared by {local_processes} processes" if local_processes > 1 else "")
    torch.set_num_threads(count)
    return count, why


# Dense peak TFLOP/s (bf16/fp16 tensor cores, and fp32) of common GPUs, for model FLOPs utilisation.
_PEAK_TFLOPS = {"H200": (989, 67), "H100": (989, 67), "A100": (312, 19.5), "L40S": (362, 91.6), "L4": (121, 30.3),
                "A10": (125, 31.2), "V100": (125, 15.7), "T4": (65, 8.1), "RTX 4090": (165, 82.6),
                "RTX 3090": (71, 35.6)}


def peak_flops(device: torch.device, precision: str, given_tflops: float | None) -> float | None:
    """The device's peak FLOP/s at `precision`: as given in the spec, else from the table; None if unknown."""
    if given_tflops:
        return given_tflops * 1e12
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    peaks = next((p for key, p in _PEAK_TFLOPS.items() if key in name), None)
    return None if peaks is None else (peaks[1] if precision == "fp32" else peaks[0]) * 1e12
