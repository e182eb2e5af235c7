"""The benchmarks compare like with like: each hand-written model computes what its spec computes.

Timing belongs to benchmarks/ and is never asserted here; what is asserted is the premise of the
speed ratio: the spec's state dict loads strictly into the hand-written module, and outputs and
gradients agree.
"""
import sys
from pathlib import Path

import pytest
import torch

import dlspec
from dlspec.backend.inputs import random_inputs

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import bench_build  # noqa: E402


@pytest.mark.parametrize("case", bench_build.CASES, ids=lambda c: c.name)
def test_hand_written_model_matches_its_spec(case):
    model = dlspec.build(case.spec)
    torch.manual_seed(1)
    hand = case.hand()
    inputs = random_inputs(model.dlspec_spec)
    logits = model(*inputs)
    target = torch.randint(0, logits.shape[-1], logits.shape[:-1], generator=torch.Generator().manual_seed(1))
    bench_build.check_same(model, hand, inputs, target)


def test_the_generated_deep_spec_has_a_thousand_nodes(tmp_path):
    spec = dlspec.load(bench_build.deep_spec(tmp_path))
    assert len(spec.graph.nodes) == 1000
