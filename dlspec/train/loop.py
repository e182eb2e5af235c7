"""`dlspec train`: a set-up that checks everything first, then one straight loop in commented phases.

Exact resume rests on three rules. (1) Everything random is either restored
from the checkpoint (the global RNGs, which drive dropout) or a pure function
of (seed, epoch, batch) (data order, augmentation). (2) Checkpoints are taken
only between optimizer steps and record the position in the epoch as a batch
index. (3) Nothing draws from the global RNG behind our back: the DataLoader
gets its own generator and evaluation draws nothing.
"""
from __future__ import annotations

import math
import os
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dlspec.core.errors import DlspecError
from dlspec.train import augment, checkpoint, config, distributed, losses, metrics, optim, progress, rundir, transfer
from dlspec.train import data as D
from dlspec.train import device as devices


@dataclass
class Tracker:
    """The best metric so far (for best.pt) and the early-stopping count; saved in checkpoints."""
    best: float | None = None
    best_step: int | None = None
    stop_best: float | None = None
    stop_bad: int = 0


def train(spec: Any, out: Path | None = None, *, resume: Path | None = None, force: bool = False,
          progress_mode: str | None = None, base_dir: Path | None = None) -> dict[str, Any]:
    """Train `spec` (a dlspec.Spec) into a run directory and return the summary; raises DlspecError.

    `base_dir` is where relative data paths start (default: the spec file's folder).
    """
    cfg = config.parse(spec.training, spec.locate)
    devices.make_deterministic(cfg.deterministic)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = devices.pick(cfg.device, int(os.environ.get("LOCAL_RANK", "0")), spec.locate)
    world = distributed.init(cfg.strategy, cfg.backend, cfg.timeout_s, device.type, spec.locate)
    try:
        return _train(spec, cfg, world, device, out, resume, force, progress_mode or cfg.progress,
                      base_dir or Path(spec.path).parent)
    except Exception as exc:  # a DlspecError, or a collective that failed because another process died or stalled
        explained = distributed.failure(exc, world, cfg.timeout_s)
        if explained is exc:
            raise
        raise explained from None
    finally:
        distributed.shutdown(world)


