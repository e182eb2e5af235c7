"""The run directory: the one module that knows its layout. Training writes it; resume, `init_from`,
`generate` and `export` read it through here.

RUN/spec.yaml        the resolved spec (after --set overrides); values changed on a resume are listed at its top
RUN/run.json         where the spec came from (so `--resume RUN` alone finds its relative paths), processes,
                     normalisation statistics, and every change a resume made, with its step
RUN/metrics.jsonl    one JSON object per event
RUN/checkpoints/     last.pt (the latest), best.pt (the best by best_metric), step-00000500.pt (every_steps)
RUN/weights.pt       the final weights
RUN/summary.json     the final summary
RUN/vocab.json       character-level text data: the alphabet and block size
RUN/tokenizer.json   token data made with a BPE: its tokenizer (run.json's `tokenizer` says which, and the block)
RUN/curves.png       loss, validation metrics, lr and throughput against step (logging.curves)
RUN/tensorboard/     TensorBoard event files, with logging.tensorboard

What inference needs to turn raw inputs into model inputs is in run.json, read with `RunDir.preprocessing()`.

Which weights "a run" means, wherever a run directory is accepted in place of a file: its best checkpoint
when it kept one (it had validation), else its final weights, else its last checkpoint (a run still going).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dlspec.core.errors import DlspecError, Loc, shorten
from dlspec.core.files import atomic_write_text, leftover_temporaries
from dlspec.core.reading import read_text
from dlspec.front.document import dump_text

WEIGHTS_ORDER = ("best", "final", "last")
MAX_METRICS_BYTES = 256 * 2**20  # a line per log step and evaluation: millions of steps


# the files and folders a run writes: what `discard` may remove
_RUN_FILES = ("spec.yaml", "run.json", "metrics.jsonl", "summary.json", "weights.pt", "vocab.json", "tokenizer.json",
              "curves.png")


@dataclass(frozen=True)
class RunDir:
    path: Path
    created: bool = False  # made by this run (not an empty --out the user made)

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    @property
    def last(self) -> Path:
        return self.checkpoints / "last.pt"

    @property
    def best(self) -> Path:
        return self.checkpoints / "best.pt"

    @property
    def weights(self) -> Path:
        return self.path / "weights.pt"

    @property
    def metrics(self) -> Path:
        return self.path / "metrics.jsonl"

    @property
    def spec(self) -> Path:
        return self.path / "spec.yaml"

    @property
    def tensorboard(self) -> Path:
        return self.path / "tensorboard"

    @property
    def curves(self) -> Path:
        return self.path / "curves.png"

    def events(self) -> list[dict]:
        """metrics.jsonl, one dict per event. A line still being written (the last, without its newline) is left
        out, so a run can be read while it trains; a damaged line elsewhere is an error at its line."""
        if not self.metrics.is_file():
            raise DlspecError.single(f"{self.path} has no metrics.jsonl: it is not a run directory", usage=True,
                                     hint="pass a directory `dlspec train` wrote (its --out, or runs/NAME)")
        text = read_text(self.metrics, MAX_METRICS_BYTES, what="metrics logs")
        lines = text.split("\n")
        events = []
        for number, line in enumerate(lines[:-1], start=1):  # the part after the last newline is unfinished
            try:
                event = json.loads(line)
            except (ValueError, RecursionError):
                event = None
            if not isinstance(event, dict) or not isinstance(event.get("event"), str):
                raise DlspecError.single(f"{self.metrics}:{number}: not a metrics record: {shorten(line, 60)}",
                                         Loc(str(self.metrics), number, 1), expected='one JSON object a line, {"event": ...}')
            events.append(event)
        return events

    def summary(self) -> dict | None:
        """summary.json: None while the run has not finished."""
        return self.read_json("summary.json", "the summary dlspec train writes") if (self.path / "summary.json").is_file() \
            else None

    def step_file(self, step: int) -> Path:
        return self.checkpoints / f"step-{step:08d}.pt"

    def step_files(self) -> list[Path]:
        """The step-N.pt checkpoints, oldest first."""
        return sorted(self.checkpoints.glob("step-*.pt"))

    def weights_file(self, which: str) -> Path:
        """`final`, `best` or `last`."""
        return {"final": self.weights, "best": self.best, "last": self.last}[which]

    def write_json(self, name: str, data: Any) -> None:
        atomic_write_text(self.path / name, json.dumps(data, indent=2) + "\n")

    def read_json(self, name: str, expected: str = "a JSON object") -> dict:
        """A JSON object the run wrote; a damaged or edited one is an error naming the file."""
        path = self.path / name
        try:
            value = json.loads(read_text(path, 64 * 2**20, what="run files"))
        except (ValueError, RecursionError) as exc:
            raise DlspecError.single(f"{path} is not valid JSON: {str(exc)[:100]}", expected=expected) from None
        if not isinstance(value, dict):
            raise DlspecError.single(f"{path} holds a {type(value).__name__}, not a JSON object", expected=expected)
        return value

    def record(self) -> dict:
        """run.json, or {} for a run directory written before it existed."""
        return self.read_json("run.json", "the run record dlspec train writes") if (self.path / "run.json").is_file() else {}

    def write_record(self, record: dict) -> None:
        self.write_json("run.json", record)

    def write_spec(self, document: dict, changes: list[dict]) -> None:
        """The resolved spec; `changes` (from run.json) are what resumes changed, and from which step."""
        lines = [f"#   {c['key']}: {c['from']!r} -> {c['to']!r} from step {c['step']}" for c in changes]
        head = "# changed on --resume (the values below are the latest):\n" + "\n".join(lines) + "\n" if lines else ""
        atomic_write_text(self.spec, head + dump_text(document))

    def write_vocab(self, chars: tuple[str, ...], block: int) -> None:
        self.write_json("vocab.json", {"chars": "".join(chars), "block": block})

    def vocab(self) -> tuple[str, int]:
        """The alphabet and context length of a character-level run."""
        if not (self.path / "vocab.json").is_file():
            raise DlspecError.single(f"{self.path} has no vocab.json: it is not a run of a text (character-level) "
                                     "model", usage=True, hint="train a spec whose data set has `kind: text` first")
        vocab = self.read_json("vocab.json", "{chars: the alphabet, block: the context length}")
        chars, block = vocab.get("chars"), vocab.get("block")
        if not isinstance(chars, str) or not chars or not isinstance(block, int) or isinstance(block, bool) or block < 1:
            raise DlspecError.single(f"{self.path / 'vocab.json'} is damaged: chars {shorten(repr(chars), 40)}, block "
                                     f"{shorten(repr(block), 40)}", expected="chars: a non-empty string, block: an int >= 1")
        return chars, block

    def write_tokenizer(self, record: dict, block: int) -> None:
        """A token data set's tokenizer: its kind and size in run.json, a BPE's definition in tokenizer.json."""
        if record.get("text"):
            atomic_write_text(self.path / "tokenizer.json", record["text"])
        run = self.record()
        run["tokenizer"] = {"kind": record["kind"], "vocab_size": record["vocab_size"], "block": block}
        self.write_record(run)

    def codec(self):
        """The tokenizer of a language-model run and its context length: the alphabet of a character-level
        run (vocab.json), or the tokenizer of a token data set (run.json and tokenizer.json)."""
        from dlspec.train import tokenizer
        if (self.path / "vocab.json").is_file():
            chars, block = self.vocab()
            return tokenizer.chars(chars), block
        record = self.record().get("tokenizer")
        if not isinstance(record, dict) or record.get("kind") not in ("bytes", "bpe") or not _count(record.get("block")):
            raise DlspecError.single(f"{self.path} has no tokenizer: it is not a run of a language model whose data "
                                     "says how its ids were made", usage=True,
                                     hint="train on `kind: text`, or on `kind: tokens` files made by `dlspec data "
                                          "tokenize` (or given `tokenizer:`)")
        if record["kind"] == "bytes":
            return tokenizer.byte_level(), record["block"]
        return tokenizer.load_file(self.path / "tokenizer.json", usage=True), record["block"]

    def preprocessing(self) -> dict:
        """What turns raw inputs into this run's model inputs, as plain data from run.json:
        `inputs` (model input -> data field), `data` (the data kind and how it reads raw inputs: an image
        folder's `decode` arguments of dlspec.train.images.decode, a table's `columns` and `fill`, a token
        set's `tokenizer` and `block`), `normalize` (field -> per-channel or per-feature `mean` and `std`,
        applied as (x - mean) / std after decoding) and `classes` (label field -> class names by index)."""
        record = self.record()
        return {key: record.get(key) or {} for key in ("inputs", "data", "normalize", "classes")}

    def checkpointed(self) -> bool:
        """Whether the run wrote any weights or checkpoint (a run without one cannot be resumed)."""
        return self.weights.is_file() or (self.checkpoints.is_dir() and any(self.checkpoints.glob("*.pt")))

    def discard(self) -> None:
        """Remove a run that failed before its first checkpoint: the files it wrote, and the folder if it made it."""
        import shutil
        for name in _RUN_FILES:
            (self.path / name).unlink(missing_ok=True)
        for folder in (self.tensorboard, self.checkpoints):
            if folder.is_dir():
                shutil.rmtree(folder, ignore_errors=True)
        if self.created and self.path.is_dir() and not any(self.path.iterdir()):
            self.path.rmdir()

    def prune_steps(self, keep: int | None) -> None:
        """Keep the newest `keep` step-N.pt files (all when None)."""
        if keep is not None:
            files = self.step_files()
            for old in files[:max(len(files) - keep, 0)]:
                old.unlink()


def weights_path(path: Path, which: str | None = None, loc: Loc | None = None) -> Path:
    """A weights or checkpoint file as given, or the weights of a run directory (or of its checkpoints/
    folder): `which` of them, else the first of WEIGHTS_ORDER that exists. `loc` locates the error."""
    if not path.is_dir():
        if not path.is_file():
            raise DlspecError.single(f"checkpoint {path} does not exist", loc, usage=loc is None,
                                     hint="give a weights.pt, a checkpoint .pt, or a run directory")
        return path
    run = RunDir(path.parent if path.name == "checkpoints" and not (path / "checkpoints").is_dir() else path)
    for choice in (which,) if which else WEIGHTS_ORDER:
        if run.weights_file(choice).is_file():
            return run.weights_file(choice)
    names = (which,) if which else WEIGHTS_ORDER
    raise DlspecError.single(f"no {'or '.join(f'{n} ' for n in names)}weights in run directory {path}", loc,
                             usage=loc is None, expected=" or ".join(str(run.weights_file(n)) for n in names),
                             hint="pass the run directory written by `dlspec train`, or a checkpoint file")


def run_of(weights: Path) -> RunDir | None:
    """The run directory a weights or checkpoint file belongs to (RUN/weights.pt, RUN/checkpoints/*.pt), or None
    for a file outside one: what export reads the training preprocessing from."""
    folder = weights.parent.parent if weights.parent.name == "checkpoints" else weights.parent
    run = RunDir(folder)
    return run if run.spec.is_file() and (folder / "run.json").is_file() else None


def spec_of(path: Path) -> tuple[Path, Path | None]:
    """The resolved spec of a run directory, and where its relative paths start (the original spec's folder)."""
    run = RunDir(path)
    if not run.spec.is_file():
        raise DlspecError.single(f"{path} is not a run directory (no spec.yaml)", usage=True,
                                 hint="pass the directory `dlspec train` printed (its --out, or runs/NAME)")
    base = run.record().get("base_dir")
    if base is not None and not isinstance(base, str):
        raise DlspecError.single(f"{run.path / 'run.json'}: base_dir is {shorten(repr(base), 40)}", expected="a folder path")
    return run.spec, Path(base) if base else None


def new(out: Path | None, name: str) -> RunDir:
    """A fresh directory: --out if given (it must be empty), else runs/NAME, runs/NAME-2, ..."""
    if out is not None:
        existed = out.exists()
        if existed and any(out.iterdir()):
            if not _unstarted(out):
                raise DlspecError.single(f"{out} already holds files; a new run will not write over them", usage=True,
                                         hint=f"continue that run with `--resume {out}`, or choose another --out")
            RunDir(out).discard()  # a run killed before its first checkpoint: nothing to resume, nothing lost
        out.mkdir(parents=True, exist_ok=True)
        return RunDir(out, created=not existed)
    base = Path("runs") / name
    path, n = base, 1
    while path.exists():
        n += 1
        path = base.with_name(f"{name}-{n}")
    path.mkdir(parents=True)
    return RunDir(path, created=True)


def _unstarted(path: Path) -> bool:
    """A run directory holding only what a run writes before its first checkpoint."""
    run = RunDir(path)
    names = {p.name for p in path.iterdir()}
    return (run.spec.is_file() and names <= set(_RUN_FILES) | {"tensorboard", "checkpoints"}
            and not run.checkpointed())


def is_run(path: Path) -> bool:
    return (path / "metrics.jsonl").is_file() and (path / "spec.yaml").is_file()


def find(root: Path, depth: int = 3) -> list[RunDir]:
    """The run directories at or under `root` (at most `depth` folders down), by path."""
    if is_run(root):
        return [RunDir(root)]
    if depth == 0 or not root.is_dir():
        return []
    return [run for child in sorted(root.iterdir()) if child.is_dir() and not child.is_symlink()
            for run in find(child, depth - 1)]


def existing(path: Path) -> RunDir:
    run = RunDir(path)
    if not run.last.is_file():
        raise DlspecError.single(f"{path} has no checkpoint to resume from ({run.last} is missing)", usage=True,
                                 hint="checkpoints are written every checkpoint.every_steps steps and after each epoch")
    for leftover in leftover_temporaries(run.path) + leftover_temporaries(run.checkpoints):
        leftover.unlink()  # a write killed before its rename: the file it was replacing is intact
    return run


def load_last(run: RunDir) -> dict:
    """The checkpoint a resume starts from; a damaged one names the step checkpoints that could replace it."""
    steps = run.step_files()
    hint = (f"the newest step checkpoint is {steps[-1]}; copy it over {run.last} to resume from there"
            if steps else "nothing else to resume from: start the run again")
    from dlspec.train import checkpoint  # torch: reading a run's files (`dlspec runs`, plot) does not need it

    state = checkpoint.load(run.last, hint=hint)
    if state.get("kind") != "checkpoint":
        raise DlspecError.single(f"{run.last} holds {str(state.get('kind') or 'unknown')[:40]} data, not a training "
                                 "checkpoint (no optimizer, schedule or state)", hint=hint)
    for field, ok, expected in _FIELDS:
        if field not in state or not ok(state[field]):
            raise DlspecError.single(f"{run.last}: field '{field}' is {shorten(repr(state.get(field)), 60)}",
                                     expected=expected, hint=hint)
    return state


def _count(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and 0 <= v < 2**62


def _state(v) -> bool:
    """The Trainer's State as saved: counts where counts belong, numbers (or nothing yet) for the metric values."""
    counts, values = ("step", "epoch", "batch", "stop_bad"), ("best", "stop_best")
    return (isinstance(v, dict) and set(v) == set(counts + values + ("best_step",))
            and all(_count(v[k]) for k in counts) and (v["best_step"] is None or _count(v["best_step"]))
            and all(v[k] is None or (isinstance(v[k], (int, float)) and not isinstance(v[k], bool)) for k in values))


# what a resume reads from last.pt, beyond the state dicts torch checks itself
_FIELDS = (
    ("step", _count, "a step count"),
    ("state", lambda v: _state(v), "{step, epoch, batch, best, best_step, stop_best, stop_bad}: where the run is"),
    ("metrics_bytes", _count, "a size in bytes"),
    ("optimizer", lambda v: isinstance(v, dict), "an optimizer state dict"),
    ("schedule", lambda v: isinstance(v, dict), "a schedule state dict"),
    ("scaler", lambda v: v is None or isinstance(v, dict), "a GradScaler state dict or None"),
    ("rng", lambda v: isinstance(v, list) and bool(v) and all(isinstance(r, dict) for r in v), "one RNG state per process"),
)


def check_same_model(state: dict, spec: Any, force: bool) -> list[str]:
    """The changes between the checkpoint's model and the spec's; refused unless `force`."""
    if state.get("spec_hash") == spec.spec_hash:
        return []
    from dlspec.train import checkpoint

    changes = checkpoint.describe_changes(state.get("model_document", {}), checkpoint.model_document(spec.document))
    changes = changes or ["the model's computation differs (a standard block or default changed)"]
    if not force:
        raise DlspecError.single("the model changed since this run was checkpointed:\n    " + "\n    ".join(changes),
                                 hint="resume with the spec the run started with, or pass --force to load the "
                                      "checkpoint into the changed model", usage=True)
    return changes


def cut_metrics(run: RunDir, size: int) -> None:
    """Drop metrics.jsonl lines written after the checkpoint we resume from: they will be written again.

    Only at the end of that checkpoint's own line: a size that lands anywhere else (a damaged or crafted
    checkpoint, an edited file) leaves the file whole, since cutting there would lose lines for good."""
    if not run.metrics.is_file() or run.metrics.stat().st_size <= size:
        return
    with run.metrics.open("r+b") as handle:
        handle.seek(max(size - 4096, 0))
        before = handle.read(size - max(size - 4096, 0))
        if not before.endswith(b"\n") or b'"event": "checkpoint"' not in before.rsplit(b"\n", 2)[-2]:
            return
        handle.truncate(size)
