"""`dlspec data tokenize INPUT... --out DIR`: text files -> token files the `tokens` data kind reads.

    DIR/train.bin (or train-000000.bin, ... with --shard-tokens)   the ids, nanoGPT's raw format
    DIR/val.bin                                                     the last --val-fraction of the input
    DIR/tokenizer.json                                              a BPE's definition (not for bytes)
    DIR/meta.json                                                   the tokenizer, dtype, files and counts

The input is read in chunks that end at a line break and written as it is encoded: memory stays that of
one chunk, whatever the size of the corpus. Files are written under temporary names and renamed at the end,
so a tokenization that fails or is interrupted leaves no partial token file behind.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Iterator

from dlspec.core.args import bounded_int, finite_float
from dlspec.core.errors import DlspecError
from dlspec.core.files import atomic_write_text
from dlspec.core.reading import open_checked

CHUNK = 1 << 20  # bytes of input encoded at once


def add_arguments(p: argparse.ArgumentParser) -> None:
    actions = p.add_subparsers(dest="action", metavar="ACTION", parser_class=type(p))
    t = actions.add_parser("tokenize", help="text files -> token files (train.bin, val.bin, meta.json)",
                           description="Encode text files into token files for the `tokens` data kind.")
    t.add_argument("inputs", nargs="+", type=Path, metavar="INPUT", help="text files (UTF-8), or folders of them")
    t.add_argument("--out", type=Path, required=True, metavar="DIR", help="folder for the token files (new or empty)")
    t.add_argument("--tokenizer", default="bytes", metavar="bytes|bpe|FILE",
                   help="bytes: UTF-8 bytes, ids 0..255 (default); bpe: a byte-level BPE trained on the input; "
                        "or a tokenizer.json to encode with")
    t.add_argument("--vocab-size", type=bounded_int(260, 2**20), default=4096,
                   help="vocabulary of a trained BPE (default 4096)")
    t.add_argument("--val-fraction", type=finite_float, default=0.1,
                   help="the last fraction of the input goes to val.bin (default 0.1; 0: no validation file)")
    t.add_argument("--shard-tokens", type=bounded_int(1, 2**40), default=None, metavar="N",
                   help="start a new file every N tokens (default: one file per split)")


def run(args: argparse.Namespace) -> int:
    if args.action is None:
        raise DlspecError.single("dlspec data needs an action", usage=True, hint="dlspec data tokenize INPUT... --out DIR")
    meta = tokenize(args.inputs, args.out, args.tokenizer, vocab_size=args.vocab_size, val_fraction=args.val_fraction,
                    shard_tokens=args.shard_tokens)
    for split in ("train", "val"):
        if meta[split]:
            print(f"{split}: {meta['tokens'][split]:,} tokens in {', '.join(meta[split])}")
    t = meta["tokenizer"]
    print(f"wrote {args.out} ({t['kind']} tokenizer, vocabulary {t['vocab_size']:,}, {meta['dtype']})")
    first = args.out / meta["train"][0] if len(meta["train"]) == 1 else args.out / "train-*.bin"
    val = f", validation: {{dataset: {{kind: tokens, path: {args.out / meta['val'][0]}}}}}" if meta["val"] else ""
    print(f"in a spec: dataset: {{kind: tokens, path: {first}}}{val}")
    return 0


def tokenize(inputs: list[Path], out: Path, tokenizer_name: str = "bytes", *, vocab_size: int = 4096,
             val_fraction: float = 0.1, shard_tokens: int | None = None) -> dict:
    """Encode `inputs` into token files in `out`; returns the meta.json it wrote."""
    from dlspec.train import tokenizer
    if not 0 <= val_fraction < 1:
        raise DlspecError.single(f"--val-fraction {val_fraction} is out of range", usage=True, expected="0 <= f < 1",
                                 hint="0.1 keeps the last tenth for validation; 0 keeps none")
    files = _input_files(inputs)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise DlspecError.single(f"{out} already holds files; tokenize will not write over them", usage=True,
                                 hint="choose a new or empty --out folder")
    if tokenizer_name == "bytes":
        codec = tokenizer.byte_level()
    elif tokenizer_name == "bpe":
        codec = tokenizer.train_bpe((chunk for path, _ in files for chunk in _texts(path)), vocab_size)
    else:
        codec = tokenizer.load_file(Path(tokenizer_name), usage=True)
    dtype = tokenizer.dtype_for(codec.vocab_size)
    total = sum(size for _, size in files)
    cut = int(total * (1 - val_fraction)) if val_fraction else total + 1
    out.mkdir(parents=True, exist_ok=True)
    writers = {"train": _Writer(out, "train", dtype, shard_tokens), "val": _Writer(out, "val", dtype, shard_tokens)}
    from tqdm import tqdm
    try:
        with tqdm(total=total, unit="B", unit_scale=True, desc="tokenizing", disable=None, file=sys.stderr) as bar:
            seen = 0
            for path, _ in files:
                for raw in _chunks(path):
                    head = max(min(cut - seen, len(raw)), 0)
                    if 0 < head < len(raw):  # the cut falls in this chunk: split at the next line break
                        head = raw.find(b"\n", head) + 1 or len(raw)
                    for split, part in (("train", raw[:head]), ("val", raw[head:])):
                        if part:
                            writers[split].write(_encode(codec, part, path))
                    seen += len(raw)
                    bar.update(len(raw))
                if codec.eot is not None:
                    writers["train" if seen <= cut else "val"].write([codec.eot])
        names = {split: w.finish() for split, w in writers.items()}
    except BaseException:
        for w in writers.values():
            w.abandon()
        raise
    if codec.kind == "bpe":
        atomic_write_text(out / tokenizer.TOKENIZER_FILE, codec.text)
    meta = {"format": 1, "tokenizer": codec.record(), "dtype": dtype, "train": names["train"], "val": names["val"],
            "tokens": {split: w.count for split, w in writers.items()}, "inputs": [str(p) for p, _ in files]}
    atomic_write_text(out / tokenizer.META, json.dumps(meta, indent=2) + "\n")
    return meta


def _input_files(inputs: list[Path]) -> list[tuple[Path, int]]:
    """Each input file, or the files under an input folder (sorted), with its size."""
    files = []
    for path in inputs:
        if path.is_dir():
            files += [p for p in sorted(path.rglob("*")) if p.is_file() and not p.name.startswith(".")]
        elif path.is_file():
            files.append(path)
        else:
            raise DlspecError.single(f"input {path} does not exist", usage=True, hint="check the path")
    if not files:
        raise DlspecError.single("no input files", usage=True, hint="give text files, or folders holding them")
    return [(p, p.stat().st_size) for p in files]


def _chunks(path: Path) -> Iterator[bytes]:
    """The file in pieces of about CHUNK bytes, each ending at a line break (or the file's end)."""
    with open_checked(path, 2**62, what="input files", usage=True) as handle:
        rest = b""
        while True:
            block = handle.read(CHUNK)
            if not block:
                break
            block = rest + block
            end = block.rfind(b"\n") + 1
            rest, block = (block[end:], block[:end]) if end else (b"", block)
            if block:
                yield block
        if rest:
            yield rest


def _texts(path: Path) -> Iterator[str]:
    for raw in _chunks(path):
        yield _decoded(raw, path)


def _decoded(raw: bytes, path: Path) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DlspecError.single(f"{path} is not UTF-8 text (byte 0x{raw[exc.start]:02x})", usage=True,
                                 hint="re-save it as UTF-8, or tokenize it with --tokenizer bytes") from None


def _encode(codec, raw: bytes, path: Path) -> list[int] | bytes:
    return raw if codec.kind == "bytes" else codec.encode(_decoded(raw, path))


@dataclass
class _Writer:
    """One split's token files, written under temporary names until `finish`."""
    folder: Path
    split: str
    dtype: str
    shard_tokens: int | None
    count: int = 0
    names: list[str] = field(default_factory=list)
    handle: BinaryIO | None = None
    in_shard: int = 0

    def write(self, ids) -> None:
        import numpy as np
        array = np.frombuffer(ids, dtype=np.uint8) if isinstance(ids, bytes) else np.asarray(ids)
        array = array.astype(self.dtype)
        while len(array):
            if self.handle is None or (self.shard_tokens and self.in_shard >= self.shard_tokens):
                self._next()
            room = len(array) if not self.shard_tokens else self.shard_tokens - self.in_shard
            self.handle.write(array[:room].tobytes())
            self.count += min(room, len(array))
            self.in_shard += min(room, len(array))
            array = array[room:]

    def _next(self) -> None:
        if self.handle is not None:
            self.handle.close()
        name = f"{self.split}-{len(self.names):06d}.bin" if self.shard_tokens else f"{self.split}.bin"
        self.names.append(name)
        self.handle, self.in_shard = open(self.folder / (name + ".tmp"), "wb"), 0

    def finish(self) -> list[str]:
        if self.handle is not None:
            self.handle.close()
        for name in self.names:
            os.replace(self.folder / (name + ".tmp"), self.folder / name)
        return self.names

    def abandon(self) -> None:
        if self.handle is not None:
            self.handle.close()
        for name in self.names:
            (self.folder / (name + ".tmp")).unlink(missing_ok=True)