def _train(spec, cfg: config.TrainConfig, world: distributed.World, device: torch.device, out: Path | None,
           resume: Path | None, force: bool, progress_mode: str, base_dir: Path) -> dict[str, Any]:
    locate = spec.locate
    # ---- data: loaded and checked against the spec's inputs and outputs before anything is built
    distributed.check_batch(cfg.data.batch_size, world.size, locate)
    data = D.prepare(cfg.data, spec, cfg.seed, base_dir)
    main_field = data.input_fields[0]
    augment.check(cfg.data.augment, {n: data.train.example_shape(n) for n in data.train.names}, main_field, locate)
    terms = losses.build(cfg.losses, spec, data.train, data.default_target)
    if data.val is not None:
        losses.build(cfg.losses, spec, data.val, data.default_target, split="validation")  # its labels fit too
    eval_term = _eval_term(cfg, terms, data, spec)
    metrics.check(cfg.metrics, eval_term, losses.classes(spec.outputs[eval_term.output]), locate)

    # ---- run directory: rank 0 creates it; a resume reads the checkpoint on every rank
    state = None
    if resume is not None:
        run = rundir.existing(resume)
        state = rundir.load_last(run)
        changes = rundir.check_same_model(state, spec, force)
    else:
        run = distributed.broadcast(rundir.new(out, spec.name) if world.main else None, world)
        changes = []

    # ---- model: built, initialised from another run if asked, frozen by pattern, placed, wrapped, compiled
    import dlspec
    model = dlspec.build(spec, seed=cfg.seed)
    init_report = transfer.init_from(model, cfg.init_from, base_dir, locate) if cfg.init_from and not state else None
    transfer.freeze(model, cfg.freeze, cfg.unfreeze, locate)
    model.to(device)
    net = distributed.wrap(model, world, device, cfg.compile)
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    optimizer = optim.build_optimizer(trainable, cfg, device, locate)
    params = [p for _, p in trainable]

    batches_per_epoch = len(D.train_batches(len(data.train), cfg.data, cfg.seed, 0, world.rank, world.size))
    if batches_per_epoch == 0:
        raise DlspecError.single(f"the training split has {len(data.train)} examples, fewer than one batch of "
                                 f"{cfg.data.batch_size} with drop_last", locate(("training", "data", "batch_size")))
    steps_per_epoch = math.ceil(batches_per_epoch / cfg.accumulate)
    total_steps = cfg.max_steps or cfg.epochs * steps_per_epoch
    schedule = optim.build_schedule(cfg.scheduler, optimizer, total_steps, steps_per_epoch)
    scaler = devices.scaler(device, cfg.precision)
    tracker, step, epoch, start_batch = Tracker(), 0, 0, 0
    if state is not None:
        try:
            distributed.load_full_state(model, optimizer, state["model"], state["optimizer"])
        except (RuntimeError, KeyError, ValueError) as exc:
            raise DlspecError.single(f"cannot load {run.last} into this model: {str(exc).splitlines()[0]}",
                                     hint="--force only works when the parameters still fit") from None
        schedule.load_state_dict(state["schedule"])
        if state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        tracker = Tracker(**state["tracker"])
        step, (epoch, start_batch) = state["step"], state["position"]
        rngs = state["rng"]
        if len(rngs) == world.size:
            checkpoint.set_rng_state(rngs[world.rank])
        else:  # another world size: the data position carries over, the dropout stream cannot
            _seed(cfg.seed + world.rank + step)

    else:
        _seed(cfg.seed + world.rank)  # per-rank dropout streams; the model itself was built from `seed` alone

    # ---- reporting (rank 0 only)
    if world.main:
        if state is not None:
            rundir.cut_metrics(run, state["metrics_bytes"])
        run.write_spec(spec.document)
        run.write_json("run.json", {"spec": str(Path(spec.path).resolve()), "base_dir": str(base_dir.resolve()),
                                    "processes": world.size, "strategy": world.strategy,
                                    "normalize": data.stats})  # what inference must apply to inputs
        if data.vocab is not None:
            run.write_json("vocab.json", {"chars": "".join(data.vocab), "block": data.train.block})
    reporter = progress.Reporter(run.metrics if world.main else None, total_steps, step, progress_mode,
                                 run.path / "tensorboard" if cfg.tensorboard else None, locate)
    n_params = sum(p.numel() for p in model.parameters())
    n_val = len(data.val) if data.val is not None else 0
    reporter.event({"event": "resume" if state else "start", "step": step, "spec": spec.name,
                    "spec_hash": spec.spec_hash, "device": str(device), "processes": world.size,
                    "strategy": world.strategy, "parameters": n_params,
                    "trainable_parameters": sum(p.numel() for p in params), "train_examples": len(data.train),
                    "val_examples": n_val, "total_steps": total_steps, "steps_per_epoch": steps_per_epoch,
                    **({"model_changes": changes} if changes else {})})
    reporter.say(f"{'resuming' if state else 'training'} {spec.name}: {n_params:,} parameters on {device}"
                 f"{f' x {world.size} processes ({world.strategy})' if world.size > 1 else ''}, "
                 f"{len(data.train)} train / {n_val} validation examples, {total_steps} steps -> {run.path}")
    if init_report is not None:
        reporter.event({"event": "init_from", **init_report})
        reporter.say(f"init_from {init_report['source'][0]}: loaded {len(init_report['loaded'])} tensors; "
                     f"shape mismatch {init_report['shape_mismatch'] or 'none'}; missing {init_report['missing'] or 'none'}; "
                     f"unexpected {init_report['unexpected'] or 'none'}; skipped {len(init_report['skipped'])}")

    def save(with_step_file: bool) -> None:
        """Every rank takes part (FSDP gathers); rank 0 writes; all ranks wait until it is on disk."""
        model_state, optimizer_state = distributed.full_state(model, optimizer)
        rngs = distributed.gather(checkpoint.rng_state(), world)
        if world.main:
            reporter.event({"event": "checkpoint", "step": step, "epoch": epoch, "batch": position[1]})
            blob = {"format": checkpoint.FORMAT, "kind": "checkpoint", "model": model_state,
                    "optimizer": optimizer_state, "schedule": schedule.state_dict(),
                    "scaler": scaler.state_dict() if scaler.is_enabled() else None, "rng": rngs,
                    "position": list(position), "step": step, "tracker": asdict(tracker), **provenance,
                    "metrics_bytes": reporter.offset()}
            checkpoint.save_atomic(blob, run.last)
            if with_step_file:
                checkpoint.save_atomic(blob, run.step_file(step))
                _prune(run, cfg.checkpoint_keep)
        distributed.barrier(world)

    def save_weights(path: Path, extra: dict) -> None:
        model_state, _ = distributed.full_state(model, optimizer)
        if world.main:
            checkpoint.save_atomic({"format": checkpoint.FORMAT, "kind": "weights", "model": model_state,
                                    "step": step, **provenance, **extra}, path)
        distributed.barrier(world)

    def validate() -> dict[str, float]:
        """Evaluate, log, feed the plateau schedule, keep best.pt, and count towards early stopping."""
        nonlocal stop_reason
        values = evaluate(net, data.val, data.input_fields, cfg, terms, eval_term, device, world)
        reporter.event({"event": "eval", "step": step, "epoch": epoch + (position[1] > 0), **values})
        reporter.say(f"eval step {step}: " + "  ".join(f"{k} {v:.4g}" for k, v in values.items()))
        schedule.after_eval(values)
        if cfg.best_metric in values and _improved(values[cfg.best_metric], tracker.best, cfg.best_mode, 0.0):
            tracker.best, tracker.best_step = values[cfg.best_metric], step
            save_weights(run.best, {"metric": cfg.best_metric, "value": tracker.best})
        if cfg.early_stopping and cfg.early_stopping["metric"] in values:
            es = cfg.early_stopping
            value = values[es["metric"]]
            if _improved(value, tracker.stop_best, es.get("mode") or config.metric_mode(es["metric"]),
                         es.get("min_delta", 0.0)):
                tracker.stop_best, tracker.stop_bad = value, 0
            else:
                tracker.stop_bad += 1
                if tracker.stop_bad >= es.get("patience", 5):
                    stop_reason = f"early stopping ({es['metric']} did not improve for {tracker.stop_bad} evaluations)"
        return values

    provenance = {"spec_hash": spec.spec_hash, "model_document": checkpoint.model_document(spec.document),
                  "spec_document": spec.document, "versions": checkpoint.versions(), "processes": world.size}
    position = (epoch, start_batch)
    stop_reason: str | None = None
    val: dict[str, float] = {}
    evaluated_at, saved_at = -1, (step if state is not None else -1)  # a resume starts at a good checkpoint
    # nan_guard: skip also undoes what the bad forward did to buffers (batch-norm running statistics)
    guarded_buffers, saved_buffers = (list(model.buffers()) if cfg.nan_guard == "skip" else []), []
    first_step, started = step, time.perf_counter()
    window_loss, window_steps, window_examples, window_start = 0.0, 0, 0, started
    train_loss = float("nan")
    net.train()
    while step < total_steps and stop_reason is None:
        batches = D.train_batches(len(data.train), cfg.data, cfg.seed, epoch, world.rank, world.size)
        group_loss = torch.zeros((), device=device)
        for micro, batch in enumerate(D.loader(data.train, batches[start_batch:], cfg.data, cfg.seed + epoch),
                                      start=start_batch):
            # -- the micro-batch's place in its accumulation group
            group_start = micro - micro % cfg.accumulate
            group_size = min(group_start + cfg.accumulate, len(batches)) - group_start
            last_micro = micro + 1 == group_start + group_size
            batch = {k: v.to(device, non_blocking=cfg.data.pin_memory) for k, v in batch.items()}
            if guarded_buffers and micro == group_start:
                saved_buffers = [b.detach().clone() for b in guarded_buffers]
            if cfg.data.augment:
                generator = torch.Generator().manual_seed(_stream(cfg.seed, epoch, micro, world.rank))
                batch = augment.apply(batch, cfg.data.augment, main_field, generator)

            # -- forward and backward; gradients are all-reduced on the group's last micro-batch only
            with distributed.gradient_sync(net, world, sync=last_micro):
                with devices.autocast(device, cfg.precision):
                    outputs = _as_tuple(net(*[batch[f] for f in data.input_fields]))
                    loss = losses.total(terms, outputs, batch)
                scaler.scale(loss / group_size).backward()
            group_loss += loss.detach().float()
            window_examples += len(batch[main_field]) * world.size
            if not last_micro:
                continue

            # -- unscale, measure and clip the gradient, guard against NaN/Inf, step
            scaler.unscale_(optimizer)
            grad_norm = torch.nn.utils.clip_grad_norm_(params, cfg.clip_norm or float("inf"))
            grad_norm = grad_norm.full_tensor() if hasattr(grad_norm, "full_tensor") else grad_norm  # FSDP: DTensor
            if cfg.clip_value is not None:
                torch.nn.utils.clip_grad_value_(params, cfg.clip_value)
            mean_loss = group_loss / group_size
            group_loss = torch.zeros((), device=device)
            skip = False
            if cfg.nan_guard != "off":
                # The fp16 scaler handles Inf gradients itself (it skips the step and lowers the scale).
                bad = ~torch.isfinite(mean_loss) | (~torch.isfinite(grad_norm) & (not scaler.is_enabled()))
                if distributed.all_reduce_sum(bad.float(), world).item() > 0:
                    where = f"step {step + 1} (epoch {epoch + 1}, batch {micro + 1})"
                    if cfg.nan_guard == "stop":
                        kept = f"the last good checkpoint is {run.last} (step {saved_at})" if saved_at >= 0 \
                            else "no checkpoint had been written yet"
                        raise DlspecError.single(f"the loss or gradient became NaN/Inf at {where}; training stopped, "
                                                 f"{kept}", locate(("training", "optimizer", "lr")),
                                                 hint="lower the lr, clip gradients (grad_clip: {norm: 1.0}), "
                                                      "or set nan_guard: skip")
                    skip = True
                    for buffer, saved in zip(guarded_buffers, saved_buffers):
                        buffer.copy_(saved)
                    reporter.event({"event": "skipped_step", "step": step + 1, "epoch": epoch + 1,
                                    "batch": micro + 1, "reason": "NaN/Inf loss or gradient"})
                    reporter.say(f"skipped {where}: NaN/Inf loss or gradient")
            schedule.begin_step(step)
            step_lr = optimizer.param_groups[0]["lr"]  # what this step uses (warm-up included), for the log
            if not skip:
                scaler.step(optimizer)
            scaler.update()
            schedule.end_step(step)
            optimizer.zero_grad(set_to_none=True)
            step += 1
            position = (epoch, micro + 1)

            # -- log (losses averaged over ranks), evaluate, checkpoint
            if not skip:
                window_loss += mean_loss.item()
                window_steps += 1
            if step % cfg.log_every == 0 or step == total_steps:
                summed = distributed.all_reduce_sum(torch.tensor([window_loss, window_steps], dtype=torch.float64,
                                                                 device=device), world).tolist()
                train_loss = summed[0] / max(summed[1], 1)
                now = time.perf_counter()
                rate = window_examples / max(now - window_start, 1e-9)
                record = {"loss": train_loss, "lr": step_lr, "grad_norm": grad_norm.item(),
                          "examples_per_s": rate}
                reporter.event({"event": "train", "step": step, "epoch": epoch + 1, **record})
                eta = (now - started) / max(step - first_step, 1) * (total_steps - step)
                reporter.progress(step, record, eta)
                window_loss, window_steps, window_examples, window_start = 0.0, 0, 0, now
            if data.val is not None and cfg.eval_every_steps and step % cfg.eval_every_steps == 0:
                val, evaluated_at = validate(), step
            if cfg.checkpoint_every and step % cfg.checkpoint_every == 0:
                save(with_step_file=True)
                saved_at = step
            if step >= total_steps or stop_reason:
                break
        else:
            # -- end of epoch: per-epoch schedule, evaluation, checkpoint
            schedule.end_epoch()
            epoch, start_batch = epoch + 1, 0
            position = (epoch, 0)
            if data.val is not None and not cfg.eval_every_steps:
                val, evaluated_at = validate(), step
            save(with_step_file=False)
            saved_at = step

    # ---- the end: a last evaluation and checkpoint if the loop stopped between them, final weights, summary
    elapsed = time.perf_counter() - started
    if data.val is not None and evaluated_at != step:
        val = validate()
    if saved_at != step:
        save(with_step_file=False)
    save_weights(run.weights, {})
    summary = {"spec": spec.name, "run": str(run.path), "device": str(device), "processes": world.size,
               "parameters": n_params, "steps": step, "epochs": round(step / steps_per_epoch, 2),
               "stopped_by": stop_reason or ("max_steps" if cfg.max_steps else "epochs"),
               "train_seconds": round(elapsed, 2),
               "examples_per_s": round((step - first_step) * cfg.data.batch_size * cfg.accumulate / max(elapsed, 1e-9), 1),
               "train_loss": train_loss, **val}
    if tracker.best is not None:
        summary.update({"best_metric": cfg.best_metric, "best_value": tracker.best, "best_step": tracker.best_step})
    reporter.event({"event": "end", "step": step, **summary})
    if world.main:
        run.write_json("summary.json", summary)
    reporter.say(progress.summary_table(summary), always=True)
    reporter.close()
    distributed.barrier(world)
    return summary


