"""Stage 3: lower a schema-valid document to the IR.

Expands blocks (with typed, defaulted parameters), `repeat`, `residual`,
`when` conditions and variables; resolves every name a node refers to; gives
each node a qualified name that is its module path, and records each use of a
block as an `Instance` over its nodes. Problems are collected, each at the line
of the value that causes it, and raised together.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable

import sympy

from ..core import dims as D
from ..core.errors import DlspecError, Loc, Problem, did_you_mean, format_path, unquoted_comma
from ..core.expr import ExprError, evaluate, is_expression
from ..core.ir import Graph, Instance, Node, TensorType, Value
from ..core.layers import REGISTRY, Attr, LayerKind, kind_hint
from ..core.names import MODULE_ATTRIBUTES
from .document import Document, load_document

NODE_KEYS = ("id", "op", "from", "when", "repeat", "checkpoint", "trainable", "init", "tie", "outputs")
PARAM_TYPES = {"int": int, "float": float, "bool": bool, "str": str}
MAX_BLOCK_DEPTH = 32
MAX_NODES = 100_000
STDLIB = Path(__file__).resolve().parents[1] / "stdlib"


@lru_cache(maxsize=1)
def standard_blocks() -> dict[str, tuple[dict, tuple, Document]]:
    """The blocks that ship with dlspec, written in the spec language (dlspec/stdlib/*.yaml)."""
    out = {}
    for file in sorted(STDLIB.glob("*.yaml")):
        lib = load_document(file)
        for name, body in (lib.data.get("blocks") or {}).items():
            out[name] = (body, ("blocks", name), lib)
    return out


class _Fail(Exception):
    """Stops lowering one node after its problem was recorded."""


# The value of a node that failed: whatever depends on it fails silently (its cause is already reported).
_FAILED = ("<failed>",)


@dataclass
class _Scope:
    prefix: str  # qualified-name prefix: "" at top level, "h.3." inside a block instance
    env: dict  # variables or block parameters
    locate: Callable[[tuple], Loc | None]
    key_locate: Callable[[tuple], Loc | None]
    names: dict[str, tuple[str, ...]] = field(default_factory=dict)  # local name -> value names
    counters: dict[str, int] = field(default_factory=dict)
    region: str | None = None
    trainable: bool = True
    init: tuple = ()
    context: str = ""
    depth: int = 0


@dataclass
class _Lowering:
    doc: Document
    blocks: dict[str, tuple[dict, tuple, Document]]
    problems: list[Problem] = field(default_factory=list)
    nodes: list[Node] = field(default_factory=list)
    instances: list[Instance | None] = field(default_factory=list)  # None: an instance still being lowered
    producer: dict[str, str] = field(default_factory=dict)  # value name -> node name
    node_names: set[str] = field(default_factory=set)
    copies: int = 0  # repeat copies lowered, bounded like nodes: copies of an empty block make no node

    def fail(self, message: str, loc: Loc | None, path: tuple = (), expected: str | None = None,
             hint: str | None = None, scope: _Scope | None = None) -> _Fail:
        if scope is not None and scope.context:
            message = f"{message} ({scope.context})"
        self.problems.append(Problem(message, loc, format_path(path), expected, hint))
        return _Fail()


def lower(doc: Document) -> Graph:
    graph, problems = lower_draft(doc)
    if problems:
        raise DlspecError(problems)
    return graph


def lower_draft(doc: Document) -> tuple[Graph, list[Problem]]:
    """The graph of what lowers, and the problems of what does not (a picture of a spec that fails draws it)."""
    data = doc.data
    model = data["model"]
    blocks = dict(standard_blocks())
    for name, body in (data.get("blocks") or {}).items():
        blocks[name] = (body, ("blocks", name), doc)
    low = _Lowering(doc, blocks)
    env = _resolve_vars(low, model.get("vars") or {})
    top = _Scope("", env, doc.locate, lambda p: doc.locate(p, key=True))
    if "init" in model:
        top.init = _parse_init(model["init"])

    inputs = []
    for name, decl in (model.get("inputs") or {}).items():
        path = ("model", "inputs", name)
        shape = []
        for i, raw in enumerate(decl["shape"]):
            try:
                shape.append(_dim(raw, env))
            except ExprError as exc:
                low.fail(f"input '{name}' dim {i}: {exc}", doc.locate(path + ("shape", i)), path + ("shape", i))
                shape.append(1)
        rng = tuple(decl["range"]) if "range" in decl else None
        inputs.append(Value(name, TensorType(tuple(shape), decl.get("dtype", "float32")), doc.locate(path), rng))
        top.names[name] = (name,)

    first = (inputs[0].name,) if len(inputs) == 1 else None
    last = _lower_list(low, top, model.get("layers") or [], ("model", "layers"), first)

    outputs, output_locs = [], []
    declared = model.get("outputs")
    if declared is None:
        if last == _FAILED:
            pass
        elif last is None or len(last) != 1:
            low.fail("the model's output is ambiguous", doc.locate(("model",)), ("model",),
                     hint="name the outputs: `outputs: {logits: head}`")
        else:
            outputs.append(("output", last[0]))
    else:
        for out_name, ref in declared.items():
            path = ("model", "outputs", out_name)
            try:
                outputs.append((out_name, _ref(low, top, ref, path)))
                output_locs.append((out_name, doc.locate(path)))
            except _Fail:
                pass
    return Graph(data.get("name", doc.path.stem), tuple(inputs), tuple(low.nodes), tuple(outputs), tuple(output_locs),
                 instances=tuple(i for i in low.instances if i is not None), init=top.init), low.problems


def _dim(raw, env: dict):
    if isinstance(raw, int):
        if raw < 1:
            raise ExprError(f"dims must be positive, got {raw}")
        return raw
    value = _symbolic(evaluate(str(raw), env, symbolic=True), raw)
    if isinstance(value, float):
        raise ExprError(f"dim '{raw}' is not an integer ({value})")
    return value


def _symbolic(value, raw):
    """A dim's value: a number or an expression of symbolic dims, never a text variable's text."""
    if not isinstance(value, (int, float, sympy.Basic)):
        raise ExprError(f"dim '{raw}' is {type(value).__name__} {str(value)[:40]!r}, not a number")
    return D.normalize(value)


def _resolve_vars(low: _Lowering, variables: dict) -> dict:
    """Evaluate variables in dependency order, so `d_ff: 4 * d_model` may come before `d_model`."""
    env: dict = {}
    pending = dict(variables)
    while pending:
        progress = False
        for name, raw in list(pending.items()):
            # a string is a formula when it computes something or names another variable; else it is text
            formula = isinstance(raw, str) and (is_expression(raw) or raw in variables)
            try:
                env[name] = evaluate(raw, env) if formula else raw
            except ExprError as exc:
                if exc.name in pending and exc.name != name:
                    continue  # depends on a variable not evaluated yet
                hint = did_you_mean(exc.name, list(variables)) if exc.name else None
                low.fail(f"variable '{name}': {exc}", low.doc.locate(("model", "vars", name)), ("model", "vars", name), hint=hint)
                env[name] = 0
            del pending[name]
            progress = True
        if not progress:
            names = ", ".join(sorted(pending))
            low.fail(f"variables refer to each other in a cycle: {names}", low.doc.locate(("model", "vars")), ("model", "vars"))
            break
    return env


def _lower_list(low: _Lowering, scope: _Scope, items: list, path: tuple, current: tuple | None) -> tuple | None:
    for i, item in enumerate(items):
        if len(low.nodes) > MAX_NODES:
            low.fail(f"the model expands to more than {MAX_NODES} nodes", scope.locate(path + (i,)), path + (i,))
            return None
        item = {"op": item} if isinstance(item, str) else item
        try:
            current = _lower_item(low, scope, item, path + (i,), current)
        except _Fail:
            current = _FAILED
            if "id" in item and str(item["id"]) not in scope.names:
                scope.names[str(item["id"])] = _FAILED
    return current


def _lower_item(low: _Lowering, scope: _Scope, item: dict, path: tuple, current: tuple | None) -> tuple | None:
    loc = scope.locate(path)
    op = item.get("op")
    if "when" in item and not _typed(low, scope, item["when"], bool, path + ("when",)):
        return current  # a node switched off by its condition passes its input through

    if op != "residual" and op not in REGISTRY and op not in low.blocks:
        raise low.fail(f"unknown layer kind '{op}'", scope.locate(path + ("op",)) or loc, path + ("op",),
                       hint=kind_hint(op, list(low.blocks) + ["residual"]), scope=scope)
    repeat = _typed(low, scope, item.get("repeat", 1), int, path + ("repeat",))
    if repeat < 1:
        raise low.fail(f"repeat must be at least 1, got {repeat}", scope.locate(path + ("repeat",)), path + ("repeat",))

    local_id = str(item["id"]) if "id" in item else _auto_id(scope, op)
    if local_id in MODULE_ATTRIBUTES:
        raise low.fail(f"id '{local_id}' is taken: every nn.Module has an attribute of that name",
                       scope.locate(path + ("id",)) or loc, path + ("id",),
                       hint="choose another id (it becomes a module name and state-dict key)", scope=scope)
    if local_id in scope.names:
        raise low.fail(f"duplicate id '{local_id}'", scope.locate(path + ("id",)) or loc, path + ("id",),
                       hint="ids must be unique within the model or block", scope=scope)
    if "from" in item:
        refs = item["from"] if isinstance(item["from"], list) else [item["from"]]
        inputs = tuple(_ref(low, scope, r, path + ("from",)) for r in refs)
    else:
        if current == _FAILED:
            raise _Fail()
        if current is None:
            raise low.fail(f"'{local_id}' has no input", loc, path,
                           hint="say where its input comes from with `from:` "
                                "(the model has several inputs, or this node follows a failed one)",
                           scope=scope)
        if len(current) != 1:
            raise low.fail(f"the node before '{local_id}' has {len(current)} outputs", loc, path,
                           hint="pick one with `from: name.0`, or name them with `outputs: [a, b]`", scope=scope)
        inputs = current

    # A node that says `repeat:` gets numbered copies (id.0, id.1, ...) and the index `i` whatever the count,
    # so overriding `repeat: 3` with 1 keeps its state-dict keys and expressions valid.
    repeated = "repeat" in item
    outs: tuple = inputs
    for r in range(repeat):
        low.copies += 1
        if len(low.nodes) > MAX_NODES or low.copies > MAX_NODES:
            raise low.fail(f"the model expands to more than {MAX_NODES} nodes (repeat: {repeat})",
                           scope.locate(path + ("repeat",)) or loc, path + ("repeat",), scope=scope)
        name = scope.prefix + local_id + (f".{r}" if repeated else "")
        if r and len(outs) != 1:
            raise low.fail(f"repeat needs a single output to chain, '{local_id}' has {len(outs)}", loc, path)
        # each copy takes the previous copy's output as its first input; other inputs (a mask) are shared
        copy_inputs = inputs if r == 0 else outs + inputs[1:]
        # inside a repeated node, `i` is the copy's index: `stride: "2 if i == 0 else 1"`
        copy_scope = replace(scope, env={**scope.env, "i": r}) if repeated else scope
        if op == "residual":
            outs = _lower_residual(low, copy_scope, item, path, name, copy_inputs)
        elif op in REGISTRY:
            outs = _lower_layer(low, copy_scope, item, path, name, REGISTRY[op], copy_inputs)
        else:
            outs = _lower_block(low, copy_scope, item, path, name, op, copy_inputs)
    scope.names[local_id] = outs
    named = item.get("outputs")
    if named:
        if len(named) != len(outs):
            raise low.fail(f"'{local_id}' has {len(outs)} outputs but {len(named)} names are given",
                           scope.locate(path + ("outputs",)),
                           path + ("outputs",), scope=scope)
        for alias, value in zip(named, outs):
            scope.names[alias] = (value,)
    return outs


def _auto_id(scope: _Scope, op: str) -> str:
    while True:
        k = scope.counters.get(op, 0)
        scope.counters[op] = k + 1
        if f"{op}_{k}" not in scope.names:
            return f"{op}_{k}"


def _ref(low: _Lowering, scope: _Scope, ref: Any, path: tuple) -> str:
    loc = scope.locate(path)
    if isinstance(ref, int) and not isinstance(ref, bool):
        ref = str(ref)  # `from: 0` names the node whose id is 0
    if not isinstance(ref, str):
        raise low.fail(f"expected a node name, got {ref!r}", loc, path)
    if ref in scope.names:
        values = scope.names[ref]
        if values == _FAILED:
            raise _Fail()
        if not values:
            raise low.fail(f"block input '{ref}' was not passed", loc, path, hint="pass it in the block's `from:`", scope=scope)
        if len(values) != 1:
            raise low.fail(f"'{ref}' has {len(values)} outputs; pick one", loc, path,
                           hint=f"write '{ref}.0' .. '{ref}.{len(values) - 1}', or name them with `outputs:`", scope=scope)
        return values[0]
    base, _, index = ref.rpartition(".")
    if base in scope.names and index.isdigit() and int(index) < len(scope.names[base]):
        return scope.names[base][int(index)]
    raise low.fail(f"unknown name '{ref}'", loc, path, expected="an input or an earlier node's id",
                   hint=did_you_mean(ref, list(scope.names)) or f"known here: {', '.join(list(scope.names)[-8:])}", scope=scope)


def _typed(low: _Lowering, scope: _Scope, raw: Any, kind: type, path: tuple, minimum: float | None = None):
    """Resolve a literal or expression to a value of `kind` (int, float, bool, str)."""
    loc = scope.locate(path)
    value = raw
    if isinstance(raw, str) and kind is not str:
        try:
            value = evaluate(raw, scope.env)
        except ExprError as exc:
            hint = did_you_mean(exc.name, list(scope.env)) if exc.name else None
            raise low.fail(str(exc), loc, path, hint=hint, scope=scope) from None
    elif isinstance(raw, str) and raw in scope.env and isinstance(scope.env[raw], str):
        value = scope.env[raw]
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if kind is int and isinstance(value, float) and value.is_integer():
        value = int(value)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        shown = f"'{raw}' = {value!r}" if isinstance(raw, str) and raw != value else repr(value)
        raise low.fail(f"expected {kind.__name__}, got {shown}", loc, path, expected=kind.__name__, scope=scope)
    if minimum is not None and value < minimum:
        raise low.fail(f"must be at least {minimum:g}, got {value}", loc, path, scope=scope)
    return value


def _attr_value(low: _Lowering, scope: _Scope, attr: Attr, raw: Any, path: tuple):
    if raw is None:
        return None
    t = attr.type
    if t in ("int", "float", "bool"):
        return _typed(low, scope, raw, PARAM_TYPES[t], path, attr.minimum)
    if t == "str":
        value = _typed(low, scope, raw, str, path)
        if attr.choices and value not in attr.choices:
            raise low.fail(f"'{value}' is not one of {', '.join(attr.choices)}", scope.locate(path), path,
                           hint=did_you_mean(value, attr.choices), scope=scope)
        return value
    if t == "flags" and isinstance(raw, list):
        for i, value in enumerate(raw):
            if value not in attr.choices:
                raise low.fail(f"'{value}' is not one of {', '.join(attr.choices)}", scope.locate(path + (i,)),
                               path + (i,), hint=did_you_mean(str(value), attr.choices), scope=scope)
        return tuple(dict.fromkeys(raw))
    if t == "flags":
        return _typed(low, scope, raw, bool, path)
    if t == "padding" and raw in ("same", "valid"):
        return raw
    if t in ("ints", "padding"):
        if isinstance(raw, list):
            return [_typed(low, scope, v, int, path + (i,)) for i, v in enumerate(raw)]
        if isinstance(raw, str) and not (is_expression(raw) or raw in scope.env):
            raise low.fail(f"expected an int or a list of ints, got '{raw}'", scope.locate(path), path, scope=scope)
        return _typed(low, scope, raw, int, path)
    if t == "dims":
        out = []
        for i, v in enumerate(raw if isinstance(raw, list) else [raw]):
            try:
                out.append(v if isinstance(v, int) else _symbolic(evaluate(str(v), scope.env, symbolic=True), v))
            except ExprError as exc:
                raise low.fail(str(exc), scope.locate(path + (i,)), path + (i,), scope=scope) from None
        return out
    if t == "struct":
        return _struct_value(low, scope, attr, raw, path)
    return raw  # refs are resolved by the caller


def _struct_value(low: _Lowering, scope: _Scope, attr: Attr, raw: Any, path: tuple) -> dict:
    """A struct attribute (`rope: {theta: rope_theta}`): each field resolved like an attribute, defaults filled in."""
    if not isinstance(raw, dict):
        raise low.fail(f"expected a mapping of {', '.join(f.name for f in attr.fields)}, got {raw!r}",
                       scope.locate(path), path, scope=scope)
    for key in raw:
        if attr.fields and key not in {f.name for f in attr.fields}:
            raise low.fail(f"unknown field '{key}' in {attr.name}", scope.key_locate(path + (key,)), path + (key,),
                           expected=", ".join(f.name for f in attr.fields),
                           hint=did_you_mean(key, [f.name for f in attr.fields]), scope=scope)
    out = {}
    for sub in attr.fields:
        if sub.name in raw:
            out[sub.name] = _attr_value(low, scope, sub, raw[sub.name], path + (sub.name,))
        elif sub.required:
            raise low.fail(f"{attr.name} needs '{sub.name}' ({sub.doc})", scope.locate(path), path, scope=scope)
        else:
            out[sub.name] = sub.default
    return out


def _lower_layer(low: _Lowering, scope: _Scope, item: dict, path: tuple, name: str, kind: LayerKind,
                 inputs: tuple) -> tuple:
    attrs, attr_locs, refs = {}, [], []
    allowed = set(NODE_KEYS) | {a.name for a in kind.attrs}
    for key in item:
        if key not in allowed:
            raise low.fail(f"unknown attribute '{key}' for {kind.name}", scope.key_locate(path + (key,)), path + (key,),
                           expected=", ".join(a.name for a in kind.attrs) or "no attributes",
                           hint=did_you_mean(key, sorted(allowed)), scope=scope)
    failed = False
    for attr in kind.attrs:
        apath = path + (attr.name,)
        if attr.name not in item:
            if attr.required:
                low.fail(f"{kind.name} '{name}' needs '{attr.name}' ({attr.doc})", scope.locate(path), path, scope=scope)
                failed = True
            attrs[attr.name] = None if attr.required else attr.default
            continue
        attr_locs.append((attr.name, scope.locate(apath)))
        try:
            attrs[attr.name] = _attr_value(low, scope, attr, item[attr.name], apath)
        except _Fail:
            failed = True
            continue
        if attr.type == "ref" and scope.names.get(str(item[attr.name]), None) == ():
            attrs[attr.name] = None  # refers to a block input that was not passed
        elif attr.type == "ref" and item[attr.name] is not None:
            try:
                refs.append(_ref(low, scope, item[attr.name], apath))
            except _Fail:
                failed = True
    low_n, high_n = kind.arity
    if not (low_n <= len(inputs) and (high_n is None or len(inputs) <= high_n)):
        want = f"{low_n}" if low_n == high_n else f"at least {low_n}" if high_n is None else f"{low_n} to {high_n}"
        low.fail(f"{kind.name} takes {want} input(s), got {len(inputs)}", scope.locate(path + ("from",)) or scope.locate(path),
                 path + ("from",), scope=scope)
        failed = True
    if failed:
        raise _Fail()
    count = kind.outputs(attrs)
    outputs = (name,) if count == 1 else tuple(f"{name}.{k}" for k in range(count))
    ties = []
    for param, target in (item.get("tie") or {}).items():
        base, _, tparam = str(target).partition(":")
        value = _ref(low, scope, base, path + ("tie", param))
        ties.append((param, low.producer.get(value, value), tparam or param))
    node = Node(
        name=name, op=kind.name, attrs=tuple(attrs.items()), inputs=tuple(inputs) + tuple(refs), outputs=outputs,
        loc=scope.locate(path), context=scope.context, attr_locs=tuple(attr_locs), ties=tuple(ties),
        **_inherited(scope, item, name))
    if name in low.node_names:
        raise low.fail(f"two nodes are both named '{name}'", node.loc, path, hint="give one of them another id", scope=scope)
    low.node_names.add(name)
    low.nodes.append(node)
    for v in outputs:
        low.producer[v] = name
    return outputs


def _lower_residual(low: _Lowering, scope: _Scope, item: dict, path: tuple, name: str, inputs: tuple) -> tuple:
    if len(inputs) != 1:
        raise low.fail(f"a residual takes one input, got {len(inputs)}", scope.locate(path), path, scope=scope)
    # its branches are lowered into the same namespace, with the residual's checkpoint, trainable and init
    inner = replace(scope, **_inherited(scope, item, name))
    body = _lower_list(low, inner, item.get("body") or [], path + ("body",), inputs)
    short = _lower_list(low, inner, item["shortcut"], path + ("shortcut",), inputs) if item.get("shortcut") else inputs
    if body in (None, _FAILED) or short in (None, _FAILED):
        raise _Fail()
    return _lower_layer(low, inner, {"op": "add"}, path, name, REGISTRY["add"], short + body)


def _inherited(scope: _Scope, item: dict, name: str) -> dict:
    """What the nodes inside a block instance or residual inherit from it: a checkpointed region (an enclosing
    one wins), freezing, and init schemes (its own before those in force around it)."""
    return {"region": scope.region or (name if item.get("checkpoint") else None),
            "trainable": scope.trainable and item.get("trainable", True),
            "init": _parse_init(item["init"]) + scope.init if "init" in item else scope.init}


def _lower_block(low: _Lowering, scope: _Scope, item: dict, path: tuple, name: str, op: str, inputs: tuple) -> tuple:
    body, bpath, bdoc = low.blocks[op]
    loc = scope.locate(path)
    if scope.depth >= MAX_BLOCK_DEPTH:
        raise low.fail(f"blocks nest deeper than {MAX_BLOCK_DEPTH} levels (does '{op}' use itself?)", loc, path, scope=scope)
    params = body.get("params") or {}
    args = {k: v for k, v in item.items() if k not in NODE_KEYS}
    for key in args:
        if key not in params:
            raise low.fail(f"block '{op}' has no parameter '{key}'", scope.key_locate(path + (key,)), path + (key,),
                           expected=", ".join(params) or "no parameters",
                           hint=unquoted_comma(item, key) or did_you_mean(key, list(params)), scope=scope)
    block_locate = bdoc.locate
    env: dict = {}
    arg_scope = scope
    for pname, pdecl in params.items():
        ptype, default = (pdecl, None) if isinstance(pdecl, str) else (pdecl.get("type", "int"), pdecl.get("default"))
        kind = PARAM_TYPES[ptype]
        if pname in args:
            env[pname] = _typed(low, arg_scope, args[pname], kind, path + (pname,))
        elif default is not None:
            default_scope = _Scope(name + ".", env, block_locate, lambda p: bdoc.locate(p, key=True), context=scope.context)
            env[pname] = _typed(low, default_scope, default, kind, bpath + ("params", pname, "default"))
        else:
            raise low.fail(f"block '{op}' needs parameter '{pname}' ({ptype})", loc, path,
                           hint=f"add `{pname}: ...` to this node", scope=scope)
    block_inputs = body.get("inputs") or ["x"]
    if not 1 <= len(inputs) <= len(block_inputs):
        raise low.fail(f"block '{op}' takes up to {len(block_inputs)} input(s) ({', '.join(block_inputs)}), got {len(inputs)}",
                       scope.locate(path + ("from",)) or loc, path + ("from",), scope=scope)
    # inputs not passed are absent: an attribute referring to one (a mask, a memory) is as if unset
    passed = {b: (v,) for b, v in zip(block_inputs, inputs)}
    passed.update({b: () for b in block_inputs[len(inputs):]})
    where = f"{loc}" if loc else op
    child = _Scope(
        prefix=name + ".", env=env, locate=block_locate, key_locate=lambda p: bdoc.locate(p, key=True),
        names=passed, **_inherited(scope, item, name),
        context=f"in {name}, a {op} block used at {where}" + (f"; {scope.context}" if scope.context else ""),
        depth=scope.depth + 1)
    slot, start = len(low.instances), len(low.nodes)
    low.instances.append(None)  # outer instances come before the ones inside them
    last = _lower_list(low, child, body.get("layers") or [], bpath + ("layers",), (inputs[0],))
    declared = body.get("outputs")
    if declared:
        outputs = tuple(_ref(low, child, ref, bpath + ("outputs", i)) for i, ref in enumerate(declared))
    elif last in (None, _FAILED):
        raise _Fail()
    else:
        outputs = last
    low.instances[slot] = Instance(
        name=name, block=op, params=tuple(env.items()), input_names=tuple(block_inputs[:len(inputs)]),
        inputs=tuple(inputs), outputs=outputs, nodes=range(start, len(low.nodes)), loc=loc,
        checkpoint=child.region == name, init=child.init)
    return outputs


def _parse_init(raw) -> tuple[tuple[str, dict], ...]:
    """`init:` as (selector, scheme) pairs; selector '*weight' = every weight matrix/kernel, '*bias' = every bias."""
    if isinstance(raw, str) or (isinstance(raw, dict) and "scheme" in raw):
        return (("*weight", _scheme(raw)),)
    out = []
    for param, scheme in raw.items():
        out.append(({"weight": "*weight", "bias": "*bias"}.get(param, param), _scheme(scheme)))
    return tuple(out)


def _scheme(raw) -> dict:
    return {"scheme": raw} if isinstance(raw, str) else dict(raw)
