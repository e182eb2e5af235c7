"""Export with proven parity: ONNX, TorchScript and torch.export (.pt2), each checked
against the eager model on random inputs at several sizes (`parity.json`).

    dlspec.export.export(spec_or_path, out_dir, checkpoint=...) -> ExportResult
    dlspec.export.verify(artifact, spec_or_path, checkpoint=...) -> VerifyResult

Importing this package is cheap: torch, onnx and onnxruntime load on first use.
"""
from __future__ import annotations

__all__ = ["export", "verify"]


def __getattr__(name: str):
    if name in __all__:
        from . import api
        return getattr(api, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
