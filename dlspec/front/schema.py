"""Stage 2: the JSON Schema of the spec language, generated from the layer registry, and validation against it.

`python -m dlspec.front.schema` writes schemas/dlspec.schema.json (committed; a test fails
on drift). Validation uses jsonschema's Draft 2020-12 validator, collects every
error, and turns each into a Problem at the file:line:col of the offending
value (or key), with the expected form and a near-miss hint.
"""
from __future__ import annotations

import json
import sys
from functools import lru_cache
from pathlib import Path

from jsonschema import Draft202012Validator, validators
from jsonschema.exceptions import ValidationError, best_match

from ..core.errors import DlspecError, Problem, did_you_mean, format_path, unquoted_comma
from ..core.layers import DTYPES, REGISTRY, Attr
from ..export.schema import EXPORT_SCHEMA
from ..train.schema import training_schema
from ..weights.schema import weights_schema
from .document import Document

SCHEMA_PATH = Path(__file__).resolve().parents[2] / "schemas" / "dlspec.schema.json"
IDENT = "^[A-Za-z_][A-Za-z0-9_]*$"
# A node id is a module name: anything nn.Module takes (no dot), so `0` and `downsample` both work; `:` is
# kept for tie targets (`wte:weight`)
NODE_ID = r"^[^.:\s]+$"
REF = r"^[^:\s]+$"  # a node id, or `id.N` for one output of a multi-output node
PATTERN_EXPECTED = {IDENT: "letters, digits and _ (not starting with a digit)",
                    NODE_ID: "a module name: no dots, colons or spaces (digits alone are fine: `0`)",
                    REF: "a node id, or `id.N` for one of its outputs"}
INIT_SCHEMES = ("zeros", "ones", "constant", "normal", "trunc_normal", "uniform", "xavier_uniform", "xavier_normal",
                "kaiming_uniform", "kaiming_normal", "orthogonal")

_EXPR = {"type": "string", "description": "an expression over variables / block parameters, e.g. `4 * d_model`"}
_ATTR_TYPES = {
    "int": {"type": ["integer", "string"]},
    "float": {"type": ["number", "string"]},
    "bool": {"type": ["boolean", "string"]},
    "ints": {"type": ["integer", "string", "array"], "items": {"type": ["integer", "string"]}},
    "padding": {"type": ["integer", "string", "array"], "items": {"type": ["integer", "string"]}},
    "dims": {"type": "array", "items": {"type": ["integer", "string"]}},
    "ref": {"type": ["string", "integer"], "pattern": REF, "minimum": 0},
    "flags": {"type": ["boolean", "string", "array"], "items": {"type": "string"}},
}
_NODE_COMMON = {
    "id": {"type": ["string", "integer"], "pattern": NODE_ID, "minimum": 0,
           "description": "Name of this node: its module path and state-dict prefix, and how later nodes refer to it. "
                          "Any module name (digits too: `0`, as in nn.Sequential)."},
    "from": {"type": ["string", "integer", "array"], "pattern": REF, "minimum": 0,
             "items": {"type": ["string", "integer"], "pattern": REF, "minimum": 0},
             "description": "Input node(s) by id (or `id.0` for one output of a multi-output node). Default: the previous node."},
    "when": {"type": ["boolean", "string"], "description": "Condition over block parameters; when false the node is skipped "
                                                            "and its input passes through."},
    "repeat": {"type": ["integer", "string"], "minimum": 1,
               "description": "Stack N copies, each fed by the previous one; named id.0 .. id.N-1."},
    "checkpoint": {"type": "boolean", "description": "Recompute this node/block in backward instead of storing "
                                                     "activations (torch.utils.checkpoint, non-reentrant)."},
    "trainable": {"type": "boolean", "description": "false freezes the parameters (requires_grad = False)."},
    "init": {"$ref": "#/$defs/init"},
    "tie": {"type": "object", "additionalProperties": {"type": "string"},
            "description": "Share parameters with another node: `{weight: wte}` makes this node's weight the same "
                           "Parameter as wte's weight (`wte:other_param` names a different one)."},
    "outputs": {"type": "array", "items": {"type": "string", "pattern": IDENT},
                "description": "Names for the outputs of a multi-output node (split, chunk, block)."},
}


