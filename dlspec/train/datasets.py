"""Data kinds: the data sets a spec can name, bundled, synthetic, or read from files.

A kind's `build(options, source)` returns a `Table` (tables.py); its `recipe(options, table)` says, as plain
data, how raw inputs become the table's fields (the image size and channels, the CSV columns, the tokenizer),
which the run records for inference. Nothing is downloaded: bundled sets ship inside scikit-learn, and the
text set reads a file or a module of Python's own standard library. Loaders import numpy, torch,
scikit-learn, Pillow or pyarrow when they run, so the registry costs nothing to import.
"""
from __future__ import annotations

import fnmatch
import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping

from dlspec.core.budget import memory_limit
from dlspec.core.errors import DlspecError, did_you_mean
from dlspec.core.reading import read_text
from dlspec.train.kinds import Kind, Kinded, Option, Registry

if TYPE_CHECKING:
    from dlspec.train.tables import ImageTable, Table, TensorTable, TextTable, TokenTable

Locate = Callable[[tuple], Any]
_TARGET_NAMES = ("label", "labels", "target", "targets", "y")


@dataclass(frozen=True)
class Source:
    """What a loader may need besides its options."""
    base_dir: Path  # where relative paths start
    seed: int  # training.seed, the default of a generator's seed
    locate: Locate
    vocab: tuple[str, ...] | None = None  # a text validation set uses the training text's alphabet
    example_shape: tuple[int | None, ...] | None = None  # the model's first input per example, at example sizes
    notes: list[str] | None = None  # what loading changed, for the start of the run
    classes: Mapping[str, tuple[str, ...]] | None = None  # a validation set's labels take the training set's indices

    def note(self, text: str) -> None:
        if self.notes is not None and text not in self.notes:
            self.notes.append(text)


@dataclass(frozen=True)
class DataKind(Kind):
    fields: str = ""  # the fields it gives, for the docs
    stream: bool = False  # one sequence cut into windows (text): validated on another stream, not a fraction of it
    recipe: Callable[[Kinded, Any], dict] | None = None  # how raw inputs become fields, as plain data

    def described(self) -> str:
        return f"{self.doc} Fields: {self.fields}."


DATA_KINDS = Registry("data set", "Data set: bundled, synthetic, or read from files.")


def load(dataset: Kinded, source: Source) -> Table:
    """The data set a `dataset:` section names."""
    table = dataset.definition.build(dataset, source)
    if len(table) == 0:
        raise DlspecError.single(f"the '{dataset.kind}' data set has no examples", source.locate(dataset.path),
                                 path=".".join(map(str, dataset.path)))
    return table


def recipe(dataset: Kinded, table: Table) -> dict[str, Any]:
    """How the data kind turns raw inputs into the table's fields, as plain data (run.json's `data`)."""
    made = dataset.definition.recipe(dataset, table) if dataset.definition.recipe else {}
    return {"kind": dataset.kind, **made}


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


def _check_size(o: Kinded, source: Source, values_per_example: int) -> None:
    """Refuse a generated set that would not fit in memory (a few float64 copies of it) before making it."""
    if o["samples"] * values_per_example * 8 * 4 > memory_limit():
        raise DlspecError.single(f"{o['samples']:,} examples of {values_per_example:,} values would not fit in memory",
                                 source.locate(_where(o, "samples")), hint="generate fewer examples")


def _generate(o: Kinded, source: Source, values_per_example: int, make: Callable[[], Any]) -> Any:
    """A scikit-learn generator's output, its size checked first and its objection to the options (classes
    that need more informative features) located."""
    _check_size(o, source, values_per_example)
    try:
        return make()
    except ValueError as exc:
        raise DlspecError.single(f"{o.kind}: {exc}", source.locate(o.path),
                                 hint="change the generator's options") from None


