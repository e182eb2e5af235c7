"""What `dlspec predict` reads: examples from a CSV file, an .npz archive, image files (or a folder of them),
or text, as arrays shaped like the inputs a model takes from its data set (raw: the files apply the
training preprocessing themselves).

Every file is read through `dlspec.core.reading` (type and size checked first), an .npz without pickle.
"""
from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from dlspec.core.budget import memory_limit
from dlspec.core.dims import per_example
from dlspec.core.errors import DlspecError, did_you_mean, shorten
from dlspec.core.reading import open_checked, read_text
from dlspec.front.spec import concrete_shape

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")
_TARGET_NAMES = ("label", "labels", "target", "targets", "y")  # columns a CSV's features leave out
_MODES = {1: "L", 3: "RGB", 4: "RGBA"}  # Pillow's modes by channel count


@dataclass(frozen=True)
class Group:
    """Examples of one shape: a name for each (a row, a file, a line) and each model input's values [N, ...]."""

    names: tuple[str, ...]
    arrays: dict[str, np.ndarray]


@dataclass(frozen=True)
class Context:
    """What reading needs to know of the model: the inputs it takes, its dims' sizes, its data."""

    inputs: tuple  # TensorSpecs of the raw inputs (as the data set gives them)
    sizes: dict[str, int]  # a size for every symbolic dim (the spec's example sizes)
    fields: dict[str, str]  # model input -> data field
    layouts: dict[str, str | None]  # model input -> raw layout ("channels_last") or None
    columns: dict  # data field -> CSV column(s), when the model was trained on a CSV
    vocab: str | None  # a character-level model's alphabet
    dims: dict  # DimSpec by name: how long a text may be


