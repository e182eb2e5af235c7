"""The command line: `dlspec validate|build|train|generate|data|export|verify|predict|schema`.

This is the only place that prints errors and chooses exit codes:
0 success, 1 invalid spec or failed check, 2 usage error (bad arguments, missing file),
3 internal error (a bug in dlspec; `--debug` shows the traceback).
"""
from __future__ import annotations

import argparse
import errno
import importlib
import importlib.metadata
import sys

from . import __version__
from .core.errors import DlspecError, shorten

# command -> module with add_arguments(parser) and run(args) -> int
COMMANDS = {
    "validate": ("dlspec.commands", "validate", "check specs: schema, names, shapes"),
    "build": ("dlspec.commands", "build", "build the model, print its summary, save weights or emit Python"),
    "train": ("dlspec.train.cli", "", "train the model with the spec's training section"),
    "generate": ("dlspec.train.generate", "", "sample text from a trained language model (characters or tokens)"),
    "data": ("dlspec.train.datacli", "", "prepare data: tokenize text into token files"),
    "export": ("dlspec.export.cli", "", "export to ONNX, TorchScript and torch.export, and prove parity"),
    "verify": ("dlspec.export.verify", "", "re-check an exported file (ONNX, TorchScript, .pt2) against the spec's eager model"),
    "predict": ("dlspec.export.cli", "predict", "run an exported file or a run on examples (CSV, .npz, images, text): top "
                "classes by name"),
    "schema": ("dlspec.commands", "schema", "print the JSON Schema of the spec language"),
    "config": ("dlspec.look.config", "", "print the resolved spec as YAML: overrides applied, defaults written out"),
    "diff": ("dlspec.look.diff", "", "compare two specs (or git revisions): nodes, parameters, MACs, signature, "
                                     "whether A's checkpoint loads into B"),
    "graph": ("dlspec.look.graph", "", "draw the model's graph: node ids, ops, shapes on the edges, skip connections"),
    "plot": ("dlspec.look.plot", "", "draw training curves of one or more runs (one panel per metric)"),
    "runs": ("dlspec.look.runs", "", "list runs: spec, parameters, steps, best metric, time, whether finished or resumable"),
}


# the packages whose versions decide whether dlspec works: shown by `dlspec --version` and at the start of CI
KEY_PACKAGES = ("torch", "pyyaml", "jsonschema", "onnx", "onnxruntime", "onnxscript", "sympy", "numpy", "scikit-learn",
                "matplotlib")


def versions() -> str:
    lines = [f"dlspec {__version__}"]
    for name in KEY_PACKAGES:
        try:
            lines.append(f"  {name} {importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            lines.append(f"  {name} not installed")
    return "\n".join(lines)


class _Versions(argparse.Action):
    def __call__(self, parser, namespace, values, option_string=None):  # looked up only when asked for
        print(versions())
        sys.exit(0)


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # exit 2 with a hint, as argparse does, but without the full usage dump
        self.print_usage(sys.stderr)
        print(f"{self.prog}: error: {message}\n  hint: run `{self.prog} --help`", file=sys.stderr)
        sys.exit(2)


def parser() -> argparse.ArgumentParser:
    top = _Parser(prog="dlspec", description="Declarative, shape-checked PyTorch models.")
    top.add_argument("--version", action=_Versions, nargs=0, help="show dlspec's version and those of its key packages")
    # not `required`: argparse would then answer `dlspec --bogus` with "COMMAND is required", not naming --bogus
    sub = top.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name, (module, attr, help_text) in COMMANDS.items():
        command = _command(module, attr)
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.add_argument("--debug", action="store_true", help="show Python tracebacks of internal errors")
        command.add_arguments(p)
        p.set_defaults(run=command.run)
    return top


def _command(module: str, attr: str):
    mod = importlib.import_module(module)
    return getattr(mod, attr) if attr else mod


def main(argv: list[str] | None = None) -> int:
    top = parser()
    args = top.parse_args(argv)
    if args.command is None:
        top.error(f"a COMMAND is required: one of {', '.join(COMMANDS)}")
    try:
        return args.run(args)
    except DlspecError as exc:
        if getattr(args, "format", "text") == "json":
            print(exc.to_json())
        else:
            print(exc.format(), file=sys.stderr)
            count = len(exc.problems)
            if count > 1:
                print(f"{count} problems", file=sys.stderr)
        return 2 if exc.usage else 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    except OSError as exc:  # the system refused a file operation (disk full, read-only, permissions): not a bug
        if exc.errno not in _ENVIRONMENT_ERRORS:
            return _internal(exc, args.debug)
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"error: {where}{exc.strerror or exc}\n  hint: check the path, its permissions and the free space",
              file=sys.stderr)
        return 1
    except Exception as exc:  # a bug in dlspec, not in the user's input
        return _internal(exc, args.debug)


_ENVIRONMENT_ERRORS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOTDIR, errno.EISDIR,
                       errno.EEXIST, errno.ENOENT, errno.ENAMETOOLONG, errno.ELOOP, errno.EMFILE, errno.ENFILE}


def _internal(exc: Exception, debug: bool) -> int:
    if debug:
        raise exc
    print(f"internal error: {type(exc).__name__}: {shorten(str(exc))}\n  hint: this is a dlspec bug; rerun with "
          "--debug for the traceback and report it", file=sys.stderr)
    return 3


def run() -> None:
    sys.exit(main())