def _synthetic_classification(o: Kinded, source: Source) -> TensorTable:
    from sklearn.datasets import make_classification
    x, y = _generate(o, source, o["features"] + 1, lambda: make_classification(
        n_samples=o["samples"], n_features=o["features"], n_informative=o["informative"] or min(o["features"], 5),
        n_redundant=0, n_classes=o["classes"], flip_y=o["noise"], random_state=_seed(o, source)))
    return _tensors({"features": x, "label": y}, "features", "label")


def _synthetic_regression(o: Kinded, source: Source) -> TensorTable:
    from sklearn.datasets import make_regression
    x, y = _generate(o, source, o["features"] + o["targets"], lambda: make_regression(
        n_samples=o["samples"], n_features=o["features"], n_targets=o["targets"], noise=o["noise"],
        random_state=_seed(o, source)))
    return _tensors({"features": x, "target": y[:, None] if y.ndim == 1 else y}, "features", "target")


def _synthetic_tokens(o: Kinded, source: Source) -> TensorTable:
    import torch
    _check_size(o, source, 2 * o["length"])
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

def _where(o: Kinded, *keys: str) -> tuple:
    return o.path + keys


def _missing(o: Kinded, source: Source, name: str, key: str = "path", what: str = "data file") -> DlspecError:
    return DlspecError.single(f"{what} '{name}' does not exist (looked for {(source.base_dir / name).resolve()})",
                              source.locate(_where(o, key)), path=".".join(map(str, _where(o, key))),
                              hint="paths are relative to the spec file")


def _file(o: Kinded, source: Source) -> Path:
    path = (source.base_dir / o["path"]).resolve()
    if not path.is_file():
        raise _missing(o, source, o["path"])
    return path


def _files(o: Kinded, source: Source) -> list[Path]:
    """`path`: one file, or a glob (`shards/train-*.bin`) of them in sorted order."""
    pattern = o["path"]
    if not any(ch in pattern for ch in "*?["):
        return [_file(o, source)]
    root = Path(Path(pattern).anchor) if Path(pattern).is_absolute() else source.base_dir
    found = sorted(p.resolve() for p in root.glob(str(Path(pattern).relative_to(root)) if Path(pattern).is_absolute()
                                                 else pattern) if p.is_file())
    if not found:
        raise DlspecError.single(f"no file matches '{pattern}' (in {source.base_dir.resolve()})",
                                 source.locate(_where(o, "path")), hint="paths are relative to the spec file")
    return found


def _with_defaults(fields: dict, o: Kinded, source: Source, path: Path) -> TensorTable:
    """Apply `dtypes` (else floats as float32, with a note for float64, and integers as int64), check the
    fields agree on the number of examples, and pick the default target."""
    import torch

    from dlspec.train.tables import TensorTable
    where = _where(o, "dtypes")
    dtypes = o["dtypes"] or {}
    for name, dtype_name in dtypes.items():
        if name not in fields:
            raise DlspecError.single(f"'{name}' is not a field of {path.name}", source.locate(where + (name,)),
                                     expected=f"one of {', '.join(fields)}")
        dtype = getattr(torch, dtype_name, None)
        if not isinstance(dtype, torch.dtype):
            raise DlspecError.single(f"'{dtype_name}' is not a torch dtype", source.locate(where + (name,)),
                                     expected="float32, float64, int64, int32, bool, ...")
        fields[name] = fields[name].to(dtype)
    for name, values in fields.items():
        if name in dtypes:
            continue
        if values.dtype == torch.float64:
            source.note(f"{path.name}: field '{name}' is float64, read as float32 (`dtypes: {{{name}: float64}}` "
                        "keeps it)")
            fields[name] = values.float()
        elif not values.is_floating_point() and values.dtype not in (torch.bool, torch.int64):
            fields[name] = values.long()  # labels and ids: what cross-entropy and embeddings index with
    lengths = {name: len(v) if v.ndim else 0 for name, v in fields.items()}
    if len(set(lengths.values())) != 1:
        raise DlspecError.single(f"the fields of {path.name} have different numbers of examples: {lengths}",
                                 source.locate(_where(o, "path")), expected="every field with the same first dimension")
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
    except (ValueError, OSError, TypeError) as exc:
        raise DlspecError.single(f"cannot read {path.name} as .npz: {exc}", source.locate(_where(o, "path"))) from None
    return _with_defaults(fields, o, source, path)


