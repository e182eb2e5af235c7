"""Augmentation kinds, applied to whole training batches: random flip, random crop with padding, noise.

They run on the batch in the main process with a generator seeded from (seed, epoch, batch), not from
the global RNG: the same batch sees the same augmentation whether or not the run was resumed, whatever
num_workers is. A kind's `build(options)` gives `apply(x, generator) -> x` for the field's batch, and its
`fits(options, example shape)` says what is wrong with a field it cannot apply to.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

from dlspec.core.errors import DlspecError
from dlspec.train.kinds import Kind, Kinded, Option, Registry

if TYPE_CHECKING:
    import torch

Apply = Callable[["torch.Tensor", "torch.Generator"], "torch.Tensor"]


@dataclass(frozen=True)
class AugmentKind(Kind):
    fits: Callable[[Kinded, tuple[int, ...]], str | None] = lambda o, shape: None


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


@dataclass(frozen=True)
class Augmentation:
    field: str
    apply: Apply


def build(augment: Sequence[Kinded], fields: Mapping[str, tuple[int, ...]], default_field: str,
          locate) -> tuple[Augmentation, ...]:
    """Each augmentation names a field of the data with enough dims for what it does."""
    built = []
    for aug in augment:
        name = aug["field"] or default_field
        if name not in fields:
            raise DlspecError.single(f"augmentation '{aug.kind}' names field '{name}', which the data set lacks",
                                     locate(aug.path + ("field",)), expected="one of " + ", ".join(fields))
        wrong = aug.definition.fits(aug, fields[name])
        if wrong:
            raise DlspecError.single(f"{wrong} (field '{name}')", locate(aug.path),
                                     hint="name the field it is for with `field:`, or drop this augmentation")
        built.append(Augmentation(name, aug.definition.build(aug)))
    return tuple(built)


def apply(batch: dict[str, Any], augmentations: Sequence[Augmentation], generator: torch.Generator) -> dict[str, Any]:
    batch = dict(batch)
    for aug in augmentations:
        batch[aug.field] = aug.apply(batch[aug.field], generator)
    return batch
