"""Multi-process training on torch.distributed, as launched by torchrun.

Nothing here is home-made: processes come from torchrun (or `--nproc`, which
runs torchrun for the user), gradients are averaged by DistributedDataParallel
or sharded by FSDP2's `fully_shard` (each block instance, then the model: the
standard transformer recipe), and FSDP's checkpoints are gathered with
`torch.distributed.checkpoint.state_dict` (whole parameters need no gathering).
Outside torchrun everything is a no-op with world size 1, so the training loop
has one code path. `wrap` also applies `torch.compile`: to the whole model, or
to each block (regional).
"""
from __future__ import annotations

import contextlib
import datetime
import os
import sys
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import torch
import torch.distributed as dist

from dlspec.core.errors import DlspecError, gist


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0
    strategy: str | None = None  # ddp | fsdp when size > 1
    owns_group: bool = False  # this run joined the process group, so it leaves it (a caller's group is kept)

    @property
    def main(self) -> bool:
        return self.rank == 0


def launched_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def init(strategy: str | None, backend: str, timeout_s: int, device_type: str, locate) -> World:
    """Join the process group torchrun set up; world size 1 outside torchrun.

    Everything that can be checked before joining is checked first (the same checks on every rank), so a
    configuration error stops all ranks at once instead of leaving some waiting for the others.
    """
    size = launched_size()
    if size == 1:
        return World()
    if not dist.is_available():
        raise DlspecError.single("this torch build has no torch.distributed, so it cannot train with "
                                 f"{size} processes", locate(("training", "distributed")),
                                 hint="run with one process, or install a torch build with distributed support")
    _die_with_launcher()
    strategy = strategy or "ddp"
    if strategy == "fsdp":
        _fully_shard(locate)  # fails here, before any process waits for another, if FSDP2 is missing
    backend = _check_backend(backend, device_type, locate)
    joined = not dist.is_initialized()
    if joined:
        try:
            dist.init_process_group(backend, timeout=datetime.timedelta(seconds=timeout_s))
        except (dist.DistError, RuntimeError, ValueError) as exc:
            raise DlspecError.single(f"cannot join the other {size - 1} processes ({backend}): "
                                     f"{gist(exc)}", locate(("training", "distributed")),
                                     hint="start every process with torchrun (or `dlspec train --nproc N`); for "
                                          "several machines check --rdzv-endpoint and that its port is open") from None
    return World(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")), strategy, joined)


def _die_with_launcher() -> None:
    """Stop this process when the torchrun agent that started it is killed.

    torchrun starts each process in a session of its own, so `kill -9` of torchrun (or of its process group,
    or the OOM killer choosing it) would leave the processes training on as orphans, still writing into the run
    directory that a `--resume` is about to use. On Linux the kernel can send us SIGKILL when our parent dies.
    """
    if not sys.platform.startswith("linux") or "TORCHELASTIC_RUN_ID" not in os.environ:
        return
    import ctypes
    import signal
    pr_set_pdeathsig = 1
    try:
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)
    except (OSError, AttributeError):
        return


def _check_backend(backend: str, device_type: str, locate) -> str:
    """The backend to use: auto is nccl on CUDA and gloo elsewhere; an explicit one must work here."""
    if backend == "auto":
        backend = "nccl" if device_type == "cuda" else "gloo"
    where = locate(("training", "distributed", "backend"))
    if backend == "nccl" and device_type != "cuda":
        raise DlspecError.single(f"the nccl backend needs CUDA devices, but this run trains on {device_type}", where,
                                 hint="use `backend: auto` (gloo on CPU) or `backend: gloo`")
    if not {"nccl": dist.is_nccl_available, "gloo": dist.is_gloo_available}[backend]():
        raise DlspecError.single(f"the {backend} backend is not available in this torch build", where,
                                 hint="gloo works on CPU everywhere; nccl needs CUDA on Linux; "
                                      "`backend: auto` picks the right one")
    return backend


