"""`dlspec diff A B`: what changed between two specs (or two git revisions of one: `spec.yaml@HEAD~1`), and
whether A's checkpoint loads into B.

Nodes are matched by their qualified id; a block instance that is new (or gone) as a whole is one entry, and
copies of a repeat are folded into one (`h.12–h.23  gpt_block ×12`). A node that disappears while one with the
same op and attributes appears in its place is reported as renamed. The checkpoint verdict compares the
state dicts of both models built on the meta device: the keys and shapes `load_state_dict` checks.
"""
from __future__ import annotations

import json
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from dlspec.backend.summary import human
from dlspec.core.errors import DlspecError
from dlspec.core.ir import Instance, Node
from dlspec.front.document import MAX_BYTES

GIT_TIMEOUT_S = 30


@dataclass(frozen=True)
class Side:
    """One spec as the diff sees it."""
    label: str  # as given on the command line
    spec: Any  # a dlspec Spec
    rows: dict[str, dict]  # node id -> its summary row (params, macs, shape)
    state: dict[str, tuple[int, ...]]  # state-dict key -> shape
    macs: int

    @property
    def nodes(self) -> dict[str, Node]:
        return {n.name: n for n in self.spec.graph.nodes}

    @property
    def instances(self) -> dict[str, Instance]:
        return {i.name: i for i in self.spec.graph.instances}


def side(arg: str, overrides: Iterable[str] = ()) -> Side:
    from dlspec.backend.builder import build
    from dlspec.backend.summary import summarize
    from dlspec.front.spec import load
    path, read = source(arg)
    spec = load(path, overrides, read)
    summary = summarize(spec)
    state = {k: tuple(v.shape) for k, v in build(spec, device="meta").state_dict().items()}
    return Side(arg, spec, {r["id"]: r for r in summary["nodes"]}, state, summary["macs_per_example"])


def source(arg: str):
    """A spec file as given, or `FILE@REV`: the file at a git revision (read with its includes through git)."""
    path = Path(arg)
    if path.exists() or "@" not in arg:
        return path, None
    file, _, rev = arg.rpartition("@")
    path = Path(file)
    if not rev or rev.startswith("-"):
        raise DlspecError.single(f"'{arg}': no git revision after '@'", usage=True, hint="e.g. specs/model.yaml@HEAD~1")
    folder = path.parent if str(path.parent) else Path(".")
    root = _git(["rev-parse", "--show-toplevel"], folder, f"{folder} is not in a git repository").decode().strip()
    top = Path(root).resolve()

    def read(file_path: Path) -> bytes:
        try:
            relative = file_path.resolve().relative_to(top).as_posix()
        except ValueError:
            raise DlspecError.single(f"{file_path} is outside the git repository {top}", usage=True) from None
        data = _git(["show", f"{rev}:{relative}"], top, f"{relative} is not in git revision {rev}")
        if len(data) > MAX_BYTES:
            raise DlspecError.single(f"{relative}@{rev} is {len(data):,} bytes; specs are limited to {MAX_BYTES:,} bytes")
        return data

    return path, read


def _git(args: list[str], cwd: Path, failure: str) -> bytes:
    try:
        done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, timeout=GIT_TIMEOUT_S)
    except FileNotFoundError:
        raise DlspecError.single("git is not installed: FILE@REV needs it", usage=True) from None
    except (subprocess.TimeoutExpired, NotADirectoryError):
        raise DlspecError.single(failure, usage=True) from None
    if done.returncode != 0:
        why = done.stderr.decode(errors="replace").strip().splitlines()
        raise DlspecError.single(f"{failure}: {why[-1][:200] if why else 'git failed'}", usage=True,
                                 hint="a revision is anything `git show REV:FILE` takes: HEAD~1, a tag, a branch")
    return done.stdout


# ---- comparing -----------------------------------------------------------------------------------------------

