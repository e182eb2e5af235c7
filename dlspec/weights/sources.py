"""Where weights come from: a file or folder, read as lazy tensors by name, without running code.

- `.safetensors`: the `safetensors` package (a JSON header, then raw tensors; each read when it is used);
- `.pt`, `.pth`, `.bin` and any other file: `torch.load(weights_only=True)` (dlspec/train/checkpoint.py):
  a plain state dict, or one under a `state_dict` or `model` key;
- a Hugging Face folder: `model.safetensors`, `pytorch_model.bin`, or their sharded `*.index.json`;
- a dlspec checkpoint, weights file or run directory: the model's own names, so no mapping applies.
Every file is opened through dlspec/core/reading.py first (a regular file, within the memory limit).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dlspec.core.budget import memory_limit
from dlspec.core.errors import DlspecError, Loc, gist, shorten
from dlspec.core.reading import open_checked, read_text

from .mapping import Lazy

# a Hugging Face folder's weights, in the order they are looked for
HF_FILES = ("model.safetensors.index.json", "model.safetensors", "pytorch_model.bin.index.json", "pytorch_model.bin")
_RUN_MARKS = ("weights.pt", "checkpoints", "run.json")


@dataclass(frozen=True)
class Source:
    path: Path  # the file read (a folder's index or weights file)
    kind: str  # how it was read, for the report
    tensors: dict[str, Lazy]
    native: bool  # a dlspec checkpoint: names are the model's own


def read(path: Path, loc: Loc | None = None) -> Source:
    """The tensors at `path` by name. `loc` locates errors (a spec's init_from); without it they are usage
    errors, as for a path given on the command line."""
    path = Path(path)
    if path.is_dir():
        return _folder(path, loc)
    if not path.exists():
        raise DlspecError.single(f"no weights at {path}", loc, usage=loc is None,
                                 hint="give a .safetensors, .pt/.pth/.bin file, a Hugging Face folder or a run directory")
    if path.name.endswith(".index.json"):
        return _sharded(path, loc)
    if path.suffix == ".safetensors":
        return Source(path, "safetensors", _safetensors(path, loc), False)
    return _pickled(path, loc)


def _folder(path: Path, loc: Loc | None) -> Source:
    if any((path / mark).exists() for mark in _RUN_MARKS) or path.name == "checkpoints":
        from dlspec.train import rundir
        return _pickled(rundir.weights_path(path, loc=loc), loc)
    for name in HF_FILES:
        if (path / name).is_file():
            return read(path / name, loc)
    raise DlspecError.single(f"{path} holds no weights", loc, usage=loc is None,
                             expected=f"a Hugging Face folder ({', '.join(HF_FILES)}) or a dlspec run directory")


def _safetensors(path: Path, loc: Loc | None) -> dict[str, Lazy]:
    from safetensors import safe_open
    open_checked(path, memory_limit(), what="weights files", loc=loc, usage=loc is None).close()  # a regular file
    try:
        handle = safe_open(str(path), framework="pt")
        names = list(handle.keys())
        shapes = {name: tuple(handle.get_slice(name).get_shape()) for name in names}
    except Exception as exc:  # SafetensorError, a bad header, an unknown dtype
        raise DlspecError.single(f"{path} is not a readable .safetensors file ({gist(exc)})", loc,
                                 hint="the file is damaged or truncated, or is another format with this suffix") from None
    return {name: Lazy(shapes[name], lambda name=name: handle.get_tensor(name), (name,)) for name in names}


def _pickled(path: Path, loc: Loc | None) -> Source:
    from dlspec.train import checkpoint
    obj = checkpoint.read(path)
    if checkpoint.is_dlspec(obj):
        checkpoint.check_sealed(obj, path)
        return Source(path, f"dlspec {obj.get('kind', 'checkpoint')}", _lazy(obj["model"], path, loc), True)
    state = obj
    if isinstance(obj, dict) and not _is_state_dict(obj):  # a state dict wrapped with other fields
        state = next((obj[k] for k in ("state_dict", "model") if isinstance(obj.get(k), dict)), obj)
    return Source(path, "state dict", _lazy(state, path, loc), False)


def _is_state_dict(obj: dict) -> bool:
    import torch
    return bool(obj) and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())


def _lazy(state: Any, path: Path, loc: Loc | None) -> dict[str, Lazy]:
    import torch
    if not isinstance(state, dict) or not state:
        raise DlspecError.single(f"{path} holds {_what(state)}, not a state dict", loc,
                                 expected="a mapping of parameter names to tensors",
                                 hint="save one with torch.save(model.state_dict(), path)")
    for key, value in state.items():
        if not isinstance(key, str) or not isinstance(value, torch.Tensor):
            raise DlspecError.single(f"{path} is not a state dict: {shorten(repr(key), 60)} holds {_what(value)}", loc,
                                     expected="a mapping of parameter names to tensors",
                                     hint="save one with torch.save(model.state_dict(), path)")
    return {key: Lazy(tuple(value.shape), lambda value=value: value, (key,)) for key, value in state.items()}


def _what(value: Any) -> str:
    if isinstance(value, dict):
        return f"a dict of {len(value)} entries" if value else "an empty dict"
    return f"a {type(value).__name__}"


def _sharded(index: Path, loc: Loc | None) -> Source:
    """A sharded checkpoint: the index's weight_map names each tensor's shard, a file in the same folder."""
    try:
        data = json.loads(read_text(index, 64 * 2**20, what="index files", loc=loc, usage=loc is None))
    except ValueError as exc:
        raise DlspecError.single(f"{index} is not valid JSON: {shorten(str(exc), 100)}", loc) from None
    weight_map = data.get("weight_map") if isinstance(data, dict) else None
    if not isinstance(weight_map, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in weight_map.items()):
        raise DlspecError.single(f"{index} has no weight_map of tensor names to shard files", loc,
                                 expected='{"weight_map": {"name": "model-00001-of-00002.safetensors", ...}}')
    tensors: dict[str, Lazy] = {}
    for shard in dict.fromkeys(weight_map.values()):
        if Path(shard).name != shard or shard in (".", ".."):
            raise DlspecError.single(f"{index} names the shard '{shorten(shard, 80)}' outside its folder", loc,
                                     expected="file names in the index's folder")
        part = read(index.parent / shard, loc)
        wanted = [name for name, file in weight_map.items() if file == shard]
        absent = [name for name in wanted if name not in part.tensors]
        if absent:
            raise DlspecError.single(f"{index} puts {absent[0]} in {shard}, which does not hold it", loc)
        tensors.update((name, part.tensors[name]) for name in wanted)
    n = len(set(weight_map.values()))
    return Source(index, f"{n} shard{'s' * (n != 1)}", tensors, False)
