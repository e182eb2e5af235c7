"""Data kinds: the data sets a spec can name, bundled, synthetic, or read from a file.

A kind's `build(options, source)` returns a `Table` (tables.py). Nothing is downloaded: bundled sets ship
inside scikit-learn, and the text set reads a file or a module of Python's own standard library. Loaders
import numpy, torch and scikit-learn when they run, so the registry costs nothing to import.
"""
from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping

from dlspec.core.budget import memory_limit
from dlspec.core.errors import DlspecError, did_you_mean
from dlspec.core.reading import read_text
from dlspec.train.kinds import Kind, Kinded, Option, Registry

if TYPE_CHECKING:
    from dlspec.train.tables import Table, TensorTable, TextTable

Locate = Callable[[tuple], Any]
_TARGET_NAMES = ("label", "labels", "target", "targets", "y")


@dataclass(frozen=True)
class Source:
    """What a loader may need besides its options."""
    base_dir: Path  # where relative paths start
    seed: int  # training.seed, the default of a generator's seed
    locate: Locate
    vocab: tuple[str, ...] | None = None  # a text validation set uses the training text's alphabet


@dataclass(frozen=True)
class DataKind(Kind):
    fields: str = ""  # the fields it gives, for the docs
    stream: bool = False  # one sequence cut into windows (text): validated on another stream, not a fraction of it

    def described(self) -> str:
        return f"{self.doc} Fields: {self.fields}."


DATA_KINDS = Registry("data set", "Data set: bundled, synthetic, or read from a file.")


def load(dataset: Kinded, source: Source) -> Table:
    """The data set a `dataset:` section names."""
    table = dataset.definition.build(dataset, source)
    if len(table) == 0:
        raise DlspecError.single(f"the '{dataset.kind}' data set has no examples", source.locate(dataset.path),
                                 path=".".join(map(str, dataset.path)))
    return table


def stdlib_text_path(module: str) -> Path | None:
    """The source file of a standard-library module, found without importing it."""
    found = importlib.util.find_spec(module)
    return Path(found.origin) if found and found.origin and found.origin.endswith(".py") else None


def _tensors(fields: Mapping[str, Any], input_field: str | None, target_field: str | None) -> TensorTable:
    """A table of numpy arrays (or tensors) as tensors: floats as float32, integers as int64."""
    import numpy as np
    import torch

    from dlspec.train.tables import TensorTable

    def tensor(values: Any) -> torch.Tensor:
        values = torch.as_tensor(np.asarray(values) if not isinstance(values, torch.Tensor) else values)
        return values.float() if values.is_floating_point() else values.long()
    return TensorTable({k: tensor(v) for k, v in fields.items()}, input_field, target_field)


# ---- bundled -------------------------------------------------------------------------------------------------

def _digits(o: Kinded, source: Source) -> TensorTable:
    from sklearn.datasets import load_digits
    bunch = load_digits()
    images, label = bunch.images, bunch.target  # (N, 8, 8) values 0..16, (N,)
    if o["layout"] == "flat":
        return _tensors({"features": images.reshape(len(images), -1), "label": label}, "features", "label")
    return _tensors({"image": images[:, None], "label": label}, "image", "label")


def _sklearn(loader: str) -> Callable[[Kinded, Source], TensorTable]:
    def load_bundled(o: Kinded, source: Source) -> TensorTable:
        import sklearn.datasets
        bunch = getattr(sklearn.datasets, loader)()
        if bunch.target.dtype.kind == "f":  # regression: one target column per example
            return _tensors({"features": bunch.data, "target": bunch.target[:, None]}, "features", "target")
        return _tensors({"features": bunch.data, "label": bunch.target}, "features", "label")
    return load_bundled


DATA_KINDS.add(DataKind("digits", "scikit-learn's 8x8 handwritten digits, 1,797 images of 10 classes.",
                        (Option("layout", "string", "`image` gives field `image` [1, 8, 8]; `flat` gives `features` [64].",
                                "image", choices=("image", "flat")),), _digits,
                        fields="`image` [1, 8, 8] or `features` [64], `label`"))
