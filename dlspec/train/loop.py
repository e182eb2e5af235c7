"""`dlspec train`: the Trainer. A set-up that checks everything first, then short phases over one State.

    fit():  for each epoch:  for each micro-batch: forward + backward          (_micro)
                             at the end of an accumulation group: optimizer step (_step)
                             log, evaluate, checkpoint when due                   (_after_step)
            at each epoch's end: evaluate, checkpoint                             (_end_epoch)
            the end: last evaluation and checkpoint, final weights, summary        (_finish)

Exact resume rests on three rules. (1) Everything random is either restored from the checkpoint (the
global RNGs, which drive dropout) or a pure function of (seed, epoch, batch) (data order, augmentation).
(2) Checkpoints are taken only between optimizer steps and record the position in the epoch as a batch
index. (3) Nothing draws from the global RNG behind our back: the loader gets its own generator and
evaluation draws nothing.

The host never waits for the device inside a step: each step's loss and gradient norm stay on the device
and are read at log, evaluation and checkpoint steps, where the NaN/Inf guard looks at them and names the
exact step at which it fired. A step does nothing a hand-written loop would not, beside that norm (ops on
small tensors cost as much as the arithmetic: benchmarks/bench_train.py measures the loop against one).
"""
from __future__ import annotations

import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from dlspec.core.errors import DlspecError
from dlspec.train import augment, checkpoint, config, distributed, losses, metrics, progress
from dlspec.train import data as D
from dlspec.train import device as devices
from dlspec.train.curves import Refresher
from dlspec.train.saver import Saver
from dlspec.train.schedules import Schedule
from dlspec.train.setup import Setup, prepare


@dataclass
class State:
    """Where the run is and what it has learned about itself: every checkpoint saves it."""
    step: int = 0  # optimizer steps done
    epoch: int = 0
    batch: int = 0  # the next batch of `epoch`
    best: float | None = None  # best.pt's metric value, and its step
    best_step: int | None = None
    stop_best: float | None = None  # early stopping: the best value and the evaluations since
    stop_bad: int = 0


@dataclass
class Window:
    """What the steps since the last log did, kept on the device until the log reads it."""
    rows: torch.Tensor  # [log_every, 2]: each step's mean loss and gradient norm (before clipping)
    first: int  # the step before the window's first
    lr: float = 0.0  # what the last step used
    steps: int = 0
    fired: int = 0  # steps the guard has fired at (read so far)
    read: int = 0  # steps already read (and reported)
    loss: float = 0.0  # the sum of the good steps' losses read so far
    grad_norm: float = math.nan  # the last step's read so far
    examples: int = 0
    start: float = field(default_factory=time.perf_counter)


def train(spec: Any, out: Path | None = None, *, resume: Path | None = None, force: bool = False,
          progress_mode: str | None = None, base_dir: Path | None = None) -> dict[str, Any]:
    """Train `spec` (a dlspec.Spec) into a run directory and return the summary; raises DlspecError.

    `base_dir` is where relative data paths start (default: the spec file's folder).
    """
    cfg = config.parse(spec.training, spec.locate)
    devices.make_deterministic(cfg.deterministic)
    device = devices.pick(cfg.device, int(os.environ.get("LOCAL_RANK", "0")), spec.locate)
    world = distributed.init(cfg.strategy, cfg.backend, cfg.timeout_s, device.type, spec.locate)
    setup = trainer = None
    try:
        setup = prepare(spec, cfg, world, device, base_dir or Path(spec.path).parent, resume, out, force)
        trainer = Trainer(setup, progress_mode or cfg.progress)
        return trainer.fit()
    except BaseException as exc:  # a DlspecError, or a collective that failed because another process died or stalled
        if setup is not None and setup.saved is None and world.main and (trainer is None or trainer.state.step == 0):
            setup.run.discard()  # a new run that failed before its first step: nothing in it to keep
        if not isinstance(exc, Exception):
            raise
        explained = distributed.failure(exc, world, cfg.timeout_s)
        if explained is exc:
            raise
        raise explained from None
    finally:
        distributed.shutdown(world)