def _attr_schema(attr: Attr) -> dict:
    if attr.type == "str":
        # not an enum: inside a block the value may name a block parameter; lowering checks the choices
        schema = {"type": "string", **({"examples": list(attr.choices)} if attr.choices else {})}
    elif attr.type == "struct":
        schema = {"type": "object", "properties": {f.name: _attr_schema(f) for f in attr.fields},
                  "additionalProperties": False}
        if any(f.required for f in attr.fields):
            schema["required"] = [f.name for f in attr.fields if f.required]
    else:
        schema = dict(_ATTR_TYPES[attr.type])
    if attr.type == "flags":
        schema["items"] = {"enum": list(attr.choices)}
    if attr.type == "padding":
        schema["description"] = attr.doc
    if attr.minimum is not None:
        schema["minimum"] = attr.minimum
    if not attr.required and attr.default is None:
        schema["type"] = [schema["type"], "null"] if isinstance(schema.get("type"), str) else schema.get("type", []) + ["null"]
    elif not attr.required:
        schema["default"] = attr.default
    choices = f" {'Or a list of' if attr.type == 'flags' else 'One of'}: {', '.join(attr.choices)}." if attr.choices else ""
    schema["description"] = attr.doc + ("" if attr.required else f" (default: {json.dumps(attr.default)})") + choices
    return schema


def _layer_def(kind) -> dict:
    props = dict(_NODE_COMMON)
    props["op"] = {"const": kind.name, "description": kind.doc}
    for attr in kind.attrs:
        props[attr.name] = _attr_schema(attr)
    return {"type": "object", "description": kind.doc, "properties": props,
            "required": ["op"] + [a.name for a in kind.attrs if a.required], "additionalProperties": False}


