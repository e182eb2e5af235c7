"""Stage 1: read a spec file safely into plain data with a location for every value.

YAML is untrusted input. Before composing we walk the event stream (PyYAML's
parser is iterative) and refuse documents that nest too deep or whose aliases
expand past a bound, so an alias bomb or 20,000-deep nesting costs
milliseconds. Scalars are built only for the core schema tags; any other tag
(`!!python/object`, `!custom`) is an error naming its line.

Plain scalars are resolved by YAML 1.2's core schema, which is what people write: `3e-4`, `1e-5` and `.5`
are numbers (YAML 1.1 wants `3.0e-4`), while `yes`, `no`, `on`, `off`, `017`-as-octal and `1:30`-as-base-60
stay as written. `_` may group digits (`50_000`), as in Python.
"""
from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import yaml
from yaml import events, nodes

from ..core.errors import DlspecError, Loc, Problem, format_path, shorten
from ..core.reading import decode_utf8, looks_utf16, read_bytes

MAX_BYTES = 8 * 1024 * 1024
MAX_DEPTH = 64
MAX_EXPANDED_NODES = 200_000

_CORE = "tag:yaml.org,2002:"
# YAML 1.2 core schema (https://yaml.org/spec/1.2.2/#1032-tag-resolution), plus `_` between digits
_YAML12 = (
    ("null", r"~|null|Null|NULL|", ["~", "n", "N", ""]),  # "": a key with no value
    ("bool", r"true|True|TRUE|false|False|FALSE", "tTfF"),
    ("int", r"[-+]?[0-9](?:_?[0-9])*|0o[0-7](?:_?[0-7])*|0x[0-9a-fA-F](?:_?[0-9a-fA-F])*", "-+0123456789"),
    ("float", r"[-+]?(?:\.[0-9](?:_?[0-9])*|[0-9](?:_?[0-9])*(?:\.(?:[0-9](?:_?[0-9])*)?)?)(?:[eE][-+]?[0-9]+)?"
              r"|[-+]?\.(?:inf|Inf|INF)|\.nan|\.NaN|\.NAN", "-+.0123456789"),
    ("merge", r"<<", "<"),
)


def _yaml12(base: type) -> type:
    """`base` (libyaml's scanner when PyYAML was built with it: several times faster, same nodes and marks)
    with YAML 1.2's implicit tags instead of 1.1's."""
    loader = type(f"Yaml12{base.__name__}", (base,), {"yaml_implicit_resolvers": {}})
    for tag, pattern, first in _YAML12:
        loader.add_implicit_resolver(_CORE + tag, re.compile(f"^(?:{pattern})$"), list(first))
    return loader


_Loader = _yaml12(getattr(yaml, "CSafeLoader", yaml.SafeLoader))


class _Dumper(getattr(yaml, "CSafeDumper", yaml.SafeDumper)):
    """Quotes a string that YAML 1.2 or 1.1 would read as something else ("1e-5", "yes")."""


for _first, _resolvers in _Loader.yaml_implicit_resolvers.items():
    for _tag, _pattern in _resolvers:
        _Dumper.add_implicit_resolver(_tag, _pattern, [_first])


class _CompactDumper(_Dumper):
    """Writes a mapping or list of scalars on one line, as specs are written: `- {id: fc, op: linear, in: 64}`."""


def _leaf(value: Any) -> bool:
    return not isinstance(value, (dict, list)) or (isinstance(value, list) and not any(isinstance(v, (dict, list))
                                                                                        for v in value))


_CompactDumper.add_representer(dict, lambda dumper, data: dumper.represent_mapping(
    "tag:yaml.org,2002:map", data, flow_style=bool(data) and all(_leaf(v) for v in data.values())))
_CompactDumper.add_representer(list, lambda dumper, data: dumper.represent_sequence(
    "tag:yaml.org,2002:seq", data, flow_style=all(_leaf(v) and not isinstance(v, list) for v in data)))


def dump_text(data: Any, compact: bool = False) -> str:
    """YAML text that reads back as `data` here, and in YAML 1.1 readers; `compact` puts each mapping or list of
    scalars on one line."""
    return yaml.dump(data, Dumper=_CompactDumper if compact else _Dumper, sort_keys=False, allow_unicode=True,
                     width=120)
_SCALAR_TAGS = {_CORE + t for t in ("str", "int", "float", "bool", "null")}
_TEXT_TAGS = {_CORE + t for t in ("timestamp",)}  # kept as the text the author wrote