class Trainer:
    def __init__(self, setup: Setup, progress_mode: str):
        s = self.s = setup
        self.cfg, self.world, self.device, self.run = s.cfg, s.world, s.device, s.run
        self.state = State(**s.saved["state"]) if s.saved else State()
        self.schedule = Schedule(self.cfg.scheduler, s.optimizer, s.plan, s.steps_per_epoch, self.state.step,
                                 s.saved["schedule"].get("scales") if s.saved else None)
        if s.saved:
            self.schedule.load_plateau(s.saved["schedule"])
        self.reporter = progress.Reporter(self.run.metrics if self.world.main else None, s.total_steps, self.state.step,
                                          progress_mode, self.run.tensorboard if self.cfg.tensorboard else None,
                                          s.spec.locate)
        self.saver = Saver(self.reporter)
        self.curves = Refresher(self.run) if self.cfg.curves and self.world.main else None
        self.first_step, self.started = self.state.step, time.perf_counter()
        self.saved_at = self.state.step if s.saved else -1  # a resume starts at a good checkpoint
        self.evaluated_at, self.stop_reason, self.val, self.train_loss = -1, None, {}, float("nan")
        self.window = self._new_window()
        self.guarded = list(s.model.buffers()) if self.cfg.nan_guard == "skip" else []  # undone on a skipped step
        examples = (augment.per_example(s.augmentations, normalized=False), augment.per_example(s.augmentations, True))
        self.loader = D.Loader(D.Pipeline(s.data.train, s.data.stats, self.cfg.seed, *examples), self.cfg.data)
        self.val_loader = (D.Loader(D.Pipeline(s.data.val, s.data.stats, self.cfg.seed), self.cfg.data)
                           if s.data.val is not None else None)
        self.autocast = devices.autocast(self.device, self.cfg.precision)  # one object, entered at every forward
        self.buffers: list[torch.Tensor] = []
        self.group_loss: torch.Tensor | None = None  # the mean loss of the accumulation group so far

    # ---- the loop -------------------------------------------------------------------------------------------

    def fit(self) -> dict[str, Any]:
        self._announce()
        self.s.net.train()
        try:
            while self.state.step < self.s.total_steps and self.stop_reason is None:
                self._epoch()
            return self._finish()
        finally:
            self.saver.pool.shutdown()  # a run that fails still finishes the checkpoint it was writing
            if self.curves is not None:
                self.curves.pool.shutdown()

    def _epoch(self) -> None:
        st, cfg = self.state, self.cfg
        self._thaw()
        batches = D.train_batches(self.s.data.train, cfg.data, cfg.seed, st.epoch, self.world.rank, self.world.size)
        for micro, batch in enumerate(self.loader(batches, st.epoch, st.batch), start=st.batch):
            group = micro - micro % cfg.accumulate  # the accumulation group's first micro-batch, and its size
            size = min(group + cfg.accumulate, len(batches)) - group
            self._micro(batch, micro, first=micro == group, last=micro + 1 == group + size, group_size=size)
            if micro + 1 == group + size:
                self._step(micro)
                if self._after_step() or (st.step >= self.s.total_steps and micro + 1 < len(batches)):
                    return  # stopped early, or the run ends inside this epoch
        self._end_epoch()

    def _micro(self, batch: dict[str, torch.Tensor], micro: int, first: bool, last: bool, group_size: int) -> None:
        """Forward and backward of one micro-batch; gradients are all-reduced on the group's last only."""
        s = self.s
        batch = _placed(batch, self.device, self.cfg.data.pin_memory)
        if self.guarded and first:
            self.buffers = [b.detach().clone() for b in self.guarded]
        if s.augmentations:
            generator = torch.Generator().manual_seed(D.stream_seed(self.cfg.seed, self.state.epoch, micro, self.world.rank))
            batch = augment.apply(batch, s.augmentations, generator)
        with distributed.gradient_sync(s.net, self.world, sync=last):
            with self.autocast:
                loss = losses.total(s.terms, _as_tuple(s.net(*[batch[f] for f in s.data.input_fields])), batch)
            s.scaler.scale(loss / group_size if group_size > 1 else loss).backward()
        part = loss.detach().float() / group_size if group_size > 1 else loss.detach().float()
        self.group_loss = part if first else self.group_loss + part
        self.window.examples += len(batch[s.data.input_fields[0]]) * self.world.size

    def _step(self, micro: int) -> None:
        """Unscale, measure and clip the gradient, record the loss and norm on the device (the guard reads them
        at the next log), step; with nan_guard skip, a step whose loss or gradient is not finite changes nothing."""
        s, cfg = self.s, self.cfg
        s.scaler.unscale_(s.optimizer)
        grad_norm = _grad_norm(s.params, cfg.clip_norm)
        if cfg.clip_value is not None:
            torch.nn.utils.clip_grad_value_(s.params, cfg.clip_value)
        loss, self.group_loss = self.group_loss, None
        row = self.window.rows[self.window.steps]
        torch.stack([loss, grad_norm], out=row)
        skip = cfg.nan_guard == "skip"
        if skip:
            bad = self._bad(row)
            _skip_on(s.optimizer, bad, self._host_skip)
            for buffer, saved in zip(self.guarded, self.buffers):
                buffer.copy_(torch.where(bad, saved, buffer))
        self.window.lr = s.optimizer.param_groups[0]["lr"]  # what this step uses, for the log
        s.scaler.step(s.optimizer)
        if skip and not self._host_skip:
            del s.optimizer.found_inf, s.optimizer.grad_scale
        s.scaler.update()
        s.optimizer.zero_grad(set_to_none=True)
        self.schedule.step()
        self.window.steps += 1
        self.state.step += 1
        self.state.batch = micro + 1

    def _bad(self, rows: torch.Tensor) -> torch.Tensor:
        """Whether the guard fires at each of `rows` (loss, gradient norm), agreed by all ranks. The fp16 scaler
        deals with Inf gradients itself (it skips the step and lowers the scale), so there only the loss counts."""
        bad = ~torch.isfinite(rows[..., 0] if self.s.scaler.is_enabled() else rows.sum(-1))
        return distributed.all_reduce_sum(bad.float(), self.world) > 0 if self.world.size > 1 else bad

    @property
    def _host_skip(self) -> bool:
        """Whether skipping a step needs the host to look (an optimizer without a fused kernel)."""
        return not getattr(self.s.optimizer, "_step_supports_amp_scaling", False) or self.s.scaler.is_enabled()

    def _after_step(self) -> bool:
        """Log, evaluate and checkpoint when due; True when the run should stop."""
        step, cfg = self.state.step, self.cfg
        if step % cfg.log_every == 0 or step == self.s.total_steps or self.window.steps == len(self.window.rows):
            self._log()
        if self.s.data.val is not None and cfg.eval_every_steps and step % cfg.eval_every_steps == 0:
            self._evaluate()
        if cfg.checkpoint_every and step % cfg.checkpoint_every == 0:
            self._checkpoint(step_file=True)
        return self.stop_reason is not None

    def _thaw(self) -> None:
        """After `freeze_epochs`, the frozen parameters the optimizer holds train too (a resume past that
        point thaws them before its first step, as the run it continues did)."""
        if self.cfg.freeze_epochs is None or self.state.epoch < self.cfg.freeze_epochs:
            return
        frozen = [p for p in self.s.params if not p.requires_grad]
        if frozen:
            for p in frozen:
                p.requires_grad_(True)
            count = sum(p.numel() for p in frozen)
            self.reporter.event({"event": "unfreeze", "step": self.state.step, "epoch": self.state.epoch,
                                 "parameters": count})
            self.reporter.say(f"epoch {self.state.epoch + 1}: unfroze {count:,} parameters (freeze_epochs "
                              f"{self.cfg.freeze_epochs})")

    def _end_epoch(self) -> None:
        self.state.epoch, self.state.batch = self.state.epoch + 1, 0
        if self.s.data.val is not None and not self.cfg.eval_every_steps:
            self._evaluate()
        self._checkpoint(step_file=False)

    # ---- reading the device: log, guard ---------------------------------------------------------------------

    def _new_window(self) -> Window:
        return Window(torch.zeros(self.cfg.log_every, 2, device=self.device), self.state.step)

    def _read(self) -> tuple[float, float]:
        """Read the steps of the window not read yet (one sync): add their good losses to its sum; stop, or
        report the skipped steps, where the guard fired. Returns the loss sum and the last gradient norm."""
        self.saver.drain()  # first: the events of checkpoints now on disk
        w = self.window
        if w.read == w.steps:
            return w.loss, w.grad_norm
        rows = w.rows[w.read:w.steps]
        guarded = self.cfg.nan_guard != "off"
        bad = self._bad(rows) if guarded else torch.zeros(len(rows), dtype=torch.bool, device=rows.device)
        read = torch.cat([rows.double(), bad.double()[:, None]], dim=1).tolist()
        for i, (loss, _, fired) in enumerate(read, start=w.first + w.read + 1):
            if not fired:
                w.loss += loss
                continue
            w.fired += 1
            if self.cfg.nan_guard == "stop":
                raise self._stopped(i)
            self.reporter.event({"event": "skipped_step", "step": i, **self._where(i),
                                 "reason": "NaN/Inf loss or gradient"})
            self.reporter.say(f"skipped step {i}: NaN/Inf loss or gradient")
        w.read, w.grad_norm = w.steps, read[-1][1]
        return w.loss, w.grad_norm

    def _stopped(self, step: int) -> DlspecError:
        where = self._where(step)
        kept = (f"the last good checkpoint is {self.run.last} (step {self.saved_at})" if self.saved_at >= 0
                else "no checkpoint had been written yet")
        return DlspecError.single(f"the loss or gradient became NaN/Inf at step {step} (epoch {where['epoch']}, batch "
                                  f"{where['batch']}); training stopped, {kept}",
                                  self.s.spec.locate(("training", "optimizer", "lr")),
                                  hint="lower the lr, clip gradients (grad_clip: {norm: 1.0}), or set nan_guard: skip")

    def _where(self, step: int) -> dict[str, int]:
        """The epoch and batch (1-based) of optimizer step `step`: the last micro-batch of its group."""
        epoch, index = divmod(step - 1, self.s.steps_per_epoch)
        return {"epoch": epoch + 1, "batch": min((index + 1) * self.cfg.accumulate, self.s.batches_per_epoch)}

    def _log(self) -> None:
        """The train event: the mean loss of the window's good steps over all ranks, lr, grad norm, speed."""
        loss, grad_norm = self._read()
        w, now = self.window, time.perf_counter()
        good = [loss, w.steps - w.fired]
        if self.world.size > 1:
            good = distributed.all_reduce_sum(torch.tensor(good, dtype=torch.float64, device=self.device),
                                              self.world).tolist()
        self.train_loss = good[0] / max(good[1], 1)
        record = {"loss": self.train_loss, "lr": w.lr, "grad_norm": grad_norm,
                  **self.s.throughput.rates(w.examples / max(now - w.start, 1e-9))}
        self.reporter.event({"event": "train", "step": self.state.step, "epoch": self.state.epoch + 1, **record})
        eta = (now - self.started) / max(self.state.step - self.first_step, 1) * (self.s.total_steps - self.state.step)
        self.reporter.progress(self.state.step, record, eta)
        self.window = self._new_window()

    # ---- evaluation, checkpoints, the end ------------------------------------------------------------------

    def _evaluate(self) -> None:
        """Evaluate, log, feed the plateau schedule, keep best.pt, and count towards early stopping."""
        self._read()  # never evaluate (or save best.pt) past a step the guard stopped at
        st, cfg = self.state, self.cfg
        values = evaluate(self.s, self.val_loader, self.device, self.world)
        self.val, self.evaluated_at = values, st.step
        self.reporter.event({"event": "eval", "step": st.step, "epoch": st.epoch + (st.batch > 0), **values})
        self.reporter.say(f"eval step {st.step}: " + "  ".join(f"{k} {v:.4g}" for k, v in values.items()))
        if self.curves is not None:
            self.curves.refresh()
        self.schedule.after_eval(values)
        if cfg.best_metric in values and _improved(values[cfg.best_metric], st.best, cfg.best_mode, 0.0):
            st.best, st.best_step = values[cfg.best_metric], st.step
            self._save_weights(self.run.best, {"metric": cfg.best_metric, "value": st.best})
        es = cfg.early_stopping
        if es and es["metric"] in values:
            if _improved(values[es["metric"]], st.stop_best, es.get("mode") or config.metric_mode(es["metric"]),
                         es.get("min_delta", 0.0)):
                st.stop_best, st.stop_bad = values[es["metric"]], 0
            else:
                st.stop_bad += 1
                if st.stop_bad >= es.get("patience", 5):
                    self.stop_reason = f"early stopping ({es['metric']} did not improve for {st.stop_bad} evaluations)"

    def _checkpoint(self, step_file: bool) -> None:
        """Every rank takes part (FSDP gathers); rank 0 serialises it and leaves the file to the writer thread."""
        self._read()
        s, st = self.s, self.state
        model_state, optimizer_state = distributed.full_state(s.model, s.optimizer, self.world)
        rngs = distributed.gather(checkpoint.rng_state(), self.world)
        if self.world.main:
            event = {"event": "checkpoint", "step": st.step, "epoch": st.epoch, "batch": st.batch}
            line = self.reporter.line(event)  # the next line of the log, once the file is on disk (Saver)
            blob = {"format": checkpoint.FORMAT, "kind": "checkpoint", "model": model_state, "optimizer": optimizer_state,
                    "schedule": self.schedule.state_dict(), "scaler": s.scaler.state_dict() if s.scaler.is_enabled()
                    else None, "rng": rngs, "state": asdict(st), "step": st.step, **s.provenance,
                    "metrics_bytes": self.reporter.offset() + len(line.encode())}
            keep = self.cfg.checkpoint_keep
            self.saver.save(blob, [self.run.last] + ([self.run.step_file(st.step)] if step_file else []), event, line,
                            then=(lambda: self.run.prune_steps(keep)) if step_file else None)
        distributed.barrier(self.world)
        self.saved_at = st.step

    def _save_weights(self, path: Path, extra: dict) -> None:
        model_state = distributed.model_state(self.s.model, self.world)
        if self.world.main:
            self.saver.save({"format": checkpoint.FORMAT, "kind": "weights", "model": model_state,
                             "step": self.state.step, **self.s.provenance, **extra}, [path])
        distributed.barrier(self.world)

    def _finish(self) -> dict[str, Any]:
        """A last evaluation and checkpoint if the loop stopped between them, the final weights, the summary."""
        elapsed = time.perf_counter() - self.started
        st, s = self.state, self.s
        if self.window.steps:
            self._log()
        if s.data.val is not None and self.evaluated_at != st.step:
            self._evaluate()
        if self.saved_at != st.step:
            self._checkpoint(step_file=False)
        self._save_weights(self.run.weights, {})
        self.saver.drain(everything=True)
        done = st.step - self.first_step
        summary = {"spec": s.spec.name, "run": str(self.run.path), "device": str(self.device), "processes": self.world.size,
                   "threads": s.threads[0], "parameters": s.n_params, "steps": st.step,
                   "epochs": round(st.step / s.steps_per_epoch, 2),
                   "stopped_by": self.stop_reason or ("max_steps" if self.cfg.max_steps else "epochs"),
                   "train_seconds": round(elapsed, 2),
                   **{k: round(v, 4 if k == "mfu" else 1) for k, v in s.throughput.rates(
                       done * self.cfg.data.batch_size * self.cfg.accumulate / max(elapsed, 1e-9)).items()},
                   "train_loss": self.train_loss, **self.val}
        if st.best is not None:
            summary.update({"best_metric": self.cfg.best_metric, "best_value": st.best, "best_step": st.best_step})
        self.reporter.event({"event": "end", "step": st.step, **summary})
        self.reporter.hparams(config.resolved(self.cfg), {k: v for k, v in summary.items() if k in self.val or k in (
            "train_loss", "best_value", "best_step", "steps", "train_seconds", "examples_per_s", "tokens_per_s")}, st.step)
        if self.world.main:
            self.run.write_json("summary.json", summary)
        if self.curves is not None:
            self.curves.finish()
        self.reporter.say(progress.summary_table(summary), always=True)
        self.reporter.close()
        distributed.barrier(self.world)
        return summary

    def _announce(self) -> None:
        """The start (or resume) event and lines, and the run directory's record of what this run is."""
        s, st, w = self.s, self.state, self.world
        if w.main:
            s.write_record()
        n_val = len(s.data.val) if s.data.val is not None else 0
        self.reporter.event({"event": "resume" if s.saved else "start", "step": st.step, "spec": s.spec.name,
                             "spec_hash": s.spec.spec_hash, "device": str(self.device), "processes": w.size,
                             "strategy": w.strategy, "threads": s.threads[0], "parameters": s.n_params,
                             "trainable_parameters": sum(p.numel() for p in s.params if p.requires_grad),
                             "train_examples": len(s.data.train), "val_examples": n_val,
                             "total_steps": s.total_steps, "steps_per_epoch": s.steps_per_epoch,
                             **({"model_changes": s.model_changes} if s.model_changes else {}),
                             **({"notes": list(s.data.notes)} if s.data.notes else {}),
                             **({"changes": s.changes, "schedule": s.schedule_note} if s.changes else {})})
        processes = f" x {w.size} processes ({w.strategy})" if w.size > 1 else ""
        threads = f"{s.threads[0]} thread{'s' * (s.threads[0] != 1)} ({s.threads[1]})"
        self.reporter.say(f"{'resuming' if s.saved else 'training'} {s.spec.name}: {s.n_params:,} parameters on "
                          f"{self.device}{processes}, {threads}, {len(s.data.train)} train / {n_val} validation "
                          f"examples, {s.total_steps} step{'s' * (s.total_steps != 1)} -> {self.run.path}")
        for change in s.changes or ():
            self.reporter.say(f"  {change['key']}: {change['from']!r} -> {change['to']!r} from step {st.step}")
        for note in s.data.notes:
            self.reporter.say(f"  note: {note}")
        if s.init_report is not None:
            self.reporter.event({"event": "init_from", **s.init_report.to_json()})
            self.reporter.say(f"init_from: {s.init_report.summary()}")