def build_schema(dispatch: bool = False) -> dict:
    """The spec language's schema. With `dispatch`, a node is checked only against its own kind's
    definition (the `dlspecOp` keyword below) instead of an if/then per kind: the same verdicts,
    but linear rather than nodes x kinds, which is what keeps a 1,000-node spec fast. Editors get
    the standard form."""
    defs: dict = {f"layer.{name}": _layer_def(kind) for name, kind in sorted(REGISTRY.items())}
    defs["residual"] = {
        "type": "object", "description": "shortcut(x) + body(x): a residual connection in one node.",
        "properties": {**_NODE_COMMON, "op": {"const": "residual"},
                       "body": {"$ref": "#/$defs/layers", "description": "the branch added to the input"},
                       "shortcut": {"$ref": "#/$defs/layers",
                                    "description": "a projection/downsample of the input (default: the input itself)"}},
        "required": ["op", "body"], "additionalProperties": False}
    kinds = sorted(REGISTRY) + ["residual"]
    defs["node"] = {
        "description": "A layer: `{op: kind, ...attributes}`, or just the kind's name when it needs no attributes.",
        "if": {"type": "string"},
        "then": {"type": "string", "pattern": IDENT, "examples": kinds},
        "else": {
            "type": "object", "required": ["op"],
            "properties": {**_NODE_COMMON, "op": {"type": "string", "pattern": IDENT, "examples": kinds,
                                                  "description": "A layer kind, `residual`, or a block name."}},
        },
    }
    refs = {k: f"#/$defs/{'residual' if k == 'residual' else 'layer.' + k}" for k in kinds}
    if dispatch:
        defs["node"]["else"][_DISPATCH] = refs
    else:
        defs["node"]["else"]["allOf"] = [{"if": {"properties": {"op": {"const": k}}, "required": ["op"]},
                                          "then": {"$ref": ref}} for k, ref in refs.items()]
    defs["layers"] = {"type": "array", "items": {"$ref": "#/$defs/node"},
                      "description": "Layers in order; each takes the previous one's output unless it says `from:`."}
    scheme_names = list(INIT_SCHEMES)
    defs["init.scheme"] = {
        "description": "An init scheme: a name, or `{scheme: normal, std: 0.02}`.",
        "anyOf": [{"type": "string", "enum": scheme_names},
                  {"type": "object", "required": ["scheme"], "additionalProperties": False,
                   "properties": {"scheme": {"enum": scheme_names}, "mean": {"type": "number"}, "std": {"type": "number"},
                                  "a": {"type": "number"}, "b": {"type": "number"}, "gain": {"type": "number"},
                                  "value": {"type": "number"}, "mode": {"enum": ["fan_in", "fan_out"]},
                                  "nonlinearity": {"enum": ["relu", "leaky_relu", "linear", "tanh", "sigmoid"]}}}]}
    defs["init"] = {
        "description": "Initialisation: one scheme for the weights, or `{weight: ..., bias: ..., <param>: ...}`.",
        "anyOf": [{"$ref": "#/$defs/init.scheme"},
                  {"type": "object", "propertyNames": {"pattern": r"^[A-Za-z_][A-Za-z0-9_.]*$"},
                   "additionalProperties": {"$ref": "#/$defs/init.scheme"}}]}
    param_decl = {"anyOf": [{"enum": ["int", "float", "bool", "str"]},
                            {"type": "object", "additionalProperties": False, "required": ["type"],
                             "properties": {"type": {"enum": ["int", "float", "bool", "str"]},
                                            "default": {"type": ["number", "string", "boolean"]},
                                            "doc": {"type": "string"}}}],
                  "description": "A parameter: its type (`int`), or `{type: int, default: 4 * dim, doc: ...}`."}
    defs["block"] = {
        "type": "object", "description": "A reusable block: its own layers, with typed parameters.",
        "properties": {"doc": {"type": "string", "description": "What the block computes."},
                       "params": {"type": "object", "propertyNames": {"pattern": IDENT}, "additionalProperties": param_decl},
                       "inputs": {"type": "array", "items": {"type": "string", "pattern": IDENT},
                                  "description": "Names of the block's inputs (default: [x])."},
                       "layers": {"$ref": "#/$defs/layers"},
                       "outputs": {"type": "array", "items": {"type": "string"},
                                   "description": "The block's outputs (default: its last layer)."}},
        "required": ["layers"], "additionalProperties": False}
    dim_decl = {"anyOf": [{"type": "integer", "minimum": 1},
                          {"type": "object", "additionalProperties": False,
                           "properties": {"example": {"type": "integer", "minimum": 1}, "min": {"type": "integer", "minimum": 0},
                                          "max": {"type": "integer", "minimum": 1},
                                          "multiple_of": {"type": "integer", "minimum": 1,
                                                          "description": "Every allowed size is a multiple of this "
                                                                         "(a U-Net's H: 16); shape checks use it."}}}],
                "description": "Example size of a symbolic dim (used for summaries and export), or "
                               "{example, min, max, multiple_of}."}
    defs["model"] = {
        "type": "object", "description": "The model: inputs, layers, outputs.", "additionalProperties": False,
        "required": ["inputs", "layers"],
        "properties": {
            "vars": {"type": "object", "propertyNames": {"pattern": IDENT},
                     "additionalProperties": {"type": ["number", "string", "boolean"]},
                     "description": "Variables for dims and hyper-parameters; values may be expressions (`4 * d_model`). "
                                    "Override with --set model.vars.NAME=VALUE."},
            "dims": {"type": "object", "propertyNames": {"pattern": IDENT}, "additionalProperties": dim_decl},
            "inputs": {"type": "object", "minProperties": 1, "propertyNames": {"pattern": IDENT},
                       "additionalProperties": {
                           "type": "object", "additionalProperties": False, "required": ["shape"],
                           "properties": {
                               "shape": {"type": "array", "items": {"type": ["integer", "string"]},
                                         "description": "Dims: ints, variables, or symbolic names like B and T."},
                               "dtype": {"enum": list(DTYPES), "default": "float32", "description": "Element type."},
                               "range": {"type": "array", "items": {"type": "integer"}, "minItems": 2, "maxItems": 2,
                                         "description": "Valid [low, high) of an integer input."},
                               "doc": {"type": "string"}}},
                       "description": "Named inputs with shapes and dtypes."},
            "init": {"$ref": "#/$defs/init"},
            "layers": {"$ref": "#/$defs/layers"},
            "outputs": {"type": "object", "propertyNames": {"pattern": IDENT}, "additionalProperties": {"type": "string"},
                        "description": "Named outputs: `{logits: head}`. Default: the last layer, named `output`."},
        }}
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "dlspec model spec",
        "description": "A declarative PyTorch model: `dlspec validate|build|train|export spec.yaml`.",
        "type": "object", "additionalProperties": False, "required": ["dlspec"],
        "properties": {
            "dlspec": {"const": 1, "description": "Spec format version."},
            "name": {"type": "string", "pattern": r"^[A-Za-z_][A-Za-z0-9_.\-]*$", "description": "Model name."},
            "description": {"type": "string"},
            "include": {"type": "array", "items": {"type": "string"},
                        "description": "Block libraries to include, relative to this file."},
            "blocks": {"type": "object", "propertyNames": {"pattern": IDENT}, "additionalProperties": {"$ref": "#/$defs/block"}},
            "model": {"$ref": "#/$defs/model"},
            "weights": weights_schema(),
            "training": training_schema(),
            "export": EXPORT_SCHEMA,
        },
        "$defs": defs,
    }


_DISPATCH = "dlspecOp"


def _dispatch_op(validator, refs, instance, schema):
    op = instance.get("op") if isinstance(instance, dict) else None
    ref = refs.get(op) if isinstance(op, str) else None  # any other type is reported by the node's own schema
    if ref is not None:
        yield from validator.descend(instance, {"$ref": ref})


@lru_cache(maxsize=1)
def _validator():
    # An integer is an int: JSON Schema also counts 3.0 and 1e5 as integers, which a range() then rejects.
    strict = Draft202012Validator.TYPE_CHECKER.redefine(
        "integer", lambda checker, value: isinstance(value, int) and not isinstance(value, bool))
    validator_class = validators.extend(Draft202012Validator, {_DISPATCH: _dispatch_op}, type_checker=strict)
    return validator_class(build_schema(dispatch=True))