def _pt(o: Kinded, source: Source) -> TensorTable:
    import torch
    path = _file(o, source)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for a bad or unsafe file
        raise DlspecError.single(f"cannot read {path.name} as a tensor file: {exc}".splitlines()[0],
                                 source.locate(_where(o, "path")),
                                 hint="save a dict of tensors with torch.save({'x': x, 'y': y}, path)") from None
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise DlspecError.single(f"{path.name} does not hold a dict of tensors", source.locate(_where(o, "path")),
                                 expected="{'field name': tensor, ...}")
    return _with_defaults(dict(obj), o, source, path)


def _read_text(path: Path, where: tuple, locate: Locate) -> str:
    # a data set is held in memory: a file past the memory this process can use is refused before it is read
    return read_text(path, memory_limit(), what="data files", loc=locate(where))


# ---- tables as people have them: CSV, Parquet --------------------------------------------------------------------

_NA = frozenset({"", "na", "n/a", "nan", "null", "none", "?"})  # how spreadsheets and exports write a missing value


@dataclass
class _Column:
    """One column of a file: numbers (NaN where missing), or the cells as text when some are not numbers."""
    numbers: Any  # float64 array
    missing: Any  # bool array
    text: list[str] | None = None  # every cell, when the column holds words


def _text_column(cells: list[str]):
    import numpy as np
    numbers = np.full(len(cells), np.nan)
    missing = np.zeros(len(cells), dtype=bool)
    words = False
    for i, cell in enumerate(cells):
        cell = cell.strip()
        if cell.lower() in _NA:
            missing[i] = True
            continue
        try:
            numbers[i] = float(cell)
        except ValueError:
            words = True
    return _Column(numbers, missing, [c.strip() for c in cells] if words else None)


def _read_csv(o: Kinded, source: Source, path: Path) -> tuple[dict[str, _Column], Callable[[int], str]]:
    import csv
    import io
    reader = csv.reader(io.StringIO(_read_text(path, _where(o, "path"), source.locate), newline=""))
    rows, lines = [], []  # the rows with a value, and the line each ends on (for messages)
    for row in reader:
        if any(cell.strip() for cell in row):
            rows.append(row)
            lines.append(reader.line_num)
    if not rows:
        raise DlspecError.single(f"{path.name} is empty", source.locate(_where(o, "path")), expected="a header row, "
                                 "then one row per example", hint="is this the file you meant?")
    header = [h.strip() for h in rows[0]]
    for row, line in zip(rows[1:], lines[1:]):
        if len(row) != len(header):
            raise DlspecError.single(f"{path.name}:{line}: {len(row)} cells, and the header has {len(header)}",
                                     source.locate(_where(o, "path")), expected="the same number of cells in every row",
                                     hint="a cell holding a comma must be quoted")
    columns = {name: _text_column([row[j] for row in rows[1:]]) for j, name in enumerate(header)}
    return columns, lambda i: f"{path.name}:{lines[i + 1]}:"


