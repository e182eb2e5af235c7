"""The `training:` section as typed, frozen config, with the checks a schema cannot do.

The JSON Schema (schema.py) has already rejected unknown keys and wrong types.
Here we apply defaults, check through each family's registry that every option
belongs to the chosen `kind` (an `eps` on SGD is a mistake the schema lets
through), and cross-check sections (a metric named by early stopping must be one
that is logged). All problems are collected and raised together, each located in
the spec file.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from dlspec.core.errors import DlspecError, Loc, Problem, did_you_mean
from dlspec.train.augment import AUGMENTATIONS
from dlspec.train.datasets import DATA_KINDS
from dlspec.train.kinds import Kinded, Report, problem_collector
from dlspec.train.losses import LOSSES
from dlspec.train.metrics import higher_is_better
from dlspec.train.optim import OPTIMIZERS
from dlspec.train.schedules import SCHEDULES

# spec.locate: the file:line:col of a document path (or of its nearest ancestor)
Locate = Callable[[tuple], "Loc | None"]

def metric_mode(metric: str) -> str:
    """Accuracy goes up; loss, errors and perplexity go down (as each metric kind says)."""
    return "max" if higher_is_better(metric) else "min"


@dataclass(frozen=True)
class DataConfig:
    dataset: Kinded
    validation_fraction: float
    validation_dataset: Kinded | None
    inputs: Mapping[str, str]
    batch_size: int
    eval_batch_size: int
    shuffle: bool
    drop_last: bool
    num_workers: int
    pin_memory: bool
    persistent_workers: bool
    prefetch_factor: int | None
    normalize: Mapping[str, Any]
    augment: tuple[Kinded, ...]


@dataclass(frozen=True)
class TrainConfig:
    seed: int
    deterministic: bool
    threads: int | None
    device: str
    precision: str
    compile: Mapping[str, Any] | None  # None: eager
    epochs: int
    max_steps: int | None  # when set, the run is exactly this many optimizer steps
    data: DataConfig
    losses: tuple[Kinded, ...]
    optimizer: Kinded
    scheduler: Kinded | None
    clip_norm: float | None
    clip_value: float | None
    accumulate: int
    nan_guard: str
    eval_every_steps: int | None  # None: after each epoch
    metrics: tuple[str, ...]
    eval_output: str | None
    eval_target: str | None
    early_stopping: Mapping[str, Any] | None
    checkpoint_every: int | None
    checkpoint_keep: int | None
    best_metric: str | None
    best_mode: str
    log_every: int
    progress: str
    tensorboard: bool
    curves: bool
    peak_tflops: float | None
    init_from: Mapping[str, Any] | None
    freeze: tuple[str, ...]
    unfreeze: tuple[str, ...]
    freeze_epochs: int | None  # None: freeze and unfreeze hold for the whole run
    strategy: str | None
    backend: str
    timeout_s: int
    logged_metrics: tuple[str, ...] = field(default=())  # validation metric names as logged (val_*)


def parse(training: Mapping[str, Any] | None, locate: Locate) -> TrainConfig:
    """Defaults plus semantic checks; raises one DlspecError listing every problem."""
    t = dict(training or {})
    problems: list[Problem] = []
    root = ("training",)
    problem = problem_collector(problems, locate)

    data_doc = t.get("data")
    if data_doc is None:
        problem(root, "the training section has no `data`", "training.data.dataset",
                hint="for example `data: {dataset: {kind: digits}, batch_size: 64}`")
        data_doc = {"dataset": {"kind": "digits"}}
    data = _data(data_doc, root + ("data",), problem)

    loss_doc = t.get("loss", {"kind": "cross_entropy"})
    loss_docs = loss_doc if isinstance(loss_doc, list) else [loss_doc]
    loss_paths = [root + ("loss", i) for i in range(len(loss_docs))] if isinstance(loss_doc, list) else [root + ("loss",)]
    losses = tuple(LOSSES.parse(d, p, problem) for d, p in zip(loss_docs, loss_paths))
    optimizer = OPTIMIZERS.parse(t.get("optimizer", {"kind": "adamw"}), root + ("optimizer",), problem)
    scheduler = SCHEDULES.parse(t["scheduler"], root + ("scheduler",), problem) if "scheduler" in t else None

    evaluation = t.get("evaluation", {})
    has_validation = data.validation_fraction > 0 or data.validation_dataset is not None
    metrics = tuple(evaluation.get("metrics") or _default_metrics(losses[0]))
    logged = tuple(f"val_{m}" for m in metrics) if has_validation else ()
    ckpt = t.get("checkpoint", {})
    _check_metrics(t, scheduler, logged, problem)
    best_metric = ckpt.get("best_metric", "val_loss" if has_validation else None)
    clip = t.get("grad_clip", {})
    if len(clip) > 1:
        problem(root + ("grad_clip",), "grad_clip takes one of `norm` or `value`, not both")
    if "freeze_epochs" in t and not t.get("freeze"):
        problem(root + ("freeze_epochs",), "freeze_epochs says how long `freeze` holds, and there is no freeze",
                hint='for example `freeze: ["*"]`, `unfreeze: ["fc.*"]`, `freeze_epochs: 2`')
    compile_doc = t.get("compile", False)
    logging = t.get("logging", {})
    dist = t.get("distributed", {})
    if problems:
        raise DlspecError(problems)
    return TrainConfig(
        seed=t.get("seed", 0), deterministic=t.get("deterministic", False), threads=t.get("threads"),
        device=t.get("device", "auto"),
        precision=t.get("precision", "fp32"),
        compile=(compile_doc if isinstance(compile_doc, dict) else {}) if compile_doc else None,
        epochs=t.get("epochs", 1), max_steps=t.get("max_steps"), data=data, losses=losses,
        optimizer=optimizer, scheduler=scheduler,
        clip_norm=clip.get("norm"), clip_value=clip.get("value"), accumulate=t.get("accumulate", 1),
        nan_guard=t.get("nan_guard", "stop"), eval_every_steps=evaluation.get("every_steps"), metrics=metrics,
        eval_output=evaluation.get("output"), eval_target=evaluation.get("target"),
        early_stopping=t.get("early_stopping"),
        checkpoint_every=ckpt.get("every_steps"), checkpoint_keep=ckpt.get("keep"), best_metric=best_metric,
        best_mode=ckpt.get("best_mode") or metric_mode(best_metric or "loss"),
        log_every=logging.get("every_steps", 50), progress=logging.get("progress", "auto"),
        tensorboard=logging.get("tensorboard", False), curves=logging.get("curves", True), peak_tflops=logging.get("peak_tflops"),
        init_from=t.get("init_from"),
        freeze=tuple(t.get("freeze", ())), unfreeze=tuple(t.get("unfreeze", ())), freeze_epochs=t.get("freeze_epochs"),
        strategy=dist.get("strategy"), backend=dist.get("backend", "auto"), timeout_s=dist.get("timeout_s", 300),
        logged_metrics=logged,
    )


def _check_metrics(t: Mapping[str, Any], scheduler: Kinded | None, logged: tuple[str, ...], problem: Report) -> None:
    """Early stopping, best.pt and a plateau schedule each watch a metric: one the run logs."""
    watched = [(("early_stopping", "metric"), t.get("early_stopping", {}).get("metric")),
               (("checkpoint", "best_metric"), t.get("checkpoint", {}).get("best_metric")),
               (("scheduler", "metric"), scheduler["metric"] if scheduler and scheduler.definition.interval == "eval"
                else None)]
    for path, name in watched:
        if name is not None and name not in logged:
            problem(("training",) + path, f"metric '{name}' is not logged by this run",
                    f"one of {', '.join(logged)}" if logged else "a validation split (data.validation)",
                    did_you_mean(name, logged) or "list it in training.evaluation.metrics")


def _data(doc: Mapping[str, Any], path: tuple, problem: Report) -> DataConfig:
    dataset = DATA_KINDS.parse(doc.get("dataset", {"kind": "digits"}), path + ("dataset",), problem)
    validation = doc.get("validation", {})
    vdataset = None
    if "dataset" in validation:
        vdataset = DATA_KINDS.parse(validation["dataset"], path + ("validation", "dataset"), problem)
        if vdataset.definition.stream != dataset.definition.stream:
            problem(path + ("validation", "dataset", "kind"), "a stream of text is validated on another stream, and "
                    "only a stream is", f"kind: {dataset.kind}" if dataset.definition.stream
                    else "a data set with the same fields")
        if "fraction" in validation:
            problem(path + ("validation",), "validation takes `fraction` or `dataset`, not both")
    fraction = validation.get("fraction", 0.0 if vdataset else 0.2)
    if not 0 <= fraction < 1:
        problem(path + ("validation", "fraction"), f"validation fraction {fraction} is out of range", "0 <= fraction < 1")
    batch = doc.get("batch_size", 32)
    workers = doc.get("num_workers", 0)
    for key in ("persistent_workers", "prefetch_factor"):  # `false`/null ask for nothing: fine with no workers
        if doc.get(key) not in (None, False) and not workers:
            problem(path + (key,), f"`{key}` applies to loader worker processes, and num_workers is 0",
                    "num_workers: 1 or more", "drop it, or set num_workers")
    return DataConfig(
        dataset=dataset, validation_fraction=fraction, validation_dataset=vdataset, inputs=doc.get("inputs", {}),
        batch_size=batch, eval_batch_size=doc.get("eval_batch_size", max(batch, 256)),
        shuffle=doc.get("shuffle", True), drop_last=doc.get("drop_last", False),
        num_workers=workers, pin_memory=doc.get("pin_memory", False),
        persistent_workers=doc.get("persistent_workers", False), prefetch_factor=doc.get("prefetch_factor"),
        normalize=doc.get("normalize", {}),
        augment=tuple(AUGMENTATIONS.parse(a, path + ("augment", i), problem) for i, a in enumerate(doc.get("augment", ()))),
    )


def _default_metrics(loss: Kinded) -> list[str]:
    return ["loss", "accuracy"] if loss.definition.classes else ["loss"]


def resolved(cfg: TrainConfig) -> dict[str, Any]:
    """The training section with every default written out (what `dlspec config` prints and TensorBoard logs as
    hparams): parsed again, it configures the same run."""
    d = cfg.data
    validation = {"dataset": _kinded(d.validation_dataset)} if d.validation_dataset else {"fraction": d.validation_fraction}
    data = {"dataset": _kinded(d.dataset), "validation": validation, **_given(inputs=dict(d.inputs)),
            "batch_size": d.batch_size, "eval_batch_size": d.eval_batch_size, "shuffle": d.shuffle,
            "drop_last": d.drop_last, "num_workers": d.num_workers, "pin_memory": d.pin_memory,
            **_given(normalize=dict(d.normalize), augment=[_kinded(a) for a in d.augment])}
    losses = [_kinded(loss) for loss in cfg.losses]
    clip = {"norm": cfg.clip_norm} if cfg.clip_norm is not None else {"value": cfg.clip_value}
    return {
        "seed": cfg.seed, "deterministic": cfg.deterministic, **_given(threads=cfg.threads), "device": cfg.device,
        "precision": cfg.precision, "compile": dict(cfg.compile) or True if cfg.compile is not None else False,
        "epochs": cfg.epochs, **_given(max_steps=cfg.max_steps), "data": data,
        "loss": losses[0] if len(losses) == 1 else losses, "optimizer": _kinded(cfg.optimizer),
        **_given(scheduler=_kinded(cfg.scheduler) if cfg.scheduler else None,
                 grad_clip={k: v for k, v in clip.items() if v is not None}),
        "accumulate": cfg.accumulate, "nan_guard": cfg.nan_guard,
        "evaluation": {**_given(every_steps=cfg.eval_every_steps), "metrics": list(cfg.metrics),
                       **_given(output=cfg.eval_output, target=cfg.eval_target)},
        **_given(early_stopping=dict(cfg.early_stopping or {})),
        "checkpoint": {**_given(every_steps=cfg.checkpoint_every, keep=cfg.checkpoint_keep, best_metric=cfg.best_metric),
                       "best_mode": cfg.best_mode},
        "logging": {"every_steps": cfg.log_every, "progress": cfg.progress, "tensorboard": cfg.tensorboard,
                    "curves": cfg.curves, **_given(peak_tflops=cfg.peak_tflops)},
        **_given(init_from=dict(cfg.init_from or {}), freeze=list(cfg.freeze), unfreeze=list(cfg.unfreeze)),
        "distributed": {**_given(strategy=cfg.strategy), "backend": cfg.backend, "timeout_s": cfg.timeout_s},
    }


def _kinded(k: Kinded) -> dict[str, Any]:
    registry_key = "op" if AUGMENTATIONS.kinds.get(k.kind) is k.definition else "kind"
    return {registry_key: k.kind, **{name: value for name, value in k.options.items() if value is not None}}


def _given(**values: Any) -> dict[str, Any]:
    """The values that are set: not None, not empty."""
    return {k: v for k, v in values.items() if v is not None and v != {} and v != []}