for _name, _loader, _doc in (("iris", "load_iris", "Iris flowers: 150 examples, 4 features, 3 classes."),
                             ("wine", "load_wine", "Wines: 178 examples, 13 features, 3 classes."),
                             ("breast_cancer", "load_breast_cancer", "Breast cancer: 569 examples, 30 features, 2 classes.")):
    DATA_KINDS.add(DataKind(_name, _doc, (), _sklearn(_loader), fields="`features`, `label`"))
DATA_KINDS.add(DataKind("diabetes", "Diabetes progression: 442 examples, 10 features, one regression target.", (),
                        _sklearn("load_diabetes"), fields="`features` [10], `target` [1]"))


# ---- synthetic ------------------------------------------------------------------------------------------------

def _seed(o: Kinded, source: Source) -> int:
    return o["seed"] if o["seed"] is not None else source.seed


def _synthetic_classification(o: Kinded, source: Source) -> TensorTable:
    from sklearn.datasets import make_classification
    x, y = make_classification(n_samples=o["samples"], n_features=o["features"],
                               n_informative=o["informative"] or min(o["features"], 5), n_redundant=0,
                               n_classes=o["classes"], flip_y=o["noise"], random_state=_seed(o, source))
    return _tensors({"features": x, "label": y}, "features", "label")


def _synthetic_regression(o: Kinded, source: Source) -> TensorTable:
    from sklearn.datasets import make_regression
    x, y = make_regression(n_samples=o["samples"], n_features=o["features"], n_targets=o["targets"], noise=o["noise"],
                           random_state=_seed(o, source))
    return _tensors({"features": x, "target": y[:, None] if y.ndim == 1 else y}, "features", "target")


def _synthetic_tokens(o: Kinded, source: Source) -> TensorTable:
    import torch
    generator = torch.Generator().manual_seed(_seed(o, source))
    tokens = torch.randint(0, o["vocab"], (o["samples"], o["length"]), generator=generator)
    targets = {"copy": tokens.clone(), "reverse": tokens.flip(1), "sort": tokens.sort(dim=1).values}[o["task"]]
    return _tensors({"tokens": tokens, "targets": targets}, "tokens", "targets")


_SAMPLES = Option("samples", "integer", "Number of examples.", 1000, minimum=1)
_SEED = Option("seed", "integer", "Generator seed.", minimum=0, default_doc="training.seed")
DATA_KINDS.add(DataKind("synthetic_classification", "Gaussian clusters per class (make_classification).",
                        (_SAMPLES, Option("features", "integer", "Number of input features.", 20, minimum=1),
                         Option("classes", "integer", "Number of classes.", 2, minimum=2),
                         Option("informative", "integer", "Number of informative features.", minimum=1,
                                default_doc="min(features, 5)"),
                         Option("noise", "number", "Fraction of labels assigned at random.", 0.0, minimum=0), _SEED),
                        _synthetic_classification, fields="`features`, `label`"))
DATA_KINDS.add(DataKind("synthetic_regression", "A random linear regression problem (make_regression).",
                        (_SAMPLES, Option("features", "integer", "Number of input features.", 10, minimum=1),
                         Option("targets", "integer", "Number of regression targets.", 1, minimum=1),
                         Option("noise", "number", "Standard deviation of the target noise.", 0.0, minimum=0), _SEED),
                        _synthetic_regression, fields="`features`, `target`"))
DATA_KINDS.add(DataKind("synthetic_tokens", "Random token sequences and a sequence task on them.",
                        (_SAMPLES, Option("length", "integer", "Sequence length.", 8, minimum=1),
                         Option("vocab", "integer", "Vocabulary size.", 16, minimum=2),
                         Option("task", "string", "What the targets are: the tokens copied, reversed or sorted.", "copy",
                                choices=("copy", "reverse", "sort")), _SEED),
                        _synthetic_tokens, fields="`tokens`, `targets` [length]"))