def _fully_shard(locate=None):
    """FSDP2's `fully_shard`, or a located error saying this torch has none."""
    try:
        from torch.distributed.fsdp import fully_shard
    except ImportError as exc:
        raise DlspecError.single(f"strategy fsdp is not available with torch {torch.__version__} on this platform "
                                 f"({gist(exc)})",
                                 locate(("training", "distributed", "strategy")) if locate else None,
                                 expected="torch >= 2.6 with torch.distributed.fsdp.fully_shard",
                                 hint="use `strategy: ddp`, or upgrade torch") from None
    return fully_shard


def check_batch(batch_size: int, size: int, locate) -> None:
    """`batch_size` is the global batch: every process takes the same share of it."""
    if batch_size % size:
        raise DlspecError.single(f"batch_size {batch_size} cannot be split evenly over {size} processes",
                                 locate(("training", "data", "batch_size")), expected=f"a multiple of {size}",
                                 hint="batch_size is the global batch; each process takes batch_size / processes")


def failure(exc: BaseException, world: World, timeout_s: int) -> BaseException:
    """What a process that stops with `exc` tells the user.

    A collective that failed because another process died, or did not answer within `timeout_s`, becomes a
    DlspecError saying so; anything else is returned unchanged. When the answer is a DlspecError, this process
    also stops listening to SIGTERM: torchrun stops the other processes as soon as one exits, and a process
    that is already on its way out with a message must get to print it (`--nproc` relies on rank 0's exit
    status to know whether the user has seen its message).
    """
    if world.size == 1:
        return exc
    if not isinstance(exc, DlspecError):
        text = str(exc).lower()
        timed_out = "timed out" in text or "timeout" in text
        lost = any(s in text for s in ("connection closed", "connection reset", "broken pipe", "connection refused",
                                       "by peer"))
        if not isinstance(exc, RuntimeError) or not (timed_out or lost or isinstance(exc, dist.DistError)):
            return exc
        if timed_out:
            what = f"another process did not answer within {timeout_s} s"
            hint = ("a process is stuck or far slower than the others; raise training.distributed.timeout_s if "
                    "some steps (evaluation, checkpoints) legitimately take longer")
        else:
            what = "lost contact with another process (it exited or was killed)"
            hint = "that process's own error, if it printed one, says why; `--resume RUN` continues from the last " \
                   "checkpoint"
        exc = DlspecError.single(f"rank {world.rank} of {world.size}: {what}; stopping ({gist(exc)})",
                                 hint=hint)
    import signal
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    return exc


def shutdown(world: World) -> None:
    if world.owns_group and dist.is_initialized():
        dist.destroy_process_group()


def wrap(model: torch.nn.Module, world: World, device: torch.device,
         compile_options: Mapping[str, Any] | None = None) -> torch.nn.Module:
    """The module to train: `model` (placed on its device) compiled and distributed as configured.

    `compile_options` are those of `training.compile` (None: eager). With `regional: true` each block
    instance is compiled in place (instances of one class share one compiled graph, so a 48-layer model
    compiles its block once); otherwise, or when the model has no blocks, the returned module is torch.compile
    of the whole. Under FSDP each block instance is sharded, then the model (which keeps what is outside the
    blocks, and any parameter a block shares with them, such as an embedding tied to the output layer); DDP
    wraps the model. State-dict keys stay the model's own throughout, so checkpoints move between strategies.
    """
    options = dict(compile_options or {})
    regional = _blocks(model) if options.pop("regional", False) else []  # no blocks: the whole is compiled
    for block in regional:
        block.compile(**options)
    net = model
    if world.size > 1 and world.strategy == "fsdp":
        fully_shard = _fully_shard()
        for block in _shardable(model):
            fully_shard(block)
        fully_shard(model)
    elif world.size > 1:
        from torch.nn.parallel import DistributedDataParallel
        net = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    if compile_options is not None and not regional:
        net = torch.compile(net, **options)
    return net


def _blocks(model: torch.nn.Module) -> list[torch.nn.Module]:
    from dlspec.backend.builder import blocks
    return [block for _, block in blocks(model)] if hasattr(model, "dlspec_spec") else []


