"""From a `data:` section to batches the model accepts, checked before training starts.

Fields are matched to the spec's declared inputs by name, and every input is
checked for shape, dtype and integer range here, so a wrong file fails with a
located message instead of a shape error deep in the first forward pass.

Batches are whole index lists. A `Pipeline` turns one into tensors: the table
gathers it with one call (decoding images, cutting token windows), then each
example's transforms run with a generator seeded by (seed, epoch, example index),
then normalisation. It runs in the training process itself (nothing in between,
as a hand-written loop does) or, with num_workers, in DataLoader workers fed one
(epoch, index list) per batch. The order of an epoch is a pure function of (seed,
epoch, rank, world size): torch's DistributedSampler, or for token windows drawn
at random, a generator seeded per batch; so a resumed run can start again at any
batch of any epoch, with or without workers.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler

from dlspec.core.dims import per_example
from dlspec.core.errors import DlspecError, Problem, did_you_mean, format_path
from dlspec.core.expr import ExprError, evaluate
from dlspec.train import augment, datasets
from dlspec.train.config import DataConfig, Locate
from dlspec.train.tables import DataFault, Table


@dataclass(frozen=True)
class Data:
    train: Table
    val: Table | None
    input_fields: tuple[str, ...]  # the field feeding each model input, in declared order
    default_target: str | None
    stats: Mapping[str, Mapping[str, list[float]]]  # normalisation statistics, for the run record
    vocab: tuple[str, ...] | None  # character-level text only
    notes: tuple[str, ...] = ()  # what loading changed (float64 read as float32), said at the start
    recipe: Mapping[str, Any] | None = None  # how raw inputs become fields (datasets.DataKind.recipe), for the run

    @property
    def classes(self) -> dict[str, list[str]]:
        """Field -> class names, where labels were read as names (an image folder's folders, a CSV's strings)."""
        return {k: list(v) for k, v in (self.train.classes or {}).items()}


def prepare(cfg: DataConfig, spec: Any, seed: int, base: Path) -> Data:
    """Load, split and check the data against the spec's inputs; relative paths start at `base`."""
    notes: list[str] = []
    source = datasets.Source(base, seed, spec.locate, example_shape=_first_input_shape(spec), notes=notes)
    table = datasets.load(cfg.dataset, source)
    if cfg.validation_dataset is not None:
        train = table
        val = datasets.load(cfg.validation_dataset, replace(source, vocab=getattr(table, "vocab", None),
                                                            classes=table.classes)).for_validation()
    elif cfg.validation_fraction > 0:
        train, val = table.split(cfg.validation_fraction, seed)
        if len(val) == 0 or len(train) == 0:
            raise DlspecError.single(f"a validation fraction of {cfg.validation_fraction} of {len(table)} examples "
                                     f"leaves {len(train)} to train on and {len(val)} to validate on",
                                     spec.locate(("training", "data", "validation", "fraction")),
                                     expected="a fraction that leaves examples on both sides",
                                     hint="token windows need block + 1 tokens on each side")
    else:
        train, val = table, None
    stats = _statistics(cfg.normalize, train, spec.locate)
    input_fields = _match_inputs(cfg, spec, train)
    if val is not None:  # a held-out part may hold what the training part does not (a larger token id)
        _check_validation(spec, train, val, input_fields)
    recipe = datasets.recipe(cfg.dataset, train)
    return Data(train, val, input_fields, train.target_field, stats, getattr(train, "vocab", None), tuple(notes), recipe)


