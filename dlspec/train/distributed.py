"""Multi-process training on torch.distributed, as launched by torchrun.

Nothing here is home-made: processes come from torchrun (or `--nproc`, which
runs torchrun for the user), gradients are averaged by DistributedDataParallel
or sharded by FSDP2's `fully_shard`, and checkpoints are gathered with
`torch.distributed.checkpoint.state_dict`. Outside torchrun everything is a
no-op with world size 1, so the training loop has one code path.
"""
from __future__ import annotations

import contextlib
import datetime
import os
import subprocess
import sys
from dataclasses import dataclass
from typing import Any, Sequence

import torch
import torch.distributed as dist
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict, set_state_dict

from dlspec.errors import DlspecError


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0
    strategy: str | None = None  # ddp | fsdp when size > 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def launched_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def init(strategy: str | None, backend: str, timeout_s: int, device_type: str, locate) -> World:
    """Join the process group torchrun set up; world size 1 outside torchrun."""
    size = launched_size()
    if size == 1:
        return World()
    if not dist.is_available():
        raise DlspecError.single("this torch build has no torch.distributed", locate(("training", "distributed")))
    if backend == "auto":
        backend = "nccl" if device_type == "cuda" else "gloo"
    if not {"nccl": dist.is_nccl_available, "gloo": dist.is_gloo_available}[backend]():
        raise DlspecError.single(f"the {backend} backend is not available in this torch build",
                                 locate(("training", "distributed", "backend")),
                                 hint="gloo works on CPU everywhere; nccl needs CUDA on Linux")
    if backend == "nccl" and device_type != "cuda":
        raise DlspecError.single("the nccl backend needs CUDA devices", locate(("training", "distributed", "backend")),
                                 hint="use `backend: auto` (gloo on CPU)")
    if not dist.is_initialized():
        dist.init_process_group(backend, timeout=datetime.timedelta(seconds=timeout_s))
    return World(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")), strategy or "ddp")


def shutdown(world: World) -> None:
    if world.size > 1 and dist.is_initialized():
        dist.destroy_process_group()


def wrap(model: torch.nn.Module, world: World, device: torch.device) -> torch.nn.Module:
    """DDP wraps the model; fully_shard shards it in place (children with parameters, then the root)."""
    if world.size == 1:
        return model
    if world.strategy == "fsdp":
        from torch.distributed.fsdp import fully_shard
        for child in model.children():
            if any(True for _ in child.parameters()):
                fully_shard(child)
        fully_shard(model)
        return model
    from torch.nn.parallel import DistributedDataParallel
    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)


@contextlib.contextmanager
def gradient_sync(model: torch.nn.Module, world: World, sync: bool):
    """Skip the gradient all-reduce on micro-batches that only accumulate (DDP no_sync; FSDP's switch)."""
    if world.size == 1 or sync:
        yield
    elif world.strategy == "fsdp":
        model.set_requires_gradient_sync(False)
        try:
            yield
        finally:
            model.set_requires_gradient_sync(True)
    else:
        with model.no_sync():
            yield


def all_reduce_sum(tensor: torch.Tensor, world: World) -> torch.Tensor:
    if world.size > 1:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def gather(obj: Any, world: World) -> list[Any]:
    """Every rank's `obj`, in rank order, on every rank."""
    if world.size == 1:
        return [obj]
    out: list[Any] = [None] * world.size
    dist.all_gather_object(out, obj)
    return out


def broadcast(obj: Any, world: World) -> Any:
    """Rank 0's `obj` on every rank."""
    if world.size == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier(world: World) -> None:
    if world.size > 1:
        dist.barrier()


def full_state(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> tuple[dict, dict]:
    """Gathered (unsharded) model and optimizer state on the CPU, keyed by parameter name.

    The same format for one process, DDP and FSDP, so a run can resume under another strategy or world size.
    Under FSDP every rank must call it (it all-gathers).
    """
    return get_state_dict(model, optimizer, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def load_full_state(model: torch.nn.Module, optimizer: torch.optim.Optimizer, model_state: dict,
                    optimizer_state: dict) -> None:
    set_state_dict(model, optimizer, model_state_dict=model_state, optim_state_dict=optimizer_state,
                   options=StateDictOptions(full_state_dict=True))


def launch(nproc: int, argv: Sequence[str]) -> int:
    """`dlspec train ... --nproc N`: run the same command under torchrun with N processes on this machine."""
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(nproc), "-m", "dlspec", *argv]
    result = subprocess.run(command)
    if result.returncode != 0:
        raise DlspecError.single(f"distributed training failed: torchrun exited with status {result.returncode}",
                                 hint="the failing rank's error is printed above; when a rank dies, torchrun stops "
                                      "the others")
    return 0
