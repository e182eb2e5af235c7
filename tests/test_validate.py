"""Stage 2: schema validation, driven by example files, and the committed schema."""
import re

import pytest
from jsonschema import Draft202012Validator
from support import INVALID, ROOT, SPECS, VALID

import dlspec
from dlspec.core.errors import DlspecError
from dlspec.front.document import load_document
from dlspec.front.lower import STDLIB
from dlspec.front.schema import SCHEMA_PATH, build_schema, schema_text, validate_document

EXPECT = re.compile(r"^# expect: (?:(\d+):(\d+) )?(.+)$")


@pytest.mark.parametrize("path", SPECS + VALID, ids=lambda p: p.name)
def test_valid_specs_load(path):
    spec = dlspec.load(path)
    assert spec.graph.nodes and spec.outputs


@pytest.mark.parametrize("path", INVALID, ids=lambda p: p.name)
def test_invalid_specs_report_the_expected_problem(path):
    """Each invalid example states on its first line the location and message it must produce."""
    match = EXPECT.match(path.read_text().splitlines()[0])
    assert match, f"{path.name} must start with '# expect: LINE:COL message'"
    line, col, message = match.groups()
    with pytest.raises(DlspecError) as info:
        dlspec.load(path)
    found = [(p.loc.line if p.loc else None, p.loc.col if p.loc else None, p.message) for p in info.value.problems]
    assert any(message in m and (line is None or (ln, c) == (int(line), int(col))) for ln, c, m in found), found
    for p in info.value.problems:
        assert p.loc is not None and p.loc.file == str(path), p


def test_every_error_is_collected(tmp_path):
    path = tmp_path / "many.yaml"
    path.write_text("dlspec: 1\nname: many\nmodel:\n  inputs: {x: {shape: [B, 4]}}\n  layers:\n"
                    "    - {op: linear, in: 4, out: 2, bais: false}\n    - {op: conv2d, in: 3}\n  outptus: {}\n")
    with pytest.raises(DlspecError) as info:
        dlspec.load(path)
    messages = [p.message for p in info.value.problems]
    assert "unknown key 'bais' in linear layer" in messages
    assert "conv2d layer is missing 'out'" in messages and "conv2d layer is missing 'kernel'" in messages
    assert "unknown key 'outptus' in model" in messages
    hints = {p.message: p.hint for p in info.value.problems}
    assert hints["unknown key 'bais' in linear layer"] == "did you mean 'bias'?"
    assert hints["unknown key 'outptus' in model"] == "did you mean 'outputs'?"


def test_committed_schema_matches_the_registry():
    assert SCHEMA_PATH.read_text() == schema_text(), "schemas/ drifted: run `python -m dlspec.front.schema`"


def test_schema_is_valid_draft_2020_12_with_docs_for_editors():
    schema = build_schema()
    Draft202012Validator.check_schema(schema)
    linear = schema["$defs"]["layer.linear"]
    assert linear["additionalProperties"] is False
    assert all("description" in prop for name, prop in linear["properties"].items() if name != "init")
    for spec in SPECS:
        assert spec.read_text().startswith("# yaml-language-server: $schema=../schemas/dlspec.schema.json")


@pytest.mark.parametrize("library", sorted(STDLIB.glob("*.yaml")), ids=lambda p: p.name)
def test_standard_library_is_schema_valid(library):
    validate_document(load_document(library))


def test_library_alone_is_not_a_model(tmp_path):
    with pytest.raises(DlspecError) as info:
        dlspec.load(STDLIB / "resnet.yaml")
    assert "no `model:` section" in info.value.problems[0].message


def test_layer_reference_docs_match_the_registry():
    from dlspec.reference import DOC_PATH, reference_text
    assert DOC_PATH.read_text() == reference_text(), "docs/layers.md drifted: run `python -m dlspec.reference`"


def test_the_readme_example_spec_is_valid(tmp_path):
    readme = (SCHEMA_PATH.parent.parent / "README.md").read_text()
    example = re.search(r"```yaml\n(.*?)```", readme, re.S).group(1)
    (tmp_path / "readme.yaml").write_text(example)
    spec = dlspec.load(tmp_path / "readme.yaml")
    assert spec.name == "gpt2-small" and spec.dims["T"].max == 1024


def test_yaml_1_1_words_where_a_boolean_is_expected_say_what_to_write(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text("dlspec: 1\nname: s\nmodel:\n  inputs: {x: {shape: [B, 4]}}\n"
                    "  layers: [{id: fc, op: linear, in: 4, out: 2}]\ntraining:\n  data: {dataset: {kind: iris}, shuffle: yes}\n")
    with pytest.raises(DlspecError) as info:
        validate_document(load_document(path))
    (p,) = info.value.problems
    assert p.message == 'expected true/false, got string "yes"' and "write true or false" in p.hint
    assert (p.loc.line, p.loc.col) == (7, 42)


def _hint(tmp_path, layer: str) -> str:
    path = tmp_path / "s.yaml"
    path.write_text("dlspec: 1\nname: s\nmodel:\n  vars: {ch: 16}\n  inputs: {x: {shape: [B, 8]}}\n"
                    f"  layers:\n    - {layer}\n")
    with pytest.raises(DlspecError) as info:
        dlspec.load(path)
    return info.value.problems[0].hint


def test_hints_suggest_only_likely_kinds(tmp_path):
    assert _hint(tmp_path, "{op: relu6x}") == "did you mean 'relu6'?"
    assert _hint(tmp_path, "{op: upsample, scale: 2.0}") == "dlspec calls it 'interpolate'"  # not 'scale'
    assert _hint(tmp_path, "{op: convolution3}") == "see docs/layers.md for the layer kinds (the nearest name is 'conv3d')"
    dlspec.load(ROOT / "specs" / "mobilenet-v2.yaml")  # relu6 is a kind: no "did you mean 'relu'" workaround


def test_every_alias_names_a_kind():
    from dlspec.core.layers import REGISTRY
    from dlspec.core.layers.base import _ALIASES
    assert set(_ALIASES.values()) <= set(REGISTRY) and not set(_ALIASES) & set(REGISTRY)


def test_an_unquoted_comma_gets_the_quoted_expression_as_its_hint(tmp_path):
    hint = 'quote an expression that has a comma, or YAML splits it there: `out: "max(1, ch // 4)"`'
    assert _hint(tmp_path, "{op: linear, in: 8, out: max(1, ch // 4)}") == hint
