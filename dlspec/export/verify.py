"""`dlspec verify MODEL.onnx --spec SPEC [--checkpoint ...]`: re-run the parity check of a
deployed file, e.g. in the CI of a model repository."""
from __future__ import annotations

import argparse
from pathlib import Path

from dlspec.core.errors import DlspecError

from .cli import add_tolerance_arguments, add_weight_arguments


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("artifact", metavar="FILE", help="an exported .onnx, .pt2 or TorchScript (.pt) file")
    p.add_argument("--spec", required=True, metavar="SPEC", help="the spec it was exported from")
    add_weight_arguments(p)
    add_tolerance_arguments(p)
    p.add_argument("--report", metavar="FILE", help="also write the parity report as JSON to FILE")


def run(args: argparse.Namespace) -> int:
    from .api import verify
    from .report import table, write_json

    result = verify(args.artifact, args.spec, checkpoint=args.checkpoint, last=args.last, atol=args.atol,
                    rtol=args.rtol, overrides=args.overrides, weights=args.weights)
    content = result.content
    if content["identical"]:
        print(f"content: identical to a fresh export of {args.spec} (sha256 {content['sha256'][:16]}, "
              f"content {content['content_sha256'][:16]})")
        print(table(result.report))
    else:
        print(f"content: DIFFERS from a fresh export of {args.spec} (sha256 {content['sha256'][:16]}); not run")
    if args.report:
        write_json(result.report, Path(args.report), content)
    if result.problems:
        raise DlspecError(result.problems)
    return 0
