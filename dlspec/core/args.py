"""Command-line value types with bounds: argparse's `int` takes 2**70 and `float` takes nan, and either
would fail deep inside torch instead of at the flag that set it."""
from __future__ import annotations

import argparse
import math
from typing import Callable


def bounded_int(low: int, high: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"'{text[:40]}' is not a whole number") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{text[:40]} is not within {low} and {high:,}")
        return value
    parse.__name__ = "int"
    return parse


def finite_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text[:40]}' is not a number") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text[:40]} is not a finite number")
    return value


finite_float.__name__ = "float"
# seeds: torch.manual_seed takes 64 bits; the training loop adds ranks and steps to them
SEED = bounded_int(0, 2**62)
