"""What the fuzzer feeds dlspec: mutated example specs, generated specs, overrides, expressions, checkpoint
dicts and command-line misuse. Mutations are seeded (random.Random); generated inputs are hypothesis strategies."""
from __future__ import annotations

import io
import random

from hypothesis import strategies as st

from .harness import ROOT, Case

SPECS = sorted((ROOT / "specs").glob("*.yaml")) + sorted((ROOT / "tests" / "specs" / "valid").glob("*.yaml"))
LIBS = {f"lib/{p.name}": p.read_text() for p in sorted((ROOT / "tests" / "specs" / "lib").glob("*.yaml"))}
# values that have broken parsers, evaluators and shape rules before
NASTY = ["0", "-1", "1000000000", "10**9", "10**64", "2**63", "1e400", "-1e400", "nan", ".inf", "sqrt(-1)", "max(1)",
         "min()", "round(1e400)", "0**-1", "1/0", "min(B, T)", "[1]", "[]", "{}", "null", "~", "true", "'x' * 10**9",
         "[1, 2, 3]", "{a: 1}", "B", "T + 1", "T**64", "2**T", "&a [*a]", "!!python/object:os.system x", "\"\\x00\"",
         "x" * 5000, "1" * 5000, "\"\\u0001\"", "-" * 300 + "1", "(" * 100 + "1" + ")" * 100, "int(1e300)", "2 if B > 3 else 1"]
KEYS = ["repeat", "in", "out", "dim", "heads", "kernel", "padding", "stride", "op", "from", "shape", "num", "max_len",
        "vars", "dims", "max", "example", "when", "tie", "init", "p", "groups", "threads", "batch_size", "seed"]


def mutate(text: str, rng: random.Random) -> str:
    """One to three random edits: a value swapped for a nasty one, a line dropped, duplicated or moved, bytes flipped."""
    lines = text.splitlines()
    for _ in range(rng.randint(1, 3)):
        if not lines:
            break
        i = rng.randrange(len(lines))
        choice = rng.randrange(7)
        if choice <= 2 and ":" in lines[i]:
            head, _, _ = lines[i].partition(":")
            lines[i] = f"{head}: {rng.choice(NASTY)}"
        elif choice == 3:
            del lines[i]
        elif choice == 4:
            lines.insert(rng.randrange(len(lines) + 1), lines[i])
        elif choice == 5:
            key = rng.choice(KEYS)
            lines[i] = lines[i].replace("{", f"{{{key}: {rng.choice(NASTY)}, ", 1) if "{" in lines[i] \
                else lines[i] + f"  # {key}"
        else:
            raw = bytearray(lines[i].encode("utf-8", "surrogateescape"))
            if raw:
                raw[rng.randrange(len(raw))] = rng.randrange(256)
            lines[i] = raw.decode("utf-8", "surrogateescape")
    return "\n".join(lines) + "\n"


def mutated_specs(count: int, seed: int) -> list[Case]:
    rng = random.Random(seed)
    cases = []
    for k in range(count):
        source = rng.choice(SPECS)
        text = mutate(source.read_text(), rng)
        command = "build" if k % 8 == 7 else "validate"
        # tests/specs/valid/include.yaml includes ../lib/
        files = {"valid/spec.yaml": text.encode("utf-8", "surrogateescape"), **LIBS}
        cases.append(Case(f"mutated {source.name} #{k}", (command, "valid/spec.yaml"), files))
    return cases


# ---- generated specs, overrides and expressions (hypothesis) ------------------------------------------------

_names = st.sampled_from(["B", "T", "d", "n", "x", "i", "s", "foo"])
_atoms = st.one_of(st.integers(-2**70, 2**70).map(str), st.floats(allow_nan=True, allow_infinity=True).map(repr), _names)


