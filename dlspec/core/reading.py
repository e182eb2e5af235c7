"""Opening a user's file with its type and size checked before a byte is read.

A spec, a data file, a checkpoint or an artifact names a path, and a path can be a FIFO (reading it
waits forever), a device (/dev/zero never ends), or a sparse file of terabytes. The file is opened
without blocking, checked with fstat on the open descriptor (so it cannot be swapped between the check
and the read), and read no further than its limit.
"""
from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import BinaryIO

from .errors import DlspecError, Loc

_KINDS = {stat.S_IFIFO: "a FIFO (named pipe)", stat.S_IFCHR: "a character device", stat.S_IFBLK: "a block device",
          stat.S_IFSOCK: "a socket", stat.S_IFDIR: "a directory"}


def open_checked(path: str | Path, limit: int, *, what: str = "file", loc: Loc | None = None,
                 usage: bool = False) -> BinaryIO:
    """An open binary file: a regular file of at most `limit` bytes, else a DlspecError naming it.

    `what` names the kind of file in messages ("specs", "checkpoints"); `usage` makes a missing or
    unreadable file a usage error (exit 2), as for a path given on the command line."""
    path = Path(path)
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise DlspecError.single(f"file not found: {path}", loc, usage=usage, hint="check the path") from None
    except IsADirectoryError:
        raise DlspecError.single(f"{path} is a directory, not a file", loc, usage=usage) from None
    except OSError as exc:
        raise DlspecError.single(f"cannot read {path}: {exc.strerror}", loc, usage=usage) from None
    try:
        info = os.fstat(fd)
        kind = stat.S_IFMT(info.st_mode)
        if kind != stat.S_IFREG:
            raise DlspecError.single(f"{path} is {_KINDS.get(kind, 'not a regular file')}, not a regular file", loc,
                                     usage=usage, expected="a regular file",
                                     hint="dlspec reads files only: copy the data into a file first")
        if info.st_size > limit:
            raise DlspecError.single(f"{path} is {info.st_size:,} bytes; {what} are limited to {limit:,} bytes", loc,
                                     usage=usage, hint="is this the file you meant?")
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_bytes(path: str | Path, limit: int, *, what: str = "file", loc: Loc | None = None,
               usage: bool = False) -> bytes:
    """The bytes of a regular file of at most `limit` bytes; a file that grows past it while read is refused too."""
    chunks, total = [], 0
    with open_checked(path, limit, what=what, loc=loc, usage=usage) as handle:
        try:
            while total <= limit:  # in chunks: read(limit + 1) would reserve the whole limit up front
                chunk = handle.read(min(limit + 1 - total, 1 << 24))
                if not chunk:
                    break
                chunks.append(chunk)
                total += len(chunk)
        except OSError as exc:
            raise DlspecError.single(f"cannot read {path}: {exc.strerror}", loc, usage=usage) from None
    data = b"".join(chunks)
    if len(data) > limit:
        raise DlspecError.single(f"{path} is more than {limit:,} bytes; {what} are limited to {limit:,} bytes", loc,
                                 usage=usage)
    return data


def read_text(path: str | Path, limit: int, *, what: str = "file", loc: Loc | None = None,
              usage: bool = False) -> str:
    """A UTF-8 text file (a BOM is allowed), refused with the place of the first undecodable byte."""
    raw = read_bytes(path, limit, what=what, loc=loc, usage=usage)
    return decode_utf8(raw, str(path))


def decode_utf8(raw: bytes, file: str) -> str:
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")) or looks_utf16(raw):
        raise DlspecError.single("this file is UTF-16 text; dlspec reads UTF-8", Loc(file, 1, 1), expected="UTF-8 text",
                                 hint="re-save the file as UTF-8")
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        col = exc.start - (raw.rfind(b"\n", 0, exc.start) + 1) + 1
        raise DlspecError.single(f"file is not valid UTF-8 (byte 0x{raw[exc.start]:02x} at offset {exc.start})",
                                 Loc(file, line, col), expected="UTF-8 text", hint="re-save the file as UTF-8") from None


def looks_utf16(raw: bytes) -> bool:
    """UTF-16 without a BOM: ASCII text with a NUL beside every character."""
    head = raw[:512]
    return len(head) >= 4 and (head[1::2].count(0) >= len(head) // 2 - 1 or head[0::2].count(0) >= len(head) // 2 - 1)
