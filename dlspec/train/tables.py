"""What a data kind loads: a table of named fields with one row per example.

Every table answers the same questions (how many examples, which fields, each field's per-example shape,
dtype and value range) and gathers a whole batch from a tensor of indices in one call; the loader's
workers run `gather`. `input_field` and `target_field` are the defaults a spec can leave out. A new kind
of storage (memory-mapped tokens, an image folder) is a new class with these members.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping

import torch


@dataclass(frozen=True)
class TensorTable:
    """Examples held as tensors with the same first dimension."""
    fields: Mapping[str, torch.Tensor]
    input_field: str | None
    target_field: str | None

    def __len__(self) -> int:
        return len(next(iter(self.fields.values())))

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self.fields)

    def example_shape(self, name: str) -> tuple[int, ...]:
        return tuple(self.fields[name].shape[1:])

    def dtype(self, name: str) -> torch.dtype:
        return self.fields[name].dtype

    def value_range(self, name: str) -> tuple[float, float]:
        values = self.fields[name]
        return (values.min().item(), values.max().item()) if values.numel() else (0, 0)

    def gather(self, index: torch.Tensor) -> dict[str, torch.Tensor]:
        return {name: values[index] for name, values in self.fields.items()}

    def take(self, index: torch.Tensor) -> "TensorTable":
        return TensorTable({k: v[index] for k, v in self.fields.items()}, self.input_field, self.target_field)

    def split(self, fraction: float, seed: int) -> tuple["TensorTable", "TensorTable"]:
        # A seeded permutation, independent of the global RNG, so the split is the same on resume.
        order = torch.randperm(len(self), generator=torch.Generator().manual_seed(seed))
        n_val = int(round(len(self) * fraction))
        return self.take(order[n_val:]), self.take(order[:n_val])

    def map_fields(self, fn: Callable[[str, torch.Tensor], torch.Tensor]) -> "TensorTable":
        return TensorTable({k: fn(k, v) for k, v in self.fields.items()}, self.input_field, self.target_field)


@dataclass(frozen=True)
class TextTable:
    """Character-level language modelling: windows of `block` characters of one text, and the next ones.

    Training takes a window at every offset (stride 1); validation takes windows side by side (stride =
    block), which scores every character once instead of `block` times. Windows are cut when a batch is
    gathered, so memory stays the size of the text.
    """
    stream: torch.Tensor  # int64 character ids
    block: int
    vocab: tuple[str, ...]
    stride: int = 1
    input_field: str = "tokens"
    target_field: str = "targets"
    names: tuple[str, ...] = ("tokens", "targets")

    def __len__(self) -> int:
        # a window at offset o needs o + block + 1 characters (the targets are shifted by one)
        return max((len(self.stream) - self.block - 1) // self.stride + 1, 0)

    def example_shape(self, name: str) -> tuple[int, ...]:
        return (self.block,)

    def dtype(self, name: str) -> torch.dtype:
        return torch.int64

    def value_range(self, name: str) -> tuple[float, float]:
        return (0, len(self.vocab) - 1)

    def gather(self, index: torch.Tensor) -> dict[str, torch.Tensor]:
        offsets = index[:, None] * self.stride + torch.arange(self.block + 1)
        windows = self.stream[offsets]
        return {"tokens": windows[:, :-1], "targets": windows[:, 1:]}

    def split(self, fraction: float, seed: int) -> tuple["TextTable", "TextTable"]:
        # The held-out text is the tail, not random windows: windows overlap, so a random split would leak.
        cut = int(len(self.stream) * (1 - fraction))
        return (TextTable(self.stream[:cut], self.block, self.vocab),
                TextTable(self.stream[cut:], self.block, self.vocab, stride=self.block))

    def map_fields(self, fn) -> "TextTable":
        return self


Table = TensorTable | TextTable