# ---- files ----------------------------------------------------------------------------------------------------

def _file(o: Kinded, source: Source) -> Path:
    path = (source.base_dir / o["path"]).resolve()
    if not path.is_file():
        raise DlspecError.single(f"data file '{o['path']}' does not exist (looked for {path})",
                                 source.locate(o.path + ("path",)), path=".".join(map(str, o.path + ("path",))),
                                 hint="paths are relative to the spec file")
    return path


def _with_defaults(fields: dict, o: Kinded, source: Source, path: Path) -> TensorTable:
    """Apply `dtypes`, check the fields agree on the number of examples, and pick the default target."""
    import torch

    from dlspec.train.tables import TensorTable
    where = o.path + ("dtypes",)
    for name, dtype_name in (o["dtypes"] or {}).items():
        if name not in fields:
            raise DlspecError.single(f"'{name}' is not a field of {path.name}", source.locate(where + (name,)),
                                     expected=f"one of {', '.join(fields)}")
        dtype = getattr(torch, dtype_name, None)
        if not isinstance(dtype, torch.dtype):
            raise DlspecError.single(f"'{dtype_name}' is not a torch dtype", source.locate(where + (name,)),
                                     expected="float32, float64, int64, int32, bool, ...")
        fields[name] = fields[name].to(dtype)
    lengths = {name: len(v) if v.ndim else 0 for name, v in fields.items()}
    if len(set(lengths.values())) != 1:
        raise DlspecError.single(f"the fields of {path.name} have different numbers of examples: {lengths}",
                                 source.locate(o.path + ("path",)), expected="every field with the same first dimension")
    target = next((n for n in _TARGET_NAMES if n in fields), None)
    inputs = [n for n in fields if n != target]
    return TensorTable(fields, inputs[0] if len(inputs) == 1 else None, target)


def _npz(o: Kinded, source: Source) -> TensorTable:
    import numpy as np
    import torch
    path = _file(o, source)
    try:
        with np.load(path, allow_pickle=False) as archive:  # no pickle: a data file must not run code
            fields = {name: torch.from_numpy(np.ascontiguousarray(archive[name])) for name in archive.files}
    except (ValueError, OSError) as exc:
        raise DlspecError.single(f"cannot read {path.name} as .npz: {exc}", source.locate(o.path + ("path",))) from None
    return _with_defaults(fields, o, source, path)


def _pt(o: Kinded, source: Source) -> TensorTable:
    import torch
    path = _file(o, source)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for a bad or unsafe file
        raise DlspecError.single(f"cannot read {path.name} as a tensor file: {exc}".splitlines()[0],
                                 source.locate(o.path + ("path",)),
                                 hint="save a dict of tensors with torch.save({'x': x, 'y': y}, path)") from None
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise DlspecError.single(f"{path.name} does not hold a dict of tensors", source.locate(o.path + ("path",)),
                                 expected="{'field name': tensor, ...}")
    return _with_defaults(dict(obj), o, source, path)


def _read_text(path: Path, where: tuple, locate: Locate) -> str:
    # a data set is held in memory: a file past the memory this process can use is refused before it is read
    return read_text(path, memory_limit(), what="data files", loc=locate(where))


