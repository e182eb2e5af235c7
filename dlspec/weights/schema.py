"""JSON Schema of a spec's `weights:` section (no torch import), from the rule kinds and the presets.

`dlspec/front/schema.py` assembles it into `schemas/dlspec.schema.json`.
"""
from __future__ import annotations

from typing import Any

from .presets import PRESETS
from .rules import rule_schema


def weights_schema() -> dict[str, Any]:
    rules = {"type": "array", "items": rule_schema(), "description": "Mapping rules, applied in order."}
    return {
        "type": "object", "additionalProperties": False,
        "description": "How checkpoints from elsewhere map onto this model's state dict (`dlspec build --weights`, "
                       "`training.init_from`, `dlspec export --weights`), and back (`dlspec build --save`).",
        "properties": {
            "preset": {"enum": sorted(PRESETS), "description": "A named preset, whose rules run first: "
                       + "; ".join(f"{p.name} ({p.specs})" for p in PRESETS.values()) + "."},
            "map": {"anyOf": [rules, {"type": "string", "minLength": 1,
                                      "description": "A YAML file holding a list of rules, relative to this spec."}],
                    "description": "Rules after the preset's: a list, or a YAML file of one (relative to this spec)."},
        },
    }
