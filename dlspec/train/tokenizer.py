"""Tokenizers: the ids of token files and of a character-level text, and the text they stand for.

Three kinds, one `Codec` each, all plain data (a name, a vocabulary size, and the text that defines it):
- `chars`: a character-level text data set's alphabet (the `text` data kind);
- `bytes`: the UTF-8 bytes of the text, ids 0..255; no vocabulary file;
- `bpe`: a Hugging Face `tokenizers` byte-level BPE, trained on the input by `dlspec data tokenize` or loaded
  from a tokenizer.json. Nothing is downloaded, and loading a tokenizer.json runs no code.

`dlspec data tokenize` writes meta.json beside the token files it makes, and tokenizer.json for a BPE; the
`tokens` data kind reads them, a run keeps a copy (rundir), and `dlspec generate` decodes with it.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from dlspec.core.errors import DlspecError, Loc, shorten
from dlspec.core.reading import read_text

META = "meta.json"
TOKENIZER_FILE = "tokenizer.json"
EOT = "<|endoftext|>"  # the separator a trained BPE puts between input files, as GPT-2 does
KINDS = ("chars", "bytes", "bpe")
_MAX_TOKENIZER_BYTES = 64 * 2**20


@dataclass(frozen=True)
class Codec:
    kind: str  # chars, bytes or bpe
    vocab_size: int
    text: str = ""  # chars: the alphabet; bpe: the tokenizer.json

    def encode(self, text: str) -> list[int]:
        """The ids of `text`; a character outside a `chars` alphabet raises ValueError listing them."""
        if self.kind == "bytes":
            return list(text.encode("utf-8"))
        if self.kind == "chars":
            index = {ch: i for i, ch in enumerate(self.text)}
            unknown = sorted(set(text) - set(index))
            if unknown:
                raise ValueError("".join(unknown))
            return [index[ch] for ch in text]
        return self._bpe().encode(text, add_special_tokens=False).ids

    def decode(self, ids: Iterable[int]) -> str:
        ids = list(ids)
        if self.kind == "bytes":
            return bytes(i for i in ids if i < 256).decode("utf-8", errors="replace")
        if self.kind == "chars":
            return "".join(self.text[i] for i in ids if i < len(self.text))
        return self._bpe().decode(ids, skip_special_tokens=False)

    @property
    def eot(self) -> int | None:
        return self._bpe().token_to_id(EOT) if self.kind == "bpe" else None

    def _bpe(self):
        return _parsed(self.text)

    def record(self) -> dict[str, Any]:
        """What meta.json and run.json say of it (a BPE's definition is its tokenizer.json beside them)."""
        return {"kind": self.kind, "vocab_size": self.vocab_size}


_cache: dict[str, Any] = {}  # a tokenizer.json's text -> the parsed tokenizer, parsed once per process


def _parsed(text: str):
    if text not in _cache:
        from tokenizers import Tokenizer
        _cache[text] = Tokenizer.from_str(text)
    return _cache[text]


def byte_level() -> Codec:
    return Codec("bytes", 256)


def chars(alphabet: str) -> Codec:
    return Codec("chars", len(alphabet), alphabet)


def bpe(text: str, where: str, loc: Loc | None = None) -> Codec:
    """A BPE from the text of a tokenizer.json; `where` names it in errors."""
    tokenizers = _tokenizers(loc)
    try:
        parsed = tokenizers.Tokenizer.from_str(text)
    except Exception as exc:  # the Rust parser raises its own exception type for any bad file
        raise DlspecError.single(f"{where} is not a tokenizer.json the tokenizers library can read: "
                                 f"{shorten(str(exc), 200)}", loc, expected="a file saved by tokenizers' "
                                 "Tokenizer.save (or written by `dlspec data tokenize`)",
                                 hint="is this the file you meant?") from None
    _cache[text] = parsed
    return Codec("bpe", parsed.get_vocab_size(), text)


def load_file(path: Path, loc: Loc | None = None, usage: bool = False) -> Codec:
    return bpe(read_text(path, _MAX_TOKENIZER_BYTES, what="tokenizer files", loc=loc, usage=usage), str(path), loc)


def train_bpe(texts: Iterable[str], vocab_size: int) -> Codec:
    """A byte-level BPE trained on `texts` (GPT-2's scheme: any text encodes, with no unknown token)."""
    tokenizers = _tokenizers(None)
    from tokenizers import decoders, models, pre_tokenizers, trainers
    tokenizer = tokenizers.Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[EOT], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator(texts, trainer)
    return bpe(tokenizer.to_str(), "the trained tokenizer")


def _tokenizers(loc: Loc | None):
    try:
        import tokenizers
    except ImportError:
        raise DlspecError.single("a BPE tokenizer needs the tokenizers package, which is not installed", loc,
                                 hint="pip install 'dlspec[tokenizers]', or use the byte-level tokenizer") from None
    return tokenizers


def dtype_for(vocab_size: int) -> str:
    """nanoGPT's uint16 while the ids fit, else uint32."""
    return "uint16" if vocab_size <= 2**16 else "uint32"


def meta_beside(path: Path) -> dict[str, Any] | None:
    """meta.json in the folder of a token file (as `dlspec data tokenize` writes it), if there is one."""
    meta = path.parent / META
    if not meta.is_file():
        return None
    try:
        value = json.loads(read_text(meta, 2**20, what="meta.json files"))
    except ValueError as exc:
        raise DlspecError.single(f"{meta} is not valid JSON: {shorten(str(exc), 100)}",
                                 hint="it is written by `dlspec data tokenize`; make the files again") from None
    tokenizer = value.get("tokenizer") if isinstance(value, dict) else None
    if not isinstance(tokenizer, dict) or tokenizer.get("kind") not in ("bytes", "bpe"):
        raise DlspecError.single(f"{meta} does not name a tokenizer", expected='{"tokenizer": {"kind": "bytes" or '
                                 '"bpe", ...}, "dtype": ...}', hint="it is written by `dlspec data tokenize`")
    return value


def from_meta(folder: Path, meta: dict[str, Any]) -> Codec:
    if meta["tokenizer"]["kind"] == "bytes":
        return byte_level()
    return load_file(folder / TOKENIZER_FILE)