def evaluate(s: Setup, loader: D.Loader, device: torch.device, world: distributed.World) -> dict[str, float]:
    """Validation metrics over every example once, summed across ranks."""
    s.net.eval()
    meter = metrics.Meter(s.cfg.metrics, s.eval_term, device)
    batches, masks = D.eval_batches(len(s.data.val), s.cfg.data.eval_batch_size, world.rank, world.size)
    with torch.no_grad():
        for batch, mask in zip(loader(batches, 0), masks):
            batch = _placed(batch, device, s.cfg.data.pin_memory)
            with devices.autocast(device, s.cfg.precision):
                outputs = _as_tuple(s.net(*[batch[f] for f in s.data.input_fields]))
            outputs = tuple(o.float() if o.is_floating_point() else o for o in outputs)  # metrics in fp32
            n = sum(mask)
            if n == 0:
                continue  # padding that keeps the ranks in step
            kept_out, kept = outputs, batch
            if n < len(mask):
                keep = torch.tensor(mask, device=device)
                kept_out, kept = tuple(o[keep] for o in outputs), {k: v[keep] for k, v in batch.items()}
            meter.update(losses.total(s.terms, kept_out, kept).float(), kept_out[s.eval_term.output],
                         kept[s.eval_term.target], n)
    distributed.all_reduce_sum(meter.sums, world)
    s.net.train()
    return meter.result()


