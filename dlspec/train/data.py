"""From a `data:` section to batches the model accepts, checked before training starts.

Fields are matched to the spec's declared inputs by name, and every input is
checked for shape, dtype and integer range here, so a wrong file fails with a
located message instead of a shape error deep in the first forward pass.

Batches are whole index lists, and the table gathers each with one tensor index,
which is far cheaper than collating single examples: in the training process
itself (nothing in between, as a hand-written loop does) or, with num_workers,
in DataLoader workers fed one list per batch. The order of an epoch is a pure
function of (seed, epoch, rank, world size) through torch's DistributedSampler,
so a resumed run can start again at any batch of any epoch.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping

import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler

from dlspec.core.dims import per_example
from dlspec.core.errors import DlspecError, Problem, did_you_mean, format_path
from dlspec.core.expr import ExprError, evaluate
from dlspec.train import datasets
from dlspec.train.config import DataConfig, Locate
from dlspec.train.tables import Table, TensorTable, TextTable


@dataclass(frozen=True)
class Data:
    train: Table
    val: Table | None
    input_fields: tuple[str, ...]  # the field feeding each model input, in declared order
    default_target: str | None
    stats: Mapping[str, Mapping[str, list[float]]]  # normalisation statistics, for the run record
    vocab: tuple[str, ...] | None  # character-level text only


def prepare(cfg: DataConfig, spec: Any, seed: int, base: Path) -> Data:
    """Load, split, normalise and check the data against the spec's inputs; relative paths start at `base`."""
    table = datasets.load(cfg.dataset, datasets.Source(base, seed, spec.locate))
    if cfg.validation_dataset is not None:
        train, val = table, datasets.load(cfg.validation_dataset,
                                          datasets.Source(base, seed, spec.locate, getattr(table, "vocab", None)))
        if isinstance(val, TextTable):
            val = replace(val, stride=val.block)  # windows side by side: every character scored once
    elif cfg.validation_fraction > 0:
        train, val = table.split(cfg.validation_fraction, seed)
    else:
        train, val = table, None
    stats = _statistics(cfg.normalize, train, spec.locate)
    normalise = _normaliser(stats)
    train, val = train.map_fields(normalise), val.map_fields(normalise) if val is not None else None
    input_fields = _match_inputs(cfg, spec, train)
    if val is not None and cfg.validation_dataset is not None:
        _check_validation(spec, train, val, input_fields)
    return Data(train, val, input_fields, train.target_field, stats, getattr(train, "vocab", None))


# ---- matching fields to the model's declared inputs ------------------------------------------------------------

def _match_inputs(cfg: DataConfig, spec: Any, table: Table) -> tuple[str, ...]:
    names = list(table.names)
    declared = [i.name for i in spec.inputs]
    problems: list[Problem] = []
    where = ("training", "data", "inputs")
    for name in cfg.inputs:
        if name not in declared:
            problems.append(Problem(f"'{name}' is not an input of the model", spec.locate(where + (name,)),
                                    format_path(where + (name,)), f"one of {', '.join(declared)}",
                                    did_you_mean(name, declared)))
    fields = []
    for tensor in spec.inputs:
        field = cfg.inputs.get(tensor.name) or (tensor.name if tensor.name in names else None)
        if field is None and len(spec.inputs) == 1:
            field = table.input_field
        if field not in names:
            problems.append(Problem(
                f"no data field for model input '{tensor.name}'" + (f" (field '{field}' does not exist)" if field else ""),
                spec.locate(where + (tensor.name,)) or spec.locate(("training", "data", "dataset")),
                format_path(where + (tensor.name,)), f"a field of the data set: {', '.join(names)}",
                f"map it: `inputs: {{{tensor.name}: {names[0]}}}`"))
            continue
        fields.append(field)
        problems.extend(check_field(spec, table, field, tensor, ("model", "inputs", tensor.name)))
    if problems:
        raise DlspecError(problems)
    return tuple(fields)


