"""The one error type of dlspec.

Library code raises :class:`DlspecError` holding one or more :class:`Problem`s;
only the CLI prints them and picks an exit code. A problem says where
(file:line:col and a JSON-style path), what is wrong, what was expected, and a
hint, so a user can fix a spec without reading our source.
"""
from __future__ import annotations

import difflib
import json
import re
from dataclasses import dataclass
from typing import Iterable, Sequence


@dataclass(frozen=True)
class Loc:
    file: str
    line: int  # 1-based
    col: int  # 1-based

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.col}"


MAX_TEXT = 1000  # characters of one message, expectation or hint: an echoed value can be megabytes
_CONTROL = re.compile(r"[\x00-\x09\x0b-\x1f\x7f]")


def shorten(text: str, limit: int = 200) -> str:
    """A value quoted in a message, cut when long and saying by how much."""
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text):,} characters)"


def _printable(text: str | None) -> str | None:
    """No terminal escapes or NULs from a user's value reach the terminal, and nothing past MAX_TEXT."""
    if text is None:
        return None
    return _CONTROL.sub(lambda m: repr(m.group())[1:-1], shorten(str(text), MAX_TEXT))


@dataclass(frozen=True)
class Problem:
    message: str
    loc: Loc | None = None
    path: str = ""
    expected: str | None = None
    hint: str | None = None

    def __post_init__(self):
        for name in ("message", "path", "expected", "hint"):
            object.__setattr__(self, name, _printable(getattr(self, name)))

    def format(self) -> str:
        where = f"{self.loc}: " if self.loc else ""
        text = f"{where}error: {self.message}"
        if self.path:
            text += f"\n  at: {self.path}"
        if self.expected:
            text += f"\n  expected: {self.expected}"
        if self.hint:
            text += f"\n  hint: {self.hint}"
        return text

    def to_json(self) -> dict:
        return {
            "file": self.loc.file if self.loc else None,
            "line": self.loc.line if self.loc else None,
            "column": self.loc.col if self.loc else None,
            "path": self.path,
            "message": self.message,
            "expected": self.expected,
            "hint": self.hint,
        }


class DlspecError(Exception):
    """One or more problems with a spec, a file or an argument."""

    def __init__(self, problems: Problem | Iterable[Problem], usage: bool = False):
        self.problems: tuple[Problem, ...] = (problems,) if isinstance(problems, Problem) else tuple(problems)
        # usage=True: the user's command line is wrong (exit 2), not the spec (exit 1).
        self.usage = usage
        super().__init__("\n".join(p.format() for p in self.problems))

    @classmethod
    def single(cls, message: str, loc: Loc | None = None, *, path: str = "", expected: str | None = None,
               hint: str | None = None, usage: bool = False) -> "DlspecError":
        return cls(Problem(message, loc, path, expected, hint), usage=usage)

    def format(self) -> str:
        return "\n".join(p.format() for p in self.problems)

    def to_json(self) -> str:
        return json.dumps({"ok": False, "errors": [p.to_json() for p in self.problems]}, indent=2)


def did_you_mean(word: str, choices: Sequence[str]) -> str | None:
    """A hint naming the closest choice, or None when nothing is close."""
    close = difflib.get_close_matches(str(word), list(choices), n=1, cutoff=0.6)
    return f"did you mean '{close[0]}'?" if close else None


def unquoted_comma(mapping: dict, key: str) -> str | None:
    """YAML's flow style splits `{out: max(1, in_ch // 4)}` at the comma, into `out: 'max(1'` and a key
    `in_ch // 4)`. For such a stray key (or the cut-off value): the hint to quote the expression."""
    def opens(text) -> int:
        return str(text).count("(") - str(text).count(")")
    for name, value in mapping.items():
        if isinstance(value, str) and opens(value) > 0:
            rest = [k for k in mapping if isinstance(k, str) and opens(k) < 0 and mapping[k] is None]
            if key == name or key in rest:
                whole = ", ".join([value] + [k.strip() for k in rest])
                return f"quote an expression that has a comma, or YAML splits it there: `{name}: \"{whole}\"`"
    return None


def format_path(path: Sequence[str | int]) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def gist(exc: BaseException, limit: int = 200) -> str:
    """The informative part of a library's error message, for quoting inside a DlspecError: the line
    that says what went wrong (torch's weights-only loader buries it under advice), without a C++
    source location in front, cut to its first sentence when long."""
    message = str(exc)
    marker = "WeightsUnpickler error:"
    if marker in message:  # what the weights-only loader refused: an unsupported global or opcode
        message = message.split(marker, 1)[1]
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    if not lines:
        return type(exc).__name__  # EOFError and friends carry no message
    text = lines[0]
    text = re.sub(r"^\[[^\]]*\.(cc|cpp|h|hpp):\d+\]\s*", "", text)
    if len(text) > limit:
        sentence = text.find(". ")
        text = text[:sentence] if 0 < sentence < limit else text[:limit - 3] + "..."
    return text.rstrip(" .:")
