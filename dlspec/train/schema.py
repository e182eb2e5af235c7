"""JSON Schema of a spec's `training:` section (pure data: no torch import).

`dlspec/front/schema.py` assembles this fragment into `schemas/dlspec.schema.json`.
Every object is closed (`additionalProperties: false`) so a typo fails at
validation. Options whose meaning depends on a `kind` (which optimizer, which
loss, which data set) are all listed here and then checked per kind by
`dlspec.train.config`, which can point at the offending key and name the kinds
it belongs to: a `oneOf` per kind would only say "matches none".
"""
from __future__ import annotations

from typing import Any


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


DATASET_KINDS = ["digits", "iris", "wine", "breast_cancer", "diabetes", "synthetic_classification",
                 "synthetic_regression", "synthetic_tokens", "npz", "pt", "csv", "text"]
LOSS_KINDS = ["cross_entropy", "mse", "l1", "smooth_l1", "bce_with_logits", "nll"]
OPTIMIZER_KINDS = ["sgd", "adam", "adamw", "rmsprop"]
SCHEDULER_KINDS = ["constant", "step", "multistep", "exponential", "cosine", "cosine_restarts", "one_cycle",
                   "plateau"]
METRIC_PATTERN = r"^(loss|accuracy|top[1-9][0-9]*_accuracy|mae|rmse|perplexity)$"