def compare(a: Side, b: Side) -> dict[str, Any]:
    """Everything that differs, as plain data (what --json prints)."""
    na, nb, ia, ib = a.nodes, b.nodes, a.instances, b.instances
    gone = _outermost([i for name, i in ia.items() if name not in ib and name not in nb])
    new = _outermost([i for name, i in ib.items() if name not in ia and name not in na])
    in_gone = {n for inst in gone for n in _body(a, inst)}
    in_new = {n for inst in new for n in _body(b, inst)}
    removed = [n for n in na if n not in nb and n not in in_gone]
    added = [n for n in nb if n not in na and n not in in_new]
    renamed = _renamed(removed, added, na, nb)
    removed = [n for n in removed if n not in renamed]
    added = [n for n in added if n not in renamed.values()]
    to_b = {**renamed}
    changed = []
    for name, node in na.items():
        other = nb.get(renamed.get(name, name))
        if other is None:
            continue
        changes = _changes(node, other, to_b, a.rows[name], b.rows[other.name])
        if changes:
            changed.append({"node": other.name, "op": other.op, "changes": changes,
                            "params": [a.rows[name]["params"], b.rows[other.name]["params"]],
                            "macs": [a.rows[name]["macs"], b.rows[other.name]["macs"]]})
    pa, pb = sum(r["params"] for r in a.rows.values()), sum(r["params"] for r in b.rows.values())
    return {
        "a": _about(a), "b": _about(b), "same_model": a.spec.spec_hash == b.spec.spec_hash,
        "settings": _settings(a.spec.document, b.spec.document),
        "blocks": {"added": [_instance(b, i) for i in new], "removed": [_instance(a, i) for i in gone]},
        "nodes": {"added": [_node(b, n) for n in added], "removed": [_node(a, n) for n in removed],
                  "renamed": [{"from": k, "to": v, "op": na[k].op} for k, v in renamed.items()], "changed": changed},
        "params": {"a": pa, "b": pb, "delta": pb - pa},
        "macs_per_example": {"a": a.macs, "b": b.macs, "delta": b.macs - a.macs,
                             "sizes": {"a": _sizes(a.spec), "b": _sizes(b.spec)}},
        "signature": _signature(a.spec, b.spec),
        "checkpoint": _checkpoint(a, b, renamed),
    }


def _about(s: Side) -> dict:
    return {"spec": s.label, "name": s.spec.name, "spec_hash": s.spec.spec_hash}


def _body(s: Side, inst: Instance) -> list[str]:
    return [s.spec.graph.nodes[i].name for i in inst.nodes]


def _outermost(instances: list[Instance]) -> list[Instance]:
    names = {i.name for i in instances}
    return [i for i in instances if not any(i.name.startswith(other + ".") for other in names)]


def _instance(s: Side, inst: Instance) -> dict:
    body = _body(s, inst)
    return {"name": inst.name, "block": inst.block, "params": sum(s.rows[n]["params"] for n in body),
            "macs": sum(s.rows[n]["macs"] for n in body)}


def _node(s: Side, name: str) -> dict:
    row = s.rows[name]
    return {"name": name, "op": row["op"], "shape": row["shape"], "params": row["params"], "macs": row["macs"]}


def _renamed(removed: list[str], added: list[str], na: dict[str, Node], nb: dict[str, Node]) -> dict[str, str]:
    """Removed nodes paired, in order, with added ones of the same op and attributes."""
    pairs, free = {}, list(added)
    for name in removed:
        match = next((other for other in free if nb[other].op == na[name].op and _attrs(nb[other]) == _attrs(na[name])),
                     None)
        if match is not None:
            pairs[name] = match
            free.remove(match)
    return pairs


def _attrs(node: Node) -> dict[str, str]:
    return {k: str(v) for k, v in node.attrs}


def _changes(a: Node, b: Node, to_b: dict[str, str], row_a: dict, row_b: dict) -> list[str]:
    """What differs between a node and its counterpart: op, attributes (old -> new), shape, wiring, training."""
    out = [f"op {a.op} -> {b.op}"] if a.op != b.op else []
    attrs_a, attrs_b = _attrs(a), _attrs(b)
    out += [f"{k} {attrs_a.get(k, '(none)')} -> {attrs_b.get(k, '(none)')}"
            for k in dict.fromkeys([*attrs_a, *attrs_b]) if attrs_a.get(k) != attrs_b.get(k)]
    if row_a["shape"] != row_b["shape"]:
        out.append(f"output {row_a['shape']} -> {row_b['shape']}")
    inputs_a = [to_b.get(v, v) for v in a.inputs]
    if inputs_a != list(b.inputs):
        out.append(f"inputs {', '.join(a.inputs)} -> {', '.join(b.inputs)}")
    if a.trainable != b.trainable:
        out.append("frozen" if not b.trainable else "no longer frozen")
    if a.ties != b.ties:
        out.append(f"ties {_ties(a)} -> {_ties(b)}")
    if a.init != b.init or a.region != b.region:
        out.append("init or checkpointing changed")
    return out