def _expression(children):
    ops = st.sampled_from(["+", "-", "*", "/", "//", "%", "**", "<", "==", " and ", " or ", " if 1 else "])
    calls = st.sampled_from(["min", "max", "int", "round", "sqrt"])
    return st.one_of(st.tuples(children, ops, children).map(lambda t: f"({t[0]}{t[1]}{t[2]})"),
                     st.tuples(calls, st.lists(children, max_size=3)).map(lambda t: f"{t[0]}({', '.join(t[1])})"),
                     children.map(lambda c: f"-{c}"))


expressions = st.recursive(_atoms, _expression, max_leaves=12)
_values = st.one_of(st.integers(-2**70, 2**70), st.floats(), st.booleans(), st.none(), expressions,
                    st.sampled_from(NASTY), st.lists(st.integers(-3, 9), max_size=4), st.text(max_size=20))


def spec_text(expression: str, value, kind: str) -> str:
    """A small valid spec with one generated expression in vars and one generated attribute value."""
    return ("dlspec: 1\nname: fuzz\nmodel:\n"
            f"  vars: {{d: 4, n: {_yaml(expression)}}}\n"
            "  inputs: {x: {shape: [B, 4]}}\n"
            "  dims: {B: {max: 64}}\n"
            "  layers:\n"
            f"    - {{id: a, op: {kind}, {_attribute(kind)}: {_yaml(value)}}}\n"
            "    - {id: b, op: linear, in: d, out: n}\n")


def _attribute(kind: str) -> str:
    return {"linear": "out", "dropout": "p", "layer_norm": "dim", "relu": "when"}[kind]


def _yaml(value) -> str:
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return "null" if value is None else str(value).lower() if isinstance(value, bool) else repr(value) \
        if not isinstance(value, list) else "[" + ", ".join(map(str, value)) + "]"


generated_specs = st.builds(spec_text, expressions, _values, st.sampled_from(["linear", "dropout", "layer_norm", "relu"]))
_paths = st.sampled_from(["model.vars.d", "model.layers.0.repeat", "model.layers.0.out", "model.inputs.x.shape",
                          "model.inputs.x.shape.1", "model.dims.B.max", "model.layers.0", "model", "name", "dlspec",
                          "model.layers.9", "model.vars", "model.layers.0.op", "nonexistent.key", "model.layers.-1.in"])
overrides = st.tuples(_paths, _values).map(lambda t: f"{t[0]}={t[1] if not isinstance(t[1], str) else t[1]}")

SMALL = "dlspec: 1\nname: small\nmodel:\n  vars: {d: 4}\n  inputs: {x: {shape: [B, 4]}}\n  layers:\n" \
        "    - {op: linear, in: d, out: 4, repeat: 2}\n"


def override_case(override: str) -> Case:
    return Case(f"override {override[:60]!r}", ("validate", "spec.yaml", "--set", override), {"spec.yaml": SMALL})


def spec_case(text: str) -> Case:
    return Case(f"generated spec {text[60:140]!r}", ("validate", "spec.yaml"), {"spec.yaml": text})


# ---- checkpoint dicts ---------------------------------------------------------------------------------------

TRAINED = SMALL.replace("name: small", "name: small") + \
    "training:\n  data: {dataset: {kind: synthetic_regression, samples: 64, features: 4, targets: 4}, batch_size: 16}\n" \
    "  optimizer: {kind: sgd, lr: 0.01}\n  epochs: 1\n"
_fields = st.dictionaries(st.sampled_from(["step", "position", "metrics_bytes", "tracker", "rng", "optimizer", "schedule",
                                           "scaler", "kind", "format", "spec_hash", "model"]),
                          st.one_of(_values, st.dictionaries(st.text(max_size=5), st.integers(), max_size=3)), max_size=4)


