"""Augmentation kinds, in three stages, each a pure function of where the example or batch is:

- `example`: one example at a time, in the loader (its worker processes with num_workers), on the field as
  the data set gives it (images in [0, 1]) or, for `normalized` kinds, after normalisation; each example's
  generator is seeded by (seed, epoch, example index), so the result is the same whatever the workers.
- `batch`: the whole batch in the training process, on the device: random flip, random crop with padding, noise.
- `mix`: the batch and its labels together (mixup, cutmix); labels become class probabilities.

Batch and mix generators are seeded by (seed, epoch, batch, rank), never the global RNG: a resumed run sees
the same augmentation. A kind's `build(options)` gives `apply(x, generator) -> x` (`apply(x, y, generator) ->
(x, y)` for a mix, y being [B, classes] probabilities), and its `fits(options, example shape)` says what is
wrong with a field it cannot apply to.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

from dlspec.core.errors import DlspecError
from dlspec.train.kinds import Kind, Kinded, Option, Registry

if TYPE_CHECKING:
    import torch

Apply = Callable[["torch.Tensor", "torch.Generator"], "torch.Tensor"]
Mix = Callable[["torch.Tensor", "torch.Tensor", "torch.Generator"], "tuple[torch.Tensor, torch.Tensor]"]


@dataclass(frozen=True)
class AugmentKind(Kind):
    fits: Callable[[Kinded, tuple[int, ...]], str | None] = lambda o, shape: None
    stage: str = "batch"  # example, batch or mix
    normalized: bool = False  # an example transform that runs after normalisation (random_erasing)

    def described(self) -> str:
        where = {"example": "Per example, in the loader" + (" after normalisation" if self.normalized else ""),
                 "batch": "Per batch, on the device", "mix": "Per batch with its labels, on the device"}[self.stage]
        return f"{self.doc} ({where}.)"


AUGMENTATIONS = Registry("augmentation", "Augmentation.", key="op", common=(
    Option("field", "string", "The data field it applies to.", default_doc="the first model input's field"),))


def _flip(o: Kinded) -> Apply:
    def apply(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        import torch
        dim = o["dim"] % (x.ndim - 1) + 1  # a dim of one example -> a dim of the batch
        flip = torch.rand(len(x), generator=generator) < o["p"]
        return torch.where(flip.to(x.device).reshape(-1, *[1] * (x.ndim - 1)), x.flip(dim), x)
    return apply


def _crop(o: Kinded) -> Apply:
    """Zero-pad the last two dims by `padding`, then cut each example back to its size at a random offset."""
    def apply(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        import torch
        import torch.nn.functional as F
        pad, (h, w) = o["padding"], x.shape[-2:]
        padded = F.pad(x, (pad, pad, pad, pad))
        dy, dx = (torch.randint(0, 2 * pad + 1, (len(x),), generator=generator) for _ in range(2))
        rows = (dy[:, None] + torch.arange(h)).to(x.device)  # (N, H)
        cols = (dx[:, None] + torch.arange(w)).to(x.device)  # (N, W)
        lead = [1] * (x.ndim - 3)
        cropped = padded.gather(-2, rows.reshape(len(x), *lead, h, 1).expand(*x.shape[:-2], h, w + 2 * pad))
        return cropped.gather(-1, cols.reshape(len(x), *lead, 1, w).expand(*x.shape[:-2], h, w))
    return apply


def _noise(o: Kinded) -> Apply:
    def apply(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        import torch
        return x + o["std"] * torch.randn(x.shape, generator=generator).to(x.device, x.dtype)
    return apply


AUGMENTATIONS.add(AugmentKind("random_flip", "Flip each example along one of its dims with probability `p`.",
                              (Option("dim", "integer", "The dim of one example to flip.", -1, minimum=-8),
                               Option("p", "number", "Probability per example.", 0.5, minimum=0, maximum=1)),
                              _flip, fits=lambda o, shape: None if -len(shape) <= o["dim"] < len(shape) else
                              f"random_flip dim {o['dim']} is out of range for examples of shape {list(shape)}"))
AUGMENTATIONS.add(AugmentKind("random_crop", "Zero-pad the last two dims, then crop back to size at a random offset.",
                              (Option("padding", "integer", "Zero padding on each side before cropping.", 1, minimum=1),),
                              _crop, fits=lambda o, shape: None if len(shape) >= 2 else
                              f"random_crop needs examples with at least 2 dims (images [C, H, W]); the field's have "
                              f"shape {list(shape)}"))
AUGMENTATIONS.add(AugmentKind("noise", "Add Gaussian noise.",
                              (Option("std", "number", "Standard deviation.", 0.1, minimum=0),), _noise))


def _image(o: Kinded, shape: tuple[int, ...]) -> str | None:
    if len(shape) != 3 or shape[0] not in (1, 3):
        return f"{o.kind} needs images [C, H, W] with 1 or 3 channels; the field's examples have shape {list(shape)}"
    return None


def _example(transform: str, *options: str) -> Callable[[Kinded], Apply]:
    """An example transform of images.py, called with the kind's options."""
    def build(o: Kinded) -> Apply:
        from dlspec.train import images
        fn = getattr(images, transform)
        kwargs = {name: o[name] for name in options}
        return lambda x, generator: fn(x, generator, **kwargs)
    return build


