"""JSON Schema of a spec's `training:` section (no torch import).

`dlspec/front/schema.py` assembles this fragment into `schemas/dlspec.schema.json`.
Every object is closed (`additionalProperties: false`) so a typo fails at
validation. A section whose options depend on a `kind` (data set, augmentation,
loss, optimizer, schedule, metric) comes from its registry (kinds.py): all its
kinds' options in one object, each described per kind, then checked per kind by
`dlspec.train.config`, which can point at the offending key and name the kinds
it belongs to (a `oneOf` per kind would only say "matches none").
"""
from __future__ import annotations

from typing import Any

from dlspec.train.augment import AUGMENTATIONS
from dlspec.train.datasets import DATA_KINDS
from dlspec.train.losses import LOSSES
from dlspec.train.metrics import METRICS
from dlspec.train.metrics import pattern as metric_pattern
from dlspec.train.optim import OPTIMIZERS
from dlspec.train.schedules import SCHEDULES


def _int(description: str, minimum: int = 0) -> dict[str, Any]:
    return {"type": "integer", "minimum": minimum, "description": description}


def _num(description: str, minimum: float | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"type": "number", "description": description}
    if minimum is not None:
        out["minimum"] = minimum
    return out


def _str(description: str, enum: list[str] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"type": "string", "description": description}
    if enum:
        out["enum"] = enum
    return out


def _bool(description: str) -> dict[str, Any]:
    return {"type": "boolean", "description": description}


def _obj(description: str, properties: dict[str, Any], required: list[str] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"type": "object", "additionalProperties": False, "description": description,
                           "properties": properties}
    if required:
        out["required"] = required
    return out


def _strings(description: str) -> dict[str, Any]:
    return {"type": "array", "items": {"type": "string"}, "description": description}


def _numbers(description: str) -> dict[str, Any]:
    return {"type": "array", "items": {"type": "number"}, "description": description}


NORMALIZE = {"description": "Per field: `standard` (mean/std of the training split), `minmax`, or explicit "
             "{mean, std}.", "anyOf": [
                 _str("Statistic computed on the training split.", ["standard", "minmax"]),
                 _obj("Explicit statistics (scalars or one value per channel).", {
                     "mean": {"anyOf": [{"type": "number"}, _numbers("per channel")], "description": "Mean."},
                     "std": {"anyOf": [{"type": "number"}, _numbers("per channel")], "description": "Std."},
                 }, ["mean", "std"])]}


_RUN = {  # how the run is computed
    "seed": _int("Seed of every random generator: one seed makes a run reproducible (default 0)."),
    "deterministic": _bool("Use deterministic algorithms only (slower on GPU; errors on ops without one)."),
    "threads": _int("CPU threads for one process's tensor ops (default: 1 for a small model, else the cores "
                    "this process may use, shared among the processes on the machine).", 1),
    "device": {"type": "string", "pattern": r"^(auto|cpu|mps|cuda(:[0-9]+)?)$",
               "description": "auto (cuda > mps > cpu), cpu, mps, cuda or cuda:N."},
    "precision": _str("fp32, bf16 or fp16 (autocast; fp16 uses a gradient scaler).", ["fp32", "bf16", "fp16"]),
    "compile": {"description": "torch.compile the model: true, or {backend, mode, regional}.", "anyOf": [
        {"type": "boolean"},
        _obj("torch.compile options.", {"backend": _str("Compiler backend (default inductor)."),
                                        "mode": _str("Compile mode.", ["default", "reduce-overhead",
                                                                       "max-autotune"]),
                                        "regional": _bool("Compile each block instead of the whole model: a "
                                                          "repeated block compiles once, so a deep model "
                                                          "starts much sooner (layers outside blocks run "
                                                          "eagerly).")})]},
    "epochs": _int("Passes over the training set.", 1),
    "max_steps": _int("Stop after this many optimizer steps (wins over epochs when both are set).", 1),
}
_STABILITY = {
    "grad_clip": _obj("Gradient clipping before each optimizer step.", {
        "norm": _num("Clip the total gradient norm to this value.", 0),
        "value": _num("Clip every gradient element to [-value, value].", 0)}),
    "accumulate": _int("Micro-batches whose gradients add up to one optimizer step (default 1).", 1),
    "nan_guard": _str("On a NaN/Inf loss or gradient: stop (keeping the last good checkpoint), skip the step, or "
                      "off. Checked on the device at every step; read at log, evaluation and checkpoint steps.",
                      ["stop", "skip", "off"]),
}
_REPORTING = {  # what the run reports and keeps, how it starts and where
    "early_stopping": _obj("Stop when a validation metric stops improving.", {
        "metric": _str("Logged metric name, e.g. val_loss or val_accuracy."),
        "patience": _int("Evaluations without improvement before stopping.", 1),
        "min_delta": _num("Smallest change that counts as improvement.", 0),
        "mode": _str("min or max (default: from the metric).", ["min", "max"]),
    }, ["metric"]),
    "checkpoint": _obj("Checkpoints under RUN/checkpoints/.", {
        "every_steps": _int("Also keep a checkpoint every this many optimizer steps (step-N.pt).", 1),
        "keep": _int("How many step-N.pt to keep (default: all)."),
        "best_metric": _str("Keep best.pt by this logged metric (default: val_loss when there is validation)."),
        "best_mode": _str("min or max (default: from the metric).", ["min", "max"]),
    }),
    "logging": _obj("What a run reports.", {
        "every_steps": _int("Log training loss, lr, grad norm and throughput every this many steps.", 1),
        "progress": _str("auto: a progress bar on a terminal, plain lines otherwise.", ["auto", "bar", "lines",
                                                                                       "off"]),
        "tensorboard": _bool("Also write TensorBoard event files to RUN/tensorboard (needs the tensorboard "
                             "package): the train and validation scalars, and the training section as hparams "
                             "with the final metrics."),
        "curves": _bool("Draw RUN/curves.png (loss, validation metrics, lr, throughput against step) after "
                        "evaluations and at the end (default true)."),
        "peak_tflops": _num("The device's peak dense TFLOP/s at the run's precision, for model FLOPs utilisation "
                            "(default: known for common GPUs; MFU is not reported where it is unknown).", 0),
    }),
    "init_from": _obj("Initialise the model from other weights before training (transfer learning); strict: every "
                      "tensor must load unless ignored.", {
        "checkpoint": _str("A dlspec run directory or checkpoint, or weights from elsewhere (.safetensors, "
                           ".pt/.pth/.bin state dict, Hugging Face folder) mapped by the spec's `weights:` section; "
                           "relative to the spec file."),
        "ignore": _strings("Name patterns (as freeze takes them) of tensors that start fresh: the model's (a new "
                           "head) and the checkpoint's (its old head) are both left out."),
    }, ["checkpoint"]),
    "freeze": _strings("Parameter-name patterns to freeze (requires_grad false)."),
    "unfreeze": _strings("Parameter-name patterns to make trainable again, applied after freeze."),
    "freeze_epochs": _int("Hold freeze/unfreeze for this many epochs, then train every parameter (those the model "
                          "marks trainable: false stay frozen). One process only.", 1),
    "distributed": _obj("Multi-process training under torchrun.", {
        "strategy": _str("ddp (replicated model) or fsdp (sharded with fully_shard).", ["ddp", "fsdp"]),
        "backend": _str("auto: nccl on CUDA, gloo on CPU.", ["auto", "gloo", "nccl"]),
        "timeout_s": _int("Seconds a collective may wait for a peer before the run stops with an error.", 1),
    }),
}


