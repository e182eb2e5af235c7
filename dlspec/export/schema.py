"""JSON Schema of the spec's `export:` section (pure data, no torch import).

`dlspec/front/schema.py` assembles this into `schemas/dlspec.schema.json`, so editors
show these descriptions as hover docs. Semantic checks (a named dim exists, a
size is within the dim's range) belong to `dlspec.export.config`.
"""
from __future__ import annotations

FORMATS = ("onnx", "torchscript", "pt2")

# torch's ONNX translations are written against opset 18 (an older request is
# silently kept at 18), and torch converts up to 23.
MIN_OPSET = 18
MAX_OPSET = 23
# ONNX Runtime 1.32's CPU kernel of the opset-23 `Attention` op rejects the
# broadcast [B, 1, 1, S] masks our attention layers pass, so 22 is the newest
# opset that runs every layer kind.
DEFAULT_OPSET = 22

_DIM_NAME = {"type": "string", "pattern": "^[A-Za-z_][A-Za-z0-9_]*$"}

EXPORT_SCHEMA: dict = {
    "type": "object",
    "description": "How `dlspec export` writes this model and proves the exports compute what the eager model computes.",
    "additionalProperties": False,
    "properties": {
        "formats": {
            "type": "array",
            "description": "Formats written by `dlspec export` when --format is not given. Default: all three.",
            "items": {"enum": list(FORMATS)},
            "minItems": 1,
            "uniqueItems": True,
        },
        "opset": {
            "type": "integer",
            "description": f"ONNX opset of the .onnx file. Default {DEFAULT_OPSET}, "
                           "the newest ONNX Runtime runs for every layer kind.",
            "minimum": MIN_OPSET,
            "maximum": MAX_OPSET,
        },
        "dynamic": {
            "type": "array",
            "description": "Symbolic dims exported as dynamic axes (same names in the .onnx file). "
            "The others are fixed at their example size. Default: every symbolic dim of the inputs.",
            "items": _DIM_NAME,
            "uniqueItems": True,
        },
        "sizes": {
            "type": "object",
            "description": "Sizes of each dynamic dim checked for parity, e.g. {T: [1, 16, 17]}. "
            "Default: 1 (or the dim's min), the example size and an odd size (17 or 3).",
            "propertyNames": _DIM_NAME,
            "additionalProperties": {
                "type": "array",
                "description": "Sizes of this dim to check.",
                "items": {"type": "integer", "minimum": 1},
                "minItems": 1,
                "uniqueItems": True,
            },
        },
        "seeds": {
            "type": "integer",
            "description": "Random inputs drawn per checked size (seeds 0..n-1). Default 3.",
            "minimum": 1,
            "maximum": 100,
        },
        "tolerance": {
            "type": "object",
            "description": "Parity passes where |export - eager| <= atol + rtol * |eager| for every element.",
            "additionalProperties": False,
            "properties": {
                "atol": {"type": "number", "description": "Absolute tolerance. Default 1e-5 (fp32).", "exclusiveMinimum": 0},
                "rtol": {"type": "number", "description": "Relative tolerance. Default 1e-4 (fp32).", "minimum": 0},
            },
        },
        "external_data": {
            "type": "boolean",
            "description": "Write ONNX weights to a separate `.onnx.data` file. Default: only when the model "
            "passes protobuf's 2 GB limit.",
        },
    },
}
