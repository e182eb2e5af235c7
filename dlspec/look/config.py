"""`dlspec config SPEC [--set ...]`: the resolved spec as YAML, with overrides applied and defaults written out.

What is written out: the included blocks (merged in place of `include:`), each symbolic dim's sizes, every
layer attribute's default, and the whole training section (`dlspec.train.config.resolved`). Block parameters
keep their own defaults, which may be expressions of other parameters. Loaded again, the output is the
same model (the same spec hash) and the same training run.
"""
from __future__ import annotations

import copy
import sys
from typing import Any

from dlspec.core.layers import REGISTRY


def add_arguments(p) -> None:
    p.add_argument("spec", metavar="SPEC")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a value by its dotted path, e.g. training.optimizer.lr=1e-3 (repeatable)")


def run(args) -> int:
    from dlspec.front.document import dump_text
    from dlspec.front.spec import load
    spec = load(args.spec, args.overrides)
    sets = "".join(f" --set {o}" for o in args.overrides)
    sys.stdout.write(f"# dlspec config {args.spec}{sets}\n# spec hash {spec.spec_hash[:12]}: overrides applied, "
                     "defaults written out\n" + dump_text(resolved(spec), compact=True))
    return 0


def resolved(spec) -> dict[str, Any]:
    """The document with every default the model and training section take written out."""
    doc = copy.deepcopy(spec.document)
    doc.pop("include", None)  # its blocks are merged into `blocks:`
    model = doc["model"]
    if spec.dims:
        model["dims"] = {name: _dim(d) for name, d in spec.dims.items()}
    model["layers"] = _layers(model.get("layers") or [])
    for body in (doc.get("blocks") or {}).values():
        if isinstance(body, dict) and "layers" in body:
            body["layers"] = _layers(body["layers"])
    if spec.training is not None:
        from dlspec.train import config
        doc["training"] = config.resolved(config.parse(spec.training, spec.locate))
    return doc


def _dim(d) -> dict[str, int]:
    return {"example": d.example, "min": d.min, **({"max": d.max} if d.max is not None else {}),
            **({"multiple_of": d.multiple_of} if d.multiple_of > 1 else {})}


def _layers(items: list) -> list:
    return [_layer(item) for item in items]


def _layer(item: Any) -> Any:
    """A layer with its kind's defaults written after what it gives; a residual's branches likewise."""
    entry = {"op": item} if isinstance(item, str) else item
    if not isinstance(entry, dict):
        return item
    if entry.get("op") == "residual":
        return {**entry, **{k: _layers(entry[k]) for k in ("body", "shortcut") if isinstance(entry.get(k), list)}}
    kind = REGISTRY.get(entry.get("op"))
    if kind is None:
        return item  # a block: its parameters' defaults may refer to each other
    defaults = {a.name: a.default for a in kind.attrs if not a.required and a.default is not None and a.name not in entry}
    return {**entry, **defaults} if defaults else item