def validate_document(doc: Document) -> None:
    if not isinstance(doc.data, dict):
        raise DlspecError.single("a spec must be a YAML mapping with `dlspec: 1`, `name:` and `model:`", doc.locate(()),
                                 expected="a mapping", hint="see specs/ for examples")
    problems = []
    for error in _validator().iter_errors(doc.data):
        problems.extend(_problems(error, doc))
    if problems:
        problems.sort(key=lambda p: (p.loc.file, p.loc.line, p.loc.col) if p.loc else ("", 0, 0))
        raise DlspecError(_dedupe(problems))


def _dedupe(problems: list[Problem]) -> list[Problem]:
    seen, out = set(), []
    for p in problems:
        key = (p.loc, p.message)
        if key not in seen:
            seen.add(key)
            out.append(p)
    return out


def _what(doc: Document, path: list) -> str:
    """'conv2d layer' / 'block' context for a path inside a layer list."""
    node = doc.data
    for part in path:
        node = node[part]
    if isinstance(node, dict) and isinstance(node.get("op"), str):
        return f"{node['op']} layer"
    return format_path(path) or "the spec"


def _problems(error: ValidationError, doc: Document) -> list[Problem]:
    if error.validator in ("anyOf", "oneOf") and error.context:
        deepest = best_match(error.context)
        if len(deepest.absolute_path) > len(error.absolute_path) or deepest.validator not in ("type", "enum"):
            return _problems(deepest, doc)
    path = list(error.absolute_path)
    where = format_path(path)
    loc = doc.locate(path)
    kind, value = error.validator, error.instance
    if kind == "additionalProperties" and isinstance(value, dict):
        allowed = sorted(error.schema.get("properties", {}))
        extra = [k for k in value if k not in allowed]
        return [Problem(f"unknown key '{k}' in {_what(doc, path)}", doc.locate(path + [k], key=True), format_path(path + [k]),
                        expected=", ".join(allowed), hint=unquoted_comma(value, k) or did_you_mean(k, allowed))
                for k in extra]
    if kind == "required":
        missing = [k for k in error.validator_value if k not in value]
        descriptions = error.schema.get("properties", {})
        return [Problem(f"{_what(doc, path)} is missing '{k}'", loc, where,
                        expected=descriptions.get(k, {}).get("description"),
                        hint=f"add `{k}: ...`") for k in missing]
    if kind == "type":
        want = error.validator_value if isinstance(error.validator_value, list) else [error.validator_value]
        names = {"integer": "an integer", "number": "a number", "string": "a string or expression", "boolean": "true/false",
                 "array": "a list", "object": "a mapping", "null": "null"}
        if "string" in want and len(want) > 1:  # strings there are expressions: say what the literal should be
            want = [w for w in want if w != "string"] + ["an expression"]
        return [Problem(f"expected {' or '.join(names.get(w, w) for w in want)}, got {_show(value)}", loc, where,
                        expected=error.schema.get("description"), hint=_type_hint(want, value))]
    if kind == "enum":
        choices = [str(c) for c in error.validator_value]
        return [Problem(f"{_show(value)} is not one of: {', '.join(choices)}", loc, where,
                        hint=did_you_mean(str(value), choices))]
    if kind == "const":
        return [Problem(f"expected {json.dumps(error.validator_value)}, got {_show(value)}", loc, where,
                        hint="this dlspec reads format version 1" if path == ["dlspec"] else None)]
    if kind == "pattern":
        return [Problem(f"{_show(value)} is not a valid name here", loc, where,
                        expected=PATTERN_EXPECTED.get(error.validator_value, error.validator_value))]
    if kind in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "minItems", "maxItems", "minProperties"):
        return [Problem(error.message.replace("is less than the minimum of", "is below the minimum"), loc, where)]
    return [Problem(error.message, loc, where)]


def _type_hint(want: list[str], value) -> str | None:
    """What to write instead, for the two mistakes YAML 1.2 makes easy."""
    if "integer" in want and isinstance(value, float) and value.is_integer():
        return f"write it as a whole number: {int(value)}" if abs(value) < 1e16 else None
    if "boolean" in want and isinstance(value, str) and value.lower() in ("yes", "no", "on", "off", "y", "n"):
        return "YAML 1.2 reads yes/no/on/off as text: write true or false"
    return None


def _show(value) -> str:
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if value is None:
        return "nothing (null)"
    return f"{type(value).__name__.replace('str', 'string').replace('bool', 'boolean')} {json.dumps(value)}"


def schema_text() -> str:
    return json.dumps(build_schema(), indent=2, sort_keys=False) + "\n"


if __name__ == "__main__":
    SCHEMA_PATH.parent.mkdir(exist_ok=True)
    SCHEMA_PATH.write_text(schema_text())
    print(f"wrote {SCHEMA_PATH}", file=sys.stderr)