def _ties(node: Node) -> str:
    return ", ".join(f"{p}={t}.{tp}" for p, t, tp in node.ties) or "(none)"


def _settings(a: dict, b: dict) -> list[dict]:
    """Changed values outside the layers: vars, dims, inputs, outputs, and the training and export sections."""
    def flat(doc: dict) -> dict[str, Any]:
        model = doc.get("model") or {}
        parts = {f"model.{k}": model.get(k) for k in ("vars", "dims", "inputs", "outputs")}
        parts.update(training=doc.get("training"), export=doc.get("export"))
        return dict(item for key, value in parts.items() for item in _flatten(value, key))
    fa, fb = flat(a), flat(b)
    return [{"key": k, "from": fa.get(k), "to": fb.get(k)} for k in dict.fromkeys([*fa, *fb]) if fa.get(k) != fb.get(k)]


def _flatten(value: Any, prefix: str) -> list[tuple[str, Any]]:
    if isinstance(value, dict) and value:
        return [item for k, v in value.items() for item in _flatten(v, f"{prefix}.{k}")]
    return [] if value is None else [(prefix, value)]


def _sizes(spec) -> dict[str, int]:
    return {**spec.example_sizes(), **({spec.batch_dim: 1} if spec.batch_dim else {})}


def _signature(a, b) -> dict[str, Any]:
    def tensors(xs) -> dict[str, str]:
        return {t.name: f"[{', '.join(map(str, t.shape))}] {t.dtype}" for t in xs}

    def compared(old: dict[str, str], new: dict[str, str]) -> dict[str, list]:
        return {"added": [{"name": k, "type": v} for k, v in new.items() if k not in old],
                "removed": [{"name": k, "type": v} for k, v in old.items() if k not in new],
                "changed": [{"name": k, "from": old[k], "to": new[k]} for k in old if k in new and old[k] != new[k]]}

    inputs, outputs = compared(tensors(a.inputs), tensors(b.inputs)), compared(tensors(a.outputs), tensors(b.outputs))
    dims = compared({n: _dim(d) for n, d in a.dims.items()}, {n: _dim(d) for n, d in b.dims.items()})
    return {"same": not any(v for part in (inputs, outputs, dims) for v in part.values()), "inputs": inputs,
            "outputs": outputs, "dims": dims}


def _dim(d) -> str:
    return f"{d.min}..{d.max if d.max is not None else ''}" + (f" multiple of {d.multiple_of}" if d.multiple_of > 1 else "")


def _checkpoint(a: Side, b: Side, renamed: dict[str, str]) -> dict[str, Any]:
    """Whether `load_state_dict(A's weights)` works on B: the tensors carried over, new, unused and reshaped."""
    carried = [k for k, shape in b.state.items() if a.state.get(k) == shape]
    reshaped = [{"key": k, "from": list(a.state[k]), "to": list(shape)} for k, shape in b.state.items()
                if k in a.state and a.state[k] != shape]
    new = [k for k in b.state if k not in a.state]
    unused = [k for k in a.state if k not in b.state]
    moved = [{"from": k, "to": renamed[node] + k[len(node):]} for k in unused for node in renamed
             if k.startswith(node + ".") and b.state.get(renamed[node] + k[len(node):]) == a.state[k]]
    if reshaped:
        verdict = f"does not load: {len(reshaped)} tensor{'s' * (len(reshaped) != 1)} changed shape"
    elif new or unused:
        verdict = "loads with strict=False only" + (f": {len(new)} new tensors keep their initial values" if new else "") \
            + (f"; {len(unused)} of A's tensors are unused" if unused else "")
    else:
        verdict = "loads as it is (strict)"
    return {"loads": "strict" if verdict.startswith("loads as") else "partial" if not reshaped else "no",
            "verdict": verdict, "carried": carried, "new": new, "unused": unused, "reshaped": reshaped, "renamed": moved}


# ---- the text report -----------------------------------------------------------------------------------------