def _first_input_shape(spec: Any) -> tuple[int | None, ...] | None:
    """The first model input's shape per example at the spec's example sizes (None where a dim is unknown):
    an image folder resizes to it unless told otherwise."""
    if not spec.inputs:
        return None
    dims = spec.dims
    return tuple(d if isinstance(d, int) else dims[d].example if d in dims else None
                 for d in per_example(spec.inputs[0].shape))


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
    if (want.is_floating_point != dtype.is_floating_point or (want == torch.bool) != (dtype == torch.bool)
            or (want.is_floating_point and want != dtype)):  # float64 data into a float32 model fails in its first op
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
    """Mean and std per field (per channel for images), from the training split only (an image folder: from
    up to a thousand of its images, spread evenly)."""
    stats: dict[str, dict[str, list[float]]] = {}
    floats = [n for n in train.names if train.dtype(n).is_floating_point]
    for field, how in normalize.items():
        where = ("training", "data", "normalize", field)
        if field not in floats:
            raise DlspecError.single(f"cannot normalise '{field}': not a floating-point field of the data set",
                                     locate(where), expected="one of " + ", ".join(floats) if floats else
                                     "a floating-point field (this data set has none)")
        if isinstance(how, dict):
            stats[field] = {"mean": _as_list(how["mean"]), "std": _as_list(how["std"])}
            continue
        try:
            values = train.sample(field)
        except DataFault as exc:
            raise DlspecError.single(str(exc), locate(where), hint="fix or remove the file") from None
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


def _broadcast(values: list[float], example_ndim: int) -> torch.Tensor:
    """Statistics shaped to broadcast over a batch: per channel (dim 1) when there are several."""
    t = torch.tensor(values, dtype=torch.float32)
    return t.reshape([1, -1] + [1] * (example_ndim - 1)) if len(values) > 1 else t


# ---- the pipeline: indices -> tensors ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Pipeline:
    """A batch of one split: gathered, each example transformed (training only), normalised. Picklable, so
    a spawned loader worker can run it too."""
    table: Table
    stats: Mapping[str, Mapping[str, list[float]]]
    seed: int
    before: tuple[augment.Augmentation, ...] = ()  # example transforms before normalisation
    after: tuple[augment.Augmentation, ...] = ()  # and after it

    def __call__(self, epoch: int, index: Sequence[int]) -> dict[str, torch.Tensor]:
        positions = torch.as_tensor(index, dtype=torch.int64)
        batch = self.table.gather(positions)
        if self.before:
            self._transform(batch, self.before, epoch, positions)
        for name, (mean, std) in self._statistics.items():
            batch[name] = (batch[name] - mean) / std
        if self.after:
            self._transform(batch, self.after, epoch, positions)
        return batch

    @functools.cached_property
    def _statistics(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """Field -> (mean, std) in the field's dtype, shaped to broadcast over a batch: made once, not per batch."""
        return {name: tuple(_broadcast(stat[key], len(self.table.example_shape(name))).to(self.table.dtype(name))
                            for key in ("mean", "std"))
                for name, stat in self.stats.items()}

    def _transform(self, batch: dict, transforms: tuple, epoch: int, positions: torch.Tensor) -> None:
        for field in dict.fromkeys(t.field for t in transforms):
            examples = list(batch[field].unbind(0))
            for i, position in enumerate(positions.tolist()):
                generator = torch.Generator().manual_seed(stream_seed(self.seed, epoch, position, 0, EXAMPLE))
                for t in transforms:
                    if t.field == field:
                        examples[i] = t.apply(examples[i], generator)
            batch[field] = torch.stack(examples) if examples else batch[field]


# what a seed is for: the batch stage of augmentation, a batch of windows drawn at random, one example's transforms
BATCH, DRAW, EXAMPLE = 0, 1, 2


def stream_seed(seed: int, epoch: int, position: int, rank: int, purpose: int = BATCH) -> int:
    """A seed for one batch (or example) of one epoch: a pure function of where it is, not of what ran before."""
    return ((((seed * 1_000_003 + epoch) * 1_000_003 + position) * 1_009 + rank) + purpose * 0x9E3779B97F4A7C15) % 2**63


# ---- batching ---------------------------------------------------------------------------------------------------

class Drawn(Sequence):
    """An epoch of batches drawn at random positions, with replacement (nanoGPT's random windows): batch i is
    a pure function of (seed, epoch, i, rank), computed when it is asked for, so an epoch of millions of
    windows costs no memory and a resume can start at any batch."""

    def __init__(self, positions: int, draws: int, batch_size: int, per_rank: int, seed: int, epoch: int, rank: int):
        self.positions, self.per_rank, self.seed, self.epoch, self.rank = positions, per_rank, seed, epoch, rank
        self.count = -(-draws // batch_size)

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(self.count))]
        if not -self.count <= i < self.count:
            raise IndexError(i)
        generator = torch.Generator().manual_seed(stream_seed(self.seed, self.epoch, i % self.count, self.rank, DRAW))
        return torch.randint(self.positions, (self.per_rank,), generator=generator).tolist()