def checkpoint_case(fields: dict, sealed: bool, command: str) -> Case:
    import torch

    from dlspec.train.checkpoint import FORMAT, seal
    blob = {"format": FORMAT, "kind": "checkpoint", "model": {"0.weight": torch.zeros(4, 4)}, "step": 0,
            "position": [0, 0], "metrics_bytes": 0, "tracker": {}, "rng": [{}], "optimizer": {}, "schedule": {}}
    blob.update(fields)
    buffer = io.BytesIO()
    torch.save(seal(blob) if sealed else blob, buffer)
    files = {"run/spec.yaml": TRAINED, "run/checkpoints/last.pt": buffer.getvalue(), "run/metrics.jsonl": "{}\n",
             "spec.yaml": TRAINED, "run/vocab.json": '{"chars": "ab", "block": 4}'}
    argv = {"resume": ("train", "--resume", "run"), "export": ("export", "spec.yaml", "--checkpoint", "run", "--last",
                                                                "--format", "onnx", "--out", "out"),
            "generate": ("generate", "run", "--weights", "last", "--tokens", "3")}[command]
    return Case(f"checkpoint {command} {str(fields)[:80]}", argv, files)


checkpoints = st.builds(checkpoint_case, _fields, st.booleans(), st.sampled_from(["resume", "export", "generate"]))


# ---- resource bombs and command-line misuse -----------------------------------------------------------------

def fixed_cases() -> list[Case]:
    seed_mlp = (ROOT / "specs" / "seed-mlp.yaml").read_text()
    bombs = {
        "repeat 10**9": ("validate", "s.yaml", "--set", "model.layers.0.repeat=10**9"),
        "power tower": ("validate", "p.yaml"),
        "4 TB linear build": ("build", "big.yaml"),
        "4 TB linear validate": ("validate", "big.yaml"),
        "/dev/zero": ("validate", "/dev/zero"),
        "/dev/urandom": ("validate", "/dev/urandom"),
        "include /dev/zero": ("validate", "inc.yaml"),
        "directory": ("validate", "."),
        "seed 2**70": ("build", "s.yaml", "--seed", str(2**70)),
        "threads 100000": ("validate", "s.yaml", "--set", "training.threads=100000"),
        "--bogus": ("--bogus",),
        "no command": (),
        "out is a file": ("build", "s.yaml", "--out", "s.yaml/w.pt"),
        "out is a folder": ("build", "s.yaml", "--out", "."),
        "verify missing": ("verify", "nothing.onnx", "--spec", "s.yaml"),
        "verify not onnx": ("verify", "s.onnx", "--spec", "s.yaml"),
        "verify not pt2": ("verify", "s.pt2", "--spec", "s.yaml"),
        "predict missing": ("predict", "nothing.onnx", "s.yaml"),
        "predict not onnx": ("predict", "s.onnx", "s.yaml"),
        "predict not pt2": ("predict", "s.pt2", "--text", "abc"),
        "predict no run": ("predict", ".", "s.yaml"),
        "generate no run": ("generate", "."),
        "resume no run": ("train", "--resume", "."),
        "train no section": ("train", "s.yaml"),
        "tokens huge": ("generate", ".", "--tokens", str(10**12)),
        "temperature nan": ("generate", ".", "--temperature", "nan"),
        "empty file": ("validate", "empty.yaml"),
        "utf-16": ("validate", "u16.yaml"),
    }
    files = {"s.yaml": seed_mlp, "p.yaml": "dlspec: 1\nmodel:\n  vars: {a: 10**64, b: a**64, c: b**64}\n"
             "  inputs: {x: {shape: [B, 4]}}\n  layers: [{op: relu}]\n",
             "big.yaml": "dlspec: 1\nmodel:\n  inputs: {x: {shape: [B, 1000000]}}\n"
             "  layers: [{op: linear, in: 1000000, out: 1000000}]\n",
             "inc.yaml": "dlspec: 1\ninclude: [/dev/zero]\nmodel: {inputs: {x: {shape: [B, 4]}}, layers: [relu]}\n",
             "s.onnx": b"\x08\x07garbage", "s.pt2": b"PK\x03\x04garbage", "empty.yaml": "",
             "u16.yaml": "dlspec: 1\n".encode("utf-16")}
    return [Case(name, argv, files) for name, argv in bombs.items()]