def report(d: dict, a: Side, b: Side) -> str:
    lines = [f"a: {d['a']['spec']}  ({d['a']['name']}, spec {d['a']['spec_hash'][:12]})",
             f"b: {d['b']['spec']}  ({d['b']['name']}, spec {d['b']['spec_hash'][:12]})",
             "same model" if d["same_model"] else "different models"]
    if d["settings"]:
        width = max(len(s["key"]) for s in d["settings"])
        lines += ["", "settings"] + [f"  {s['key']:<{width}}  {_show(s['from'])} -> {_show(s['to'])}" for s in d["settings"]]
    items = _item_lines(d, a, b)
    if items:
        lines += ["", "blocks and nodes (+ added, - removed, ~ changed, > renamed)"] + items
    p, m = d["params"], d["macs_per_example"]
    sizes = m["sizes"]["b"] if m["sizes"]["a"] == m["sizes"]["b"] else None
    lines += ["", f"parameters       {p['a']:,} -> {p['b']:,}  ({_delta(p['delta'], p['a'])})",
              f"MACs / example   {human(m['a'])} -> {human(m['b'])}  ({_delta(m['delta'], m['a'], human=True)})"
              + (f"  at {', '.join(f'{k}={v}' for k, v in sizes.items())}" if sizes else "  (at each spec's example sizes)")]
    lines += ["", "signature" + (": unchanged" if d["signature"]["same"] else "")] + _signature_lines(d["signature"])
    c = d["checkpoint"]
    lines += ["", f"checkpoint of a into b: {c['verdict']}", f"  {'carried over':<14}{len(c['carried'])} tensors"]
    lines += _grouped("changed shape", [(r["key"], f"{r['from']} -> {r['to']}") for r in c["reshaped"]], len(c["reshaped"]))
    lines += _grouped("new", _under_blocks(c["new"], d["blocks"]["added"], b.state), len(c["new"]))
    lines += _grouped("unused", _under_blocks(c["unused"], d["blocks"]["removed"], a.state), len(c["unused"]))
    lines += [f"  renamed       {r['from']} -> {r['to']} (loads with a key map)" for r in c["renamed"]]
    return "\n".join(lines)


def _item_lines(d: dict, a: Side, b: Side) -> list[str]:
    rows = [("+", name, label, f"{_signed(params)} params") for name, label, params in _runs(d["blocks"]["added"])]
    rows += [("-", name, label, f"{_signed(-params)} params") for name, label, params in _runs(d["blocks"]["removed"])]
    rows += [("+", n["name"], n["op"], f"{n['shape']}; {_signed(n['params'])} params") for n in d["nodes"]["added"]]
    rows += [("-", n["name"], n["op"], f"{_signed(-n['params'])} params") for n in d["nodes"]["removed"]]
    rows += [(">", f"{r['from']} -> {r['to']}", r["op"], "") for r in d["nodes"]["renamed"]]
    for pattern, count, op, changes, delta in _folded(d["nodes"]["changed"]):
        name = f"{pattern} (×{count})" if count > 1 else pattern
        rows.append(("~", name, op, "; ".join(changes) + (f"; {_signed(delta)} params" if delta else "")))
    if not rows:
        return []
    width = [max(len(r[i]) for r in rows) for i in (1, 2)]
    return [f"  {mark} {name:<{width[0]}}  {op:<{width[1]}}  {text}".rstrip() for mark, name, op, text in rows]


def _runs(instances: list[dict]) -> list[tuple[str, str, int]]:
    """Added or removed block instances, consecutive copies of a repeat folded: (`h.12–h.23`, `gpt_block ×12`, params)."""
    out: list[list] = []
    for inst in instances:
        base, _, index = inst["name"].rpartition(".")
        last = out[-1] if out else None
        if last and index.isdigit() and last[0] == base and last[1] == inst["block"] and last[3] == int(index) - 1:
            last[3], last[4], last[5] = int(index), last[4] + 1, last[5] + inst["params"]
            last[6] = inst["name"]
        else:
            out.append([base, inst["block"], inst["name"], int(index) if index.isdigit() else -2, 1, inst["params"],
                        inst["name"]])
    return [(first if count == 1 else f"{first}–{final}", block if count == 1 else f"{block} ×{count}", params)
            for _, block, first, _, count, params, final in out]


