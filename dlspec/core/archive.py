"""Looking inside a zip archive (TorchScript, .pt2) without trusting it.

torch.export.load unpickles members of a .pt2 with weights_only=False, so a crafted file runs code the
moment it is loaded. Nothing here unpickles: members are listed and read with bounds, and a pickled
member is checked by reading its opcodes (pickletools parses, it never executes), so a member that
imports anything outside a short allowlist is refused before any loader sees the file.
"""
from __future__ import annotations

import io
import pickletools
import struct
import zipfile
import zlib
from pathlib import Path
from typing import Callable

from .errors import DlspecError
from .reading import open_checked

MAX_MEMBERS = 100_000
_GLOBAL_OPCODES = {"GLOBAL", "STACK_GLOBAL", "INST"}
_STRING_OPCODES = {"SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "UNICODE", "SHORT_BINSTRING", "BINSTRING", "STRING"}
# what tensor pickles (torch.save, TorchScript's data.pkl) need: tensors rebuilt from storages, and ordered dicts
_TENSOR_GLOBALS = {("torch._utils", "_rebuild_tensor_v2"), ("torch._utils", "_rebuild_parameter"),
                   ("collections", "OrderedDict")}


def tensor_global(module: str, name: str) -> bool:
    return (module, name) in _TENSOR_GLOBALS or (module == "torch" and name.endswith("Storage"))


def torchscript_global(module: str, name: str) -> bool:
    """TorchScript pickles name the archive's own TorchScript classes (`__torch__.*`, compiled from its code/,
    never imported from Python) and its list builders."""
    return tensor_global(module, name) or module.startswith("__torch__") or module == "torch.jit._pickle"


class Archive:
    """A zip archive opened with its size, member count and member sizes checked; members named without the
    root folder torch puts them in (`seed-mlp/models/model.json` -> `models/model.json`)."""

    def __init__(self, path: Path, limit: int, what: str):
        self.path = Path(path)
        handle = open_checked(path, limit, what=what)
        try:
            self.zip = zipfile.ZipFile(handle)
        except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
            handle.close()
            raise DlspecError.single(f"{path} is not a readable archive: {exc}",
                                     hint="the file is damaged, truncated or not a TorchScript/.pt2 file") from None
        infos = self.zip.infolist()
        if len(infos) > MAX_MEMBERS:
            raise DlspecError.single(f"{path} holds {len(infos):,} members, more than {MAX_MEMBERS:,}")
        declared = sum(i.file_size for i in infos)
        if declared > limit:
            raise DlspecError.single(f"{path} declares {declared:,} bytes of members, more than {limit:,}",
                                     hint="this looks like a zip bomb")
        self.infos = {_strip_root(i.filename): i for i in infos}

    def names(self) -> list[str]:
        return sorted(self.infos)

    def read(self, name: str) -> bytes:
        try:
            return self.zip.read(self.infos[name])
        except (zipfile.BadZipFile, OSError, ValueError, EOFError, zlib.error) as exc:
            raise DlspecError.single(f"cannot read member {name} of {self.path}: {exc}",
                                     hint="the file is damaged or truncated") from None

    def close(self) -> None:
        self.zip.close()

    def __enter__(self) -> "Archive":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _strip_root(name: str) -> str:
    return name.split("/", 1)[1] if "/" in name else name


def refused_global(data: bytes, allowed: Callable[[str, str], bool]) -> str | None:
    """The first global a pickle imports that `allowed` refuses ("posix.system"), or a reason it cannot be
    read safely; None when every import is allowed. A torch.save zip is checked member by member."""
    if data[:4] == b"PK\x03\x04":
        try:
            inner = zipfile.ZipFile(io.BytesIO(data))
            pickles = [inner.read(n) for n in inner.namelist() if n.endswith(".pkl")]
        except (zipfile.BadZipFile, OSError, ValueError, EOFError, zlib.error) as exc:
            return f"an unreadable nested archive ({exc})"
        return next((r for r in (refused_global(p, allowed) for p in pickles) if r), None)
    # the strings just pushed, in order: STACK_GLOBAL imports the two on top of the stack, so any other opcode
    # in between (a POP could uncover other strings) empties this and a computed import is refused
    recent: list = []
    memo: dict = {}
    try:
        for op, arg, _ in pickletools.genops(io.BytesIO(data)):
            name = op.name
            if name.startswith("EXT"):
                return "an extension-registry import (EXT opcode)"
            if name in ("GLOBAL", "INST"):
                module, _, attr = str(arg).partition(" ")
            elif name == "STACK_GLOBAL":
                module, attr = (recent[-2], recent[-1]) if len(recent) >= 2 else (None, None)
                if not isinstance(module, str) or not isinstance(attr, str):
                    return "an import whose name is computed (STACK_GLOBAL)"
            else:
                if name in _STRING_OPCODES:
                    recent.append(arg)
                elif name in ("MEMOIZE", "PUT", "BINPUT", "LONG_BINPUT"):
                    memo[len(memo) if name == "MEMOIZE" else arg] = recent[-1] if recent else None
                elif name in ("GET", "BINGET", "LONG_BINGET"):
                    recent.append(memo.get(arg))
                else:
                    recent = []
                continue
            recent = []
            if not allowed(module, attr):
                return f"{module}.{attr}"
    except (ValueError, struct.error, EOFError, KeyError, IndexError) as exc:
        return f"a malformed pickle ({exc})"
    return None
