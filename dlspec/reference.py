"""The reference docs, generated from the registries: docs/layers.md (the layer registry and the standard
blocks) and the tables of training kinds in docs/training.md (each between `<!-- kinds: FAMILY -->` and
`<!-- end kinds -->`).

`python -m dlspec.reference` rewrites them; a test fails when they drift.
"""
from __future__ import annotations

import json
import re
import sys
from pathlib import Path

from .core.layers import REGISTRY
from .front.lower import standard_blocks

DOC_PATH = Path(__file__).resolve().parent.parent / "docs" / "layers.md"
TRAINING_DOC = DOC_PATH.with_name("training.md")
WEIGHTS_DOC = DOC_PATH.with_name("weights.md")
_WEIGHTS_TABLE = re.compile(r"(<!-- weights: (rules|presets) -->\n).*?(<!-- end weights -->)", re.S)
_KIND_TABLE = re.compile(r"(<!-- kinds: (\w+) -->\n).*?(<!-- end kinds -->)", re.S)


def _default(attr) -> str:
    return "required" if attr.required else f"`{json.dumps(attr.default)}`"


def _fields(attr, depth: int = 0) -> str:
    """A struct attribute's fields, for its table cell: `theta` (float, default `10000.0`): ..."""
    if not attr.fields:
        return ""
    parts = [f"`{f.name}` ({f.type}, {_default(f)}): {f.doc}" + (f", one of {', '.join(f.choices)}" if f.choices else "")
             + (f" {{{_fields(f, depth + 1).strip()}}}" if f.fields else "") for f in attr.fields]
    return (" Fields: " if depth == 0 else "") + "; ".join(parts) + ("." if depth == 0 else "")


def reference_text() -> str:
    lines = ["# Layer reference", "",
             "Generated from the layer registry (`dlspec/core/layers/`) and the standard blocks (`dlspec/stdlib/`) by",
             "`python -m dlspec.reference`. Every layer also takes the common node keys: `id`, `from`, `when`, `repeat`,",
             "`checkpoint`, `trainable`, `init`, `tie`, `outputs` (see [the spec language](spec-language.md)).", "",
             "## Layer kinds", ""]
    lines += [f"- [`{name}`](#{name})" for name in sorted(REGISTRY)]
    for name in sorted(REGISTRY):
        kind = REGISTRY[name]
        low, high = kind.arity
        inputs = f"{low}" if low == high else f"{low} or more" if high is None else f"{low} to {high}"
        lines += ["", f"### {name}", "", kind.doc, "", f"Inputs: {inputs}.", ""]
        if kind.attrs:
            lines += ["| attribute | type | default | meaning |", "|---|---|---|---|"]
            for a in kind.attrs:
                one_of = "Or a list of" if a.type == "flags" else "One of"
                meaning = a.doc + (f" {one_of}: {', '.join(a.choices)}." if a.choices else "") + _fields(a)
                lines.append(f"| `{a.name}` | {a.type} | {_default(a)} | {meaning} |")
    lines += ["", "## Standard blocks", "",
              "Written in the spec language and available in every spec by name (`op: gpt_block`).", ""]
    for name, (body, _, doc) in sorted(standard_blocks().items()):
        params = body.get("params") or {}
        lines += [f"### {name}", "", str(body.get("doc", "")).strip(), "",
                  f"Inputs: {', '.join(body.get('inputs') or ['x'])}. Defined in `dlspec/stdlib/{doc.path.name}`.", "",
                  "| parameter | type | default |", "|---|---|---|"]
        for pname, decl in params.items():
            ptype, default = (decl, None) if isinstance(decl, str) else (decl.get("type", "int"), decl.get("default"))
            lines.append(f"| `{pname}` | {ptype} | {'required' if default is None else f'`{default}`'} |")
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def training_text(text: str) -> str:
    """docs/training.md with each generated table of kinds as the registries say."""
    from .train.augment import AUGMENTATIONS
    from .train.datasets import DATA_KINDS
    from .train.losses import LOSSES
    from .train.metrics import METRICS
    from .train.optim import OPTIMIZERS
    from .train.schedules import SCHEDULES
    registries = {"data": DATA_KINDS, "augment": AUGMENTATIONS, "loss": LOSSES, "optimizer": OPTIMIZERS,
                  "scheduler": SCHEDULES, "metric": METRICS}

    def table(match: re.Match) -> str:
        note = "<!-- generated from the registry by `python -m dlspec.reference`: edit the kind, not this table -->"
        return f"{match.group(1)}{note}\n{registries[match.group(2)].table()}\n{match.group(3)}"
    return _KIND_TABLE.sub(table, text)


def weights_text(text: str) -> str:
    """docs/weights.md with its tables of rule kinds and presets as dlspec/weights defines them."""
    from .weights.presets import PRESETS
    from .weights.rules import RULES

    def rules() -> str:
        lines = ["| rule | what it does | options | example |", "|---|---|---|---|"]
        for kind in RULES.values():
            options = "; ".join(f"`{name}`: {doc}" for name, doc in kind.options) or "none"
            lines.append(f"| `{kind.name}` | {kind.doc} | {options} | `{kind.example}` |")
        return "\n".join(lines)

    def presets() -> str:
        out = []
        for p in PRESETS.values():
            out += [f"### `{p.name}`", "", f"{p.doc} For {p.specs}.", "", "```yaml"]
            out += [f"- {json.dumps(rule)}" for rule in p.rules] + ["```", ""]
        return "\n".join(out).rstrip()

    def table(match: re.Match) -> str:
        note = "<!-- generated from dlspec/weights by `python -m dlspec.reference`: edit the registry, not this -->"
        return f"{match.group(1)}{note}\n{rules() if match.group(2) == 'rules' else presets()}\n{match.group(3)}"
    return _WEIGHTS_TABLE.sub(table, text)


if __name__ == "__main__":
    DOC_PATH.write_text(reference_text())
    TRAINING_DOC.write_text(training_text(TRAINING_DOC.read_text()))
    WEIGHTS_DOC.write_text(weights_text(WEIGHTS_DOC.read_text()))
    print(f"wrote {DOC_PATH} and the tables of {TRAINING_DOC} and {WEIGHTS_DOC}", file=sys.stderr)