def _read_parquet(o: Kinded, source: Source, path: Path) -> tuple[dict[str, _Column], Callable[[int], str]]:
    import numpy as np
    try:
        import pyarrow as pa
        import pyarrow.compute as pc
        import pyarrow.parquet as pq
    except ImportError:
        raise DlspecError.single("reading Parquet needs the pyarrow package, which is not installed",
                                 source.locate(_where(o, "kind")), hint="pip install 'dlspec[parquet]'") from None
    if path.stat().st_size > memory_limit():
        raise DlspecError.single(f"{path} is {path.stat().st_size:,} bytes, more than this process may hold",
                                 source.locate(_where(o, "path")), hint="a table is held in memory: use fewer rows")
    try:
        table = pq.read_table(path)
    except (pa.ArrowException, OSError) as exc:
        raise DlspecError.single(f"cannot read {path.name} as Parquet: {exc}", source.locate(_where(o, "path")),
                                 hint="is this the file you meant?") from None
    columns = {}
    for name, column in zip(table.column_names, table.columns):
        missing = pc.is_null(column, nan_is_null=pa.types.is_floating(column.type)).to_numpy(zero_copy_only=False)
        if pa.types.is_integer(column.type) or pa.types.is_floating(column.type) or pa.types.is_boolean(column.type):
            numbers = pc.cast(column, pa.float64()).fill_null(np.nan).to_numpy(zero_copy_only=False)
            columns[name] = _Column(np.asarray(numbers, dtype=np.float64), np.asarray(missing))
        else:
            cells = ["" if v is None else str(v) for v in column.to_pylist()]
            columns[name] = _text_column(cells)
    doubles = [n for n, c in zip(table.column_names, table.columns) if pa.types.is_float64(c.type)]
    if doubles:
        source.note(f"{path.name}: float64 columns ({', '.join(doubles[:5])}{', ...' if len(doubles) > 5 else ''}) "
                    "read as float32")
    return columns, lambda i: f"{path.name}, row {i + 1}:"


def _select(o: Kinded, source: Source, header: list[str]) -> dict[str, list[str] | str]:
    """Field -> its column (one name) or columns (a list, a glob such as `pixel_*`, or `rest`: every column no
    other field takes); without `columns`, a label-like column is `label` and the rest are `features`."""
    wanted = o["columns"]
    if wanted is None:
        target = next((c for name in _TARGET_NAMES + ("class", "species") for c in header if c.lower() == name), None)
        if target is None:
            raise DlspecError.single("no column looks like a label; say which columns are which", source.locate(o.path),
                                     expected=f"columns of {', '.join(header[:8])}", hint="columns: {label: COLUMN, "
                                     "features: rest}")
        wanted = {"label": target, "features": "rest"}
    chosen: dict[str, list[str] | str] = {}
    for field, want in wanted.items():
        where = _where(o, "columns", field)
        if isinstance(want, str) and want == "rest" and "rest" not in header:
            continue
        if isinstance(want, str) and any(ch in want for ch in "*?["):
            chosen[field] = [c for c in header if fnmatch.fnmatchcase(c, want)]
            if not chosen[field]:
                raise DlspecError.single(f"no column matches '{want}'", source.locate(where),
                                         expected=f"columns of {', '.join(header[:8])}{', ...' if len(header) > 8 else ''}",
                                         hint="a glob matches whole names: `pixel_*`, `f?`")
            continue
        for column in [want] if isinstance(want, str) else want:
            if column not in header:
                raise DlspecError.single(f"the file has no column '{column}'", source.locate(where),
                                         expected=f"one of {', '.join(header)}",
                                         hint=did_you_mean(column, header) or "column names are those of the header row")
        chosen[field] = want if isinstance(want, str) else list(want)
    taken = {c for cols in chosen.values() for c in ([cols] if isinstance(cols, str) else cols)}
    for field, want in wanted.items():
        if want == "rest" and "rest" not in header:
            chosen[field] = [c for c in header if c not in taken]
            if not chosen[field]:
                raise DlspecError.single("`rest` is left with no column", source.locate(_where(o, "columns", field)),
                                         hint="the other fields take every column")
    return {field: chosen[field] for field in wanted}


