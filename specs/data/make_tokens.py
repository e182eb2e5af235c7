"""Writes specs/data/tokens/, the data of specs/tokens-gpt.yaml: `python specs/data/make_tokens.py`.

The source of Python's own argparse module (no download), encoded by `dlspec data tokenize` with a byte-level
BPE of 512 tokens trained on it: tokenizer.json, train.bin and val.bin (the last 10%), meta.json.
"""
import shutil
import sys
from pathlib import Path

from dlspec.cli import main
from dlspec.train.datasets import stdlib_text_path

if __name__ == "__main__":
    out = Path(__file__).with_name("tokens")
    shutil.rmtree(out, ignore_errors=True)
    sys.exit(main(["data", "tokenize", str(stdlib_text_path("argparse")), "--out", str(out), "--tokenizer", "bpe",
                   "--vocab-size", "512"]))
