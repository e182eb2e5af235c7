"""What every exported file carries so a deployed file can be traced to its source and used as it is:
the dlspec and torch versions, the spec's name and hash, the resolved spec
itself, where the weights came from, the dims exported as dynamic, the inputs and
outputs it takes and gives (with the spec's docs), the training preprocessing (in
the graph, or to apply before it) and the class names."""
from __future__ import annotations

import json
from typing import Any

import torch

import dlspec
from dlspec.core.archive import Archive
from dlspec.core.budget import memory_limit

# Name of the provenance record inside TorchScript and .pt2 archives.
ARCHIVE_ENTRY = "dlspec.json"
# ONNX metadata_props keys (string -> string); JSON where the value is structured.
_ONNX_KEYS = {
    "dlspec_version": "dlspec.version",
    "torch_version": "dlspec.torch_version",
    "spec_name": "dlspec.spec_name",
    "spec_hash": "dlspec.spec_hash",
    "spec": "dlspec.front.spec",
    "weights": "dlspec.weights",
    "export": "dlspec.export",
    "inputs": "dlspec.inputs",
    "outputs": "dlspec.outputs",
    "preprocessing": "dlspec.preprocessing",
    "classes": "dlspec.classes",
    "variant": "dlspec.variant",
}
_JSON_FIELDS = {"spec", "weights", "export", "inputs", "outputs", "preprocessing", "classes"}


def provenance(spec, weights: dict, config, prep=None) -> dict[str, Any]:
    """The record of files exported from `spec` (its inputs as the files take them) with preprocessing `prep`."""
    record = {
        "dlspec_version": dlspec.__version__,
        "torch_version": str(torch.__version__),
        "spec_name": spec.name,
        "spec_hash": spec.spec_hash,
        "spec": spec.document,
        "weights": weights,
        # the dims exported as dynamic and the sizes checked, so `dlspec verify` checks the same
        "export": {"dynamic": list(config.dynamic), "sizes": {k: list(v) for k, v in config.sizes.items()}},
        **interface(spec, config, prep),
    }
    if prep is not None:
        record["preprocessing"] = prep.to_json()
        if prep.labels is not None:
            record["classes"] = list(prep.labels.names)
    return record


def interface(spec, config, prep=None) -> dict[str, list]:
    """The inputs and outputs of the exported files: shapes (symbolic dims by name), dtypes, the dims that are
    dynamic, and a line on each (the spec's `doc` for an input)."""
    declared = spec.document.get("model", {}).get("inputs", {})
    labels = prep.labels if prep is not None else None

    def tensor(t, doc: str) -> dict:
        dims = sorted({d for d in t.shape if isinstance(d, str) and d in config.dynamic}) if config is not None else []
        return {"name": t.name, "shape": list(t.shape), "dtype": t.dtype, "dynamic": dims, "doc": doc}
    inputs = [tensor(t, str((declared.get(t.name) or {}).get("doc") or "")) for t in spec.inputs]
    outputs = [tensor(t, f"class scores over {len(labels.names)} classes, on its last dim (names: dlspec.classes)"
                      if labels is not None and labels.output == t.name else "") for t in spec.outputs]
    return {"inputs": inputs, "outputs": outputs}


def to_onnx_metadata(record: dict[str, Any]) -> dict[str, str]:
    return {key: _dump(record[field]) if field in _JSON_FIELDS else str(record[field])
            for field, key in _ONNX_KEYS.items() if field in record}


def from_onnx_metadata(props: dict[str, str]) -> dict[str, Any] | None:
    """The record read back from an .onnx file's metadata; None when it was not written by dlspec."""
    if _ONNX_KEYS["spec_hash"] not in props:
        return None
    return {field: json.loads(props[key]) if field in _JSON_FIELDS else props.get(key)
            for field, key in _ONNX_KEYS.items() if key in props}


def dumps(record: dict[str, Any]) -> str:
    return _dump(record)


def _dump(value: Any) -> str:
    # default=str: YAML timestamps and similar scalars are kept as the text the author wrote. Keys stay in their
    # order (deterministic: the spec's, or the code's): the order of a spec's `init` patterns is part of the model,
    # so the recorded spec, written back as YAML, loads to the same spec hash.
    return json.dumps(value, default=str)


MAX_RECORD_BYTES = 64 * 2**20


def read_archive_record(path) -> dict | None:
    """The record inside a TorchScript or .pt2 archive, read as JSON from its member: nothing is unpickled."""
    with Archive(path, memory_limit(), "exported files") as archive:
        name = "extra/" + ARCHIVE_ENTRY
        if name not in archive.infos:
            return None
        if archive.infos[name].file_size > MAX_RECORD_BYTES:
            raise ValueError(f"its {name} is {archive.infos[name].file_size:,} bytes")
        return json.loads(archive.read(name))