def _folded(changed: list[dict]) -> list[tuple[str, int, str, list[str], int]]:
    """Changed nodes, copies with the same change folded: `h.*.attn` (×12)."""
    groups: dict[tuple, list[dict]] = {}
    for c in changed:
        key = (_pattern(c["node"]), c["op"], tuple(_pattern_text(x) for x in c["changes"]))
        groups.setdefault(key, []).append(c)
    return [(pattern if len(cs) > 1 else cs[0]["node"], len(cs), op,
             list(changes) if len(cs) > 1 else cs[0]["changes"], sum(c["params"][1] - c["params"][0] for c in cs))
            for (pattern, op, changes), cs in groups.items()]


_INDEX = re.compile(r"(?<=\.)\d+(?=\.|$)|^\d+(?=\.)")


def _pattern(name: str) -> str:
    return _INDEX.sub("*", name)


def _pattern_text(text: str) -> str:
    """A change as it reads for every copy (`inputs h.3.ln_1 -> ...` names the copy)."""
    return re.sub(r"\b(\w+)\.\d+\.", r"\1.*.", text) if text.startswith("inputs ") else text


def _under_blocks(keys: list[str], instances: list[dict], state: dict) -> list[tuple[str, str]]:
    """State-dict keys, those inside whole added or removed block instances counted per run of copies."""
    out, rest = [], list(keys)
    for name, label, _ in _runs(instances):
        first, _, final = name.partition("–")
        members = [i["name"] for i in instances if _in_run(i["name"], first, final or first)]
        inside = [k for k in rest if any(k.startswith(m + ".") for m in members)]
        if inside:
            out.append((name, f"{label}: {len(inside)} tensors"))
            rest = [k for k in rest if k not in inside]
    return out + [(k, str(list(state[k]))) for k in rest]


def _in_run(name: str, first: str, final: str) -> bool:
    base, _, index = name.rpartition(".")
    fb, _, fi = first.rpartition(".")
    lb, _, li = final.rpartition(".")
    if not (index.isdigit() and fi.isdigit() and li.isdigit()):
        return name == first
    return base == fb == lb and int(fi) <= int(index) <= int(li)


def _grouped(title: str, items: list[tuple[str, str]], count: int) -> list[str]:
    """`title  N tensors`, then one line per pattern of keys with the same text (copies folded)."""
    if not count:
        return []
    groups: dict[tuple[str, str], list[str]] = {}
    for key, text in items:
        groups.setdefault((_pattern(key), text), []).append(key)
    shown = [(f"{pattern} (×{len(keys)})" if len(keys) > 1 else keys[0], text) for (pattern, text), keys in groups.items()]
    width = max(len(key) for key, _ in shown)
    return [f"  {title:<14}{count} tensor{'s' * (count != 1)}"] + [f"      {key:<{width}}  {text}" for key, text in shown]


def _signature_lines(sig: dict) -> list[str]:
    lines = []
    for part in ("inputs", "outputs", "dims"):
        what = part[:-1] if part != "dims" else "dim"
        lines += [f"  + {what} {x['name']} {x['type']}" for x in sig[part]["added"]]
        lines += [f"  - {what} {x['name']} {x['type']}" for x in sig[part]["removed"]]
        lines += [f"  ~ {what} {x['name']}: {x['from']} -> {x['to']}" for x in sig[part]["changed"]]
    return lines


def _show(value: Any) -> str:
    return "(none)" if value is None else json.dumps(value) if isinstance(value, (dict, list, str)) else str(value)


def _signed(n: int) -> str:
    return f"+{human(n)}" if n >= 0 else f"-{human(-n)}"


def _delta(delta: int, base: int, human: bool = False) -> str:
    text = _signed(delta) if human else f"{delta:+,}"
    return text + (f", {delta / base:+.1%}" if base else "")


# ---- the command ---------------------------------------------------------------------------------------------

def add_arguments(p) -> None:
    p.add_argument("a", metavar="A", help="a spec file, or FILE@REV for a git revision of it (specs/gpt.yaml@HEAD~1)")
    p.add_argument("b", metavar="B", help="the spec to compare it with (also FILE@REV)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a value in both specs (repeatable)")
    p.add_argument("--json", action="store_true", help="print the differences as one JSON object")


def run(args) -> int:
    a, b = side(args.a, args.overrides), side(args.b, args.overrides)
    d = compare(a, b)
    print(json.dumps(d, indent=2) if args.json else report(d, a, b))
    return 0 if d["same_model"] else 1