def training_schema() -> dict[str, Any]:
    """The `training:` fragment, with the kinds the registries define when it is asked for."""
    loss = LOSSES.schema("One loss term; the total loss is the sum of the terms times their `scale`. Classes are "
                         "on the last dim of an output, so [B, T, V] logits give token-level cross-entropy.")
    return _obj("How `dlspec train` trains the model.", {
        **_RUN, "data": _data(),
        "loss": {"description": "A loss term or a list of them.",
                 "anyOf": [loss, {"type": "array", "items": loss, "minItems": 1}]},
        "optimizer": OPTIMIZERS.schema("Optimizer; options depend on `kind`."),
        "scheduler": SCHEDULES.schema("Learning-rate schedule; options depend on `kind`."),
        **_STABILITY, "evaluation": _evaluation(), **_REPORTING,
    })


def _data() -> dict[str, Any]:
    dataset = DATA_KINDS.schema("Where the examples come from; options depend on `kind`.")
    augment = AUGMENTATIONS.schema("One augmentation, applied to training batches only.")
    return _obj("Training data: the data set, how it maps to the model, and how it is batched.", {
        "dataset": dataset,
        "validation": _obj("Validation split: a fraction of the data set, or another data set.", {
            "fraction": _num("Fraction held out for validation (0 disables validation).", 0),
            "dataset": dataset,
        }),
        "inputs": {"type": "object", "additionalProperties": {"type": "string"},
                   "description": "Model input name -> data field (default: the field of the same name, or the data "
                                  "set's main field for a one-input model)."},
        "batch_size": _int("Examples per optimisation micro-batch, across all processes.", 1),
        "eval_batch_size": _int("Examples per validation batch (default: the larger of batch_size and 256).", 1),
        "shuffle": _bool("Shuffle the training set every epoch (default true)."),
        "drop_last": _bool("Drop the last incomplete training batch (default false)."),
        "num_workers": _int("DataLoader worker processes that gather, decode and transform batches (default 0: "
                            "in the training process)."),
        "persistent_workers": _bool("Keep the workers from one epoch (and evaluation) to the next instead of "
                                    "starting them again (default false)."),
        "prefetch_factor": _int("Batches each worker prepares ahead (default 2).", 1),
        "pin_memory": _bool("Pin batches in page-locked memory, copied to the GPU with non_blocking (default "
                            "false)."),
        "normalize": {"type": "object", "additionalProperties": NORMALIZE,
                      "description": "Field -> normalisation applied to every split."},
        "augment": {"type": "array", "items": augment, "description": "Augmentations of training batches, in order."},
    }, ["dataset"])


def _evaluation() -> dict[str, Any]:
    names = ", ".join(k.name for k in METRICS)
    metric = {"type": "string", "pattern": metric_pattern(), "description": f"A validation metric: {names}."}
    return _obj("Validation.", {
        "every_steps": _int("Evaluate every this many optimizer steps (default: after each epoch).", 1),
        "metrics": {"type": "array", "items": metric, "description": f"The metrics to log, of: {names}."},
        "output": _str("Output the metrics read (default: the first loss term's output)."),
        "target": _str("Field the metrics compare with (default: the first loss term's target)."),
    })
