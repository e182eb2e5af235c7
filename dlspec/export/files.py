"""Atomic writes of files that exporters write themselves: each is written into a
scratch folder beside its destination, then moved into place, so a failed export
never clobbers the files a previous run wrote."""
from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator


@contextlib.contextmanager
def staging(directory: Path) -> Iterator[Path]:
    """A scratch folder inside `directory` (same filesystem, so os.replace is atomic), removed afterwards."""
    directory.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".dlspec-", dir=directory))
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def publish(staged: Path, final: Path) -> None:
    """Move a finished file into place, replacing an older one in one step."""
    os.replace(staged, final)


def clean_staging(directory: Path) -> None:
    """Remove scratch folders a killed export left behind (an export runs alone in its output folder)."""
    for leftover in directory.glob(".dlspec-*") if directory.is_dir() else ():
        if leftover.is_dir() and not leftover.is_symlink():
            shutil.rmtree(leftover, ignore_errors=True)
