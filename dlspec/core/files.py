"""Atomic file writes: a reader (or a crash) never sees a half-written file.

The temporary file is created with mode 0666 so that the umask decides, as for any other file a
program writes: a teammate can read a run directory or a hand-off the way the user's umask allows.
"""
from __future__ import annotations

import hashlib
import os
import secrets
from pathlib import Path

from .errors import DlspecError


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp, fd = _create_temporary(path)
    except OSError as exc:
        raise _cannot_write(path, exc) from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(exc, OSError):
            raise _cannot_write(path, exc) from None
        raise
    if hasattr(os, "O_DIRECTORY"):  # make the rename itself durable: a checkpoint must survive a power cut
        fd = os.open(path.parent, os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def leftover_temporaries(folder: Path) -> list[Path]:
    """Temporary files a killed write left in `folder` (they never replaced their destination)."""
    return sorted(p for p in Path(folder).glob(".*.tmp") if p.is_file())


def _create_temporary(path: Path) -> tuple[str, int]:
    while True:
        tmp = str(path.parent / f".{path.name}.{secrets.token_hex(4)}.tmp")
        try:
            return tmp, os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o666)
        except FileExistsError:
            continue


def _cannot_write(path: Path, exc: OSError) -> DlspecError:
    reason = exc.strerror or str(exc)
    if isinstance(exc, (FileExistsError, NotADirectoryError)):
        reason = "a folder on its path is a file"
    elif os.path.isdir(path):
        reason = "it is a folder"
    return DlspecError.single(f"cannot write {path}: {reason}",
                              hint="check that the folder exists, is writable and has space")


def file_sha256(path: Path) -> str:
    """The sha256 of a file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
