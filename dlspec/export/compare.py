"""Is an exported file the one dlspec makes from this spec and these weights?

Random-input parity cannot see a node that fires on one input value, or a few flipped weight bits.
Exports are deterministic (the same spec, weights and versions give byte-identical files, wherever the
packages are installed), so `verify` exports again and compares content: every graph node and every weight,
exactly. The provenance record is left out of the comparison (it names the checkpoint path as typed) and
checked on its own; so is TorchScript's debug info, which names the installed source files.

An artifact is never loaded before its content matched: a file that differs is reported, not run.
"""
from __future__ import annotations

import hashlib
import json
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from dlspec.core.archive import Archive, refused_global, tensor_global, torchscript_global
from dlspec.core.budget import memory_limit
from dlspec.core.errors import DlspecError
from dlspec.core.reading import read_bytes

from .provenance import ARCHIVE_ENTRY
from .to_onnx import read_model

# archive members that are not content: the provenance record, the id torch writes into every zip, and
# TorchScript's debug info (source ranges, naming the files of dlspec and torch where they are installed)
_NOT_CONTENT = {"extra/" + ARCHIVE_ENTRY, ".data/serialization_id"}
_DEBUG_INFO = ".debug_pkl"
_LISTED = 5  # differences named per kind; the count of the rest is given


def content_hash(fmt: str, path: Path) -> str:
    """sha256 of what the file computes with: its graph and weights, without the provenance record (or debug info)."""
    digest = hashlib.sha256()
    if fmt == "onnx":
        model = _content_model(path)
        digest.update(model.SerializeToString(deterministic=True))
        data = _external_data(path, model)
        digest.update(data or b"")
        return digest.hexdigest()
    with Archive(path, memory_limit(), "exported files") as archive:
        for name in _content_names(archive):
            digest.update(name.encode() + b"\0" + hashlib.sha256(archive.read(name)).digest())
    return digest.hexdigest()


def refuse_unsafe(fmt: str, path: Path) -> None:
    """Refuse an archive with a pickled member that imports anything but tensor rebuilding, before any loader
    sees it: torch.export.load unpickles with weights_only=False."""
    if fmt == "onnx":
        return  # protobuf: parsing runs no code
    allowed = torchscript_global if fmt == "torchscript" else tensor_global
    with Archive(path, memory_limit(), "exported files") as archive:
        for name in archive.names():
            if name.endswith((".so", ".dll", ".dylib")):
                _refuse(path, name, "a compiled library")
            data = archive.read(name)
            if fmt == "pt2" and name.endswith("_config.json"):
                pickled = [k for k, v in _json(data, path, name).get("config", {}).items()
                           if not isinstance(v, dict) or v.get("use_pickle") is not False]
                if pickled:
                    _refuse(path, name, f"{pickled[0]} stored as a pickle")
            elif data[:1] == b"\x80" or data[:4] == b"PK\x03\x04" or name.endswith("pkl"):
                refused = refused_global(data, allowed)
                if refused:
                    _refuse(path, name, f"a pickle that imports {refused}")


def _refuse(path: Path, member: str, what: str) -> None:
    raise DlspecError.single(f"{path}: member {member} is {what}; dlspec never loads a file that could run code "
                             "when it is read", hint="this file was not written by `dlspec export`, or was changed "
                             "since: do not load it")


def differences(fmt: str, actual: Path, expected: Path) -> list[str]:
    """What differs between a user's artifact and the one exported again (empty: identical content)."""
    if fmt == "onnx":
        return _onnx_differences(actual, expected)
    with Archive(actual, memory_limit(), "exported files") as a, Archive(expected, memory_limit(), "exported files") as e:
        return _archive_differences(fmt, a, e)


# ---- ONNX ---------------------------------------------------------------------------------------------------

def _content_model(path: Path) -> onnx.ModelProto:
    model = read_model(path)
    del model.metadata_props[:]
    return model


def _external_data(path: Path, model: onnx.ModelProto) -> bytes | None:
    """The bytes of the `.onnx.data` file beside the model when its weights are external (the only place
    dlspec puts them: a location elsewhere is refused)."""
    locations = {entry.value for t in model.graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL
                 for entry in t.external_data if entry.key == "location"}
    if not locations:
        return None
    if locations != {path.name + ".data"}:
        raise DlspecError.single(f"{path} points its weights at {sorted(locations)[0]}",
                                 expected=f"{path.name}.data beside it", hint="dlspec writes external data beside the model")
    return read_bytes(path.with_name(path.name + ".data"), memory_limit(), what="ONNX weight files")


def _onnx_differences(actual: Path, expected: Path) -> list[str]:
    a, e = _content_model(actual), _content_model(expected)
    if a.SerializeToString(deterministic=True) == e.SerializeToString(deterministic=True):
        return [] if _external_data(actual, a) == _external_data(expected, e) else \
            ["the weights in the external data file differ"]
    found = []
    if list(a.opset_import) != list(e.opset_import):
        found.append("the opset imports differ")
    found += _node_differences(a.graph.node, e.graph.node, "graph")
    for name in sorted({f.name for f in a.functions} | {f.name for f in e.functions}):
        fa = next((f for f in a.functions if f.name == name), None)
        fe = next((f for f in e.functions if f.name == name), None)
        if fa is None or fe is None:
            found.append(f"function '{name}' is {'not in the re-derived export' if fe is None else 'missing'}")
        else:
            found += _node_differences(fa.node, fe.node, f"function '{name}'")
    found += _weight_differences({t.name: t for t in a.graph.initializer}, {t.name: t for t in e.graph.initializer})
    for what in ("input", "output"):
        if [v.SerializeToString() for v in getattr(a.graph, what)] != [v.SerializeToString() for v in getattr(e.graph, what)]:
            found.append(f"the graph's {what}s differ")
    return found or ["the model differs from the re-derived export outside its nodes and weights"]


