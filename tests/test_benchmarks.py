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
import bench_train  # noqa: E402


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


def test_the_training_benchmark_gives_every_loop_dlspecs_data_and_augmentation():
    """The hand-written loop (and Lightning) train on the split, normalisation and random crop that dlspec's
    data section describes."""
    from dlspec.train import augment, config
    from dlspec.train import data as D
    spec = dlspec.load(bench_train.SPEC)
    cfg = config.parse(spec.training, spec.locate)
    data = D.prepare(cfg.data, spec, cfg.seed, bench_train.SPEC.parent)
    xt, yt, xv, yv = bench_train.digits(cfg.seed)
    train = D.Pipeline(data.train, data.stats, cfg.seed)(0, range(len(data.train)))  # normalised as batches are
    val = D.Pipeline(data.val, data.stats, cfg.seed)(0, range(len(data.val)))
    assert torch.allclose(train["image"], xt, atol=1e-6) and torch.equal(train["label"], yt)
    assert torch.allclose(val["image"], xv, atol=1e-6) and torch.equal(val["label"], yv)
    crop = augment.build(cfg.data.augment, {"image": (1, 8, 8)}, "image", spec.locate)
    ours = augment.apply({"image": xt[:32]}, crop, torch.Generator().manual_seed(5))["image"]
    assert torch.equal(ours, bench_train.random_crop(xt[:32], 1, torch.Generator().manual_seed(5)))
