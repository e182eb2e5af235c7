"""Everything a run needs before its first step, checked before anything is written.

`prepare` loads and checks the data against the model, opens the run directory (a new one, or the run to
resume and what the resume changes), builds, places and wraps the model, the optimizer and the schedule's
plan, and restores a checkpoint. Nothing is written to the run directory until `Setup.write_record`, which
the Trainer calls once every check has passed: a refused resume leaves the run exactly as it was.
"""
from __future__ import annotations

import math
import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dlspec.core.errors import DlspecError, gist
from dlspec.train import augment, checkpoint, config, distributed, losses, metrics, optim, resume, rundir, transfer
from dlspec.train import data as D
from dlspec.train import device as devices
from dlspec.train.schedules import Plan


@dataclass(frozen=True)
class Throughput:
    """Examples/s, and for a model of tokens tokens/s, and model FLOPs utilisation where the peak is known."""
    flops_per_example: float  # one training step's worth: forward + backward, about 3x the forward's 2 x MACs
    tokens_per_example: int | None
    peak_flops: float | None  # of all the processes together

    def rates(self, examples_per_s: float) -> dict[str, float]:
        out = {"examples_per_s": examples_per_s}
        if self.tokens_per_example:
            out["tokens_per_s"] = examples_per_s * self.tokens_per_example
        if self.peak_flops:
            out["mfu"] = examples_per_s * self.flops_per_example / self.peak_flops
        return out


@dataclass
class Setup:
    spec: Any
    cfg: config.TrainConfig
    world: distributed.World
    device: torch.device
    base_dir: Path
    run: rundir.RunDir
    data: D.Data
    terms: tuple[losses.LossTerm, ...]
    eval_term: losses.LossTerm
    augmentations: tuple[augment.Augmentation, ...]
    model: torch.nn.Module
    net: torch.nn.Module  # the model as trained: wrapped for DDP, compiled
    optimizer: torch.optim.Optimizer
    params: list[torch.nn.Parameter]
    scaler: Any
    threads: tuple[int, str]  # how many, and why
    batches_per_epoch: int
    steps_per_epoch: int
    total_steps: int
    plan: Plan
    throughput: Throughput
    saved: dict | None = None  # the checkpoint a resume continues from
    changes: list[dict] | None = None  # what the resume changes (resume.py)
    model_changes: list[str] | None = None  # --force: how the model differs from the checkpoint's
    schedule_note: str | None = None
    init_report: Any = None  # dlspec.weights.load.Report of init_from

    @property
    def n_params(self) -> int:
        return sum(p.numel() for p in self.model.parameters())

    @property
    def provenance(self) -> dict:
        return {"spec_hash": self.spec.spec_hash, "model_document": checkpoint.model_document(self.spec.document),
                "spec_document": self.spec.document, "versions": checkpoint.versions(), "processes": self.world.size}

    def write_record(self) -> None:
        """Rank 0: the spec (with what resumes changed, from which step), run.json, and the vocabulary or
        tokenizer; a resume first cuts metrics.jsonl back to its checkpoint."""
        record = self.run.record()
        history = record.get("changes", []) + [{**c, "step": self.saved["step"]} for c in self.changes or ()]
        if self.saved is not None:
            rundir.cut_metrics(self.run, self.saved["metrics_bytes"])
        self.run.write_spec(self.spec.document, history)
        data = self.data
        # what inference must apply: how raw inputs become fields, their normalisation, the names of the classes
        self.run.write_record({"spec": str(Path(self.spec.path).resolve()), "base_dir": str(self.base_dir.resolve()),
                               "processes": self.world.size, "strategy": self.world.strategy,
                               "inputs": dict(zip((t.name for t in self.spec.inputs), data.input_fields)),
                               "data": data.recipe, "normalize": data.stats, "classes": data.classes,
                               "changes": history})
        if data.vocab is not None:
            self.run.write_vocab(data.vocab, data.train.block)
        if getattr(data.train, "tokenizer", None):
            self.run.write_tokenizer(data.train.tokenizer, data.train.block)