def read(paths: Sequence[Path], texts: Sequence[str], context: Context, pixel_scale: float | None) -> list[Group]:
    """The examples INPUT... (or --text) holds, by what they are."""
    if texts:
        return _texts(list(texts), context)
    if not paths:
        raise DlspecError.single("no examples given", expected="INPUT (a .csv, .npz, image files or a folder, a .txt) "
                                 "or --text", usage=True)
    for path in paths:
        if not path.exists():
            raise DlspecError.single(f"{path} does not exist", usage=True,
                                     hint="give a .csv, .npz, .txt, image files or a folder")
    if len(paths) == 1 and paths[0].is_dir():
        images = sorted(p for p in paths[0].rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        if not images:
            raise DlspecError.single(f"{paths[0]} holds no images", expected=", ".join(IMAGE_SUFFIXES), usage=True)
        return [_images(images, context, pixel_scale, paths[0])]
    if all(p.suffix.lower() in IMAGE_SUFFIXES for p in paths):
        return [_images(list(paths), context, pixel_scale, None)]
    if len(paths) == 1 and paths[0].suffix.lower() == ".csv":
        return [_csv(paths[0], context)]
    if len(paths) == 1 and paths[0].suffix.lower() == ".npz":
        return [_npz(paths[0], context)]
    if len(paths) == 1 and paths[0].suffix.lower() == ".txt":
        lines = [line for line in read_text(paths[0], memory_limit(), what="text files", usage=True).splitlines() if line]
        return _texts(lines, context)
    raise DlspecError.single(f"cannot tell what {', '.join(map(str, paths))[:200]} holds", usage=True,
                             expected="one .csv, .npz or .txt file, image files, or a folder of images")


def _example_shape(tensor, context: Context) -> tuple[int, ...]:
    return concrete_shape(per_example(tensor.shape), context.sizes)


def _dtype(tensor) -> np.dtype:
    return torch.empty((), dtype=getattr(torch, tensor.dtype)).numpy().dtype


# ---- CSV -----------------------------------------------------------------------------------------------------

def _csv(path: Path, context: Context) -> Group:
    rows = list(csv.reader(io.StringIO(read_text(path, memory_limit(), what="CSV files", usage=True), newline="")))
    if not rows:
        raise DlspecError.single(f"{path} is empty", expected="a header row, then one row per example", usage=True)
    header, rows = rows[0], [r for r in rows[1:] if r]
    used: set[str] = set()
    arrays = {}
    for tensor in context.inputs:
        columns = _columns(tensor, header, context, used, path)
        used.update(columns)
        index = [header.index(c) for c in columns]
        values = np.empty((len(rows), len(columns)), dtype=np.float64)
        for i, row in enumerate(rows):
            for j, k in enumerate(index):
                try:
                    values[i, j] = float(row[k])
                except (ValueError, IndexError):
                    cell = row[k] if k < len(row) else "nothing"
                    raise DlspecError.single(f"{path}:{i + 2}: column '{columns[j]}' holds {shorten(repr(cell), 40)}, "
                                             "not a number", usage=True) from None
        shape = _example_shape(tensor, context)
        arrays[tensor.name] = values.reshape((len(rows), *shape)).astype(_dtype(tensor))
    return Group(tuple(f"row {i + 2}" for i in range(len(rows))), arrays)


def _columns(tensor, header: list[str], context: Context, used: set[str], path: Path) -> list[str]:
    """The columns of one input: the ones the training CSV gave its field, else a column named after it, else
    every column no other input took that is not a label, if they are as many as the input's values."""
    field = context.fields.get(tensor.name, tensor.name)
    wanted = context.columns.get(field)
    if wanted is not None:
        columns = [wanted] if isinstance(wanted, str) else list(wanted)
        missing = [c for c in columns if c not in header]
        if missing:
            raise DlspecError.single(f"{path} has no column '{missing[0]}', which the model was trained on as part of "
                                     f"'{field}'", expected=f"the columns {', '.join(columns[:8])}"
                                     + (" ..." if len(columns) > 8 else ""), hint=did_you_mean(missing[0], header),
                                     usage=True)
        return columns
    size = math.prod(_example_shape(tensor, context))
    for name in (tensor.name, field):
        if name in header and size == 1:
            return [name]
    rest = [c for c in header if c not in used and c.lower() not in _TARGET_NAMES]
    if len(rest) != size:
        raise DlspecError.single(f"{path} has {len(rest)} columns besides any label, but input '{tensor.name}' takes "
                                 f"{size} values per example", usage=True,
                                 expected=f"{size} feature columns (a column named label or target is left out)")
    return rest


# ---- .npz ----------------------------------------------------------------------------------------------------

def _npz(path: Path, context: Context) -> Group:
    with open_checked(path, memory_limit(), what=".npz files", usage=True) as handle:
        try:
            with np.load(io.BytesIO(handle.read()), allow_pickle=False) as archive:  # no pickle: reading runs no code
                found = {name: archive[name] for name in archive.files}
        except (ValueError, OSError, EOFError) as exc:
            raise DlspecError.single(f"cannot read {path} as .npz: {shorten(str(exc), 120)}", usage=True) from None
    arrays = {}
    for tensor in context.inputs:
        field = context.fields.get(tensor.name, tensor.name)
        name = next((n for n in (tensor.name, field) if n in found), None)
        if name is None and len(context.inputs) == 1 and len(found) == 1:
            name = next(iter(found))
        if name is None:
            named = f"an array named {tensor.name!r}" + (f" or {field!r}" if field != tensor.name else "")
            raise DlspecError.single(f"{path} has no array for input '{tensor.name}'", usage=True, expected=named,
                                     hint=did_you_mean(tensor.name, list(found)))
        values = found[name]
        shape = _example_shape(tensor, context)
        if values.ndim != len(shape) + 1 or any(isinstance(d, int) and d != s for d, s in
                                                zip(per_example(tensor.shape), values.shape[1:])):
            raise DlspecError.single(f"array '{name}' of {path} has shape {list(values.shape)}, but input '{tensor.name}' "
                                     f"takes {list(tensor.shape)}", usage=True)
        arrays[tensor.name] = values.astype(_dtype(tensor))
    n = {len(a) for a in arrays.values()}
    if len(n) != 1:
        raise DlspecError.single(f"the arrays of {path} hold different numbers of examples", usage=True)
    return Group(tuple(f"{i}" for i in range(n.pop())), arrays)


# ---- images --------------------------------------------------------------------------------------------------

def _images(paths: list[Path], context: Context, pixel_scale: float | None, folder: Path | None) -> Group:
    if len(context.inputs) != 1 or len(context.inputs[0].shape) not in (3, 4):
        raise DlspecError.single("images go to a model with one image input ([B, C, H, W] or [B, H, W])", usage=True)
    tensor = context.inputs[0]
    shape = _example_shape(tensor, context)
    last = context.layouts.get(tensor.name) == "channels_last"
    channels, (height, width) = (1, shape) if len(shape) == 2 else (shape[-1], shape[:2]) if last else (shape[0], shape[1:])
    if channels not in _MODES:
        raise DlspecError.single(f"input '{tensor.name}' has {channels} channels: images have 1, 3 or 4", usage=True)
    from PIL import Image
    arrays = []
    for path in paths:
        with open_checked(path, memory_limit(), what="images", usage=True) as handle:
            try:
                image = Image.open(io.BytesIO(handle.read()))
                image = image.convert(_MODES[channels])
            except (OSError, ValueError, Image.DecompressionBombError) as exc:
                raise DlspecError.single(f"cannot read {path} as an image: {shorten(str(exc), 120)}", usage=True) from None
        if image.size != (width, height):
            image = image.resize((width, height), Image.BILINEAR)
        pixels = np.asarray(image).reshape(height, width, channels)
        arrays.append(pixels if last else np.moveaxis(pixels, -1, 0).reshape(shape))
    values = np.stack(arrays).astype(np.float64 if pixel_scale is not None else np.uint8)
    if pixel_scale is not None:
        values = values * pixel_scale
    names = tuple(str(p.relative_to(folder)) if folder else str(p) for p in paths)
    return Group(names, {tensor.name: values.astype(_dtype(tensor))})


# ---- text ----------------------------------------------------------------------------------------------------

def _texts(texts: list[str], context: Context) -> list[Group]:
    """Each text as the ids of its characters (its last ones, as many as the model reads), in groups of one length."""
    if context.vocab is None or len(context.inputs) != 1 or len(context.inputs[0].shape) != 2:
        raise DlspecError.single("text goes to a character-level language model (a run of `kind: text` data)", usage=True,
                                 hint="give this model a .csv, .npz or images instead")
    tensor = context.inputs[0]
    index = {ch: i for i, ch in enumerate(context.vocab)}
    length = tensor.shape[1]
    groups: dict[int, list[tuple[str, list[int]]]] = {}
    for number, text in enumerate(texts):
        unknown = sorted(set(text) - set(index))
        if unknown:
            raise DlspecError.single(f"text {number + 1} has characters the model never saw: "
                                     f"{shorten(repr(''.join(unknown)), 40)}", usage=True,
                                     hint="the model reads only the characters of its training text")
        take = length if isinstance(length, int) else min(len(text), context.dims[length].max or len(text))
        if isinstance(length, str) and not context.dims[length].allows(take) or len(text) < take or not text:
            raise DlspecError.single(f"text {number + 1} has {len(text)} characters; the model reads "
                                     f"{take if isinstance(length, int) else 'at least ' + str(context.dims[length].min)}",
                                     usage=True)
        groups.setdefault(take, []).append((shorten(text, 40), [index[ch] for ch in text[-take:]]))
    return [Group(tuple(n for n, _ in items), {tensor.name: np.asarray([ids for _, ids in items], dtype=_dtype(tensor))})
            for items in groups.values()]