def train_batches(table: Table, cfg: DataConfig, seed: int, epoch: int, rank: int, world: int) -> Sequence[list[int]]:
    """This rank's batches of one epoch: DistributedSampler's order (set_epoch), cut into per-rank batches; or,
    for a table drawn at random, a fresh draw per batch."""
    per_rank = cfg.batch_size // world
    if table.draws is not None:
        return Drawn(len(table), table.draws, cfg.batch_size, per_rank, seed, epoch, rank)
    sampler = DistributedSampler(range(len(table)), num_replicas=world, rank=rank, shuffle=cfg.shuffle, seed=seed,
                                 drop_last=False)
    sampler.set_epoch(epoch)
    order = list(sampler)
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


class _Batches(Dataset):
    """A dataset indexed by (epoch, a whole batch of indices)."""

    def __init__(self, pipeline: Pipeline):
        self.pipeline = pipeline

    def __len__(self) -> int:
        return len(self.pipeline.table)

    def __getitem__(self, item: tuple[int, list[int]]) -> dict[str, torch.Tensor]:
        return self.pipeline(*item)


class _Epoch(Sampler):
    """Yields (epoch, batch) for the batches of the epoch it was last set to, from a start batch on."""

    def __init__(self):
        self.batches: Sequence[list[int]] = []
        self.epoch = self.start = 0

    def __iter__(self) -> Iterator[tuple[int, list[int]]]:
        return ((self.epoch, self.batches[i]) for i in range(self.start, len(self.batches)))

    def __len__(self) -> int:
        return len(self.batches) - self.start


class Loader:
    """One split's batches for the whole run: gathered in this process (a plain loop, nothing in between), or
    by DataLoader workers; `persistent_workers` keeps them from one epoch (and evaluation) to the next."""

    def __init__(self, pipeline: Pipeline, cfg: DataConfig):
        self.pipeline, self.cfg = pipeline, cfg
        self.sampler = _Epoch()
        self.loader: DataLoader | None = None
        if cfg.num_workers or cfg.pin_memory:
            extra = {"persistent_workers": cfg.persistent_workers, "prefetch_factor": cfg.prefetch_factor} \
                if cfg.num_workers else {}
            # An explicit generator keeps DataLoader from drawing its worker seed from the global RNG, which would
            # shift dropout masks and make a resumed run differ from an uninterrupted one.
            self.loader = DataLoader(_Batches(pipeline), sampler=self.sampler, batch_size=None,
                                     num_workers=cfg.num_workers, pin_memory=cfg.pin_memory,
                                     generator=torch.Generator().manual_seed(pipeline.seed), **extra)

    def __call__(self, batches: Sequence[list[int]], epoch: int, start: int = 0) -> Iterator[dict[str, torch.Tensor]]:
        """The batches of `epoch` from `start` on."""
        try:
            if self.loader is None:
                for i in range(start, len(batches)):
                    yield self.pipeline(epoch, batches[i])
            else:
                self.sampler.batches, self.sampler.epoch, self.sampler.start = batches, epoch, start
                yield from self.loader
        except DataFault as exc:  # from a worker it comes back with the worker's traceback in its text
            message = str(exc).strip().splitlines()[-1].removeprefix(f"{DataFault.__name__}: ")
            raise DlspecError.single(message, hint="fix or remove the file, then resume the run (--resume)") from None


def example_sizes(spec: Any, table: Table, input_fields: tuple[str, ...]) -> dict[str, int]:
    """The sizes the data gives the spec's symbolic dims (T of a [B, T] input fed windows of 64: T = 64)."""
    sizes: dict[str, int] = {}
    for tensor, field in zip(spec.inputs, input_fields):
        for dim, size in zip(per_example(tensor.shape), table.example_shape(field)):
            if isinstance(dim, str) and dim.isidentifier():
                sizes[dim] = size
    return sizes
