"""Random inputs a model accepts: the same (sizes, seed) always gives the same tensors.

Valid inputs matter: an out-of-range token id would make the eager model fail
rather than test the export, and an all-False attention mask row gives NaN
(softmax over nothing) in every runtime.
"""
from __future__ import annotations

import torch

from dlspec.front.spec import concrete_shape

# Integer inputs whose range the spec does not give (not feeding an embedding) draw from [0, 2).
DEFAULT_INT_RANGE = (0, 2)


def random_inputs(spec, sizes: dict[str, int] | None = None, seed: int = 0) -> tuple[torch.Tensor, ...]:
    """One tensor per declared input, at `sizes` for the symbolic dims (default: the spec's example sizes)."""
    sizes = {**spec.example_sizes(), **(sizes or {})}
    generator = torch.Generator().manual_seed(seed)
    return tuple(_random(t, concrete_shape(t.shape, sizes), generator) for t in spec.inputs)


def _random(tensor, shape: tuple[int, ...], generator: torch.Generator) -> torch.Tensor:
    dtype = getattr(torch, tensor.dtype)
    if dtype == torch.bool:
        return _mask(shape, generator)
    if dtype.is_floating_point:
        return torch.randn(shape, generator=generator).to(dtype)  # N(0, 1), drawn in fp32 for every dtype
    lo, hi = tensor.range or DEFAULT_INT_RANGE
    return torch.randint(lo, hi, shape, generator=generator, dtype=dtype)


def _mask(shape: tuple[int, ...], generator: torch.Generator) -> torch.Tensor:
    """Each position True with probability 1/2, and at least one True in every row (last axis)."""
    mask = torch.rand(shape, generator=generator) < 0.5
    if mask.dim() and mask.shape[-1]:
        keep = torch.randint(0, mask.shape[-1], (*mask.shape[:-1], 1), generator=generator)
        mask.scatter_(-1, keep, True)
    return mask
