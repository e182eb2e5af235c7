"""`dlspec export SPEC [--checkpoint FILE|RUN_DIR] [--format onnx,torchscript,pt2] [--out DIR]`"""
from __future__ import annotations

import argparse
import time

from dlspec.core.args import SEED, bounded_int, finite_float
from dlspec.core.errors import DlspecError

from .schema import FORMATS, PREPROCESSING, VARIANTS


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("spec", metavar="SPEC", help="the spec file")
    add_weight_arguments(p)
    p.add_argument("--format", dest="formats", metavar="FORMATS",
                   help=f"comma-separated, from {','.join(FORMATS)} (default: export.formats of the spec, else all)")
    p.add_argument("--out", metavar="DIR", help="folder for the files and parity.json (default: exports/<spec name>)")
    p.add_argument("--opset", type=bounded_int(0, 1000),
                   help="ONNX opset (default: export.opset of the spec, else the newest the installed onnxruntime loads)")
    p.add_argument("--variants", metavar="VARIANTS",
                   help=f"comma-separated smaller ONNX files, from {','.join(VARIANTS)} (default: export.variants)")
    p.add_argument("--preprocessing", choices=PREPROCESSING,
                   help="with a run's weights: the training preprocessing in the files' graph (embedded, the default) "
                        "or in preprocess.json beside them (external)")
    add_tolerance_arguments(p)
    p.add_argument("--seed", type=SEED, default=0, help="initialisation seed when no checkpoint is given (default 0)")


def add_weight_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", metavar="FILE|RUN_DIR",
                   help="weights: a checkpoint file or a run directory (its best checkpoint); "
                        "default: the initialised weights")
    p.add_argument("--last", action="store_true", help="with a run directory: its last checkpoint instead of the best")
    p.add_argument("--weights", metavar="PATH", help="weights from elsewhere (.safetensors, .pt/.pth/.bin, a Hugging "
                   "Face folder), mapped by the spec's `weights:` section")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a value by its dotted path, e.g. model.vars.width=16 (repeatable)")


def add_tolerance_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--atol", type=finite_float, help="absolute tolerance (default: export.tolerance, else 1e-5)")
    p.add_argument("--rtol", type=finite_float, help="relative tolerance (default: export.tolerance, else 1e-4)")


def run(args: argparse.Namespace) -> int:
    from .api import export
    from .pipeline import CARD_FILE
    from .report import table
    from .weights import describe

    formats = [f.strip() for f in args.formats.split(",") if f.strip()] if args.formats else None
    variants = [v.strip() for v in args.variants.split(",") if v.strip()] if args.variants is not None else None
    start = time.perf_counter()
    result = export(args.spec, args.out, checkpoint=args.checkpoint, last=args.last, formats=formats,
                    opset=args.opset, atol=args.atol, rtol=args.rtol, overrides=args.overrides, seed=args.seed,
                    weights=args.weights, variants=variants, preprocessing=args.preprocessing)
    print(f"exported {result.report.spec_name}: {describe(result.report.weights)}")
    for artifact in result.report.artifacts:
        note = f"; {artifact.note}" if artifact.note else ""
        print(f"  {artifact.variant or artifact.format:<12} {artifact.file}  ({artifact.method}{note})")
    print()
    print(table(result.report))
    folder = result.parity_file.parent
    print(f"\nreport: {result.parity_file}, model card: {folder / CARD_FILE}  ({time.perf_counter() - start:.1f} s)")
    if result.problems:
        raise DlspecError(result.problems)
    return 0