DATASET = _obj("Where the examples come from; options depend on `kind`.", {
    "kind": _str("Data set: bundled (digits, iris, wine, breast_cancer, diabetes), synthetic "
                 "(synthetic_classification, synthetic_regression, synthetic_tokens) or a file (npz, pt, csv, text).",
                 DATASET_KINDS),
    "layout": _str("digits: `image` gives field `image` [1, 8, 8]; `flat` gives field `features` [64].",
                   ["image", "flat"]),
    "path": _str("npz/pt/csv/text: the file, relative to the spec file."),
    "stdlib": _str("text: use the source of this standard-library module (e.g. `argparse`) as the text."),
    "block": _int("text: characters per training sequence (the model's context length).", 1),
    "columns": {"type": "object", "description": "csv: field name -> one column name or a list of column names.",
                "additionalProperties": {"anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]}},
    "dtypes": {"type": "object", "description": "csv/npz/pt: field name -> dtype to read it as (default: float32, "
               "int64 for a single integer column).", "additionalProperties": {"type": "string"}},
    "samples": _int("synthetic: number of examples.", 1),
    "features": _int("synthetic: number of input features.", 1),
    "classes": _int("synthetic_classification: number of classes.", 2),
    "informative": _int("synthetic_classification: number of informative features.", 1),
    "targets": _int("synthetic_regression: number of regression targets.", 1),
    "noise": _num("synthetic: standard deviation of the label/target noise.", 0),
    "length": _int("synthetic_tokens: sequence length.", 1),
    "vocab": _int("synthetic_tokens: vocabulary size.", 2),
    "task": _str("synthetic_tokens: what the targets are (copy, reverse or sort the tokens).",
                 ["copy", "reverse", "sort"]),
    "seed": _int("synthetic: generator seed (default: training.seed)."),
}, ["kind"])

AUGMENT = _obj("One augmentation, applied to training batches only.", {
    "op": _str("random_flip, random_crop (pad then crop back to size) or noise (add Gaussian noise).",
               ["random_flip", "random_crop", "noise"]),
    "field": _str("The data field it applies to (default: the first model input's field)."),
    "dim": _int("random_flip: the dimension of one example to flip (default: the last).", -8),
    "p": _num("random_flip: probability per example.", 0),
    "padding": _int("random_crop: zero padding on each side before cropping.", 1),
    "std": _num("noise: standard deviation.", 0),
}, ["op"])

NORMALIZE = {"description": "Per field: `standard` (mean/std of the training split), `minmax`, or explicit "
             "{mean, std}.", "anyOf": [
                 _str("Statistic computed on the training split.", ["standard", "minmax"]),
                 _obj("Explicit statistics (scalars or one value per channel).", {
                     "mean": {"anyOf": [{"type": "number"}, _numbers("per channel")], "description": "Mean."},
                     "std": {"anyOf": [{"type": "number"}, _numbers("per channel")], "description": "Std."},
                 }, ["mean", "std"])]}

DATA = _obj("Training data: the data set, how it maps to the model, and how it is batched.", {
    "dataset": DATASET,
    "validation": _obj("Validation split: a fraction of the data set, or another data set.", {
        "fraction": _num("Fraction held out for validation (0 disables validation).", 0),
        "dataset": DATASET,
    }),
    "inputs": {"type": "object", "additionalProperties": {"type": "string"},
               "description": "Model input name -> data field (default: the field of the same name, or the data "
                              "set's main field for a one-input model)."},
    "batch_size": _int("Examples per optimisation micro-batch, across all processes.", 1),
    "eval_batch_size": _int("Examples per validation batch (default: the larger of batch_size and 256).", 1),
    "shuffle": _bool("Shuffle the training set every epoch (default true)."),
    "drop_last": _bool("Drop the last incomplete training batch (default false)."),
    "num_workers": _int("DataLoader worker processes (default 0)."),
    "pin_memory": _bool("Pin batches in page-locked memory for faster host-to-GPU copies."),
    "normalize": {"type": "object", "additionalProperties": NORMALIZE,
                  "description": "Field -> normalisation applied to every split."},
    "augment": {"type": "array", "items": AUGMENT, "description": "Augmentations of training batches, in order."},
}, ["dataset"])

LOSS = _obj("One loss term; the total loss is the sum of the terms times their `scale`.", {
    "kind": _str("Loss function. cross_entropy takes class indices, with classes on the last dim of the output "
                 "(so [B, T, V] logits give token-level cross-entropy).", LOSS_KINDS),
    "output": _str("Model output it reads (default: the only output)."),
    "target": _str("Data field holding the target (default: the data set's target field)."),
    "scale": _num("Factor of this term in the total loss (default 1)."),
    "label_smoothing": _num("cross_entropy: label smoothing in [0, 1).", 0),
    "ignore_index": {"type": "integer", "description": "cross_entropy/nll: target value that adds no loss."},
    "class_weights": _numbers("cross_entropy/nll: one weight per class."),
    "beta": _num("smooth_l1: where the loss turns from quadratic to linear.", 0),
    "pos_weight": _num("bce_with_logits: weight of positive examples.", 0),
}, ["kind"])

PARAM_GROUP = _obj("Options for the parameters whose names match `params`.", {
    "params": {"anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}],
               "description": "Name pattern(s) (shell-style, e.g. `fc.*`); first matching group wins."},
    "lr": _num("Learning rate of this group.", 0),
    "weight_decay": _num("Weight decay of this group.", 0),
}, ["params"])

OPTIMIZER = _obj("Optimizer; options depend on `kind`.", {
    "kind": _str("sgd, adam, adamw or rmsprop.", OPTIMIZER_KINDS),
    "lr": _num("Learning rate.", 0),
    "weight_decay": _num("Weight decay (L2 for sgd/adam/rmsprop, decoupled for adamw).", 0),
    "decay_bias_and_norm": _bool("Apply weight decay to biases and norm weights too (default false: only "
                                 "parameters with 2 or more dims decay)."),
    "momentum": _num("sgd/rmsprop: momentum.", 0),
    "nesterov": _bool("sgd: Nesterov momentum."),
    "dampening": _num("sgd: dampening.", 0),
    "betas": {"type": "array", "items": {"type": "number"}, "minItems": 2, "maxItems": 2,
              "description": "adam/adamw: coefficients of the running averages."},
    "eps": _num("adam/adamw/rmsprop: term added for numerical stability.", 0),
    "amsgrad": _bool("adam/adamw: the AMSGrad variant."),
    "alpha": _num("rmsprop: smoothing constant.", 0),
    "centered": _bool("rmsprop: centered RMSprop."),
    "fused": _bool("adam/adamw: fused kernel (default: on where the device supports it, foreach otherwise)."),
    "groups": {"type": "array", "items": PARAM_GROUP,
               "description": "Per-parameter-group options by name pattern."},
}, ["kind"])

SCHEDULER = _obj("Learning-rate schedule; options depend on `kind`.", {
    "kind": _str("constant, step, multistep, exponential, cosine, cosine_restarts, one_cycle or plateau.",
                 SCHEDULER_KINDS),
    "interval": _str("When it steps (default: per batch for cosine, cosine_restarts and one_cycle; per epoch for "
                     "step, multistep and exponential; after each evaluation for plateau).", ["step", "epoch"]),
    "step_size": _int("step: decay every this many intervals.", 1),
    "milestones": {"type": "array", "items": {"type": "integer", "minimum": 1},
                   "description": "multistep: intervals at which to decay."},
    "gamma": _num("step/multistep/exponential: decay factor.", 0),
    "min_lr": _num("cosine/cosine_restarts/plateau: lowest learning rate.", 0),
    "t_max": _int("cosine: intervals to anneal over (default: the whole run).", 1),
    "t_0": _int("cosine_restarts: intervals before the first restart.", 1),
    "t_mult": _int("cosine_restarts: growth of the period after each restart.", 1),
    "max_lr": _num("one_cycle: peak learning rate (default: optimizer lr).", 0),
    "pct_start": _num("one_cycle: fraction of the run spent increasing the learning rate.", 0),
    "div_factor": _num("one_cycle: initial lr = max_lr / div_factor.", 1),
    "final_div_factor": _num("one_cycle: final lr = initial lr / final_div_factor.", 1),
    "metric": _str("plateau: the logged metric to watch (default: val_loss)."),
    "mode": _str("plateau: whether the metric should go down or up (default: from the metric).", ["min", "max"]),
    "factor": _num("plateau: factor applied to the lr on a plateau.", 0),
    "patience": _int("plateau: evaluations without improvement before the lr drops."),
    "threshold": _num("plateau: smallest relative change that counts as improvement.", 0),
    "warmup_steps": _int("Linear warm-up over this many optimizer steps in front of the schedule."),
    "warmup_start": _num("Warm-up starts at this fraction of the lr (default 0.01).", 0),
}, ["kind"])

TRAINING_SCHEMA: dict[str, Any] = _obj("How `dlspec train` trains the model.", {
    "seed": _int("Seed of every random generator: one seed makes a run reproducible (default 0)."),
    "deterministic": _bool("Use deterministic algorithms only (slower on GPU; errors on ops without one)."),
    "threads": _int("CPU threads for one process's tensor ops (default: torch's choice). Small models train "
                    "faster on 1, and 1 is robust on a busy machine.", 1),
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
    "data": DATA,
    "loss": {"description": "A loss term or a list of them.", "anyOf": [LOSS, {"type": "array", "items": LOSS,
                                                                               "minItems": 1}]},
    "optimizer": OPTIMIZER,
    "scheduler": SCHEDULER,
    "grad_clip": _obj("Gradient clipping before each optimizer step.", {
        "norm": _num("Clip the total gradient norm to this value.", 0),
        "value": _num("Clip every gradient element to [-value, value].", 0)}),
    "accumulate": _int("Micro-batches whose gradients add up to one optimizer step (default 1).", 1),
    "nan_guard": _str("On a NaN/Inf loss or gradient: stop (keeping the last good checkpoint), skip the step, or "
                      "off.", ["stop", "skip", "off"]),
    "evaluation": _obj("Validation.", {
        "every_steps": _int("Evaluate every this many optimizer steps (default: after each epoch).", 1),
        "metrics": {"type": "array", "items": {"type": "string", "pattern": METRIC_PATTERN},
                    "description": "loss, accuracy, topK_accuracy (e.g. top5_accuracy), mae, rmse, perplexity."},
        "output": _str("Output the metrics read (default: the first loss term's output)."),
        "target": _str("Field the metrics compare with (default: the first loss term's target)."),
    }),
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
                             "package)."),
    }),
    "init_from": _obj("Initialise the model from a checkpoint before training (transfer learning).", {
        "checkpoint": _str("A .pt checkpoint, weights file or run directory, relative to the spec file."),
        "include": _strings("Only parameter names matching one of these patterns (default: all)."),
        "exclude": _strings("Skip parameter names matching these patterns."),
    }, ["checkpoint"]),
    "freeze": _strings("Parameter-name patterns to freeze (requires_grad false)."),
    "unfreeze": _strings("Parameter-name patterns to make trainable again, applied after freeze."),
    "distributed": _obj("Multi-process training under torchrun.", {
        "strategy": _str("ddp (replicated model) or fsdp (sharded with fully_shard).", ["ddp", "fsdp"]),
        "backend": _str("auto: nccl on CUDA, gloo on CPU.", ["auto", "gloo", "nccl"]),
        "timeout_s": _int("Seconds a collective may wait for a peer before the run stops with an error.", 1),
    }),
})