def _pair(doc: str, default: list[float], minimum: float = 0) -> tuple[str, str, list[float], dict]:
    return ("numbers", doc, default, {"type": "array", "items": {"type": "number", "minimum": minimum},
                                      "minItems": 2, "maxItems": 2})


def _option(name: str, spec: tuple) -> Option:
    type_, doc, default, schema = spec
    return Option(name, type_, doc, default, schema=schema)


_SCALE = {"random_resized_crop": _pair("Range of the box's area, as a fraction of the image.", [0.08, 1.0]),
          "random_erasing": _pair("Range of the erased area, as a fraction of the image.", [0.02, 0.33])}
_RATIO = {"random_resized_crop": _pair("Range of the box's aspect ratio (width / height).", [0.75, 1.3333]),
          "random_erasing": _pair("Range of the erased box's aspect ratio.", [0.3, 3.3])}
AUGMENTATIONS.add(AugmentKind("random_rotation", "Rotate by an angle drawn from [-degrees, degrees] (bilinear, "
                              "zeros outside).", (Option("degrees", "number", "Largest angle, in degrees.", 15.0,
                                                         minimum=0, maximum=180),),
                              _example("random_rotation", "degrees"), fits=_image, stage="example"))
AUGMENTATIONS.add(AugmentKind("color_jitter", "Brightness, contrast and saturation factors drawn from [1 - x, 1 + x] "
                              "and a hue shift from [-hue, hue], applied in a random order (torchvision's ColorJitter).",
                              tuple(Option(n, "number", d, 0.0, minimum=0, maximum=m) for n, d, m in (
                                  ("brightness", "How far brightness may change.", None),
                                  ("contrast", "How far contrast may change.", None),
                                  ("saturation", "How far saturation may change (RGB only).", None),
                                  ("hue", "Largest hue shift, in turns (RGB only).", 0.5))),
                              _example("color_jitter", "brightness", "contrast", "saturation", "hue"), fits=_image,
                              stage="example"))
AUGMENTATIONS.add(AugmentKind("random_resized_crop", "Crop a box of random area and aspect ratio and scale it back "
                              "to the image's size (torchvision's RandomResizedCrop).",
                              (_option("scale", _SCALE["random_resized_crop"]),
                               _option("ratio", _RATIO["random_resized_crop"])),
                              _example("random_resized_crop", "scale", "ratio"), fits=_image, stage="example"))
AUGMENTATIONS.add(AugmentKind("random_erasing", "With probability p, set a box of random area and aspect ratio to "
                              "`value` (torchvision's RandomErasing).",
                              (Option("p", "number", "Probability per example.", 0.5, minimum=0, maximum=1),
                               _option("scale", _SCALE["random_erasing"]), _option("ratio", _RATIO["random_erasing"]),
                               Option("value", "number", "What the box is set to (after normalisation: 0 is the "
                                      "mean).", 0.0)),
                              _example("random_erasing", "p", "scale", "ratio", "value"), fits=_image, stage="example",
                              normalized=True))


def _beta(generator: torch.Generator, alpha: float) -> float:
    import numpy as np
    import torch
    return float(np.random.default_rng(int(torch.randint(2**62, (), generator=generator))).beta(alpha, alpha))


