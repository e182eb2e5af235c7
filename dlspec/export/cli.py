"""`dlspec export SPEC [--checkpoint FILE|RUN_DIR] [--format onnx,torchscript,pt2] [--out DIR]`, and the command
line of `dlspec predict` (its work is in predict.py, which imports torch and onnx only when it runs)."""
from __future__ import annotations

import argparse
import time
from types import SimpleNamespace

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


def _predict_add(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", metavar="ARTIFACT|RUN", help="an exported .onnx, .pt2 or TorchScript file, or a run directory")
    p.add_argument("inputs", nargs="*", metavar="INPUT",
                   help="a .csv (a header row, one row per example), an .npz (one array per input), image files or a "
                        "folder of them, or a .txt (one text per line)")
    p.add_argument("--text", action="append", default=[], metavar="TEXT", help="a text to continue (repeatable)")
    p.add_argument("--out", metavar="FILE", help="write every prediction to FILE: .csv or .json")
    p.add_argument("--top", type=bounded_int(1, 1000), default=3, help="classes shown per example (default 3)")
    p.add_argument("--batch-size", type=bounded_int(1, 1 << 16), default=64, help="examples per run (default 64)")
    p.add_argument("--pixel-scale", type=finite_float, metavar="X",
                   help="multiply image pixels (0..255) by X, for a model whose data set gives images in other units "
                        "(the bundled 8x8 digits are 0..16: 0.0627)")


def _predict_run(args: argparse.Namespace) -> int:
    from .predict import run as predict_run
    return predict_run(args)


predict = SimpleNamespace(add_arguments=_predict_add, run=_predict_run)