def _tabular(read: Callable[[Kinded, Source, Path], tuple[dict[str, _Column], Callable[[int], str]]]):
    """A tabular kind: the file's columns chosen into fields; numbers as float32 (a single whole-number column
    as int64 labels), words in a single column as class indices, missing cells filled or refused."""
    def build(o: Kinded, source: Source) -> TensorTable:
        import numpy as np
        import torch
        path = _file(o, source)
        columns, row = read(o, source, path)
        fields, classes = {}, {}
        for field, chosen in _select(o, source, list(columns)).items():
            names = [chosen] if isinstance(chosen, str) else chosen
            where = source.locate(_where(o, "columns", field) if o["columns"] else o.path)
            values = np.stack([_filled(columns[c], c, o, where, row) for c in names], axis=1) if names else None
            if isinstance(chosen, str) and columns[chosen].text is not None:
                fields[field], classes[field] = _classes(columns[chosen], chosen, field, source, where, row)
            elif isinstance(chosen, str):
                values = values[:, 0]
                integral = bool(np.all(values == np.round(values)))
                fields[field] = torch.tensor(values, dtype=torch.int64 if integral else torch.float32)
            else:
                for c in names:
                    if columns[c].text is not None:
                        i = next(i for i, v in enumerate(columns[c].numbers) if np.isnan(v) and not columns[c].missing[i])
                        raise DlspecError.single(f"{row(i)} column '{c}' holds '{columns[c].text[i]}', not a number",
                                                 where, hint="a column of words can be a label (a field of one column), "
                                                 "not a feature: encode it as numbers first")
                fields[field] = torch.tensor(values, dtype=torch.float32)
        table = _with_defaults(fields, o, source, path)
        return type(table)(table.fields, table.input_field, table.target_field, classes or None)
    return build


def _filled(column: _Column, name: str, o: Kinded, loc, row: Callable[[int], str]):
    """The column's numbers, missing cells replaced by the declared fill, else refused naming the first."""
    import numpy as np
    if not column.missing.any():
        return column.numbers
    fill = o["fill"]
    value = fill.get(name) if isinstance(fill, dict) else fill
    if value is None:
        i = int(np.argmax(column.missing))
        raise DlspecError.single(f"{row(i)} column '{name}' has no value ({int(column.missing.sum())} missing in that "
                                 "column)", loc, hint=f"fill it: `fill: {{{name}: 0}}` (or `fill: 0` for every column)")
    return np.where(column.missing, float(value), column.numbers)


def _classes(column: _Column, name: str, field: str, source: Source, loc, row: Callable[[int], str]):
    """Words as class indices: the training set's classes in sorted order; a validation set uses the same ones."""
    import torch
    if column.missing.any():
        i = int(column.missing.argmax())
        raise DlspecError.single(f"{row(i)} column '{name}' has no label", loc, hint="remove the row, or label it")
    known = (source.classes or {}).get(field)
    names = tuple(known) if known is not None else tuple(sorted(set(column.text)))
    index = {n: i for i, n in enumerate(names)}
    for i, word in enumerate(column.text):
        if word not in index:
            raise DlspecError.single(f"{row(i)} column '{name}' holds class '{word}', which the training data does not "
                                     "have", loc, expected=f"one of {', '.join(names[:10])}",
                                     hint="a validation file may only use the training file's classes")
    return torch.tensor([index[w] for w in column.text], dtype=torch.int64), names


def _tabular_recipe(o: Kinded, table: TensorTable) -> dict:
    return {"columns": o["columns"], "fill": o["fill"]}


# ---- text and tokens ----------------------------------------------------------------------------------------------

def _text(o: Kinded, source: Source) -> TextTable:
    import torch

    from dlspec.train.tables import TextTable
    if o["stdlib"]:
        path = stdlib_text_path(o["stdlib"])
        if path is None:
            raise DlspecError.single(f"'{o['stdlib']}' is not a standard-library module with Python source",
                                     source.locate(_where(o, "stdlib")), hint="try `argparse` or `textwrap`")
    else:
        path = _file(o, source)
    text = _read_text(path, _where(o, "path"), source.locate)
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