def _shardable(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The units FSDP shards before the model: its blocks (its layers with parameters when it has no blocks),
    except those sharing a parameter with a module outside them, which the model's own unit keeps."""
    units = _blocks(model) or [layer for child in model.children()
                               for layer in (child if isinstance(child, torch.nn.ModuleList) else [child])
                               if any(True for _ in layer.parameters())]
    holders: dict[int, list[int]] = {}  # parameter -> the modules holding it (two, for a tied weight)
    for module in model.modules():
        for p in module.parameters(recurse=False):
            holders.setdefault(id(p), []).append(id(module))
    inside = [{id(m) for m in unit.modules()} for unit in units]
    return [unit for k, unit in enumerate(units)
            if all(m in inside[k] for p in unit.parameters() for m in holders[id(p)])]


def gradient_sync(model: torch.nn.Module, world: World, sync: bool) -> contextlib.AbstractContextManager:
    """Skip the gradient all-reduce on micro-batches that only accumulate (DDP no_sync; FSDP's switch)."""
    if world.size == 1 or sync:
        return contextlib.nullcontext()
    return model.no_sync() if world.strategy != "fsdp" else _fsdp_no_sync(model)


@contextlib.contextmanager
def _fsdp_no_sync(model: torch.nn.Module):
    model.set_requires_gradient_sync(False)
    try:
        yield
    finally:
        model.set_requires_gradient_sync(True)


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


def full_state(model: torch.nn.Module, optimizer: torch.optim.Optimizer, world: World) -> tuple[dict, dict]:
    """Gathered (unsharded) model and optimizer state on the CPU, keyed by parameter name.

    The same format for one process, DDP and FSDP, so a run can resume under another strategy or world size.
    Under FSDP every rank must call it (it all-gathers).
    """
    if world.strategy != "fsdp":
        return model_state(model, world), _named_optimizer_state(model, optimizer)
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict
    return get_state_dict(model, optimizer, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def model_state(model: torch.nn.Module, world: World) -> dict:
    """full_state's model part alone (best.pt and the final weights need no optimizer)."""
    if world.strategy != "fsdp":  # the parameters are whole here: torch.distributed.checkpoint would only rename them
        return {name: value.cpu() for name, value in model.state_dict().items()}
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def _named_optimizer_state(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> dict:
    """optimizer.state_dict() with parameter names for its positions, as get_state_dict writes it."""
    names = {param: name for name, param in model.named_parameters()}
    order = [names[param] for group in optimizer.param_groups for param in group["params"]]
    saved = optimizer.state_dict()
    return {"state": {order[i]: {k: v.cpu() if isinstance(v, torch.Tensor) else v for k, v in values.items()}
                      for i, values in saved["state"].items()},
            "param_groups": [{**group, "params": [order[i] for i in group["params"]]} for group in saved["param_groups"]]}


def load_full_state(model: torch.nn.Module, optimizer: torch.optim.Optimizer, model_state: dict,
                    optimizer_state: dict) -> None:
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict, set_state_dict
    options = StateDictOptions(full_state_dict=True)
    if optimizer_state.get("state"):
        set_state_dict(model, optimizer, model_state_dict=model_state, optim_state_dict=optimizer_state,
                       options=options)
        return
    # an optimizer that keeps no state (SGD without momentum) has only its groups' settings to restore, and
    # torch's loader cannot place an empty state
    set_model_state_dict(model, model_state, options=options)
    for group, saved in zip(optimizer.param_groups, optimizer_state["param_groups"]):
        group.update({k: v for k, v in saved.items() if k != "params"})


def preflight(spec, nproc: int) -> None:
    """The checks `--nproc` can make before starting any process, so their errors are printed once."""
    from dlspec.train import config
    from dlspec.train import device as devices
    cfg = config.parse(spec.training, spec.locate)
    check_batch(cfg.data.batch_size, nproc, spec.locate)
    if (cfg.strategy or "ddp") == "fsdp":
        _fully_shard(spec.locate)
    _check_backend(cfg.backend, devices.pick(cfg.device, 0, spec.locate).type, spec.locate)


def launch(nproc: int, argv: Sequence[str], spec=None) -> int:
    """`dlspec train ... --nproc N`: the same command under torchrun's launcher, N processes on this machine.

    torchrun's own machinery (torch.distributed.launcher) runs in this process, with a c10d rendezvous on
    127.0.0.1 at a free port, no restarts, and the standard behaviour when a process fails: the others are
    stopped. Rank 0 writes to the terminal; the other ranks, which report nothing while things go well, write to
    log files that are read back only to explain a failure, so every error reaches the user once.
    Returns the exit status (that of the failing rank's dlspec error, when there is one).
    """
    if spec is not None:
        preflight(spec, nproc)
    import logging
    import shutil
    import tempfile
    import uuid

    from torch.distributed.elastic.multiprocessing import DefaultLogsSpecs, Std
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    # torchrun logs every failure with its own traceback; the user gets ours instead.
    logging.getLogger("torch.distributed.elastic").setLevel(logging.CRITICAL)
    logging.getLogger("torch.distributed.launcher").setLevel(logging.CRITICAL)
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # what torchrun sets too: N processes share the cores
    logs = tempfile.mkdtemp(prefix="dlspec-ranks-")
    config = LaunchConfig(
        min_nodes=1, max_nodes=1, nproc_per_node=nproc, run_id=str(uuid.uuid4()), rdzv_backend="c10d",
        rdzv_endpoint="127.0.0.1:0", local_addr="127.0.0.1", max_restarts=0,
        logs_specs=DefaultLogsSpecs(log_dir=logs, redirects={r: Std.ALL for r in range(1, nproc)}, tee=Std.NONE))
    try:
        elastic_launch(config, sys.executable)("-u", "-m", "dlspec", *argv)
        return 0
    except ChildFailedError as exc:
        return _report(exc, logs)
    except SignalException as exc:
        print(f"interrupted ({exc.sigval.name}): stopped all {nproc} processes", file=sys.stderr)
        return 130
    finally:
        shutil.rmtree(logs, ignore_errors=True)


def _report(exc, logs: str) -> int:
    """Explain a failed `--nproc` run once: rank 0's own error is already on the terminal; another rank's error
    is read from its log; a process killed by a signal gets a message here."""
    import signal

    failures = exc.failures
    killed = {rank: f for rank, f in failures.items() if f.exitcode < 0 and f.exitcode != -signal.SIGTERM}
    if 0 in failures and failures[0].exitcode > 0 and not killed:
        return failures[0].exitcode  # rank 0 printed its dlspec error; the others were stopped by torchrun
    if killed:
        rank, f = min(killed.items(), key=lambda item: item[1].timestamp)
        raise DlspecError.single(f"distributed training failed: rank {rank} (pid {f.pid}) was killed by "
                                 f"{f.signal_name()}; torchrun stopped the other processes",
                                 hint="a process killed without a message is usually out of memory; "
                                      "`dlspec train --resume RUN` continues from the last checkpoint")
    rank, f = exc.get_first_failure()
    message = _tail(logs, f.local_rank)
    if message:
        print(message, file=sys.stderr)
        return f.exitcode if f.exitcode > 0 else 1
    raise DlspecError.single(f"distributed training failed: rank {rank} (pid {f.pid}) exited with status "
                             f"{f.exitcode} without a message",
                             hint="rerun with one process to see the error, or with `--debug`")


def _tail(logs: str, local_rank: int, lines: int = 40) -> str:
    """The end of a rank's stderr, from the log folder torchrun's launcher wrote under `logs`."""
    import glob
    for path in glob.glob(os.path.join(logs, "*", "attempt_*", str(local_rank), "stderr.log")):
        with open(path, encoding="utf-8", errors="replace") as handle:
            return "\n".join(handle.read().rstrip().splitlines()[-lines:])
    return ""
