"""`dlspec plot RUN [RUN ...]`: training curves, one panel per metric, several runs overlaid."""
from __future__ import annotations

from pathlib import Path

from dlspec.core.errors import DlspecError
from dlspec.train import curves, rundir


def add_arguments(p) -> None:
    p.add_argument("runs", nargs="+", metavar="RUN", help="run directories (a folder of runs stands for all of them)")
    p.add_argument("--out", metavar="FILE", help="the picture: .png, .svg or .pdf (default: RUN/curves.png for one run, "
                                                  "else curves.png)")
    p.add_argument("--metrics", metavar="A,B", help="the panels, e.g. loss,val_accuracy,lr (default: every metric logged)")


def run(args) -> int:
    dirs = runs_of([Path(p) for p in args.runs])
    found = [curves.Run(label, tuple(run.events())) for label, run in zip(labels(dirs), dirs)]
    out = Path(args.out) if args.out else dirs[0].curves if len(dirs) == 1 else Path("curves.png")
    metrics = [m.strip() for m in args.metrics.split(",") if m.strip()] if args.metrics else None
    curves.draw(found, out, metrics)
    print(f"wrote {out}: {', '.join(curves.panels(found, metrics))} of {len(found)} run{'s' * (len(found) != 1)}")
    return 0


def runs_of(paths: list[Path]) -> list[rundir.RunDir]:
    """The run directories the paths name: each a run, or a folder of runs."""
    out = []
    for path in paths:
        if not path.is_dir():
            raise DlspecError.single(f"{path} is not a directory", usage=True,
                                     hint="pass a run directory `dlspec train` wrote (its --out, or runs/NAME)")
        found = rundir.find(path)
        if not found:
            raise DlspecError.single(f"{path} holds no run (no metrics.jsonl and spec.yaml in it or below)", usage=True,
                                     hint="pass a run directory `dlspec train` wrote (its --out, or runs/NAME)")
        out += [r for r in found if r not in out]
    return out


def labels(runs: list[rundir.RunDir]) -> list[str]:
    """Each run's name in a legend or table: its folder's name, or its path where two names are the same."""
    names = [r.path.name for r in runs]
    return [name if names.count(name) == 1 else str(r.path) for name, r in zip(names, runs)]
