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
    """The report as printed by `dlspec export` and `dlspec verify`, and shown in the model card."""
    tol = report.tolerance
    rows = []
    for artifact in report.artifacts:
        if artifact.error:
            rows.append((artifact.file.name, artifact.method, "-", "-", "-", "-", "-", "-", "ERROR"))
        for o in artifact.outputs:
            judged = artifact.variant is None
            rows.append((artifact.file.name, artifact.method, o.name, f"{o.max_abs:.2e}", f"{o.max_rel:.2e}",
                         f"{o.mean_abs:.2e}", f"{tol.atol:.0e}" if judged else "-", f"{tol.rtol:.0e}" if judged else "-",
                         ("pass" if o.ok else "FAIL") if judged else "see real data"))
    sizes = sorted({name for case in report.cases for name in case})
    checked = ", ".join(f"{n} in {{{', '.join(str(v) for v in sorted({c[n] for c in report.cases}))}}}" for n in sizes)
    head = (f"parity of {report.spec_name} (spec {report.spec_hash[:12]}) against eager PyTorch\n"
            f"{describe(report.weights)}\n"
            + "".join(f"preprocessing: {line}\n" if i == 0 else f"  {line}\n" for i, line in enumerate(report.preprocessing))
            + f"random inputs: {_count(len(report.cases), 'size case')} x {_count(report.seeds, 'seed')}"
            + (f": {checked}" if checked else "") + "\n")
    parts = [head, _grid(_HEADER, rows)]
    if report.real is not None:
        parts += ["", _real_table(report)]
    if report.real_error:
        parts += ["", f"real data: not checked: {report.real_error}"]
    if report.latency:
        parts += ["", _size_table(report)]
    parts += [f"note: {note}" for note in report.notes]
    return "\n".join(parts) + "\n" + ("parity: pass" if report.ok else "parity: FAIL")


def _grid(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> str:
    widths = [max(len(r[c]) for r in [header, *rows]) for c in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip() for r in [header, *rows]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _real_table(report: ParityReport) -> str:
    real = report.real
    metric = real["metric"]
    classes = metric == "accuracy"
    header = ("artifact", "output", "max abs", "max rel", "agree", metric, "min agree", "max diff", "result")
    rows = []
    for a in report.artifacts:
        r = a.real
        if r is None:
            if a.error:
                rows.append((a.file.name, "-", "-", "-", "-", "-", "-", "-", "ERROR"))
            continue
        rows.append((a.file.name, r.output, f"{r.max_abs:.2e}", f"{r.max_rel:.2e}",
                     f"{r.agree:.4f}" if r.agree is not None else "-", f"{r.metric:.4f}" if classes else f"{r.metric:.4g}",
                     f"{r.agreement.argmax:g}" if classes else "-", f"{r.agreement.metric:g}" if classes else "-",
                     ("pass" if r.ok else "FAIL") if classes else ("reported" if r.ok else "FAIL")))
    eager = f"{real['eager']:.4f}" if classes else f"{real['eager']:.4g}"
    head = (f"real data: {real['examples']} of {real['of']} validation examples, raw as the data set gives them; "
            f"{metric} of eager PyTorch {eager}")
    return head + "\n" + _grid(header, rows)


def _size_table(report: ParityReport) -> str:
    batches = sorted({b for ms in report.latency.values() for b in ms})
    header = ("file", "size", *(f"ORT ms, batch {b}" for b in batches))
    sizes = {a.file.name: a.size for a in report.artifacts}
    rows = [(name, human_size(sizes.get(name, 0)), *(f"{ms[b]:.3g}" for b in batches)) for name, ms in report.latency.items()]
    return "size and ONNX Runtime latency (CPU, median of interleaved runs)\n" + _grid(header, rows)


def human_size(n: int) -> str:
    for unit in ("bytes", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GB"


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
        "preprocessing": list(report.preprocessing),
        "real_data": report.real,
        "real_data_error": report.real_error,
        "notes": list(report.notes),
        "latency_ms": {name: {str(b): ms for b, ms in by_batch.items()} for name, by_batch in report.latency.items()},
        "artifacts": [
            {"format": a.format, "file": a.file.name, **a.hashes, "made_by": a.method, "note": a.note, "ok": a.ok,
             "error": a.error, "variant": a.variant, "size": a.size,
             "outputs": [asdict(o) | {"ok": o.ok, "judged": a.variant is None} for o in a.outputs],
             "real_data": asdict(a.real) | {"ok": a.real.ok} if a.real else None}
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
            if not o.ok and a.variant is None:
                found.append(Problem(f"parity failed: {a.file.name}, output '{o.name}': {o.failure}",
                                     hint="a tolerance can be widened with --atol/--rtol or export.tolerance, "
                                          "if the difference is expected"))
        if a.real is not None and not a.real.ok:
            found.append(Problem(f"real-data parity failed: {a.file.name}, output '{a.real.output}': {a.real.failure}",
                                 hint=(f"the agreement of export.variants' {a.variant}" if a.variant else
                                       "export.agreement") + " can be loosened, if the difference is expected"))
    if report.real_error:
        found.append(Problem(f"real-data parity not checked: {report.real_error}",
                             hint="export that dim as dynamic (export.dynamic), or at the size the data has"))
    return found
