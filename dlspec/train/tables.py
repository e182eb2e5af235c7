"""What a data kind loads: a table of named fields with one row per example.

Every table answers the same questions (how many examples, which fields, each field's per-example shape,
dtype and value range) and gathers a whole batch from a tensor of indices in one call; the loader's
workers run `gather`. `input_field` and `target_field` are the defaults a spec can leave out.

- TensorTable: fields held as tensors (bundled, synthetic, .npz/.pt, CSV, Parquet).
- TextTable: character-level text in memory, cut into windows.
- TokenTable: token files memory-mapped, never read whole; windows drawn at random offsets (nanoGPT)
  or side by side.
- ImageTable: a folder of image files, decoded when a batch is gathered.

`draws` says how an epoch visits a table: None, every example once in a shuffled order; a number, that
many examples drawn at random (with replacement) from `len(table)` positions, as nanoGPT samples windows.
A table holds no open file: a loader worker started by spawn gets it pickled and opens what it reads.
"""
from __future__ import annotations

import functools
import mmap
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch


class DataFault(Exception):
    """A bad example found while gathering a batch (a damaged image, a token past the vocabulary): the message
    names the file. Plain (one string argument) so that a DataLoader worker can hand it back."""


def _split_order(n: int, fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    # A seeded permutation, independent of the global RNG, so the split is the same on resume.
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    n_val = int(round(n * fraction))
    return order[n_val:], order[:n_val]


@dataclass(frozen=True)
class TensorTable:
    """Examples held as tensors with the same first dimension."""
    fields: Mapping[str, torch.Tensor]
    input_field: str | None
    target_field: str | None
    classes: Mapping[str, tuple[str, ...]] | None = None  # field -> class names, for labels read as strings
    draws = None

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

    def sample(self, name: str) -> torch.Tensor:
        """The values normalisation statistics are computed from: all of them."""
        return self.fields[name]

    def take(self, index: torch.Tensor) -> "TensorTable":
        return replace(self, fields={k: v[index] for k, v in self.fields.items()})

    def split(self, fraction: float, seed: int) -> tuple["TensorTable", "TensorTable"]:
        train, val = _split_order(len(self), fraction, seed)
        return self.take(train), self.take(val)

    def for_validation(self) -> "TensorTable":
        return self


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
    draws = None
    classes = None

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

    def for_validation(self) -> "TextTable":
        return replace(self, stride=self.block)  # windows side by side: every character scored once


# ---- token files ------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Shard:
    """Tokens [start, stop) of one file: a raw .bin (`offset` 0) or a .npy (`offset`: its header's size)."""
    path: str
    dtype: str  # numpy dtype name: uint16, uint32, int32, ...
    offset: int
    start: int
    stop: int

    def __len__(self) -> int:
        return self.stop - self.start


@functools.lru_cache(maxsize=64)
def _opened(path: str):
    """The token file, opened once per process (a forked worker shares it: a map needs no file position)."""
    return open(path, "rb")


def _windows(shard: Shard, starts: list[int], length: int) -> np.ndarray:
    """The windows [start, start + length) of a shard, as int64 rows. Read through a memory map made for this
    batch and dropped after it, as nanoGPT does: pages a mapping has touched count as this process's memory
    until it is unmapped, so a long run would otherwise grow towards the file's size. The map is advised of
    random access, so each window reads its own pages and not the kernel's read-ahead around them."""
    with mmap.mmap(_opened(shard.path).fileno(), 0, access=mmap.ACCESS_READ) as mapped:
        if hasattr(mmap, "MADV_RANDOM"):
            mapped.madvise(mmap.MADV_RANDOM)
        ids = np.frombuffer(mapped, dtype=np.dtype(shard.dtype), offset=shard.offset)
        rows = np.stack([ids[s:s + length] for s in starts]).astype(np.int64)
        del ids  # no view may outlive the map
    return rows


@dataclass(frozen=True)
class TokenTable:
    """Token ids in one or many memory-mapped files: windows of `block + 1` tokens (inputs and the targets
    shifted by one), never crossing from one file into the next.

    `random`: an epoch draws `draws` windows at random offsets, with replacement, as nanoGPT's get_batch
    does (an epoch is as many windows as the tokens fill side by side). Otherwise windows lie `stride`
    apart and an epoch visits each once: validation scores every held-out token once at stride `block`.
    """
    shards: tuple[Shard, ...]
    block: int
    random: bool = True
    stride: int = 1
    tokenizer: Mapping[str, Any] | None = None  # how the ids were made (meta.json of `dlspec data tokenize`)
    max_windows: int | None = None  # validation: at most this many windows, spread evenly
    input_field: str = "tokens"
    target_field: str = "targets"
    names: tuple[str, ...] = ("tokens", "targets")
    classes = None

    @functools.cached_property
    def _counts(self) -> np.ndarray:
        """Windows per shard, cumulated."""
        step = 1 if self.random else self.stride
        counts = [max((len(s) - self.block - 1) // step + 1, 0) for s in self.shards]
        return np.cumsum([0] + counts)

    def __len__(self) -> int:
        return int(self._counts[-1])

    @property
    def tokens(self) -> int:
        return sum(len(s) for s in self.shards)

    @property
    def draws(self) -> int | None:
        return max(self.tokens // self.block, 1) if self.random else None

    def example_shape(self, name: str) -> tuple[int, ...]:
        return (self.block,)

    def dtype(self, name: str) -> torch.dtype:
        return torch.int64

    @functools.cached_property
    def _range(self) -> tuple[int, int]:
        """The smallest and largest id, read in chunks with plain reads: through the memory map, every page
        would stay resident in this process, and a 1 GB file would count 1 GB against its memory."""
        lo, hi = None, None
        for shard in self.shards:
            dtype = np.dtype(shard.dtype)
            with open(shard.path, "rb") as handle:
                handle.seek(shard.offset + shard.start * dtype.itemsize)
                for at in range(shard.start, shard.stop, 1 << 22):
                    chunk = np.fromfile(handle, dtype=dtype, count=min(1 << 22, shard.stop - at))
                    lo = int(chunk.min()) if lo is None else min(lo, int(chunk.min()))
                    hi = int(chunk.max()) if hi is None else max(hi, int(chunk.max()))
        return (lo or 0, hi or 0)

    def value_range(self, name: str) -> tuple[float, float]:
        return self._range

    def gather(self, index: torch.Tensor) -> dict[str, torch.Tensor]:
        positions = index.numpy()
        shard_of = np.searchsorted(self._counts, positions, side="right") - 1
        windows = np.empty((len(positions), self.block + 1), dtype=np.int64)
        step = 1 if self.random else self.stride
        for s in np.unique(shard_of):
            rows = np.flatnonzero(shard_of == s)
            shard = self.shards[s]
            starts = [shard.start + (int(positions[r]) - int(self._counts[s])) * step for r in rows]
            windows[rows] = _windows(shard, starts, self.block + 1)
        windows = torch.from_numpy(windows)
        return {"tokens": windows[:, :-1], "targets": windows[:, 1:]}

    def split(self, fraction: float, seed: int) -> tuple["TokenTable", "TokenTable"]:
        """The held-out range is the tail of the tokens (windows overlap: a random split would leak)."""
        cut = int(self.tokens * (1 - fraction))
        head, tail, seen = [], [], 0
        for s in self.shards:
            if seen + len(s) <= cut:
                head.append(s)
            elif seen >= cut:
                tail.append(s)
            else:
                head.append(replace(s, stop=s.start + cut - seen))
                tail.append(replace(s, start=s.start + cut - seen))
            seen += len(s)
        return replace(self, shards=tuple(head)), replace(self, shards=tuple(tail)).for_validation()

    def for_validation(self) -> "TokenTable":
        """Windows side by side (every token scored once), or spread evenly to at most `max_windows`."""
        side_by_side = replace(self, random=False, stride=self.block)
        if self.max_windows is None or len(side_by_side) <= self.max_windows:
            return side_by_side
        span = sum(max(len(s) - self.block - 1, 0) for s in self.shards)  # where the windows may start
        spread = replace(self, random=False, stride=max(span // self.max_windows + 1, self.block))
        while len(spread) > self.max_windows:  # several files: each may add one window to the even spread
            spread = replace(spread, stride=spread.stride + max(spread.stride // 16, 1))
        return spread

    def __getstate__(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if not k.startswith("_")}  # not the cached counts


# ---- image folders ----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ImageTable:
    """Image files with a class each (their folder), decoded to [C, H, W] floats in [0, 1] when gathered."""
    files: tuple[str, ...]
    labels: torch.Tensor  # int64, one per file
    classes: Mapping[str, tuple[str, ...]]  # {"label": class names in index order}
    decode: Mapping[str, Any]  # keyword arguments of images.decode: size, channels, resize
    input_field: str = "image"
    target_field: str = "label"
    names: tuple[str, ...] = ("image", "label")
    draws = None

    def __len__(self) -> int:
        return len(self.files)

    def example_shape(self, name: str) -> tuple[int, ...]:
        return (self.decode["channels"], *self.decode["size"]) if name == "image" else ()

    def dtype(self, name: str) -> torch.dtype:
        return torch.float32 if name == "image" else torch.int64

    def value_range(self, name: str) -> tuple[float, float]:
        if name == "image":
            return (0.0, 1.0)
        return (self.labels.min().item(), self.labels.max().item()) if len(self.labels) else (0, 0)

    def gather(self, index: torch.Tensor) -> dict[str, torch.Tensor]:
        from dlspec.train.images import decode
        images = [decode(Path(self.files[i]), **self.decode) for i in index.tolist()]
        return {"image": torch.stack(images) if images else torch.empty(0, *self.example_shape("image")),
                "label": self.labels[index]}

    SAMPLE = 1000  # images normalisation statistics are computed from, spread evenly over the training split

    def sample(self, name: str) -> torch.Tensor:
        if name != "image":
            return self.labels
        pick = torch.linspace(0, len(self) - 1, min(len(self), self.SAMPLE)).round().long().unique()
        return self.gather(pick)["image"]

    def take(self, index: torch.Tensor) -> "ImageTable":
        return replace(self, files=tuple(self.files[i] for i in index.tolist()), labels=self.labels[index])

    def split(self, fraction: float, seed: int) -> tuple["ImageTable", "ImageTable"]:
        train, val = _split_order(len(self), fraction, seed)
        return self.take(train), self.take(val)

    def for_validation(self) -> "ImageTable":
        return self


Table = TensorTable | TextTable | TokenTable | ImageTable
