"""The front-end commands: validate, build, schema."""
from __future__ import annotations

import json
import sys
from pathlib import Path
from types import SimpleNamespace

from .core.args import SEED, bounded_int
from .core.errors import DlspecError


def _spec_args(p) -> None:
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a value by its dotted path, e.g. model.vars.d_model=256 (repeatable)")


def _validate_add(p) -> None:
    p.add_argument("specs", nargs="+", metavar="SPEC", help="spec files")
    _spec_args(p)
    p.add_argument("--format", choices=("text", "json"), default="text", help="json lists errors for editors and CI")
    p.add_argument("--no-data", action="store_true",
                   help="skip the data checks (files, columns, fields against the inputs) of a training section; "
                   "its settings are still checked")


def _validate_run(args) -> int:
    from .front.spec import load
    results, failed = [], False
    for path in args.specs:
        try:
            spec = load(path, args.overrides)
            data = _check_training(spec, with_data=not args.no_data) if spec.training is not None else None
        except DlspecError as exc:
            if exc.usage and len(args.specs) == 1:
                raise
            failed = True
            results.append({"file": path, "ok": False, "errors": [p.to_json() for p in exc.problems]})
            if args.format == "text":
                print(exc.format(), file=sys.stderr)
            continue
        from .backend.summary import node_params
        params = sum(node_params(spec.graph).values())
        results.append({"file": path, "ok": True, "name": spec.name, "nodes": len(spec.graph.nodes), "params": params,
                        "spec_hash": spec.spec_hash, **({"data": data} if data else {})})
        if args.format == "text":
            ins = "; ".join(f"{i.name} [{', '.join(map(str, i.shape))}] {i.dtype}" for i in spec.inputs)
            outs = "; ".join(f"{o.name} [{', '.join(map(str, o.shape))}]" for o in spec.outputs)
            checked = f"; data: {data['train']} train / {data['validation']} validation examples" if data else ""
            print(f"ok  {path}: {spec.name}, {len(spec.graph.nodes)} nodes, {params:,} parameters; {ins} -> {outs}"
                  f"{checked}")
    if args.format == "json":
        print(json.dumps({"ok": not failed, "specs": results}, indent=2))
    elif len(args.specs) > 1:
        bad = sum(1 for r in results if not r["ok"])
        print(f"{len(results) - bad} valid, {bad} invalid", file=sys.stderr if bad else sys.stdout)
    return 1 if failed else 0


def _check_training(spec, with_data: bool) -> dict | None:
    """What `dlspec train` checks of its settings, and of the data (`with_data`) before it builds the model;
    the examples it found."""
    if not with_data:
        from .train.config import parse
        parse(spec.training, spec.locate)
        return None
    from .train.setup import check_data
    data = check_data(spec)
    return {"train": len(data.train), "validation": len(data.val) if data.val is not None else 0}


def _build_add(p) -> None:
    p.add_argument("spec", metavar="SPEC")
    _spec_args(p)
    p.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    p.add_argument("--out", metavar="FILE", help="save the weights (a dlspec weights file, the spec's names) to FILE")
    p.add_argument("--weights", metavar="PATH", help="load weights: a .safetensors/.pt/.pth/.bin file, a Hugging Face "
                   "folder, a dlspec checkpoint or run (mapped by the spec's `weights:` section; strict)")
    p.add_argument("--save", metavar="OUT.safetensors", help="save the weights in the source's layout (the spec's "
                   "`weights:` mapping undone) as .safetensors")
    p.add_argument("--emit-python", metavar="FILE", help="write the model as a standalone PyTorch file (needs only torch)")
    p.add_argument("--seed", type=SEED, default=0, help="seed for weight initialisation (default 0)")
    p.add_argument("--rows", type=bounded_int(2, 10**6), default=400, help="most rows to print (default 400)")
    p.add_argument("--expand", action="store_true", help="one row per node (default: one per block instance or repeat)")


def _build_run(args) -> int:
    from .backend.builder import build, source
    from .backend.summary import format_summary, summarize
    from .core.files import atomic_write_text
    from .front.spec import load
    spec = load(args.spec, args.overrides)
    # without --out no weight is needed: the meta device builds the module (proving the generated code
    # constructs) with shapes only, so a 7B spec summarises in seconds and no memory
    real = args.out or args.weights or args.save
    model = build(spec, seed=args.seed, device=None if real else "meta", weights=args.weights)
    summary = summarize(spec, model)
    if args.weights:
        summary["weights"] = model.weights_report.to_json()
    if args.emit_python:
        atomic_write_text(Path(args.emit_python), source(spec, standalone=True))
    if args.out:
        from .train.checkpoint import FORMAT, save_atomic
        save_atomic({"format": FORMAT, "kind": "weights", "model": model.state_dict(), "spec_hash": spec.spec_hash,
                     "spec": spec.document}, Path(args.out))
    if args.save:
        from .weights import save
        summary["saved"] = save(model, Path(args.save))
    if args.json:
        print(json.dumps(summary, indent=2, default=str))
    else:
        print(format_summary(summary, args.rows, args.expand))
        if args.weights:
            print(model.weights_report.summary())
        if args.save:
            print(f"wrote {args.save} ({summary['saved']['tensors']} tensors, in the source's layout)")
        if args.emit_python:
            print(f"wrote {args.emit_python} (runs with only torch installed)")
        if args.out:
            print(f"wrote {args.out} ({'loaded' if args.weights else f'initial weights, seed {args.seed}'})")
    return 0


def _schema_add(p) -> None:
    pass


def _schema_run(args) -> int:
    from .front.schema import schema_text
    sys.stdout.write(schema_text())
    return 0


validate = SimpleNamespace(add_arguments=_validate_add, run=_validate_run)
build = SimpleNamespace(add_arguments=_build_add, run=_build_run)
schema = SimpleNamespace(add_arguments=_schema_add, run=_schema_run)