def prepare(spec: Any, cfg: config.TrainConfig, world: distributed.World, device: torch.device, base_dir: Path,
            resume_from: Path | None, out: Path | None, force: bool) -> Setup:
    locate = spec.locate
    distributed.check_batch(cfg.data.batch_size, world.size, locate)
    data, terms, eval_term, augmentations = _data(spec, cfg, base_dir)
    throughput = _throughput(spec, cfg, data, device, world)
    threads = devices.threads(cfg.threads, device, throughput.flops_per_example * cfg.data.batch_size / world.size,
                              _local_processes(world))
    saved, run, model_changes = None, None, None
    if resume_from is not None:
        run = rundir.existing(resume_from)
        saved = rundir.load_last(run)
        model_changes = rundir.check_same_model(saved, spec, force)
    batches_per_epoch = len(D.train_batches(data.train, cfg.data, cfg.seed, 0, world.rank, world.size))
    if batches_per_epoch == 0:
        raise DlspecError.single(f"the training split has {len(data.train)} examples, fewer than one batch of "
                                 f"{cfg.data.batch_size} with drop_last", locate(("training", "data", "batch_size")))
    steps_per_epoch = math.ceil(batches_per_epoch / cfg.accumulate)
    total_steps = cfg.max_steps or cfg.epochs * steps_per_epoch
    changes = resume.check(saved["spec_document"], spec.document, saved["step"], total_steps, locate) if saved else None
    model, net, optimizer, params, init_report = _model(spec, cfg, world, device, base_dir, resumed=saved is not None)
    if run is None:
        run = distributed.broadcast(rundir.new(out, spec.name) if world.main else None, world)
    setup = Setup(spec, cfg, world, device, base_dir, run, data, terms, eval_term, augmentations, model, net, optimizer,
                  params, devices.scaler(device, cfg.precision), threads, batches_per_epoch, steps_per_epoch,
                  total_steps, Plan.new(total_steps), throughput, saved, changes, model_changes or None,
                  init_report=init_report)
    if saved is not None:
        _restore(setup)
    else:
        _seed(cfg.seed + world.rank)  # per-rank dropout streams; the model itself was built from `seed` alone
    return setup


def check_data(spec, base_dir: Path | None = None) -> D.Data:
    """Everything `dlspec train` checks of the data before it builds the model (files, columns, fields against
    the declared inputs and outputs, augmentations, metrics); `dlspec validate` runs it. Raises DlspecError."""
    cfg = config.parse(spec.training, spec.locate)
    return _data(spec, cfg, base_dir or Path(spec.path).parent)[0]


def _data(spec, cfg: config.TrainConfig, base_dir: Path):
    """The data, loaded and checked against the spec's inputs and outputs before anything is built."""
    data = D.prepare(cfg.data, spec, cfg.seed, base_dir)
    fields = {n: data.train.example_shape(n) for n in data.train.names}
    terms = losses.build(cfg.losses, spec, data.train, data.default_target)
    if data.val is not None:
        losses.build(cfg.losses, spec, data.val, data.default_target, split="validation")  # its labels fit too
    first = terms[0]
    labels = (first.target, losses.classes(spec.outputs[first.output])) if first.classes else None
    augmentations = augment.build(cfg.data.augment, fields, data.input_fields[0], spec.locate, labels)
    eval_term = _eval_term(cfg, terms, data, spec)
    metrics.check(cfg.metrics, eval_term, losses.classes(spec.outputs[eval_term.output]), spec.locate)
    return data, terms, eval_term, augmentations


