"""TorchScript: scripted where torch.jit.script accepts the model, traced otherwise.

TorchScript is deprecated upstream (torch.export is its successor); it is
written because deployments still load it, with its deprecation warnings kept
out of the user's terminal (see `quiet`). Scripting keeps any Python control
flow; tracing records one run, which the parity check then proves at every
checked size.
"""
from __future__ import annotations

import contextlib
import hashlib
import struct
import zipfile
import zlib
from pathlib import Path

import torch

from .files import publish, staging
from .provenance import ARCHIVE_ENTRY, dumps, read_archive_record
from .quiet import quiet
from .runners import torch_runner


class _SortedSet(set):
    """A set that iterates in sorted order: TorchScript collects a module's constants in a set and writes them in
    its iteration order, which follows the per-process string hash; sorted, the file is the same in every process."""

    def __iter__(self):
        return iter(sorted(super().__iter__(), key=repr))


@contextlib.contextmanager
def _deterministic_scripting():
    """Script as a fresh process would. TorchScript names each new variant of a module class after the variants the
    process has scripted before (`conv/___torch_mangle_13.Conv2d`) and orders constants by the string hash, so the
    same model gave different files; a compilation unit and type store of our own, and sorted constants, give the
    same bytes whatever ran before."""
    state, recursive = torch.jit._state, torch.jit._recursive
    saved = state._python_cu, recursive.concrete_type_store, vars(recursive).get("set")
    state._python_cu, recursive.concrete_type_store = torch._C.CompilationUnit(), recursive.ConcreteTypeStore()
    recursive.set = _SortedSet  # shadows the builtin for that module only, while we script
    try:
        yield
    finally:
        state._python_cu, recursive.concrete_type_store = saved[:2]
        if saved[2] is None:
            del recursive.set
        else:
            recursive.set = saved[2]


def write(job, path: Path) -> tuple[str, str]:
    with quiet(), _deterministic_scripting():
        try:
            module, made = torch.jit.script(job.model), ("scripted", "")
        except Exception as e:  # unsupported Python in forward, source not inspectable, ...
            module = torch.jit.trace(job.model, job.example_inputs, check_trace=False)
            made = ("traced", f"not scriptable: {_reason(e)}")
        with staging(path.parent) as tmp:
            staged = tmp / path.name
            torch.jit.save(module, str(staged), _extra_files={ARCHIVE_ENTRY: dumps(job.record)})
            _stable_serialization_id(staged)
            publish(staged, path)
    return made


def load(path: Path, spec):
    with quiet():
        module = torch.jit.load(str(path), map_location="cpu")
    return torch_runner(module.eval())


def _stable_serialization_id(path: Path) -> None:
    """torch.jit.save writes a random 40-digit id into every archive; replace it, in place and at the same
    length, with one derived from the other members, so the same model gives byte-identical files."""
    with zipfile.ZipFile(path) as archive:
        infos = archive.infolist()
        entry = next((i for i in infos if i.filename.endswith("/.data/serialization_id")), None)
        if entry is None or entry.compress_type != zipfile.ZIP_STORED:
            return
        digest = hashlib.sha256(b"".join(struct.pack("<I", i.CRC) + i.filename.encode() for i in infos if i is not entry))
        new = str(int(digest.hexdigest(), 16)).encode()[: entry.file_size].rjust(entry.file_size, b"0")
        start_dir = archive.start_dir
    crc = struct.pack("<I", zlib.crc32(new))
    with path.open("r+b") as f:
        f.seek(entry.header_offset)
        header = f.read(30)
        name_length, extra_length = struct.unpack("<HH", header[26:30])
        f.seek(entry.header_offset + 14)
        f.write(crc)
        f.seek(entry.header_offset + 30 + name_length + extra_length)
        f.write(new)
        f.seek(start_dir)
        directory = f.read()
        name = entry.filename.encode()
        at = directory.find(b"PK\x01\x02")  # central directory entries: find this member's, set its CRC too
        while at >= 0:
            length = struct.unpack("<H", directory[at + 28: at + 30])[0]
            if directory[at + 46: at + 46 + length] == name:
                f.seek(start_dir + at + 16)
                f.write(crc)
                break
            at = directory.find(b"PK\x01\x02", at + 4)


def read_record(path: Path) -> dict | None:
    return read_archive_record(path)


def _reason(e: Exception) -> str:
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    return (lines[0].rstrip(" :") if lines else type(e).__name__)[:120]  # TorchScript ends some with " :"