@dataclass(frozen=True)
class Document:
    """Plain data (dicts, lists, scalars) plus where each value and key came from."""

    path: Path
    data: Any
    locs: Mapping[tuple, Loc] = field(repr=False)
    key_locs: Mapping[tuple, Loc] = field(repr=False)

    def locate(self, path: Sequence, key: bool = False) -> Loc | None:
        """The location of the value at `path` (of its key with key=True), else its nearest ancestor's."""
        path = tuple(path)
        if key and path in self.key_locs:
            return self.key_locs[path]
        while path:
            if path in self.locs:
                return self.locs[path]
            path = path[:-1]
        return self.locs.get((), Loc(str(self.path), 1, 1))  # an empty file: its first line


# reads a file's bytes where it is not on disk (a spec at a git revision): raises DlspecError when it is missing
Reader = Callable[[Path], bytes]


def load_document(path: str | Path, overrides: Iterable[str] | Mapping[str, Any] = (), read: Reader | None = None) \
        -> Document:
    """Read, include and override a spec file: the input of validation. `read` reads it and its includes
    instead of the disk."""
    path = Path(path)
    doc = _read(path, stack=(), read=read)
    return apply_overrides(doc, overrides)


def parse_text(text: str, file: str) -> tuple[Any, dict, dict]:
    """Parse YAML text into (data, value locations, key locations); raises DlspecError."""
    _check_limits(text, file)
    try:
        loader = _Loader(text)
        try:
            root = loader.get_single_node()
        finally:
            loader.dispose()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        raise DlspecError.single(f"invalid YAML: {exc.problem or exc.context}", _loc(file, mark),
                                 hint="check indentation, colons and brackets on this line") from None
    except yaml.YAMLError as exc:
        raise DlspecError.single(f"invalid YAML: {exc}", Loc(file, 1, 1)) from None
    if root is None:
        return None, {}, {}
    builder = _Builder(file)
    data = builder.build(root, ())
    if builder.problems:
        raise DlspecError(builder.problems)
    return data, builder.locs, builder.key_locs


def _read(path: Path, stack: tuple[Path, ...], loc: Loc | None = None, read: Reader | None = None) -> Document:
    """`loc`: where the file was named (an `include:` entry); a file named on the command line has none."""
    file = str(path)
    # type and size are checked before reading: a FIFO, /dev/zero or a huge sparse file is refused at once
    raw = read(path) if read else read_bytes(path, MAX_BYTES, what="specs", loc=loc, usage=not stack)
    if len(raw) > MAX_BYTES:
        raise DlspecError.single(f"{path} is {len(raw):,} bytes; specs are limited to {MAX_BYTES:,} bytes", loc)
    text = decode(raw, file)
    data, locs, key_locs = parse_text(text, file)
    doc = Document(path, data, locs, key_locs)
    return _resolve_includes(doc, stack + (path.resolve(),), read)


def decode(raw: bytes, file: str) -> str:
    if b"\x00" in raw and not raw.startswith((b"\xff\xfe", b"\xfe\xff")) and not looks_utf16(raw):
        where = raw.index(b"\x00")
        line = raw[:where].count(b"\n") + 1
        raise DlspecError.single(f"this is a binary file, not a YAML spec (a NUL byte at offset {where})",
                                 Loc(file, line, where - (raw.rfind(b"\n", 0, where) + 1) + 1), expected="UTF-8 text",
                                 hint="did you pass a checkpoint or an .onnx file?")
    return decode_utf8(raw, file)


def _loc(file: str, mark) -> Loc:
    return Loc(file, mark.line + 1, mark.column + 1) if mark is not None else Loc(file, 1, 1)


def _check_limits(text: str, file: str, loader: type | None = None) -> None:
    """Refuse deep nesting and alias expansion before composing any node."""
    loader = loader or _Loader
    anchor_sizes: dict[str, int] = {}
    stack: list[list] = []  # [expanded node count, anchor] per open collection
    total = 0
    documents = 0
    try:
        for event in yaml.parse(text, Loader=loader):
            if isinstance(event, events.DocumentStartEvent):
                documents += 1
                if documents > 1:
                    raise DlspecError.single("a spec file holds one YAML document; found a second ('---')",
                                             _loc(file, event.start_mark), hint="split it into two files")
                continue
            if isinstance(event, events.CollectionStartEvent):
                if len(stack) >= MAX_DEPTH:
                    raise DlspecError.single(f"nesting deeper than {MAX_DEPTH} levels", _loc(file, event.start_mark),
                                             hint="specs never need this depth; is the file generated wrongly?")
                stack.append([1, event.anchor])
                continue
            if isinstance(event, events.CollectionEndEvent):
                count, anchor = stack.pop()
            elif isinstance(event, events.ScalarEvent):
                count, anchor = 1, event.anchor
            elif isinstance(event, events.AliasEvent):
                if any(open_anchor == event.anchor for _, open_anchor in stack):
                    raise DlspecError.single(f"alias *{event.anchor} refers to the collection it is inside",
                                             _loc(file, event.start_mark), hint="a recursive alias makes an endless value")
                count, anchor = anchor_sizes.get(event.anchor, 1), None
            else:
                continue
            if anchor:
                anchor_sizes[anchor] = count
            if stack:
                stack[-1][0] += count
            else:
                total += count
            if total + sum(s[0] for s in stack) > MAX_EXPANDED_NODES:
                raise DlspecError.single(f"aliases expand to more than {MAX_EXPANDED_NODES} values",
                                         _loc(file, event.start_mark), hint="this looks like an alias bomb")
    except yaml.MarkedYAMLError as exc:
        if loader is not yaml.SafeLoader and "maximum nesting depth" in str(exc.problem):
            # libyaml (PyYAML 6.0.2+) has its own, higher nesting limit that fires before ours: rescan with
            # the pure-Python parser, which stops at our limit and names the line of the first level too deep
            _check_limits(text, file, yaml.SafeLoader)
        mark = exc.problem_mark or exc.context_mark
        raise DlspecError.single(f"invalid YAML: {exc.problem or exc.context}", _loc(file, mark),
                                 hint="check indentation, colons and brackets on this line") from None
    except yaml.YAMLError as exc:  # the reader's refusal of a control character has a position, not a mark
        raise DlspecError.single(f"invalid YAML: {_reader_problem(exc)}", _offset_loc(text, file, exc)) from None


