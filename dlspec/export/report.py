"""The parity report as a user sees it: a table, `parity.json`, and one error per failure."""
from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import dlspec
from dlspec.core.errors import Problem
from dlspec.core.files import atomic_write_text

from .parity import ParityReport
from .weights import describe

_HEADER = ("artifact", "made by", "output", "max abs", "max rel", "mean abs", "atol", "rtol", "result")


def table(report: ParityReport) -> str:
    tol = report.tolerance
    rows = []
    for artifact in report.artifacts:
        if artifact.error:
            rows.append((artifact.file.name, artifact.method, "-", "-", "-", "-", "-", "-", "ERROR"))
        for o in artifact.outputs:
            rows.append((artifact.file.name, artifact.method, o.name, f"{o.max_abs:.2e}", f"{o.max_rel:.2e}",
                         f"{o.mean_abs:.2e}", f"{tol.atol:.0e}", f"{tol.rtol:.0e}", "pass" if o.ok else "FAIL"))
    widths = [max(len(r[c]) for r in [_HEADER, *rows]) for c in range(len(_HEADER))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip() for r in [_HEADER, *rows]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    sizes = sorted({name for case in report.cases for name in case})
    checked = ", ".join(f"{n} in {{{', '.join(str(v) for v in sorted({c[n] for c in report.cases}))}}}" for n in sizes)
    head = (f"parity of {report.spec_name} (spec {report.spec_hash[:12]}) against eager PyTorch\n"
            f"{describe(report.weights)}\n"
            f"{_count(len(report.cases), 'size case')} x {_count(report.seeds, 'seed')}"
            + (f": {checked}" if checked else "") + "\n")
    verdict = "parity: pass" if report.ok else "parity: FAIL"
    return head + "\n" + "\n".join(lines) + "\n" + verdict


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def to_json(report: ParityReport) -> dict:
    return {
        "ok": report.ok,
        "dlspec_version": dlspec.__version__,
        "spec_name": report.spec_name,
        "spec_hash": report.spec_hash,
        "weights": report.weights,
        "tolerance": asdict(report.tolerance),
        "cases": list(report.cases),
        "seeds": report.seeds,
        "artifacts": [
            {"format": a.format, "file": a.file.name, **a.hashes, "made_by": a.method, "note": a.note, "ok": a.ok,
             "error": a.error,
             "outputs": [asdict(o) | {"ok": o.ok} for o in a.outputs]}
            for a in report.artifacts
        ],
    }


def write_json(report: ParityReport | None, path: Path, content: dict | None = None) -> None:
    """parity.json; verify adds what it found of the file's content (and has no report when the content differed)."""
    data = {**(to_json(report) if report is not None else {"ok": False}), **({"content": content} if content else {})}
    atomic_write_text(path, json.dumps(data, indent=2) + "\n")


def problems(report: ParityReport) -> list[Problem]:
    """One problem per failing artifact output: which artifact, which output, which sizes, by how much."""
    found = []
    for a in report.artifacts:
        if a.error:  # the error names the file
            found.append(Problem(f"parity not checked: {a.error}",
                                 hint="the file was written but does not run in its own runtime: do not deploy it"
                                      + ("; an older --opset may help" if a.format == "onnx" else "")))
        for o in a.outputs:
            if not o.ok:
                found.append(Problem(f"parity failed: {a.file.name}, output '{o.name}': {o.failure}",
                                     hint="a tolerance can be widened with --atol/--rtol or export.tolerance, "
                                          "if the difference is expected"))
    return found