def _check_validation(spec: Any, train: Table, val: Table, input_fields: tuple[str, ...]) -> None:
    """A separate validation file holds the training set's fields, and its inputs fit the model too."""
    where = ("training", "data", "validation", "dataset")
    loc = spec.locate(where + ("path",))
    problems = []
    for name in train.names:
        if name not in val.names:
            problems.append(Problem(f"the validation data set has no field '{name}'", loc, format_path(where),
                                    f"the training fields: {', '.join(train.names)}", did_you_mean(name, val.names)))
        elif val.example_shape(name) != train.example_shape(name) or (
                val.dtype(name).is_floating_point != train.dtype(name).is_floating_point):
            problems.append(Problem(f"validation field '{name}' has examples of {str(val.dtype(name)).removeprefix('torch.')}"
                                    f" {list(val.example_shape(name))}, training ones are "
                                    f"{str(train.dtype(name)).removeprefix('torch.')} {list(train.example_shape(name))}",
                                    loc, format_path(where), "the same shape and kind of dtype in both files"))
    if not problems:
        for field, tensor in zip(input_fields, spec.inputs):
            problems.extend(replace(p, message=f"validation {p.message}")
                            for p in check_field(spec, val, field, tensor, ("model", "inputs", tensor.name)))
    if problems:
        raise DlspecError(problems)


def check_field(spec: Any, table: Table, field: str, tensor: Any, where: tuple) -> list[Problem]:
    """Problems with a data field feeding a declared tensor: shape (after the batch dim), dtype kind, range."""
    problems: list[Problem] = []
    loc = spec.locate(where)
    shape, dtype = table.example_shape(field), table.dtype(field)
    declared = per_example(tensor.shape)
    if not _shape_fits(declared, shape, spec.dims):
        problems.append(Problem(f"data field '{field}' has examples of shape {list(shape)}, but input '{tensor.name}' "
                                f"is declared {list(tensor.shape)}", loc, format_path(where),
                                f"examples of shape {list(declared)} (the first dim is the batch)",
                                "fix the declared shape, or pick another field in training.data.inputs"))
    want = getattr(torch, tensor.dtype)
    if want.is_floating_point != dtype.is_floating_point or (want == torch.bool) != (dtype == torch.bool):
        problems.append(Problem(f"data field '{field}' has dtype {str(dtype).removeprefix('torch.')}, but input "
                                f"'{tensor.name}' is declared {tensor.dtype}", loc, format_path(where),
                                f"{tensor.dtype} data", "convert the data, or set training.data.dataset.dtypes"))
    elif tensor.range is not None and not want.is_floating_point:
        lo, hi = table.value_range(field)
        if lo < tensor.range[0] or hi >= tensor.range[1]:
            problems.append(Problem(f"data field '{field}' holds values {int(lo)}..{int(hi)}, outside the range "
                                    f"[{tensor.range[0]}, {tensor.range[1]}) of input '{tensor.name}'", loc,
                                    format_path(where), f"values in [{tensor.range[0]}, {tensor.range[1]})",
                                    "an embedding's `num` must exceed the largest token id"))
    return problems


def _shape_fits(declared: tuple, actual: tuple, dims: Mapping[str, Any]) -> bool:
    if len(declared) != len(actual):
        return False
    bound: dict[str, int] = {}
    for want, got in zip(declared, actual):
        if isinstance(want, int):
            if want != got:
                return False
        elif str(want).isidentifier():
            spec = dims.get(want)
            if bound.setdefault(want, got) != got or (spec and (got < spec.min or (spec.max and got > spec.max))):
                return False
    for want, got in zip(declared, actual):  # expressions such as "T + 1", once their names are bound
        if not isinstance(want, int) and not str(want).isidentifier():
            try:
                if evaluate(str(want), bound) != got:
                    return False
            except ExprError:
                pass  # a dim not fixed by the data: the model checks it
    return True


# ---- normalisation ---------------------------------------------------------------------------------------------

def _statistics(normalize: Mapping[str, Any], train: Table, locate: Locate) -> dict[str, dict[str, list[float]]]:
    """Mean and std per field (per channel for images), from the training split only."""
    stats: dict[str, dict[str, list[float]]] = {}
    for field, how in normalize.items():
        where = ("training", "data", "normalize", field)
        values = train.fields.get(field) if isinstance(train, TensorTable) else None
        if values is None or not values.is_floating_point():
            raise DlspecError.single(f"cannot normalise '{field}': not a floating-point field of the data set",
                                     locate(where), expected="one of " + ", ".join(
                                         k for k, v in (train.fields.items()) if v.is_floating_point()))
        if isinstance(how, dict):
            stats[field] = {"mean": _as_list(how["mean"]), "std": _as_list(how["std"])}
            continue
        dims = [0] + list(range(2, values.ndim)) if values.ndim >= 3 else [0]  # per channel, else per feature
        if how == "standard":
            mean, std = values.mean(dim=dims), values.std(dim=dims)
        else:  # minmax: scale to [0, 1]
            low = values.amin(dim=dims)
            mean, std = low, values.amax(dim=dims) - low
        std = torch.where(std > 1e-8, std, torch.ones_like(std))  # a constant feature stays as it is
        stats[field] = {"mean": mean.reshape(-1).tolist(), "std": std.reshape(-1).tolist()}
    return stats


