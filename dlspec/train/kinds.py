"""One registry per training kind, as `LayerKind` is for layers.

A `Kind` (a loss, optimizer, schedule, data set, metric or augmentation) is defined once, in the module
that implements it: its name, its doc, its options (type, default, doc) and the function that builds it.
From the registries follow the `training:` JSON Schema (schema.py), the per-kind checks of the config
(config.py, through `Registry.parse`) and the tables of docs/training.md (reference.py); tests fail when the
committed schema or docs drift.

Nothing here imports torch, and neither may a registry's module at import time: `dlspec validate` builds
the schema from the registries, and it starts in a fraction of torch's import time. Builders import
torch when they are called.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Mapping

from dlspec.core.errors import Problem, did_you_mean, format_path

# JSON Schema of each option type; a `schema` on the Option replaces it for values these cannot describe
TYPES: dict[str, dict[str, Any]] = {
    "integer": {"type": "integer"}, "number": {"type": "number"}, "boolean": {"type": "boolean"},
    "string": {"type": "string"},
    "integers": {"type": "array", "items": {"type": "integer"}},
    "numbers": {"type": "array", "items": {"type": "number"}},
    "strings": {"type": "array", "items": {"type": "string"}},
    "list": {"type": "array"}, "mapping": {"type": "object"},
}
# (path, message, expected, hint): how a check reports a located problem
Report = Callable[..., None]


@dataclass(frozen=True)
class Option:
    name: str
    type: str  # a key of TYPES
    doc: str
    default: Any = None  # None: unset unless given; `default_doc` then says what the runtime does
    default_doc: str | None = None
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple = ()
    required: bool = False
    schema: Mapping[str, Any] | None = None

    def json_schema(self) -> dict[str, Any]:
        out = dict(self.schema) if self.schema is not None else dict(TYPES[self.type])
        for key, value in (("minimum", self.minimum), ("maximum", self.maximum)):  # bounds of a number
            if value is not None:
                out[key] = value
        if self.choices:
            out["enum"] = list(self.choices)
        return out

    def described(self) -> str:
        """The doc with its default, as the schema's hover text and the docs show it."""
        if self.required:
            return f"{self.doc.rstrip('.')} (required)."
        if self.default is not None:
            return f"{self.doc.rstrip('.')} (default {_show(self.default)})."
        return f"{self.doc.rstrip('.')} (default: {self.default_doc})." if self.default_doc else self.doc


@dataclass(frozen=True)
class Kind:
    name: str
    doc: str
    options: tuple[Option, ...] = ()
    build: Callable[..., Any] | None = None  # what the runtime calls; each registry says with what
    check: Callable[["Kinded", Report], None] | None = None  # semantic checks the schema cannot express

    def option(self, name: str) -> Option | None:
        return next((o for o in self.options if o.name == name), None)

    def described(self) -> str:
        """The doc as the reference table shows it."""
        return self.doc


@dataclass(frozen=True)
class Kinded:
    """A kind as configured: every option present (given, or its default), and where it sits in the spec."""
    kind: str
    options: Mapping[str, Any]
    given: frozenset[str]  # the options the spec wrote
    path: tuple
    definition: Kind = field(repr=False)

    def __getitem__(self, key: str) -> Any:
        return self.options[key]


class Registry:
    """The kinds of one family, chosen by `key` (`kind`, or `op` for augmentations)."""

    def __init__(self, family: str, doc: str, *, key: str = "kind", common: tuple[Option, ...] = ()):
        self.family, self.doc, self.key, self.common = family, doc, key, common
        self.kinds: dict[str, Kind] = {}

    def add(self, kind: Kind) -> Kind:
        assert kind.name not in self.kinds, f"{self.family} kind {kind.name} is defined twice"
        for option in kind.options:
            assert option.name not in {c.name for c in self.common} | {self.key}, (kind.name, option.name)
            for other in self.kinds.values():
                same = other.option(option.name)
                # one name, one type across kinds: the schema's union of options stays exact
                assert same is None or same.json_schema() == option.json_schema(), (kind.name, option.name)
        self.kinds[kind.name] = kind
        return kind

    def __getitem__(self, name: str) -> Kind:
        return self.kinds[name]

    def __iter__(self) -> Iterator[Kind]:
        return iter(self.kinds.values())

    @property
    def names(self) -> list[str]:
        return list(self.kinds)

    def owners(self, option: str) -> list[str]:
        return [k.name for k in self if k.option(option) is not None]

    def schema(self, description: str) -> dict[str, Any]:
        """A closed object: the key's enum, every kind's options (each described per kind), the common ones."""
        properties: dict[str, Any] = {self.key: {"type": "string", "enum": self.names,
                                                 "description": f"{self.doc} One of: {', '.join(self.names)}."}}
        for option in self.common:
            properties[option.name] = {**option.json_schema(), "description": option.described()}
        for name in dict.fromkeys(o.name for k in self for o in k.options):
            texts: dict[str, list[str]] = {}  # one description per wording, with the kinds that share it
            for kind in self:
                option = kind.option(name)
                if option is not None:
                    texts.setdefault(option.described(), []).append(kind.name)
                    typed = option  # every kind's option of this name has the same type (add() checks)
            described = " ".join(f"{', '.join(kinds)}: {text}" for text, kinds in texts.items())
            properties[name] = {**typed.json_schema(), "description": described}
        return {"type": "object", "additionalProperties": False, "description": description,
                "properties": properties, "required": [self.key]}

    def parse(self, doc: Mapping[str, Any], path: tuple, report: Report) -> Kinded:
        """Check each option belongs to the kind and the required ones are there; fill in defaults."""
        kind = self.kinds[doc[self.key]]
        allowed = {o.name: o for o in self.common + kind.options}
        for key in doc:
            if key != self.key and key not in allowed:
                owners = sorted(self.owners(key))
                report(path + (key,), f"'{key}' is not an option of {self.family} {self.key} '{kind.name}'",
                       f"one of {', '.join(sorted(allowed))}" if allowed else "no options",
                       f"'{key}' belongs to {', '.join(owners)}" if owners else did_you_mean(key, sorted(allowed)))
        for option in allowed.values():
            if option.required and option.name not in doc:
                report(path, f"a '{kind.name}' {self.family} needs `{option.name}`", f"{option.name}: {option.doc}")
        options = {name: doc.get(name, option.default) for name, option in allowed.items()}
        given = frozenset(k for k in doc if k in allowed)
        configured = Kinded(kind.name, options, given, path, kind)
        if kind.check is not None:
            kind.check(configured, report)
        return configured

    def table(self) -> str:
        """The markdown table of docs/training.md: one row per kind."""
        rows = [f"| `{self.key}` | what it is | options |", "|---|---|---|"]
        for kind in self:
            options = "<br>".join(f"`{o.name}`: {o.described()}" for o in kind.options) or ""
            rows.append(f"| `{kind.name}` | {kind.described()} | {options} |")
        if self.common:
            rows += ["", f"Every {self.family} also takes:", "",
                     *(f"- `{o.name}`: {o.described()}" for o in self.common)]
        return "\n".join(rows)


def problem_collector(problems: list[Problem], locate: Callable[[tuple], Any]) -> Report:
    """A Report that appends located Problems to `problems`."""
    def report(path: tuple, message: str, expected: str | None = None, hint: str | None = None) -> None:
        problems.append(Problem(message, locate(path), format_path(path), expected, hint))
    return report


def _show(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)
