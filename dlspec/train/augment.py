"""Augmentations of training batches: random flip, random crop with padding, Gaussian noise.

They run on whole batches in the main process with a generator seeded from
(seed, step), not from the global RNG: the same step sees the same
augmentation whether or not the run was resumed, whatever num_workers is.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import torch
import torch.nn.functional as F

from dlspec.core.errors import DlspecError


def check(augment: Sequence[Mapping[str, Any]], fields: Mapping[str, tuple[int, ...]], default_field: str,
          locate) -> None:
    """Each augmentation names a floating-point field with enough dims for what it does."""
    for i, aug in enumerate(augment):
        where = ("training", "data", "augment", i)
        name = aug.get("field", default_field)
        if name not in fields:
            raise DlspecError.single(f"augmentation '{aug['op']}' names field '{name}', which the data set lacks",
                                     locate(where + ("field",)), expected="one of " + ", ".join(fields))
        shape = fields[name]
        if aug["op"] == "random_crop" and len(shape) < 2:
            raise DlspecError.single(f"random_crop needs examples with at least 2 dims; '{name}' has shape {list(shape)}",
                                     locate(where), hint="random_crop is for images [C, H, W]")
        if aug["op"] == "random_flip" and not -len(shape) <= aug.get("dim", -1) < len(shape):
            raise DlspecError.single(f"random_flip dim {aug.get('dim')} is out of range for '{name}' of shape "
                                     f"{list(shape)}", locate(where + ("dim",)))


def apply(batch: dict[str, torch.Tensor], augment: Sequence[Mapping[str, Any]], default_field: str,
          generator: torch.Generator) -> dict[str, torch.Tensor]:
    batch = dict(batch)
    for aug in augment:
        name = aug.get("field", default_field)
        x = batch[name]
        if aug["op"] == "random_flip":
            dim = aug.get("dim", -1) % (x.ndim - 1) + 1  # a dim of one example -> a dim of the batch
            flip = torch.rand(len(x), generator=generator) < aug.get("p", 0.5)
            x = torch.where(flip.to(x.device).reshape(-1, *[1] * (x.ndim - 1)), x.flip(dim), x)
        elif aug["op"] == "random_crop":
            x = _random_crop(x, aug.get("padding", 1), generator)
        else:  # noise
            x = x + aug.get("std", 0.1) * torch.randn(x.shape, generator=generator).to(x.device, x.dtype)
        batch[name] = x
    return batch


def _random_crop(x: torch.Tensor, pad: int, generator: torch.Generator) -> torch.Tensor:
    """Zero-pad the last two dims by `pad`, then cut each example back to its size at a random offset."""
    h, w = x.shape[-2:]
    padded = F.pad(x, (pad, pad, pad, pad))
    dy, dx = (torch.randint(0, 2 * pad + 1, (len(x),), generator=generator) for _ in range(2))
    rows = (dy[:, None] + torch.arange(h)).to(x.device)  # (N, H)
    cols = (dx[:, None] + torch.arange(w)).to(x.device)  # (N, W)
    lead = [1] * (x.ndim - 3)
    index_rows = rows.reshape(len(x), *lead, h, 1).expand(*x.shape[:-2], h, w + 2 * pad)
    cropped = padded.gather(-2, index_rows)
    index_cols = cols.reshape(len(x), *lead, 1, w).expand(*x.shape[:-2], h, w)
    return cropped.gather(-1, index_cols)