def _model(spec, cfg: config.TrainConfig, world, device, base_dir: Path, resumed: bool):
    """Built, initialised from another run if asked, frozen by pattern, placed, wrapped, compiled."""
    import dlspec
    model = dlspec.build(spec, seed=cfg.seed)
    init_report = transfer.init_from(model, cfg.init_from, base_dir, spec.locate) if cfg.init_from and not resumed else None
    # with freeze_epochs the optimizer holds what is frozen for now, and the Trainer thaws it later
    later = [(n, p) for n, p in model.named_parameters() if p.requires_grad] if cfg.freeze_epochs else None
    if later is not None and world.size > 1:
        raise DlspecError.single("freeze_epochs works in one process: DDP and FSDP fix what trains when they wrap "
                                 "the model", spec.locate(("training", "freeze_epochs")),
                                 hint="train the frozen phase and the rest as two runs (init_from the first)")
    transfer.freeze(model, cfg.freeze, cfg.unfreeze, spec.locate)
    model.to(device)
    net = distributed.wrap(model, world, device, cfg.compile)
    trainable = later or [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    optimizer = optim.build(trainable, cfg.optimizer, device, spec.locate)
    return model, net, optimizer, [p for _, p in trainable], init_report


def _restore(s: Setup) -> None:
    """Continue from the checkpoint: weights, optimizer, scaler, random streams; the plan of the schedule
    over the run's (possibly new) length; the optimizer's lr and decay as the spec now says."""
    saved = s.saved
    sources = [(g["spec_group"], g["decays"]) for g in s.optimizer.param_groups]  # loading replaces the groups
    try:
        distributed.load_full_state(s.model, s.optimizer, saved["model"], saved["optimizer"])
    except (RuntimeError, KeyError, ValueError) as exc:
        raise DlspecError.single(f"cannot load {s.run.last} into this model: {gist(exc)}",
                                 hint="--force only works when the parameters still fit") from None
    for group, (index, decays) in zip(s.optimizer.param_groups, sources):
        group["spec_group"], group["decays"] = index, decays
    optim.apply_hyper(s.optimizer, s.cfg.optimizer)
    if saved.get("scaler") and s.scaler.is_enabled():
        s.scaler.load_state_dict(saved["scaler"])
    step = saved["step"]
    old = Plan.from_data(saved["schedule"]["plan"]) if "plan" in saved["schedule"] else Plan.new(s.total_steps)
    s.plan = old.resized(step, s.total_steps)
    if s.plan != old:
        s.schedule_note = (f"steps {step}..{s.total_steps} follow the schedule from {old.time(step):.6g} to its end "
                           f"{s.plan.length:.6g}" if old.time(step) < old.length else
                           f"the schedule had finished: steps {step}..{s.total_steps} keep its final lr")
    rngs = saved["rng"]
    if len(rngs) == s.world.size:
        checkpoint.set_rng_state(rngs[s.world.rank])
    else:  # another world size: the data position carries over, the dropout stream cannot
        _seed(s.cfg.seed + s.world.rank + step)


def _throughput(spec, cfg: config.TrainConfig, data: D.Data, device: torch.device, world) -> Throughput:
    from dlspec.backend.summary import macs_per_example
    sizes = D.example_sizes(spec, data.train, data.input_fields)
    tokens = next((math.prod(data.train.example_shape(f)) for f, t in zip(data.input_fields, spec.inputs)
                   if not getattr(torch, t.dtype).is_floating_point and t.dtype != "bool"), None)
    peak = devices.peak_flops(device, cfg.precision, cfg.peak_tflops)
    return Throughput(6.0 * macs_per_example(spec, sizes), tokens, peak * world.size if peak else None)


def _eval_term(cfg: config.TrainConfig, terms: tuple[losses.LossTerm, ...], data: D.Data, spec) -> losses.LossTerm:
    """The (output, target) pair metrics compare: the first loss term's unless evaluation names others."""
    first = terms[0]
    if cfg.eval_output is None and cfg.eval_target is None:
        return first
    outputs = [o.name for o in spec.outputs]
    output = cfg.eval_output or first.output_name
    if output not in outputs:
        raise DlspecError.single(f"evaluation.output '{output}' is not an output of the model",
                                 spec.locate(("training", "evaluation", "output")), expected=", ".join(outputs))
    target = cfg.eval_target or first.target
    if target not in data.train.names:
        raise DlspecError.single(f"evaluation.target '{target}' is not a data field",
                                 spec.locate(("training", "evaluation", "target")), expected=", ".join(data.train.names))
    match = next((t for t in terms if t.output_name == output), first)
    return losses.LossTerm(match.kind, outputs.index(output), output, target, 1.0, match.fn, match.classes,
                           match.ignore_index)


def _local_processes(world: distributed.World) -> int:
    """Processes on this machine (torchrun says; else all of them), which share its cores."""
    return int(os.environ.get("LOCAL_WORLD_SIZE", world.size))


def _seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
