"""What every exported file carries so a deployed file can be traced to its source:
the dlspec and torch versions, the spec's name and hash, the resolved spec
itself, where the weights came from, and the dims exported as dynamic."""
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
}
_JSON_FIELDS = {"spec", "weights", "export"}


def provenance(spec, weights: dict, config) -> dict[str, Any]:
    return {
        "dlspec_version": dlspec.__version__,
        "torch_version": str(torch.__version__),
        "spec_name": spec.name,
        "spec_hash": spec.spec_hash,
        "spec": spec.document,
        "weights": weights,
        # the dims exported as dynamic and the sizes checked, so `dlspec verify` checks the same
        "export": {"dynamic": list(config.dynamic), "sizes": {k: list(v) for k, v in config.sizes.items()}},
    }


def to_onnx_metadata(record: dict[str, Any]) -> dict[str, str]:
    return {key: _dump(record[field]) if field in _JSON_FIELDS else str(record[field])
            for field, key in _ONNX_KEYS.items()}


def from_onnx_metadata(props: dict[str, str]) -> dict[str, Any] | None:
    """The record read back from an .onnx file's metadata; None when it was not written by dlspec."""
    if _ONNX_KEYS["spec_hash"] not in props:
        return None
    return {field: json.loads(props[key]) if field in _JSON_FIELDS else props.get(key)
            for field, key in _ONNX_KEYS.items() if key in props}


def dumps(record: dict[str, Any]) -> str:
    return _dump(record)


def _dump(value: Any) -> str:
    # default=str: YAML timestamps and similar scalars are kept as the text the author wrote.
    return json.dumps(value, sort_keys=True, default=str)


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
