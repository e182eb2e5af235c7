"""`dlspec export` as a library call: write every format, then prove parity.

    export(spec, model, out_dir, config, weights, run) -> ExportResult

The files take inputs as the data set gives them: the model is exported with the
training preprocessing the run recorded in front of it (`preprocess.py`), unless
`export.preprocessing: external` asks for preprocess.json instead. A format that
cannot be produced becomes a located problem and the others are still written;
the smaller variants are made from the .onnx file; parity then checks every file
that was written, on random and on real inputs, the report goes to `parity.json`
beside them, and the model card to README.md.
"""
from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from dlspec.backend.inputs import random_inputs
from dlspec.core.errors import DlspecError, Problem, gist
from dlspec.core.files import atomic_write_text, file_sha256

from . import card, parity, report, to_onnx, variants
from . import preprocess as P
from .blame import export_problem
from .compare import content_hash
from .config import ExportConfig
from .files import clean_staging
from .formats import FORMATS, Job
from .provenance import provenance, to_onnx_metadata
from .quiet import quiet
from .rundata import RunData
from .shapes import check_memory, dynamic_shapes, size_cases, trace_sizes

PARITY_FILE = "parity.json"
CARD_FILE = "README.md"


@dataclass(frozen=True)
class ExportResult:
    files: tuple[Path, ...]  # written artifacts
    parity_file: Path
    report: parity.ParityReport
    problems: tuple[Problem, ...]  # formats not produced, then parity failures

    @property
    def ok(self) -> bool:
        return not self.problems


def export(spec, model: torch.nn.Module, out_dir: Path, config: ExportConfig, weights: dict,
           run: RunData | None = None) -> ExportResult:
    out_dir, run = Path(out_dir), run or RunData(None, None)
    cases = size_cases(spec, config)
    check_memory(spec, cases, config)
    clean_staging(out_dir)
    prep = deployed_preprocessing(run.preprocessing, config)
    candidates, problems, record = write(spec, model, out_dir, config, weights, prep)
    # the eager model and every file are given what the data set gives: the files apply their preprocessing
    raw, reference = P.raw_spec(spec, prep), P.wrap(model.eval(), spec, prep)
    result = parity.check(raw, reference, candidates, config, cases, weights, run.validation)
    result = replace(result, notes=run.notes, preprocessing=_described(spec, prep),
                     latency=_latency(result, raw, spec, prep, run) if config.variants else {})
    parity_file = out_dir / PARITY_FILE
    report.write_json(result, parity_file)
    if prep is not None and not prep.embedded:
        atomic_write_text(out_dir / P.PREPROCESS_FILE, json.dumps(P.preprocess_json(prep, spec), indent=2) + "\n")
    else:  # an earlier external export's numbers, which these files do not take
        (out_dir / P.PREPROCESS_FILE).unlink(missing_ok=True)
    if candidates:  # else the card of an earlier export stays, beside the files it describes
        smallest = {name: min(sizes) for name, sizes in record["export"]["sizes"].items()}  # the script's example: batch 1
        atomic_write_text(out_dir / CARD_FILE, card.render(result, record, prep, {**spec.example_sizes(), **smallest}))
    return ExportResult(tuple(c.file for c in candidates), parity_file, result,
                        tuple(problems) + tuple(report.problems(result)))


def deployed_preprocessing(prep: P.Preprocessing | None, config: ExportConfig) -> P.Preprocessing | None:
    """The run's preprocessing as these files carry it: in their graph, or beside them. None when there is none."""
    if prep is None or prep.identity and prep.labels is None and prep.vocab is None:
        return None
    return replace(prep, embedded=config.preprocessing == "embedded")


def _described(spec, prep: P.Preprocessing | None) -> tuple[str, ...]:
    if prep is None or prep.identity:
        return ()
    where = "in the exported files" if prep.embedded else f"by the caller, with the numbers in {P.PREPROCESS_FILE}"
    lines = [f"applied {where}; numbers {prep.source}"]
    return tuple(lines + [s.describe(t.dtype) for s, t in zip(prep.steps, spec.inputs) if not s.identity]
                 + [s.describe() for s in prep.outputs])


def _latency(checked: parity.ParityReport, spec, bare_spec, prep: P.Preprocessing | None, run: RunData) -> dict:
    """ONNX Runtime latency of the fp32 .onnx file and its variants (those that ran in the parity check), at
    batch 1 and at training's evaluation batch size (64 at most), on real examples where there are some."""
    files = [a.file for a in checked.artifacts if a.format == "onnx" and a.error is None]
    if not files:
        return {}
    if run.validation is not None:
        n = len(run.validation)
        sizes = sorted({1, min(run.validation.batch_size, n, 64)})
        feeds = [{k: v[:b].numpy() for k, v in run.validation.inputs.items()} for b in sizes]
    else:
        sizes = [spec.example_sizes().get(spec.batch_dim, 1)]
        feeds = [{t.name: x.numpy() for t, x in zip(spec.inputs, random_inputs(spec, seed=0))}]
    if prep is not None and not prep.embedded:  # the files take preprocessed inputs
        feeds = [P.apply(prep, bare_spec, feed) for feed in feeds]
    timed = variants.latency(files, feeds, torch.get_num_threads())
    return {name: dict(zip(sizes, ms)) for name, ms in timed.items()}


