"""`dlspec train SPEC [--out DIR] [--set key=value ...] [--resume DIR] [--force] [--nproc N]`."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from dlspec.core.args import bounded_int
from dlspec.core.errors import DlspecError


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("spec", nargs="?", metavar="SPEC", help="spec file (optional with --resume: the run's own spec)")
    p.add_argument("--out", type=Path, metavar="DIR", help="run directory (default: runs/NAME, never overwritten)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a value by its dotted path, e.g. training.optimizer.lr=0.01 (repeatable)")
    p.add_argument("--resume", type=Path, metavar="DIR", help="continue the run in DIR from its last checkpoint")
    p.add_argument("--force", action="store_true", help="resume even though the model spec changed")
    p.add_argument("--nproc", type=bounded_int(1, 1024), metavar="N",
                   help="train with N processes on this machine (runs torchrun)")
    p.add_argument("--progress", choices=("auto", "bar", "lines", "off"),
                   help="progress display (default: the spec's, else a bar on a terminal and lines otherwise)")


def run(args: argparse.Namespace) -> int:
    import dlspec
    from dlspec.train import distributed
    from dlspec.train.loop import train
    spec_path, base_dir = _spec_source(args)
    spec = dlspec.load(spec_path, args.overrides)
    if spec.training is None:
        raise DlspecError.single(f"{spec_path} has no `training:` section", spec.locate(()),
                                 hint="add one; specs/digits-cnn.yaml is a complete example", usage=True)
    if args.nproc and args.nproc > 1 and distributed.launched_size() == 1:
        # the spec and the checks that do not need the processes fail here, once, before any process starts
        return distributed.launch(args.nproc, _argv_without_nproc(sys.argv[1:]), spec)
    train(spec, args.out, resume=args.resume, force=args.force, progress_mode=args.progress, base_dir=base_dir)
    return 0


def _spec_source(args: argparse.Namespace) -> tuple[Path, Path | None]:
    """The spec to load, and where its relative paths start (the original folder when resuming alone)."""
    if args.resume is not None and args.out is not None:
        raise DlspecError.single("--resume continues the run in its own directory; drop --out", usage=True)
    if args.spec:
        return Path(args.spec), None
    if args.resume is None:
        raise DlspecError.single("dlspec train needs a SPEC (or --resume DIR)", usage=True,
                                 hint="dlspec train specs/digits-cnn.yaml")
    from dlspec.train import rundir
    return rundir.spec_of(args.resume)


def _argv_without_nproc(argv: list[str]) -> list[str]:
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--nproc":
            skip = True
        elif not arg.startswith("--nproc="):
            out.append(arg)
    return out
