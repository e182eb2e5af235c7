"""Data sets a spec can name: bundled, synthetic, or read from a file.

Each loader returns a `Table`: named fields with one row per example, plus
which field is the main input and which the target (the defaults a spec can
leave out). Nothing is downloaded: bundled sets ship inside scikit-learn, and
the text set reads a file or a module of Python's own standard library.
"""
from __future__ import annotations

import csv
import importlib.util
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping

import numpy as np
import torch

from dlspec.core.budget import memory_limit
from dlspec.core.errors import DlspecError, did_you_mean
from dlspec.core.reading import read_text
from dlspec.train.config import Kinded, Locate

_TARGET_NAMES = ("label", "labels", "target", "targets", "y")


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


def load(dataset: Kinded, base_dir: Path, seed: int, locate: Locate, vocab: tuple[str, ...] | None = None) -> Table:
    """The data set a `dataset:` section names. `vocab` fixes the alphabet of a text validation file."""
    loaders: dict[str, Callable[[], Table]] = {
        "digits": lambda: _digits(dataset.get("layout", "image")),
        "iris": lambda: _sklearn_classification("load_iris"),
        "wine": lambda: _sklearn_classification("load_wine"),
        "breast_cancer": lambda: _sklearn_classification("load_breast_cancer"),
        "diabetes": _diabetes,
        "synthetic_classification": lambda: _synthetic_classification(dataset, seed),
        "synthetic_regression": lambda: _synthetic_regression(dataset, seed),
        "synthetic_tokens": lambda: _synthetic_tokens(dataset, seed),
        "npz": lambda: _npz(_file(dataset, base_dir, locate), dataset, locate),
        "pt": lambda: _pt(_file(dataset, base_dir, locate), dataset, locate),
        "csv": lambda: _csv(_file(dataset, base_dir, locate), dataset, locate),
        "text": lambda: _text(dataset, base_dir, locate, vocab),
    }
    table = loaders[dataset.kind]()
    if len(table) == 0:
        raise DlspecError.single(f"the '{dataset.kind}' data set has no examples", locate(dataset.path),
                                 path=".".join(map(str, dataset.path)))
    return table


def stdlib_text_path(module: str) -> Path | None:
    """The source file of a standard-library module, found without importing it."""
    found = importlib.util.find_spec(module)
    return Path(found.origin) if found and found.origin and found.origin.endswith(".py") else None


def _digits(layout: str) -> TensorTable:
    from sklearn.datasets import load_digits
    bunch = load_digits()
    images = torch.tensor(bunch.images, dtype=torch.float32)  # (N, 8, 8), values 0..16
    label = torch.tensor(bunch.target, dtype=torch.int64)
    if layout == "flat":
        return TensorTable({"features": images.reshape(len(images), -1), "label": label}, "features", "label")
    return TensorTable({"image": images[:, None], "label": label}, "image", "label")


def _sklearn_classification(loader: str) -> TensorTable:
    import sklearn.datasets
    bunch = getattr(sklearn.datasets, loader)()
    return TensorTable({"features": torch.tensor(bunch.data, dtype=torch.float32),
                        "label": torch.tensor(bunch.target, dtype=torch.int64)}, "features", "label")


def _diabetes() -> TensorTable:
    from sklearn.datasets import load_diabetes
    bunch = load_diabetes()
    return TensorTable({"features": torch.tensor(bunch.data, dtype=torch.float32),
                        "target": torch.tensor(bunch.target, dtype=torch.float32)[:, None]}, "features", "target")


def _synthetic_classification(dataset: Kinded, seed: int) -> TensorTable:
    from sklearn.datasets import make_classification
    features = dataset.get("features", 20)
    x, y = make_classification(n_samples=dataset.get("samples", 1000), n_features=features,
                               n_informative=dataset.get("informative", min(features, 5)), n_redundant=0,
                               n_classes=dataset.get("classes", 2), flip_y=dataset.get("noise", 0.0),
                               random_state=dataset.get("seed", seed))
    return TensorTable({"features": torch.tensor(x, dtype=torch.float32),
                        "label": torch.tensor(y, dtype=torch.int64)}, "features", "label")


def _synthetic_regression(dataset: Kinded, seed: int) -> TensorTable:
    from sklearn.datasets import make_regression
    x, y = make_regression(n_samples=dataset.get("samples", 1000), n_features=dataset.get("features", 10),
                           n_targets=dataset.get("targets", 1), noise=dataset.get("noise", 0.0),
                           random_state=dataset.get("seed", seed))
    y = torch.tensor(y, dtype=torch.float32)
    return TensorTable({"features": torch.tensor(x, dtype=torch.float32),
                        "target": y[:, None] if y.ndim == 1 else y}, "features", "target")


def _synthetic_tokens(dataset: Kinded, seed: int) -> TensorTable:
    generator = torch.Generator().manual_seed(dataset.get("seed", seed))
    tokens = torch.randint(0, dataset.get("vocab", 16), (dataset.get("samples", 1000), dataset.get("length", 8)),
                           generator=generator)
    task = dataset.get("task", "copy")
    targets = {"copy": tokens.clone(), "reverse": tokens.flip(1), "sort": tokens.sort(dim=1).values}[task]
    return TensorTable({"tokens": tokens, "targets": targets}, "tokens", "targets")