def _csv(o: Kinded, source: Source) -> TensorTable:
    import csv
    import io

    import numpy as np
    import torch
    path = _file(o, source)
    reader = csv.DictReader(io.StringIO(_read_text(path, o.path + ("path",), source.locate), newline=""))
    header = reader.fieldnames or []
    rows = list(reader)
    fields: dict[str, torch.Tensor] = {}
    for name, wanted in o["columns"].items():
        names = [wanted] if isinstance(wanted, str) else list(wanted)
        for column in names:
            if column not in header:
                raise DlspecError.single(f"{path.name} has no column '{column}'", source.locate(o.path + ("columns", name)),
                                         expected=f"one of {', '.join(header)}", hint=did_you_mean(column, header))
        values = np.empty((len(rows), len(names)), dtype=np.float64)
        for i, row in enumerate(rows):
            for j, column in enumerate(names):
                try:
                    values[i, j] = float(row[column])
                except (TypeError, ValueError):
                    raise DlspecError.single(f"{path.name}:{i + 2}: column '{column}' holds '{row[column]}', not a number",
                                             source.locate(o.path + ("columns", name)),
                                             hint="encode categories as integers first") from None
        if isinstance(wanted, str):
            values = values[:, 0]
            integral = bool(np.all(values == np.round(values)))
            fields[name] = torch.tensor(values, dtype=torch.int64 if integral else torch.float32)
        else:
            fields[name] = torch.tensor(values, dtype=torch.float32)
    return _with_defaults(fields, o, source, path)


def _text(o: Kinded, source: Source) -> TextTable:
    import torch

    from dlspec.train.tables import TextTable
    if o["stdlib"]:
        path = stdlib_text_path(o["stdlib"])
        if path is None:
            raise DlspecError.single(f"'{o['stdlib']}' is not a standard-library module with Python source",
                                     source.locate(o.path + ("stdlib",)), hint="try `argparse` or `textwrap`")
    else:
        path = _file(o, source)
    text = _read_text(path, o.path + ("path",), source.locate)
    vocab = source.vocab or tuple(sorted(set(text)))
    index = {ch: i for i, ch in enumerate(vocab)}
    unknown = sorted(set(text) - set(index))
    if unknown:
        raise DlspecError.single(f"{path.name} has characters outside the training alphabet: {''.join(unknown)[:20]!r}",
                                 source.locate(o.path), hint="the validation text may only use characters that "
                                 "occur in the training text")
    return TextTable(torch.tensor([index[ch] for ch in text], dtype=torch.int64), o["block"], vocab)


def _one_text_source(o: Kinded, report) -> None:
    if (o["path"] is None) == (o["stdlib"] is None):
        report(o.path, "a text data set needs exactly one of `path` or `stdlib`",
               hint="`stdlib: argparse` trains on the source of a module that ships with Python")


_PATH = Option("path", "string", "The file, relative to the spec file.", required=True)
_DTYPES = Option("dtypes", "mapping", "Field name -> dtype to read it as.", default_doc="float32, or int64 for whole "
                 "numbers in one column", schema={"type": "object", "additionalProperties": {"type": "string"}})
DATA_KINDS.add(DataKind("npz", "A numpy .npz archive, read without pickle: one field per array.", (_PATH, _DTYPES), _npz,
                        fields="the arrays in the file, by name"))
DATA_KINDS.add(DataKind("pt", "A torch.save'd dict of tensors, read with weights_only=True.", (_PATH, _DTYPES), _pt,
                        fields="the tensors in the file, by name"))
DATA_KINDS.add(DataKind("csv", "A CSV file with a header row; each field is one column or a list of columns.",
                        (_PATH, Option("columns", "mapping", "Field name -> one column name or a list of column names.",
                                       required=True, schema={"type": "object", "additionalProperties": {"anyOf": [
                                           {"type": "string"}, {"type": "array", "items": {"type": "string"}}]}}),
                         _DTYPES), _csv, fields="`columns: {field: column or [columns]}`"))
DATA_KINDS.add(DataKind("text", "Character-level language modelling on a text file or a standard-library module's "
                        "source: windows of `block` characters and the next ones.",
                        (Option("path", "string", "The text file, relative to the spec file."),
                         Option("stdlib", "string", "Use the source of this standard-library module (e.g. `argparse`)."),
                         Option("block", "integer", "Characters per training sequence (the model's context length).", 64,
                                minimum=1)),
                        _text, _one_text_source, fields="`tokens`, `targets` [block] (character ids, shifted by one)",
                        stream=True))