def _grad_norm(params: list[torch.nn.Parameter], clip: float | None) -> torch.Tensor:
    """The total gradient norm before clipping; clips to `clip` when given."""
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:  # everything the optimizer holds is frozen for now
        return torch.zeros((), device=params[0].device)
    if clip is not None:
        norm = torch.nn.utils.clip_grad_norm_(params, clip)
    else:
        norm = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)))
    return norm.full_tensor() if hasattr(norm, "full_tensor") else norm  # FSDP: a DTensor


def _skip_on(optimizer: torch.optim.Optimizer, bad: torch.Tensor, host: bool) -> None:
    """Make the coming optimizer step a no-op when `bad`: on the device for a fused optimizer (its kernel
    reads `found_inf`, as under torch's GradScaler), else by dropping the gradients after one host read."""
    if host:
        if bad.item():
            optimizer.zero_grad(set_to_none=True)  # a step without gradients changes nothing
        return
    optimizer.found_inf, optimizer.grad_scale = bad.float(), None


def _placed(batch: dict[str, torch.Tensor], device: torch.device, pinned: bool) -> dict[str, torch.Tensor]:
    """The batch on the device (the loader makes it on the CPU)."""
    return batch if device.type == "cpu" else {k: v.to(device, non_blocking=pinned) for k, v in batch.items()}


def _as_tuple(out: Any) -> tuple[torch.Tensor, ...]:
    return tuple(out) if isinstance(out, (tuple, list)) else (out,)


def _improved(value: float, best: float | None, mode: str, min_delta: float) -> bool:
    if best is None or math.isnan(best):
        return not math.isnan(value)
    return value < best - min_delta if mode == "min" else value > best + min_delta