def _mixup(o: Kinded) -> Mix:
    def apply(x: torch.Tensor, y: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        import torch
        if torch.rand((), generator=generator).item() >= o["p"]:
            return x, y
        lam = _beta(generator, o["alpha"])
        return lam * x + (1 - lam) * x.roll(1, 0), lam * y + (1 - lam) * y.roll(1, 0)
    return apply


def _cutmix(o: Kinded) -> Mix:
    def apply(x: torch.Tensor, y: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        import math

        import torch
        if torch.rand((), generator=generator).item() >= o["p"]:
            return x, y
        lam = _beta(generator, o["alpha"])
        h, w = x.shape[-2:]
        cy, cx = (int(torch.randint(n, (), generator=generator)) for n in (h, w))
        half = 0.5 * math.sqrt(1 - lam)
        top, bottom = max(cy - int(half * h), 0), min(cy + int(half * h), h)
        left, right = max(cx - int(half * w), 0), min(cx + int(half * w), w)
        x = x.clone()
        x[..., top:bottom, left:right] = x.roll(1, 0)[..., top:bottom, left:right]
        kept = 1 - (bottom - top) * (right - left) / (h * w)  # the label weight is the area actually kept
        return x, kept * y + (1 - kept) * y.roll(1, 0)
    return apply


_P_MIX = Option("p", "number", "Probability a batch is mixed.", 1.0, minimum=0, maximum=1)
AUGMENTATIONS.add(AugmentKind("mixup", "Blend each example and its label with the next example's, by a weight drawn "
                              "from Beta(alpha, alpha) per batch (torchvision's MixUp).",
                              (Option("alpha", "number", "Beta distribution parameter.", 0.2, minimum=0), _P_MIX),
                              _mixup, stage="mix"))
AUGMENTATIONS.add(AugmentKind("cutmix", "Paste a box of the next example into each one; labels weighted by area "
                              "(torchvision's CutMix).",
                              (Option("alpha", "number", "Beta distribution parameter.", 1.0, minimum=0), _P_MIX),
                              _cutmix, fits=lambda o, shape: None if len(shape) >= 2 else
                              f"cutmix needs examples with at least 2 dims (images); the field's have shape {list(shape)}",
                              stage="mix"))


@dataclass(frozen=True)
class Augmentation:
    field: str
    apply: Any  # Apply, or Mix for stage `mix`
    stage: str
    normalized: bool = False
    target: str | None = None  # mix: the label field
    classes: int = 0  # mix: labels become [B, classes] probabilities


def build(augment: Sequence[Kinded], fields: Mapping[str, tuple[int, ...]], default_field: str, locate,
          labels: tuple[str, int] | None = None) -> tuple[Augmentation, ...]:
    """Each augmentation names a field of the data with enough dims for what it does; a mix needs `labels`,
    the (field, class count) of a classification loss with one label per example."""
    built = []
    for aug in augment:
        name = aug["field"] or default_field
        if name not in fields:
            raise DlspecError.single(f"augmentation '{aug.kind}' names field '{name}', which the data set lacks",
                                     locate(aug.path + ("field",)), expected="one of " + ", ".join(fields))
        kind = aug.definition
        wrong = kind.fits(aug, fields[name])
        if wrong:
            raise DlspecError.single(f"{wrong} (field '{name}')", locate(aug.path),
                                     hint="name the field it is for with `field:`, or drop this augmentation")
        if kind.stage == "mix" and (labels is None or fields.get(labels[0]) != ()):
            raise DlspecError.single(f"{aug.kind} mixes labels: it needs a classification loss (cross_entropy) with one "
                                     "class label per example", locate(aug.path),
                                     hint="drop it, or train with `loss: {kind: cross_entropy}` on per-example labels")
        target, classes = labels if kind.stage == "mix" else (None, 0)
        built.append(Augmentation(name, kind.build(aug), kind.stage, kind.normalized, target, classes))
    return tuple(built)


def apply(batch: dict[str, Any], augmentations: Sequence[Augmentation], generator: torch.Generator) -> dict[str, Any]:
    """The batch and mix stages, in the order the spec lists them."""
    import torch
    batch = dict(batch)
    for aug in augmentations:
        if aug.stage == "batch":
            batch[aug.field] = aug.apply(batch[aug.field], generator)
        elif aug.stage == "mix":
            y = batch[aug.target]
            if not y.is_floating_point():
                y = torch.nn.functional.one_hot(y, aug.classes).float()
            batch[aug.field], batch[aug.target] = aug.apply(batch[aug.field], y, generator)
    return batch


def per_example(augmentations: Sequence[Augmentation], normalized: bool) -> tuple[Augmentation, ...]:
    """The example stage's transforms that run before (or after) normalisation."""
    return tuple(a for a in augmentations if a.stage == "example" and a.normalized == normalized)