def _as_list(value: Any) -> list[float]:
    return [float(v) for v in value] if isinstance(value, list) else [float(value)]


def _normaliser(stats: Mapping[str, Mapping[str, list[float]]]):
    def normalise(name: str, values: torch.Tensor) -> torch.Tensor:
        if name not in stats:
            return values
        mean, std = (torch.tensor(stats[name][k], dtype=values.dtype) for k in ("mean", "std"))
        shape = [1, -1] + [1] * (values.ndim - 2) if len(mean) > 1 else [1]  # broadcast over channels
        return (values - mean.reshape(shape)) / std.reshape(shape)
    return normalise


# ---- batching ---------------------------------------------------------------------------------------------------

class _Batches(Dataset):
    """A dataset indexed by a whole batch of indices."""

    def __init__(self, table: Table):
        self.table = table

    def __len__(self) -> int:
        return len(self.table)

    def __getitem__(self, index: list[int]) -> dict[str, torch.Tensor]:
        return self.table.gather(torch.as_tensor(index, dtype=torch.int64))


class _Fixed(Sampler):
    """Yields precomputed batches (lists of indices)."""

    def __init__(self, batches: list[list[int]]):
        self.batches = batches

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


def train_batches(n: int, cfg: DataConfig, seed: int, epoch: int, rank: int, world: int) -> list[list[int]]:
    """This rank's batches of one epoch: DistributedSampler's order (set_epoch), cut into per-rank batches."""
    sampler = DistributedSampler(range(n), num_replicas=world, rank=rank, shuffle=cfg.shuffle, seed=seed,
                                 drop_last=False)
    sampler.set_epoch(epoch)
    order = list(sampler)
    per_rank = cfg.batch_size // world
    batches = [order[i:i + per_rank] for i in range(0, len(order), per_rank)]
    if cfg.drop_last and batches and len(batches[-1]) < per_rank:
        batches.pop()
    return batches


def eval_batches(n: int, batch_size: int, rank: int, world: int) -> tuple[list[list[int]], list[list[bool]]]:
    """Every example once: rank r takes positions r, r + world, ...; the padding that evens out the ranks
    (so every rank runs the same number of forwards, which FSDP needs) is marked False."""
    total = -(-n // world) * world
    positions = list(range(rank, total, world))
    per_rank = max(batch_size // world, 1)
    chunks = [positions[i:i + per_rank] for i in range(0, len(positions), per_rank)]
    return [[p % n for p in c] for c in chunks], [[p < n for p in c] for c in chunks]


def loader(table: Table, batches: list[list[int]], cfg: DataConfig, seed: int) -> Iterable[dict[str, torch.Tensor]]:
    """The batches, gathered: in this process (a plain loop, nothing in between) or by DataLoader workers."""
    if cfg.num_workers == 0 and not cfg.pin_memory:
        return (table.gather(torch.as_tensor(index, dtype=torch.int64)) for index in batches)
    # An explicit generator keeps DataLoader from drawing its worker seed from the global RNG, which would
    # shift dropout masks and make a resumed run differ from an uninterrupted one.
    return DataLoader(_Batches(table), sampler=_Fixed(batches), batch_size=None, num_workers=cfg.num_workers,
                      pin_memory=cfg.pin_memory, generator=torch.Generator().manual_seed(seed))


def example_sizes(spec: Any, table: Table, input_fields: tuple[str, ...]) -> dict[str, int]:
    """The sizes the data gives the spec's symbolic dims (T of a [B, T] input fed windows of 64: T = 64)."""
    sizes: dict[str, int] = {}
    for tensor, field in zip(spec.inputs, input_fields):
        for dim, size in zip(per_example(tensor.shape), table.example_shape(field)):
            if isinstance(dim, str) and dim.isidentifier():
                sizes[dim] = size
    return sizes
