"""Stage 1: safe YAML loading with locations."""
import time

import pytest
import yaml

from dlspec.core.errors import DlspecError
from dlspec.front import document
from dlspec.front.document import MAX_DEPTH, load_document, parse_text


def problems(text: str, tmp_path, name="spec.yaml", raw: bytes | None = None):
    path = tmp_path / name
    path.write_bytes(raw if raw is not None else text.encode())
    with pytest.raises(DlspecError) as info:
        load_document(path)
    return info.value.problems


def test_values_keep_line_and_column(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text("dlspec: 1\nmodel:\n  layers:\n    - {op: linear, in: 4}\n")
    doc = load_document(path)
    loc = doc.locate(("model", "layers", 0, "in"))
    assert (loc.line, loc.col) == (4, 24)
    assert doc.locate(("model", "layers", 0, "op"), key=True).col == 8
    # a path that does not exist reports its nearest ancestor
    assert doc.locate(("model", "layers", 0, "nothing")).line == 4


@pytest.mark.parametrize("text", [
    "model: !!python/object/apply:os.system ['echo pwned']\n",
    "model: !!python/name:os.system\n",
    "model: !custom {a: 1}\n",
    "x: !!binary aGVsbG8=\n",
])
def test_tags_never_construct_objects(tmp_path, text):
    (p,) = problems(text, tmp_path)
    assert "is not allowed" in p.message and p.loc.line == 1
    assert "Python objects" in p.hint


def test_duplicate_keys_are_errors_with_both_places(tmp_path):
    (p,) = problems("a: 1\nb: 2\na: 3\n", tmp_path)
    assert p.message == "duplicate key 'a'" and (p.loc.line, p.loc.col) == (3, 1)
    assert "1:1" in p.hint


def test_alias_bomb_is_refused_quickly(tmp_path):
    lines = ['a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for i in range(1, 10):
        lines.append(f"a{i}: &a{i} [" + ",".join([f"*a{i - 1}"] * 9) + "]")
    start = time.process_time()
    (p,) = problems("\n".join(lines) + "\n", tmp_path)
    assert "alias bomb" in p.hint
    assert time.process_time() - start < 5  # generous: guards against expansion, not a timing test


# libyaml (CSafeLoader, PyYAML 6.0.2 and later) refuses nesting past 1,000 levels on its own, before dlspec's
# check sees the events; the pure-Python parser has no such limit. Both must give dlspec's own error.
LOADERS = [yaml.SafeLoader] + ([yaml.CSafeLoader] if hasattr(yaml, "CSafeLoader") else [])


@pytest.fixture(params=LOADERS, ids=lambda loader: loader.__name__)
def yaml_loader(request, monkeypatch):
    monkeypatch.setattr(document, "_Loader", request.param)
    return request.param


@pytest.mark.parametrize("depth", [65, 1500, 20000])
def test_deep_flow_nesting_is_refused_at_the_first_level_too_deep(tmp_path, yaml_loader, depth):
    (p,) = problems("[" * depth + "]" * depth, tmp_path)
    assert p.message == f"nesting deeper than {MAX_DEPTH} levels"
    assert (p.loc.file, p.loc.line, p.loc.col) == (str(tmp_path / "spec.yaml"), 1, MAX_DEPTH + 1)


@pytest.mark.parametrize("depth", [100, 1500])
def test_deep_block_nesting_is_refused_at_the_first_level_too_deep(tmp_path, yaml_loader, depth):
    text = "".join("  " * i + f"k{i}:\n" for i in range(depth)) + "  " * depth + "v: 1\n"
    (p,) = problems(text, tmp_path)
    assert p.message == f"nesting deeper than {MAX_DEPTH} levels"
    assert p.loc.line == MAX_DEPTH + 1


def test_nesting_at_the_limit_loads(tmp_path, yaml_loader):
    path = tmp_path / "spec.yaml"
    path.write_text("[" * MAX_DEPTH + "]" * MAX_DEPTH)
    assert load_document(path).data is not None


def test_non_utf8_and_binary(tmp_path):
    (p,) = problems("", tmp_path, raw=b"name: caf\xe9\n")
    assert "not valid UTF-8" in p.message and (p.loc.line, p.loc.col) == (1, 10)
    (p,) = problems("", tmp_path, raw=b"\x89PNG\r\n\x1a\n\x00\x00\x00")
    assert "binary file" in p.message


def test_one_document_per_file(tmp_path):
    (p,) = problems("a: 1\n---\nb: 2\n", tmp_path)
    assert "one YAML document" in p.message and p.loc.line == 2


def test_merge_keys_and_anchors_work(tmp_path):
    data, _, _ = parse_text("base: &b {kernel: 3, padding: 1}\nconv: {<<: *b, out: 8}\n", "x.yaml")
    assert data["conv"] == {"kernel": 3, "padding": 1, "out": 8}


def test_missing_file_is_a_usage_error(tmp_path):
    with pytest.raises(DlspecError) as info:
        load_document(tmp_path / "nope.yaml")
    assert info.value.usage and "not found" in info.value.problems[0].message


def test_overrides_parse_yaml_values_and_record_their_origin(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text("model:\n  vars: {d: 4, name: x}\n  inputs: {x: {shape: [B, 4]}}\n")
    doc = load_document(path, ["model.vars.d=256", "model.vars.flag=true", "model.inputs.x.shape=[B, 8]"])
    assert doc.data["model"]["vars"] == {"d": 256, "name": "x", "flag": True}
    assert doc.data["model"]["inputs"]["x"]["shape"] == ["B", 8]
    assert doc.locate(("model", "vars", "d")).file == "<--set model.vars.d>"


def test_bad_overrides(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text("model: {vars: {d: 4}}\n")
    for bad, words in [("model.vars.d", "key.path=value"), ("model.nothing.d=1", "does not exist")]:
        with pytest.raises(DlspecError) as info:
            load_document(path, [bad])
        assert words in info.value.problems[0].message and info.value.usage


# YAML 1.2's core schema: the numbers people write are numbers; yes/no/on/off, 1:30 and 017 are not YAML 1.1's
SCALARS = {
    "3e-4": 3e-4, "1e-5": 1e-5, ".5": 0.5, "-2.5E+3": -2500.0, "1.0e-4": 1e-4, "1.": 1.0, "1e5": 1e5,
    ".inf": float("inf"), "-.Inf": float("-inf"), "50_000": 50000, "017": 17, "0o17": 15, "0x1F": 31, "+5": 5,
    "yes": "yes", "no": "no", "on": "on", "off": "off", "Y": "Y", "1:30": "1:30", "2001-01-01": "2001-01-01",
    "=": "=", "'3e-4'": "3e-4", "true": True, "False": False, "~": None, "null": None,
}


@pytest.mark.parametrize("text", SCALARS)
def test_plain_scalars_follow_yaml_1_2(text):
    data, locs, _ = parse_text(f"value: {text}\n", "x.yaml")
    assert data["value"] == SCALARS[text] and type(data["value"]) is type(SCALARS[text])
    assert (locs[("value",)].line, locs[("value",)].col) == (1, 8)


def test_a_key_without_a_value_is_null():
    data, _, _ = parse_text("a:\nb: {c: , d}\n", "x.yaml")
    assert data == {"a": None, "b": {"c": None, "d": None}}


def test_yaml_1_1_booleans_stay_text_as_keys_too():
    data, _, _ = parse_text("on: push\nno: 1\n", "x.yaml")
    assert data == {"on": "push", "no": 1}


def test_overrides_read_yaml_1_2_numbers(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text("training: {optimizer: {kind: adamw, lr: 0.001}}\n")
    doc = load_document(path, ["training.optimizer.lr=3e-4", "training.optimizer.eps=.5"])
    assert doc.data["training"]["optimizer"] == {"kind": "adamw", "lr": 3e-4, "eps": 0.5}


def test_written_yaml_reads_back_the_same_under_yaml_1_2_and_1_1():
    from dlspec.front.document import dump_text
    data = {"string that looks like a float": "1e-5", "word": "yes", "on": "off", "number": 3e-4, "octal": "017",
            "list": [1, "2", ".5"], "nothing": None, "flag": True}
    text = dump_text(data)
    assert parse_text(text, "run/spec.yaml")[0] == data and yaml.safe_load(text) == data