def _token_shard(path: Path, dtype: str | None, o: Kinded, source: Source):
    """One token file's shape, read from its header (.npy) or size (.bin): nothing else of it is read."""
    import numpy as np

    from dlspec.core.reading import open_checked
    from dlspec.train.tables import Shard
    loc = source.locate(_where(o, "path"))
    with open_checked(path, 2**62, what="token files", loc=loc) as handle:
        if path.suffix == ".npy":
            try:
                version = np.lib.format.read_magic(handle)
                read = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
                if version not in read:
                    raise ValueError(f"format version {version}")
                shape, fortran, dt = read[version](handle)
            except ValueError as exc:
                raise DlspecError.single(f"{path.name} is not a .npy file: {exc}", loc,
                                         hint="save the ids with numpy.save(path, ids.astype(numpy.uint16))") from None
            if len(shape) != 1 or dt.kind not in "ui" or dt.byteorder == ">":
                raise DlspecError.single(f"{path.name} holds {dt} of shape {list(shape)}", loc,
                                         expected="a 1-D array of integer token ids (little-endian)",
                                         hint="save the ids with numpy.save(path, ids.astype(numpy.uint16))")
            return Shard(str(path), dt.name, handle.tell(), 0, int(shape[0]))
        size = handle.seek(0, 2)
    if path.suffix != ".bin":
        raise DlspecError.single(f"{path.name} is not a token file", loc, expected="a raw .bin of token ids "
                                 "(nanoGPT's format, with `dtype`) or a .npy", hint="make them with `dlspec data tokenize`")
    itemsize = np.dtype(dtype).itemsize
    if size % itemsize:
        raise DlspecError.single(f"{path.name} is {size:,} bytes, not a whole number of {dtype} ids", loc,
                                 hint="is `dtype` the one the file was written with?")
    return Shard(str(path), dtype, 0, 0, size // itemsize)


def _tokens(o: Kinded, source: Source) -> TokenTable:
    from dlspec.train import tokenizer
    from dlspec.train.tables import TokenTable
    paths = _files(o, source)
    meta = tokenizer.meta_beside(paths[0])
    dtype = o["dtype"] or (meta or {}).get("dtype") or "uint16"
    if meta and o["dtype"] and meta.get("dtype") not in (None, o["dtype"]):
        raise DlspecError.single(f"dtype {o['dtype']} differs from the {meta['dtype']} of "
                                 f"{paths[0].parent / tokenizer.META}", source.locate(_where(o, "dtype")),
                                 hint="drop `dtype`: meta.json says how the files were written")
    shards = tuple(_token_shard(p, dtype, o, source) for p in paths)
    return TokenTable(shards, o["block"], random=o["windows"] == "random", stride=o["block"],
                      tokenizer=_tokenizer_of(o, source, paths[0], meta), max_windows=o["eval_windows"])


def _tokenizer_of(o: Kinded, source: Source, first: Path, meta: dict | None) -> dict | None:
    """The tokenizer the ids were made with, as a record a run keeps (a BPE with its tokenizer.json's text)."""
    from dlspec.train import tokenizer
    given = o["tokenizer"]
    if given == "bytes":
        codec = tokenizer.byte_level()
    elif given is not None:
        path = source.base_dir / given
        if not path.is_file():
            raise _missing(o, source, given, "tokenizer", "tokenizer file")
        codec = tokenizer.load_file(path, source.locate(_where(o, "tokenizer")))
    elif meta is not None:
        codec = tokenizer.from_meta(first.parent, meta)
    else:
        return None
    return {**codec.record(), "text": codec.text}


def _tokens_recipe(o: Kinded, table: TokenTable) -> dict:
    record = dict(table.tokenizer or {})
    record.pop("text", None)
    return {"block": table.block, "tokenizer": record or None}


# ---- image folders ------------------------------------------------------------------------------------------------

def _image_folder(o: Kinded, source: Source) -> ImageTable:
    import torch

    from dlspec.train.images import EXTENSIONS
    from dlspec.train.tables import ImageTable
    root = (source.base_dir / o["path"]).resolve()
    if not root.is_dir():
        raise _missing(o, source, o["path"], what="image folder")
    found = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    known = (source.classes or {}).get("label")
    classes = tuple(known) if known is not None else tuple(found)
    if not found:
        raise DlspecError.single(f"{root} has no class folders", source.locate(_where(o, "path")),
                                 expected="one folder per class, holding its images (cat/1.jpg, dog/2.png, ...)",
                                 hint="the folder names are the class names")
    strangers = sorted(set(found) - set(classes))
    if strangers:
        raise DlspecError.single(f"{root} has classes the training data does not: {', '.join(strangers[:5])}",
                                 source.locate(_where(o, "path")), expected=f"folders among {', '.join(classes[:10])}",
                                 hint="a validation folder may only use the training folder's classes")
    files, labels = [], []
    for name in found:
        for file in sorted((root / name).rglob("*")):
            if file.suffix.lower() in EXTENSIONS and file.is_file() and not file.name.startswith("."):
                files.append(str(file))
                labels.append(classes.index(name))
    return ImageTable(tuple(files), torch.tensor(labels, dtype=torch.int64), {"label": classes},
                      _decoding(o, source))


def _decoding(o: Kinded, source: Source) -> dict:
    """The size and channels images are decoded to: as given, else those of the model's input [C, H, W]."""
    shape = source.example_shape or ()
    size = o["size"]
    if size is None and len(shape) == 3 and all(isinstance(d, int) for d in shape[1:]):
        size = list(shape[1:])
    if size is None:
        raise DlspecError.single("the image size is not known", source.locate(o.path), expected="`size: [H, W]`, or a "
                                 "model input of shape [B, C, H, W] with H and W known",
                                 hint="add `size: [224, 224]` to the data set")
    size = [size, size] if isinstance(size, int) else list(size)
    channels = o["channels"] or (shape[0] if len(shape) == 3 and shape[0] in (1, 3) else 3)
    return {"size": size, "channels": channels, "resize": o["resize"]}


def _image_recipe(o: Kinded, table: ImageTable) -> dict:
    return {"decode": dict(table.decode), "scale": "pixels / 255"}


# ---- the file kinds -----------------------------------------------------------------------------------------------

_PATH = Option("path", "string", "The file, relative to the spec file.", required=True)
_DTYPES = Option("dtypes", "mapping", "Field name -> dtype to read it as.", default_doc="float32 (float64 is read as "
                 "float32, with a note), int64 for integers",
                 schema={"type": "object", "additionalProperties": {"type": "string"}})
_COLUMNS = Option("columns", "mapping", "Field name -> one column, a list of columns, a glob (`pixel_*`) or `rest` "
                  "(every column no other field takes).", default_doc="a column named label, target, y, class or "
                  "species as `label`, the rest as `features`",
                  schema={"type": "object", "additionalProperties": {"anyOf": [
                      {"type": "string"}, {"type": "array", "items": {"type": "string"}}]}})
_FILL = Option("fill", "number", "Value for missing cells (empty, NA, NaN, null): one for every column, or column -> "
               "value.", default_doc="a missing cell is an error naming its row and column",
               schema={"anyOf": [{"type": "number"}, {"type": "object", "additionalProperties": {"type": "number"}}]})
_TABULAR_FIELDS = ("`columns: {field: column, [columns], glob or rest}`; a column of words becomes class indices "
                   "(names kept in the run)")
DATA_KINDS.add(DataKind("npz", "A numpy .npz archive, read without pickle: one field per array.", (_PATH, _DTYPES), _npz,
                        fields="the arrays in the file, by name"))
DATA_KINDS.add(DataKind("pt", "A torch.save'd dict of tensors, read with weights_only=True.", (_PATH, _DTYPES), _pt,
                        fields="the tensors in the file, by name"))
DATA_KINDS.add(DataKind("csv", "A CSV file with a header row, as a spreadsheet writes it.",
                        (_PATH, _COLUMNS, _FILL, _DTYPES), _tabular(_read_csv), fields=_TABULAR_FIELDS,
                        recipe=_tabular_recipe))
DATA_KINDS.add(DataKind("parquet", "A Parquet file (needs pyarrow: `pip install 'dlspec[parquet]'`).",
                        (_PATH, _COLUMNS, _FILL, _DTYPES), _tabular(_read_parquet), fields=_TABULAR_FIELDS,
                        recipe=_tabular_recipe))
DATA_KINDS.add(DataKind("text", "Character-level language modelling on a text file or a standard-library module's "
                        "source: windows of `block` characters and the next ones.",
                        (Option("path", "string", "The text file, relative to the spec file."),
                         Option("stdlib", "string", "Use the source of this standard-library module (e.g. `argparse`)."),
                         Option("block", "integer", "Characters per training sequence (the model's context length).", 64,
                                minimum=1)),
                        _text, _one_text_source, fields="`tokens`, `targets` [block] (character ids, shifted by one)",
                        stream=True))
DATA_KINDS.add(DataKind("tokens", "Token ids in memory-mapped files, never read whole: nanoGPT's raw .bin (uint16 or "
                        "uint32) or .npy, one file or many (windows never cross files). `dlspec data tokenize` makes "
                        "them from text.",
                        (Option("path", "string", "A token file, or a glob of them (`shards/train-*.bin`, in sorted "
                                "order), relative to the spec file.", required=True),
                         Option("dtype", "string", "The ids' type in a .bin file.", choices=("uint16", "uint32"),
                                default_doc="meta.json's beside the files, else uint16"),
                         Option("block", "integer", "Tokens per training sequence (the model's context length).", 64,
                                minimum=1),
                         Option("windows", "string", "`random`: each batch draws windows at random offsets, as nanoGPT "
                                "does (an epoch is as many windows as the tokens fill side by side); `sequential`: "
                                "windows side by side, each once an epoch.", "random", choices=("random", "sequential")),
                         Option("eval_windows", "integer", "Validation scores at most this many windows, spread evenly.",
                                minimum=1, default_doc="every window of the validation tokens, side by side"),
                         Option("tokenizer", "string", "`bytes`, or a tokenizer.json: what `dlspec generate` decodes "
                                "with.", default_doc="meta.json's beside the files")),
                        _tokens, fields="`tokens`, `targets` [block] (ids, shifted by one)", stream=True,
                        recipe=_tokens_recipe))
DATA_KINDS.add(DataKind("image_folder", "A folder with one folder of JPEG/PNG images per class (the class names, "
                        "sorted, are the labels), decoded with Pillow.",
                        (Option("path", "string", "The folder, relative to the spec file.", required=True),
                         Option("size", "integers", "[H, W] (or one number) the images are resized to.",
                                default_doc="the model input's H and W",
                                schema={"anyOf": [{"type": "integer", "minimum": 1},
                                                  {"type": "array", "items": {"type": "integer", "minimum": 1},
                                                   "minItems": 2, "maxItems": 2}]}),
                         Option("channels", "integer", "1 (grayscale) or 3 (RGB).", choices=(1, 3),
                                default_doc="the model input's C, else 3"),
                         Option("resize", "string", "`shorter_side`: scale to cover [H, W], then crop the centre; "
                                "`stretch`: scale to [H, W].", "shorter_side", choices=("shorter_side", "stretch"))),
                        _image_folder, fields="`image` [C, H, W] (0..1 before normalisation), `label`",
                        recipe=_image_recipe))