def write(spec, model: torch.nn.Module, out_dir: Path, config: ExportConfig, weights: dict,
          prep: P.Preprocessing | None = None) -> tuple[list[parity.Candidate], list[Problem], dict]:
    """Write each format of `config`, then its variants, into `out_dir`: the files written (with their content
    hashes), a located problem for each format that could not be written, and the provenance record they carry.
    The files take the inputs of `P.files_spec(spec, prep)`; each is loaded to take raw inputs (applying
    preprocess.json when the preprocessing is external)."""
    model.eval()  # dropout off, batch norm on its running statistics
    bare_spec = spec
    spec, model = P.files_spec(spec, prep), P.wrap(model, spec, prep) if prep is not None and prep.embedded else model
    # ONNX and .pt2 are made from one torch.export program, traced first: it may make default dims static
    config, program = trace(spec, model, config) if {"onnx", "pt2"} & set(config.formats) else (config, None)
    shapes = dynamic_shapes(spec, config)
    record = provenance(spec, weights, config, prep)
    example = random_inputs(spec, trace_sizes(spec, config), seed=0)
    job = Job(model, spec, config, example, shapes, record, program or _once(lambda: _torch_export(model, example, shapes)))

    candidates, failed = [], {}
    for name in config.formats:
        fmt = FORMATS[name]
        path = out_dir / (artifact_stem(spec.name) + fmt.suffix)
        try:
            method, note = fmt.write(job, path)
        except DlspecError:
            raise
        except Exception as e:  # an op the exporter cannot handle, a failed check: name the spec node
            failed.setdefault(id(e), (e, []))[1].append(name)  # ONNX and .pt2 share one torch.export failure
            continue
        hashes = {"sha256": file_sha256(path), "content_sha256": content_hash(name, path)}
        candidates.append(parity.Candidate(name, path, method, loader(fmt.load, path, spec, bare_spec, prep), note, hashes))
    problems = [export_problem(names, e, spec, P.inner(model)) for e, names in failed.values()]
    onnx_file = next((c for c in candidates if c.format == "onnx"), None)
    for variant in config.variants if onnx_file is not None else ():
        path = out_dir / (artifact_stem(spec.name) + variants.suffix(variant.kind))
        try:
            variants.write(variant.kind, onnx_file.file, path, to_onnx_metadata({**record, "variant": variant.kind}))
        except Exception as e:  # an op the tool cannot convert: the other files stand
            problems.append(Problem(f"cannot make the {variant.kind} variant of {onnx_file.file.name}: {gist(e)}",
                                    hint="the other files were still written; leave this variant out of export.variants"))
            continue
        hashes = {"sha256": file_sha256(path), "content_sha256": content_hash("onnx", path)}
        candidates.append(parity.Candidate("onnx", path, f"{variant.kind} of {onnx_file.method}",
                                           loader(to_onnx.load, path, spec, bare_spec, prep), "", hashes,
                                           variant.kind, variant.agreement))
    return candidates, problems, record


def loader(load, path: Path, spec, bare_spec, prep: P.Preprocessing | None):
    """How parity loads a file: to take raw inputs, as the eager model it is compared with does."""
    if prep is None or prep.embedded or prep.identity:
        return functools.partial(load, path, spec)

    def external():
        run = load(path, spec)

        def on_raw(raw: dict[str, torch.Tensor]):  # what a deployment does with preprocess.json
            inputs = P.apply(prep, bare_spec, {k: v.numpy() for k, v in raw.items()})
            return P.restore(prep, bare_spec, run({k: torch.from_numpy(v) for k, v in inputs.items()}))
        return on_raw
    return external


def artifact_stem(name: str) -> str:
    """A file name from the spec name: letters, digits, '.', '_' and '-' only."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "model"


_SPECIALISED = re.compile(r"You marked (\w+) as dynamic but your code specialized it")


def trace(spec, model: torch.nn.Module, config: ExportConfig):
    """The torch.export program ONNX and .pt2 are made from, and the config it was made with: a dim exported
    dynamic by default (not named in export.dynamic) that an op specialises to one size (torch's max_pool1d
    with kernel 1 does) is exported at its example size instead, so a default export does not fail on it;
    a dim the spec names still fails, and so does a range torch finds narrower than the spec's (the blame
    gives the dims declaration that fixes it).
    Returns (config, a function giving the program or raising torch's error)."""
    while True:
        example = random_inputs(spec, trace_sizes(spec, config), seed=0)
        try:
            program = _torch_export(model, example, dynamic_shapes(spec, config))
        except Exception as e:  # torch raises several types; the message names the dim
            names = {m.group(1) for m in _SPECIALISED.finditer(str(e))}
            names = (names & set(config.dynamic)) - set(config.chosen)
            if not names:
                return config, _raise(e)
            config = replace(config, dynamic=tuple(n for n in config.dynamic if n not in names),
                             sizes={k: v for k, v in config.sizes.items() if k not in names})
            continue
        return config, _give(program)


def _give(program):
    return lambda: program


def _raise(error: Exception):
    def get():
        raise error
    return get


def _torch_export(model: torch.nn.Module, example: tuple, shapes: dict) -> torch.export.ExportedProgram:
    with quiet():
        # Non-strict: traces the generated forward as Python runs it, so failures point at its lines.
        return torch.export.export(model, example, dynamic_shapes=shapes, strict=False)


def _once(make):
    """`make()` run at most once; its result, or its exception, shared by the ONNX and .pt2 writers."""
    outcome: list = []

    def get():
        if not outcome:
            try:
                outcome.append((True, make()))
            except Exception as e:
                outcome.append((False, e))
        ok, value = outcome[0]
        if not ok:
            raise value
        return value
    return get