def _node_differences(actual, expected, where: str) -> list[str]:
    ours = Counter(n.SerializeToString(deterministic=True) for n in expected)
    added = []
    for node in actual:
        key = node.SerializeToString(deterministic=True)
        if ours[key]:
            ours[key] -= 1
        else:
            added.append(node)
    found = [f"{where}: node '{n.name or '(unnamed)'}' ({n.op_type}, inputs {', '.join(n.input)}) is not in the "
             "re-derived export"
             for n in added[:_LISTED]]
    removed = sum(ours.values())
    if len(added) > _LISTED:
        found.append(f"{where}: {len(added) - _LISTED} more nodes are not in the re-derived export")
    if removed:
        found.append(f"{where}: {removed} node(s) of the re-derived export are missing or changed")
    return found


def _weight_differences(actual: dict, expected: dict) -> list[str]:
    found = [f"weight '{name}' is not in the re-derived export" for name in sorted(set(actual) - set(expected))]
    found += [f"weight '{name}' is missing" for name in sorted(set(expected) - set(actual))]
    for name in sorted(set(actual) & set(expected)):
        ta, te = actual[name], expected[name]
        if ta.SerializeToString(deterministic=True) == te.SerializeToString(deterministic=True):
            continue
        found.append(_describe_weight(name, ta, te))
    return found[: _LISTED * 2]


def _describe_weight(name: str, a: onnx.TensorProto, e: onnx.TensorProto) -> str:
    if list(a.dims) != list(e.dims) or a.data_type != e.data_type:
        return f"weight '{name}' has shape {list(a.dims)}, the re-derived export {list(e.dims)}"
    try:
        va, ve = numpy_helper.to_array(a).reshape(-1), numpy_helper.to_array(e).reshape(-1)
    except (ValueError, TypeError):
        return f"weight '{name}' differs"
    changed = np.flatnonzero(va != ve)
    if not len(changed):
        return f"weight '{name}' differs in its encoding"
    k = int(changed[0])
    return (f"weight '{name}' differs in {len(changed)} of {va.size} values (first at flat index {k}: "
            f"{va[k].item()!r}, re-derived {ve[k].item()!r})")


# ---- TorchScript and .pt2 archives --------------------------------------------------------------------------

def _archive_differences(fmt: str, a: Archive, e: Archive) -> list[str]:
    names_a, names_e = set(_content_names(a)), set(_content_names(e))
    found = [f"member {n} is not in the re-derived export" for n in sorted(names_a - names_e)[:_LISTED]]
    found += [f"member {n} is missing" for n in sorted(names_e - names_a)[:_LISTED]]
    weights = _weight_files(e) if fmt == "pt2" else {}
    for name in sorted(names_a & names_e):
        ia, ie = a.infos[name], e.infos[name]
        if ia.CRC == ie.CRC and ia.file_size == ie.file_size and a.read(name) == e.read(name):
            continue
        if name in weights:
            found.append(f"weight '{weights[name]}' differs ({name})")
        elif name == "models/model.json":
            found += _program_differences(a, e, name)
        elif name.startswith("data/") and fmt == "torchscript":
            found.append(f"a weight differs (tensor storage {name})")
        else:
            found.append(f"member {name} differs")
    return found


def _content_names(archive: Archive) -> list[str]:
    return [n for n in archive.names() if n not in _NOT_CONTENT and not n.endswith(_DEBUG_INFO)]


def _weight_files(e: Archive) -> dict[str, str]:
    """Member name -> the weight it holds, from the re-derived (trusted) archive's weights config."""
    config = _json(e.read("data/weights/model_weights_config.json"), e.path, "config") \
        if "data/weights/model_weights_config.json" in e.infos else {}
    out: dict[str, str] = {}
    for fqn, meta in config.get("config", {}).items():
        out.setdefault("data/weights/" + meta["path_name"], fqn)
    return out


def _program_differences(a: Archive, e: Archive, name: str) -> list[str]:
    """The graph nodes of a .pt2 that are not in the re-derived program, by target and outputs."""
    def nodes(archive):
        graph = _json(archive.read(name), archive.path, name).get("graph_module", {}).get("graph", {})
        return graph.get("nodes", []) if isinstance(graph, dict) else []
    ours = Counter(json.dumps(n, sort_keys=True) for n in nodes(e))
    added = []
    for node in nodes(a):
        key = json.dumps(node, sort_keys=True)
        if ours[key]:
            ours[key] -= 1
        else:
            added.append(node)
    found = []
    for node in added[:_LISTED]:
        outputs = [o.get("as_tensor", {}).get("name", "?") for o in node.get("outputs", []) if isinstance(o, dict)] \
            if isinstance(node, dict) else []
        target = node.get("target") if isinstance(node, dict) else node
        found.append(f"graph node {', '.join(map(str, outputs)) or '?'} ({target}) is not in the re-derived export")
    return found or ["the program (models/model.json) differs outside its nodes"]


def _json(data: bytes, path: Path, name: str):
    try:
        value = json.loads(data)
    except (ValueError, RecursionError) as exc:
        raise DlspecError.single(f"{path}: member {name} is not valid JSON ({exc})") from None
    return value if isinstance(value, dict) else {}