def _file(dataset: Kinded, base_dir: Path, locate: Locate) -> Path:
    path = (base_dir / dataset.get("path")).resolve()
    if not path.is_file():
        raise DlspecError.single(f"data file '{dataset.get('path')}' does not exist (looked for {path})",
                                 locate(dataset.path + ("path",)),
                                 path=".".join(map(str, dataset.path + ("path",))),
                                 hint="paths are relative to the spec file")
    return path


def _with_defaults(fields: dict[str, torch.Tensor], dataset: Kinded, locate: Locate, source: Path) -> TensorTable:
    where = dataset.path + ("dtypes",)
    for name, dtype_name in dataset.get("dtypes", {}).items():
        if name not in fields:
            raise DlspecError.single(f"'{name}' is not a field of {source.name}", locate(where + (name,)),
                                     expected=f"one of {', '.join(fields)}")
        dtype = getattr(torch, dtype_name, None)
        if not isinstance(dtype, torch.dtype):
            raise DlspecError.single(f"'{dtype_name}' is not a torch dtype", locate(where + (name,)),
                                     expected="float32, float64, int64, int32, bool, ...")
        fields[name] = fields[name].to(dtype)
    lengths = {name: len(v) if v.ndim else 0 for name, v in fields.items()}
    if len(set(lengths.values())) != 1:
        raise DlspecError.single(f"the fields of {source.name} have different numbers of examples: {lengths}",
                                 locate(dataset.path + ("path",)),
                                 expected="every field with the same first dimension")
    target = next((n for n in _TARGET_NAMES if n in fields), None)
    inputs = [n for n in fields if n != target]
    return TensorTable(fields, inputs[0] if len(inputs) == 1 else None, target)


def _npz(path: Path, dataset: Kinded, locate: Locate) -> TensorTable:
    try:
        with np.load(path, allow_pickle=False) as archive:  # no pickle: a data file must not run code
            fields = {name: torch.from_numpy(np.ascontiguousarray(archive[name])) for name in archive.files}
    except (ValueError, OSError) as exc:
        raise DlspecError.single(f"cannot read {path.name} as .npz: {exc}", locate(dataset.path + ("path",))) from None
    return _with_defaults(fields, dataset, locate, path)


def _pt(path: Path, dataset: Kinded, locate: Locate) -> TensorTable:
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for a bad or unsafe file
        raise DlspecError.single(f"cannot read {path.name} as a tensor file: {exc}".splitlines()[0],
                                 locate(dataset.path + ("path",)),
                                 hint="save a dict of tensors with torch.save({'x': x, 'y': y}, path)") from None
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise DlspecError.single(f"{path.name} does not hold a dict of tensors", locate(dataset.path + ("path",)),
                                 expected="{'field name': tensor, ...}")
    return _with_defaults(dict(obj), dataset, locate, path)


def _read_text(path: Path, where: tuple, locate: Locate) -> str:
    # a data set is held in memory: a file past the memory this process can use is refused before it is read
    return read_text(path, memory_limit(), what="data files", loc=locate(where))


def _csv(path: Path, dataset: Kinded, locate: Locate) -> TensorTable:
    reader = csv.DictReader(io.StringIO(_read_text(path, dataset.path + ("path",), locate), newline=""))
    header = reader.fieldnames or []
    rows = list(reader)
    columns: dict[str, str | list[str]] = dataset.get("columns")
    fields: dict[str, torch.Tensor] = {}
    for name, wanted in columns.items():
        names = [wanted] if isinstance(wanted, str) else list(wanted)
        for column in names:
            if column not in header:
                raise DlspecError.single(f"{path.name} has no column '{column}'",
                                         locate(dataset.path + ("columns", name)),
                                         expected=f"one of {', '.join(header)}", hint=did_you_mean(column, header))
        values = np.empty((len(rows), len(names)), dtype=np.float64)
        for i, row in enumerate(rows):
            for j, column in enumerate(names):
                try:
                    values[i, j] = float(row[column])
                except (TypeError, ValueError):
                    raise DlspecError.single(f"{path.name}:{i + 2}: column '{column}' holds '{row[column]}', not a number",
                                             locate(dataset.path + ("columns", name)),
                                             hint="encode categories as integers first") from None
        if isinstance(wanted, str):
            values = values[:, 0]
            integral = bool(np.all(values == np.round(values)))
            fields[name] = torch.tensor(values, dtype=torch.int64 if integral else torch.float32)
        else:
            fields[name] = torch.tensor(values, dtype=torch.float32)
    return _with_defaults(fields, dataset, locate, path)


def _text(dataset: Kinded, base_dir: Path, locate: Locate, vocab: tuple[str, ...] | None) -> TextTable:
    if dataset.get("stdlib"):
        path = stdlib_text_path(dataset.get("stdlib"))
        if path is None:
            raise DlspecError.single(f"'{dataset.get('stdlib')}' is not a standard-library module with Python source",
                                     locate(dataset.path + ("stdlib",)), hint="try `argparse` or `textwrap`")
    else:
        path = _file(dataset, base_dir, locate)
    text = _read_text(path, dataset.path + ("path",), locate)
    vocab = vocab or tuple(sorted(set(text)))
    index = {ch: i for i, ch in enumerate(vocab)}
    unknown = sorted(set(text) - set(index))
    if unknown:
        raise DlspecError.single(f"{path.name} has characters outside the training alphabet: {''.join(unknown)[:20]!r}",
                                 locate(dataset.path), hint="the validation text may only use characters that "
                                 "occur in the training text")
    stream = torch.tensor([index[ch] for ch in text], dtype=torch.int64)
    return TextTable(stream, dataset.get("block", 64), vocab)
