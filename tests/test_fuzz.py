"""A bounded, seeded slice of the fuzz suite (fuzz/; `python -m fuzz` runs it long): every outcome is exit 0, 1
or 2 with a located message, within the harness's time and memory bound (each case in a forked child with an
address-space cap)."""
from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings

from dlspec.core.expr import ExprError, evaluate
from fuzz import cases
from fuzz.harness import Runner

SLICE = settings(max_examples=10, deadline=None, database=None, derandomize=True, suppress_health_check=list(HealthCheck))


@pytest.fixture(scope="module")
def runner():
    runner = Runner(memory_mb=3072, timeout_s=120)
    yield runner
    runner.close()


def _clean(runner, case) -> None:
    outcome = runner.run(case)
    assert outcome.kind == "clean", outcome.describe()


@pytest.mark.parametrize("case", cases.fixed_cases(), ids=lambda c: c.name)
def test_resource_bombs_and_misuse_end_cleanly(runner, case):
    _clean(runner, case)


@pytest.mark.parametrize("case", cases.mutated_specs(16, seed=10), ids=lambda c: c.name)
def test_mutated_specs_end_cleanly(runner, case):
    _clean(runner, case)


@SLICE
@given(cases.generated_specs)
def test_generated_specs_end_cleanly(runner, text):
    _clean(runner, cases.spec_case(text))


@SLICE
@given(cases.overrides)
def test_overrides_end_cleanly(runner, override):
    _clean(runner, cases.override_case(override))


@settings(SLICE, max_examples=6)
@given(cases.checkpoints)
def test_crafted_checkpoints_end_cleanly(runner, case):
    _clean(runner, case)


@settings(SLICE, max_examples=300)
@given(cases.expressions)
def test_expressions_give_a_value_or_an_expression_error(text):
    try:
        evaluate(text, {"d": 4, "s": "text"}, symbolic=True)
    except ExprError:
        pass