def _reader_problem(exc: yaml.YAMLError) -> str:
    character = getattr(exc, "character", None)
    if isinstance(character, int):
        return f"special character U+{character:04X} is not allowed in a YAML file"
    return str(exc).splitlines()[0]


def _offset_loc(text: str, file: str, exc: yaml.YAMLError) -> Loc:
    position = getattr(exc, "position", None)
    if not isinstance(position, int):
        return Loc(file, 1, 1)
    line = text.count("\n", 0, position) + 1
    return Loc(file, line, position - (text.rfind("\n", 0, position) + 1) + 1)


class _Builder:
    """Turns composed YAML nodes into plain data, recording locations and collecting problems."""

    def __init__(self, file: str):
        self.file = file
        self.locs: dict[tuple, Loc] = {}
        self.key_locs: dict[tuple, Loc] = {}
        self.problems: list[Problem] = []
        self._scalars = yaml.SafeLoader("")

    def build(self, node: nodes.Node, path: tuple) -> Any:
        self.locs[path] = _loc(self.file, node.start_mark)
        if isinstance(node, nodes.MappingNode):
            if node.tag != _CORE + "map":
                return self._bad_tag(node, path)
            return self._mapping(node, path)
        if isinstance(node, nodes.SequenceNode):
            if node.tag != _CORE + "seq":
                return self._bad_tag(node, path)
            return [self.build(child, path + (i,)) for i, child in enumerate(node.value)]
        if node.tag in _TEXT_TAGS:
            return node.value
        if node.tag not in _SCALAR_TAGS:
            return self._bad_tag(node, path)
        try:
            if node.tag == _CORE + "int":
                return _int(node.value)
            return self._scalars.construct_object(node)
        except (yaml.YAMLError, ValueError, OverflowError) as exc:  # ValueError: an integer of over 4,300 digits
            self.problems.append(Problem(f"bad scalar: {shorten(str(exc))}", _loc(self.file, node.start_mark),
                                         format_path(path)))
            return None

    def _mapping(self, node: nodes.MappingNode, path: tuple) -> dict:
        out: dict = {}
        for key_node, value_node in node.value:
            if key_node.tag == _CORE + "merge":
                for source in self._merge_sources(value_node, path):
                    for key, value in source.items():
                        out.setdefault(key, value)
                continue
            key = self.build(key_node, path + ("<key>",))
            self.locs.pop(path + ("<key>",), None)
            if not isinstance(key, (str, int, float, bool)) or key is None:
                self.problems.append(Problem("mapping keys must be plain scalars", _loc(self.file, key_node.start_mark),
                                             format_path(path)))
                continue
            if key in out:
                first = self.key_locs.get(path + (key,))
                self.problems.append(Problem(f"duplicate key '{key}'", _loc(self.file, key_node.start_mark),
                                             format_path(path + (key,)),
                                             hint=f"first defined at {first}" if first else None))
                continue
            self.key_locs[path + (key,)] = _loc(self.file, key_node.start_mark)
            out[key] = self.build(value_node, path + (key,))
        return out

    def _merge_sources(self, node: nodes.Node, path: tuple) -> list[dict]:
        sources = node.value if isinstance(node, nodes.SequenceNode) else [node]
        built = [self.build(s, path + ("<<",)) for s in sources]
        if not all(isinstance(b, dict) for b in built):
            self.problems.append(Problem("'<<' merges mappings only", _loc(self.file, node.start_mark), format_path(path)))
            return []
        return built

    def _bad_tag(self, node: nodes.Node, path: tuple) -> None:
        self.problems.append(Problem(
            f"YAML tag '{node.tag}' is not allowed", _loc(self.file, node.start_mark), format_path(path),
            expected="plain data: mappings, lists, strings, numbers, booleans, null",
            hint="dlspec never constructs Python objects from a spec; remove the tag"))
        return None


