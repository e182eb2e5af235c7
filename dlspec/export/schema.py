"""JSON Schema of the spec's `export:` section (pure data, no torch import).

`dlspec/front/schema.py` assembles this into `schemas/dlspec.schema.json`, so editors
show these descriptions as hover docs. Semantic checks (a named dim exists, a
size is within the dim's range) belong to `dlspec.export.config`.
"""
from __future__ import annotations

FORMATS = ("onnx", "torchscript", "pt2")
PREPROCESSING = ("embedded", "external")

# torch's ONNX translations are written against opset 18 (an older request is
# silently kept at 18), and torch converts up to 23.
MIN_OPSET = 18
MAX_OPSET = 23
# ONNX Runtime 1.32's CPU kernel of the opset-23 `Attention` op rejects the
# broadcast [B, 1, 1, S] masks our attention layers pass, so 22 is the newest
# opset that runs every layer kind. Older runtimes run less: the default is the
# newest opset the installed onnxruntime loads (config.default_opset), from this table
# of (first onnxruntime version, newest opset it loads), each measured by loading the
# exported specs in that version.
DEFAULT_OPSET = 22
RUNTIME_OPSETS = (((1, 19), 21), ((1, 21), 22))

# Smaller ONNX variants (export.variants): name -> what it is, and the agreement with the fp32
# eager model it must keep on real data unless the spec declares its own.
VARIANTS = {
    "fp16": ("weights and activations in float16 (inputs and outputs stay float32), through ONNX Runtime's "
             "float16 converter", {"argmax": 0.99, "metric": 0.01}),
    "int8_dynamic": ("8-bit weights, activations quantised per batch at run time (onnxruntime.quantization."
                     "quantize_dynamic)", {"argmax": 0.99, "metric": 0.01}),
}
# What the fp32 exports must keep on real data: they differ from eager by float rounding only.
AGREEMENT = {"argmax": 0.999, "metric": 0.001}
EXAMPLES = 10000  # validation examples the real-data check runs at most

_DIM_NAME = {"type": "string", "pattern": "^[A-Za-z_][A-Za-z0-9_]*$"}


def _agreement(defaults: str) -> dict:
    return {
        "argmax": {"type": "number", "minimum": 0, "maximum": 1,
                   "description": "Smallest fraction of predictions (examples, or tokens for sequence outputs) whose "
                                  f"top class equals the eager model's. Default {defaults}."},
        "metric": {"type": "number", "minimum": 0,
                   "description": "Largest difference between the export's accuracy and the eager model's on the "
                                  f"same examples. Default {defaults}."},
    }

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
            "description": "ONNX opset of the .onnx file. Default: the newest the installed onnxruntime loads, "
                           f"up to {DEFAULT_OPSET} (21 before onnxruntime 1.21).",
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
        "preprocessing": {
            "enum": list(PREPROCESSING),
            "description": "`embedded` (default): the exported files take inputs as the data set gives them and apply "
            "the training preprocessing themselves (normalisation with the run's numbers; a data kind's dtype, layout "
            "and scale). `external`: they take preprocessed inputs; the numbers go into the metadata and into "
            "preprocess.json beside the files.",
        },
        "agreement": {
            "type": "object",
            "description": "Parity on real data: the exports run on the run's validation examples, raw as the data "
            "set gives them, and must predict what the eager model predicts.",
            "additionalProperties": False,
            "properties": {
                **_agreement(f"{AGREEMENT['argmax']} and {AGREEMENT['metric']}"),
                "examples": {"type": "integer", "minimum": 0,
                             "description": f"Validation examples checked at most (0: none). Default {EXAMPLES}."},
            },
        },
        "variants": {
            "type": "array",
            "description": "Smaller ONNX files written beside the fp32 one, each checked against the fp32 eager "
            "model on real data with its own agreement: " + "; ".join(f"`{k}`: {doc}" for k, (doc, _) in VARIANTS.items()),
            "items": {"anyOf": [
                {"enum": list(VARIANTS)},
                {"type": "object", "additionalProperties": False, "required": ["kind"],
                 "properties": {"kind": {"enum": list(VARIANTS), "description": "Which variant."},
                                **_agreement(", ".join(f"{k}: {d['argmax']} and {d['metric']}"
                                                       for k, (_, d) in VARIANTS.items()))}},
            ]},
            "uniqueItems": True,
        },
        "external_data": {
            "type": "boolean",
            "description": "Write ONNX weights to a separate `.onnx.data` file. Default: only when the model "
            "passes protobuf's 2 GB limit.",
        },
    },
}