def evaluate(net, table, input_fields: tuple[str, ...], cfg: config.TrainConfig, terms, eval_term,
             device: torch.device, world: distributed.World) -> dict[str, float]:
    """Validation metrics over every example once, summed across ranks."""
    net.eval()
    meter = metrics.Meter(cfg.metrics, eval_term, device)
    batches, masks = D.eval_batches(len(table), cfg.data.eval_batch_size, world.rank, world.size)
    with torch.no_grad():
        for batch, mask in zip(D.loader(table, batches, cfg.data, cfg.seed), masks):
            batch = {k: v.to(device) for k, v in batch.items()}
            with devices.autocast(device, cfg.precision):
                outputs = _as_tuple(net(*[batch[f] for f in input_fields]))
            outputs = tuple(o.float() if o.is_floating_point() else o for o in outputs)  # metrics in fp32
            keep = torch.tensor(mask, device=device)
            n = int(keep.sum())
            if n == 0:
                continue  # padding that keeps the ranks in step
            kept_out = tuple(o[keep] for o in outputs)
            kept = {k: v[keep] for k, v in batch.items()}
            loss = losses.total(terms, kept_out, kept)
            meter.update(loss.float(), kept_out[eval_term.output], kept[eval_term.target], n)
    distributed.all_reduce_sum(meter.sums, world)
    net.train()
    return meter.result()


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
    return losses.LossTerm(match.kind, outputs.index(output), output, target, 1.0, match.fn, match.ignore_index)


def _as_tuple(out: Any) -> tuple[torch.Tensor, ...]:
    return tuple(out) if isinstance(out, (tuple, list)) else (out,)


def _seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _stream(seed: int, epoch: int, batch: int, rank: int) -> int:
    """A seed for one batch's augmentation: a pure function of where the batch is, not of what ran before."""
    return (((seed * 1_000_003 + epoch) * 1_000_003 + batch) * 1_009 + rank) % 2**63


def _improved(value: float, best: float | None, mode: str, min_delta: float) -> bool:
    if best is None or math.isnan(best):
        return not math.isnan(value)
    return value < best - min_delta if mode == "min" else value > best + min_delta


def _prune(run: rundir.RunDir, keep: int | None) -> None:
    """Keep the newest `keep` step-N.pt files."""
    if keep is None:
        return
    files = sorted(run.checkpoints.glob("step-*.pt"))
    for old in files[:max(len(files) - keep, 0)]:
        old.unlink()