def _int(text: str) -> int:
    """A YAML 1.2 integer: decimal (a leading 0 is not octal), 0o octal or 0x hex."""
    digits = text.replace("_", "")
    sign = -1 if digits.startswith("-") else 1
    digits = digits.lstrip("+-")
    base = {"0o": 8, "0x": 16}.get(digits[:2].lower(), 10)
    return sign * int(digits[2:] if base != 10 else digits, base)


def _resolve_includes(doc: Document, stack: tuple[Path, ...], read: Reader | None) -> Document:
    """Merge the blocks of `include:`d libraries (paths relative to the including file)."""
    data = doc.data
    if not isinstance(data, dict) or not isinstance(data.get("include"), list):
        return doc
    locs, key_locs = dict(doc.locs), dict(doc.key_locs)
    blocks = dict(data.get("blocks") or {}) if isinstance(data.get("blocks"), dict) else {}
    problems: list[Problem] = []
    for i, entry in enumerate(data["include"]):
        loc = doc.locate(("include", i))
        if not isinstance(entry, str):
            continue  # the schema reports the wrong type
        target = (doc.path.parent / entry)
        if target.resolve() in stack:
            problems.append(Problem(f"include cycle: {entry} includes itself", loc, f"include[{i}]"))
            continue
        if read is None and not target.exists():
            problems.append(Problem(f"included file not found: {entry}", loc, f"include[{i}]",
                                    hint=f"paths are relative to {doc.path.parent or '.'}"))
            continue
        try:
            lib = _read(target, stack, loc, read)
        except DlspecError as exc:
            problems.extend(exc.problems)
            continue
        if not isinstance(lib.data, dict):
            problems.append(Problem(f"{entry} is not a block library (a mapping with 'blocks:')", loc))
            continue
        for name, body in (lib.data.get("blocks") or {}).items():
            if name in blocks:
                where = doc.locate(("blocks", name), key=True)
                problems.append(Problem(f"block '{name}' from {entry} is already defined", lib.locate(("blocks", name), key=True),
                                        f"blocks.{name}", hint=f"the other definition is at {where}"))
                continue
            blocks[name] = body
            for p, where in lib.locs.items():
                if p[:2] == ("blocks", name):
                    locs[p] = where
            for p, where in lib.key_locs.items():
                if p[:2] == ("blocks", name):
                    key_locs[p] = where
    if problems:
        raise DlspecError(problems)
    merged = dict(data)
    merged["blocks"] = blocks
    return Document(doc.path, merged, locs, key_locs)


def apply_overrides(doc: Document, overrides: Iterable[str] | Mapping[str, Any]) -> Document:
    """Apply `dotted.path=value` overrides; values are parsed as YAML scalars/flow collections."""
    items = list(overrides.items()) if isinstance(overrides, Mapping) else [_split(o) for o in overrides]
    if not items:
        return doc
    data = copy.deepcopy(doc.data)
    locs = dict(doc.locs)
    for dotted, value in items:
        origin = Loc(f"<--set {dotted}>", 1, 1)
        if isinstance(value, str):
            value, _, _ = parse_text(value, origin.file) if value.strip() else ("", {}, {})
        keys = [int(k) if k.lstrip("-").isdigit() else k for k in dotted.split(".")]
        target = data
        for depth, key in enumerate(keys[:-1]):
            try:
                target = target[key]
            except (KeyError, IndexError, TypeError):
                raise DlspecError.single(f"override '{dotted}': '{format_path(keys[: depth + 1])}' does not exist in the spec",
                                         origin, usage=True, hint="overrides set values under existing sections") from None
        last = keys[-1]
        if isinstance(target, list):
            if not isinstance(last, int) or not -len(target) <= last < len(target):
                raise DlspecError.single(f"override '{dotted}': index {last} is out of range", origin, usage=True)
        elif not isinstance(target, dict):
            raise DlspecError.single(f"override '{dotted}': '{format_path(keys[:-1])}' is not a mapping", origin, usage=True)
        target[last] = value
        path = tuple(keys)
        for p in [p for p in locs if p[: len(path)] == path]:
            del locs[p]
        locs[path] = origin
    return Document(doc.path, data, locs, doc.key_locs)


def _split(override: str) -> tuple[str, str]:
    if "=" not in override:
        raise DlspecError.single(f"override '{override}' is not of the form key.path=value", usage=True,
                                 hint="e.g. --set model.vars.d_model=256")
    key, value = override.split("=", 1)
    return key.strip(), value
