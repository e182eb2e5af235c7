"""`dlspec predict ARTIFACT|RUN INPUT... [--out predictions.csv|json]`: run an exported file (.onnx through
ONNX Runtime; .pt2 and TorchScript through torch) or a run directory (its weights, in eager PyTorch) on
examples as the data set gives them, and print each one's top classes by name.

It is what a deployment engineer runs to check a hand-off: the file's own record says what it takes, which
preprocessing it applies (or, exported with `preprocessing: external`, which it needs: predict applies it),
and what its classes are called; a run directory gives the same answers from its run.json.
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

import dlspec
from dlspec.core.errors import DlspecError, gist
from dlspec.core.files import atomic_write_text
from dlspec.front.document import dump_text
from dlspec.train import rundir

from . import compare, examples, rundata
from . import preprocess as P
from . import weights as W
from .formats import format_of

_SHOWN = 20  # examples printed; all of them go to --out


@dataclass(frozen=True)
class Predictor:
    spec: object  # the model's Spec
    prep: P.Preprocessing | None
    run: Callable[[dict[str, np.ndarray]], tuple[np.ndarray, ...]]  # raw inputs -> outputs in declared order
    source: str  # what runs, for the output's first line


def run(args: argparse.Namespace) -> int:
    if args.out and Path(args.out).suffix.lower() not in (".csv", ".json"):
        raise DlspecError.single(f"--out {args.out}: cannot tell the format", expected="a .csv or .json file", usage=True)
    predictor = load(Path(args.model))
    groups = examples.read([Path(p) for p in args.inputs], args.text, context(predictor), args.pixel_scale)
    rows = predict(predictor, groups, args.batch_size, args.top)
    print(f"{predictor.source}: {len(rows)} example{'s' * (len(rows) != 1)}")
    for row in rows[:_SHOWN]:
        print(_line(row))
    if len(rows) > _SHOWN:
        print(f"... {len(rows) - _SHOWN} more" + (f" in {args.out}" if args.out else " (--out FILE keeps them all)"))
    if args.out:
        write(Path(args.out), rows)
        print(f"predictions: {args.out}")
    return 0


# ---- what runs -----------------------------------------------------------------------------------------------

def load(path: Path) -> Predictor:
    """A predictor for an exported file (from its own record) or a run directory."""
    if path.is_dir():
        return _run_directory(path)
    fmt = format_of(path)
    if not path.is_file():
        raise DlspecError.single(f"{path} does not exist", usage=True, hint="give an exported file or a run directory")
    if fmt is None:
        raise DlspecError.single(f"cannot tell the format of {path.name}", usage=True,
                                 expected="a .onnx, .pt2 or TorchScript (.pt) file, or a run directory")
    from .api import read_record
    record = read_record(fmt, path)
    compare.refuse_unsafe(fmt.name, path)  # before torch's loaders see an archive
    spec = _recorded_spec(record, path)
    prep = P.from_json(record["preprocessing"], spec, path.name) if record.get("preprocessing") is not None else None
    files_spec = P.files_spec(spec, prep)
    try:
        runner = fmt.load(path, files_spec)
    except Exception as e:  # a damaged file: the runtime's own words
        raise DlspecError.single(f"cannot load {path}: {gist(e)}", hint="export it again with `dlspec export`") from None
    external = prep is not None and not prep.embedded and not prep.identity

    def on_raw(raw: dict[str, np.ndarray]) -> tuple[np.ndarray, ...]:
        if not external:
            return runner({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in raw.items()})
        outputs = runner({k: torch.from_numpy(v) for k, v in P.apply(prep, spec, raw).items()})
        return P.restore(prep, spec, outputs)
    return Predictor(spec, prep, on_raw, f"{path.name} ({fmt.name}{', preprocessing from its record' if external else ''})")


def _recorded_spec(record: dict, path: Path):
    """The spec a file was exported from, loaded from the resolved document it records (checked like any spec)."""
    if not isinstance(record.get("spec"), dict):
        raise DlspecError.single(f"{path.name} records no spec", hint="export it again with `dlspec export`")
    with tempfile.TemporaryDirectory(prefix="dlspec-predict-") as tmp:
        file = Path(tmp) / "spec.yaml"
        file.write_text(dump_text(record["spec"]))
        try:
            spec = dlspec.load(file)
        except DlspecError as e:
            raise DlspecError.single(f"the spec {path.name} records does not load: {e.problems[0].message}",
                                     hint="export it again with `dlspec export`") from None
    if spec.spec_hash != record.get("spec_hash"):
        raise DlspecError.single(f"{path.name} records a spec whose hash is not its own", hint="export it again")
    return spec


def _run_directory(path: Path) -> Predictor:
    spec_file, _ = rundir.spec_of(path)
    spec = dlspec.load(spec_file)
    weights = rundir.weights_path(path)
    model = dlspec.build(spec)
    W.load_checkpoint(model, spec, weights)
    prep = rundata.load(spec, weights, examples=0).preprocessing
    eager = P.wrap(model.eval(), spec, prep)

    def on_raw(raw: dict[str, np.ndarray]) -> tuple[np.ndarray, ...]:
        with torch.no_grad():
            out = eager(*(torch.from_numpy(np.ascontiguousarray(raw[t.name])) for t in spec.inputs))
        return tuple(o.numpy() for o in (out if isinstance(out, tuple) else (out,)))
    return Predictor(spec, prep, on_raw, f"run {path} ({weights.name}, eager PyTorch)")


def context(predictor: Predictor) -> examples.Context:
    spec, prep = predictor.spec, predictor.prep
    steps = prep.steps if prep is not None else ()
    data = (spec.training or {}).get("data", {}).get("dataset", {})
    return examples.Context(
        inputs=P.raw_spec(spec, prep).inputs, sizes=spec.example_sizes(),
        fields={s.input: s.field for s in steps}, layouts={s.input: s.layout for s in steps},
        columns=data.get("columns", {}) if data.get("kind") == "csv" else {},
        vocab=prep.vocab if prep is not None else None, dims=dict(spec.dims))


# ---- predictions ---------------------------------------------------------------------------------------------

def predict(predictor: Predictor, groups: list[examples.Group], batch_size: int, top: int) -> list[dict]:
    """One row per example: its name, and the top classes with probabilities (a classifier) or its outputs."""
    spec = predictor.spec
    batch_dim = spec.dims.get(spec.batch_dim) if spec.batch_dim else None
    fixed = spec.inputs[0].shape[0] if isinstance(spec.inputs[0].shape[0], int) else None
    size = fixed or min(batch_size, batch_dim.max or batch_size)
    labels = predictor.prep.labels if predictor.prep is not None else None
    names = [o.name for o in spec.outputs]
    rows = []
    for group in groups:
        n = len(group.names)
        for start in range(0, n, size):
            stop = min(start + size, n)
            feed = {k: v[start:stop] for k, v in group.arrays.items()}
            if fixed and stop - start < fixed:  # a fixed batch: fill it with the first example, not reported
                feed = {k: np.concatenate([v, np.repeat(v[:1], fixed - len(v), axis=0)]) for k, v in feed.items()}
            outputs = predictor.run(feed)
            for i in range(stop - start):
                row = {"example": group.names[start + i]}
                if labels is not None:
                    row["top"] = _top(outputs[names.index(labels.output)][i], labels.names, top)
                else:
                    row["outputs"] = {name: out[i].tolist() for name, out in zip(names, outputs)}
                rows.append(row)
    return rows


def _top(scores: np.ndarray, classes: tuple[str, ...], k: int) -> list[dict]:
    """The k most likely classes (at the last position of a sequence) with softmax probabilities."""
    last = scores.reshape(-1, len(classes))[-1].astype(np.float64)
    probs = np.exp(last - last.max())
    probs /= probs.sum()
    order = np.argsort(-probs, kind="stable")[:k]
    return [{"class": classes[i], "index": int(i), "probability": float(probs[i])} for i in order]


def _line(row: dict) -> str:
    if "top" in row:
        best = "  ".join(f"{_name(t['class'])} {t['probability']:.4f}" for t in row["top"])
        return f"  {row['example']}: {best}"
    values = [f"{name} {np.asarray(v).ravel()[:4].round(4).tolist()}" for name, v in row["outputs"].items()]
    return f"  {row['example']}: " + "  ".join(values)


def _name(name: str) -> str:
    return name if name.isprintable() and name.strip() == name and name else json.dumps(name)


def write(path: Path, rows: list[dict]) -> None:
    if path.suffix.lower() == ".json":
        atomic_write_text(path, json.dumps(rows, indent=1) + "\n")
        return
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    if rows and "top" in rows[0]:
        k = max(len(r["top"]) for r in rows)
        writer.writerow(["example", "prediction", "probability"] + [f"{w}{j}" for j in range(2, k + 1)
                                                                    for w in ("class", "probability")])
        for r in rows:
            writer.writerow([r["example"]] + [x for t in r["top"] for x in (t["class"], f"{t['probability']:.6g}")])
    else:
        columns = [f"{name}[{j}]" for name, v in rows[0]["outputs"].items() for j in range(np.asarray(v).size)] if rows else []
        writer.writerow(["example"] + columns)
        for r in rows:
            writer.writerow([r["example"]] + [f"{x:.6g}" for v in r["outputs"].values() for x in np.asarray(v).ravel()])
    atomic_write_text(path, buffer.getvalue())
