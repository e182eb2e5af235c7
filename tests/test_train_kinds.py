"""The registries of training kinds: one definition per kind, from which the schema, the checks and the docs
follow; schedules checked against torch's own schedulers."""
from __future__ import annotations

import math
import subprocess
import sys
from dataclasses import replace

import pytest
import torch
from test_train import DIGITS_FLAT, assert_user_error, events, mlp, train, write_spec

from dlspec.cli import main
from dlspec.train.augment import AUGMENTATIONS
from dlspec.train.datasets import DATA_KINDS
from dlspec.train.kinds import Option
from dlspec.train.losses import LOSSES, LossKind
from dlspec.train.metrics import METRICS
from dlspec.train.optim import OPTIMIZERS
from dlspec.train.schedules import SCHEDULES, Plan, Schedule

REGISTRIES = {"data": DATA_KINDS, "augment": AUGMENTATIONS, "loss": LOSSES, "optimizer": OPTIMIZERS,
              "scheduler": SCHEDULES, "metric": METRICS}


def test_training_docs_tables_match_the_registries():
    from dlspec.reference import TRAINING_DOC, training_text
    text = TRAINING_DOC.read_text()
    assert text == training_text(text), "docs/training.md drifted: run `python -m dlspec.reference`"
    for family, registry in REGISTRIES.items():
        assert f"<!-- kinds: {family} -->" in text, family  # every family has its generated table
        for kind in registry:
            assert f"| `{kind.name}` |" in text, kind.name


def test_the_schema_offers_every_kind_and_option_of_every_registry():
    from dlspec.train.schema import training_schema
    schema = training_schema()
    sections = {"data": schema["properties"]["data"]["properties"]["dataset"],
                "augment": schema["properties"]["data"]["properties"]["augment"]["items"],
                "loss": schema["properties"]["loss"]["anyOf"][0], "optimizer": schema["properties"]["optimizer"],
                "scheduler": schema["properties"]["scheduler"]}
    for family, section in sections.items():
        registry = REGISTRIES[family]
        assert section["properties"][registry.key]["enum"] == registry.names
        options = {o.name for k in registry for o in k.options} | {o.name for o in registry.common} | {registry.key}
        assert set(section["properties"]) == options and section["additionalProperties"] is False


def test_the_registries_and_the_schema_import_without_torch():
    code = ("import sys; import dlspec.front.schema, dlspec.train.config; "
            "sys.exit(1 if 'torch' in sys.modules else 0)")
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0, "validating a spec must not import torch"


def test_a_new_loss_is_one_definition(tmp_path, monkeypatch):
    """Register a kind (as one entry in losses.py would): the schema, the checks and training all know it."""
    from dlspec.front import schema as front_schema

    def huber(o):
        return lambda out, target: torch.nn.functional.huber_loss(out, target.to(out.dtype).reshape(out.shape),
                                                                  delta=o["delta"])
    monkeypatch.setattr(LOSSES, "kinds", dict(LOSSES.kinds))
    LOSSES.add(LossKind("huber", "Huber loss.", (Option("delta", "number", "Where it turns linear.", 1.0, minimum=0),),
                        huber))
    front_schema._validator.cache_clear()
    try:
        data = {"dataset": {"kind": "synthetic_regression", "samples": 64, "features": 4}, "batch_size": 64,
                "validation": {"fraction": 0}}
        summary, run = train(tmp_path, mlp(4, 8, 1), {"max_steps": 1, "data": data, "optimizer": {"kind": "sgd", "lr": 0.0},
                                                      "loss": {"kind": "huber", "delta": 0.5}, "logging": {"every_steps": 1}})
        model, table = _model_and_data(run)
        with torch.no_grad():
            expected = torch.nn.functional.huber_loss(model(table["features"]), table["target"], delta=0.5).item()
        assert math.isclose(events(run, "train")[0]["loss"], expected, rel_tol=1e-5)
        spec = write_spec(tmp_path, mlp(4, 8, 1), {"data": data, "loss": {"kind": "huber", "beta": 0.5}}, "bad")
        code = main(["train", str(spec), "--out", str(tmp_path / "bad-run")])
        assert code == 1
    finally:
        front_schema._validator.cache_clear()


def test_a_loss_adds_no_op_to_torchs_own():
    """Every op on the loss is a node of every step's autograd graph: one term at scale 1 is torch's own loss
    (its graph ends in torch's node), and several are their weighted sum."""
    import torch.nn.functional as F

    from dlspec.train.losses import LossTerm, total
    cross_entropy, mse = (LOSSES.parse({"kind": kind}, ("loss",), lambda *problem: None) for kind in ("cross_entropy", "mse"))
    logits, labels = torch.randn(8, 5, requires_grad=True), torch.randint(0, 5, (8,))
    values, targets = torch.randn(8, 1, requires_grad=True), torch.randn(8)
    ce = LossTerm("cross_entropy", 0, "logits", "label", 1.0, cross_entropy.definition.build(cross_entropy), True, -100)
    alone = total((ce,), (logits, values), {"label": labels})
    expected = F.cross_entropy(logits, labels)
    assert type(alone.grad_fn).__name__ == type(expected.grad_fn).__name__ == "NllLossBackward0"
    assert torch.equal(alone, expected)
    both = total((ce, LossTerm("mse", 1, "values", "y", 0.5, mse.definition.build(mse), False, None)),
                 (logits, values), {"label": labels, "y": targets})
    assert torch.allclose(both, expected + 0.5 * F.mse_loss(values, targets[:, None]))


def _model_and_data(run):
    import dlspec
    from dlspec.train.datasets import Source, load
    spec = dlspec.load(run / "spec.yaml")
    model = dlspec.build(spec)
    model.load_state_dict(torch.load(run / "weights.pt", weights_only=True)["model"])
    dataset = DATA_KINDS.parse(spec.training["data"]["dataset"], ("dataset",), lambda *p: None)
    return model, load(dataset, Source(run, 0, lambda _: None)).fields


def test_an_option_of_another_kind_names_the_kinds_it_belongs_to(tmp_path, capsys):
    spec = write_spec(tmp_path, mlp(), {"data": DIGITS_FLAT, "scheduler": {"kind": "cosine", "gamma": 0.5}})
    code = main(["train", str(spec), "--out", str(tmp_path / "run")])
    assert_user_error(code, capsys.readouterr().err, "'gamma' is not an option of scheduler kind 'cosine'",
                      "hint: 'gamma' belongs to exponential, multistep, step")


# ---- schedules against torch's schedulers ------------------------------------------------------------------------

def _optimizer(kind: str = "adamw") -> torch.optim.Optimizer:
    params = [torch.nn.Parameter(torch.zeros(2)), torch.nn.Parameter(torch.zeros(2))]
    groups = [{"params": params[:1], "lr": 0.1}, {"params": params[1:], "lr": 0.02}]
    optimizer = torch.optim.AdamW(groups) if kind == "adamw" else torch.optim.SGD(groups, momentum=0.9)
    for group in optimizer.param_groups:
        group["initial_lr"] = group["lr"]
    return optimizer


def _ours(scheduler: dict, steps: int, per_epoch: int, kind: str = "adamw") -> list[tuple]:
    optimizer = _optimizer(kind)
    o = SCHEDULES.parse(scheduler, ("scheduler",), lambda *p: pytest.fail(str(p)))
    schedule = Schedule(o, optimizer, Plan.new(steps), per_epoch)
    out = []
    for _ in range(steps):
        out.append(tuple(g["lr"] for g in optimizer.param_groups) + (optimizer.param_groups[0].get("betas", (0,))[0],))
        schedule.step()
    return out


def _torch(make, steps: int, per_epoch: int | None = None, kind: str = "adamw") -> list[tuple]:
    optimizer = _optimizer(kind)
    scheduler = make(optimizer)
    out = []
    for step in range(steps):
        out.append(tuple(g["lr"] for g in optimizer.param_groups) + (optimizer.param_groups[0].get("betas", (0,))[0],))
        optimizer.step()
        if per_epoch is None or (step + 1) % per_epoch == 0:
            scheduler.step()
    return out


S = torch.optim.lr_scheduler
TORCH = {  # ours, torch's, steps, steps per epoch (for torch: None steps it every step)
    "one_cycle": ({"kind": "one_cycle", "pct_start": 0.25}, lambda o: S.OneCycleLR(o, max_lr=[0.1, 0.02], total_steps=40,
                                                                                 pct_start=0.25), 40, None),
    "one_cycle max_lr": ({"kind": "one_cycle", "max_lr": 0.05}, lambda o: S.OneCycleLR(o, max_lr=0.05, total_steps=30), 30, None),
    "cosine": ({"kind": "cosine", "min_lr": 0.001}, lambda o: S.CosineAnnealingLR(o, T_max=30, eta_min=0.001), 30, None),
    "cosine t_max": ({"kind": "cosine", "t_max": 10}, lambda o: S.CosineAnnealingLR(o, T_max=10), 10, None),
    "cosine_restarts": ({"kind": "cosine_restarts", "t_0": 4, "t_mult": 2},
                        lambda o: S.CosineAnnealingWarmRestarts(o, T_0=4, T_mult=2), 40, None),
    "step per epoch": ({"kind": "step", "step_size": 2, "gamma": 0.5}, lambda o: S.StepLR(o, 2, gamma=0.5), 40, 4),
    "multistep": ({"kind": "multistep", "milestones": [3, 7], "gamma": 0.3},
                  lambda o: S.MultiStepLR(o, [3, 7], gamma=0.3), 40, 4),
    "exponential": ({"kind": "exponential", "gamma": 0.8}, lambda o: S.ExponentialLR(o, gamma=0.8), 40, 4),
}


@pytest.mark.parametrize("case", TORCH)
def test_schedules_equal_torchs_schedulers(case):
    ours, make, steps, per_epoch = TORCH[case]
    expected = _torch(make, steps, per_epoch)
    got = _ours(ours, steps, per_epoch or 10)
    for i, (a, b) in enumerate(zip(got, expected)):
        assert all(math.isclose(x, y, rel_tol=1e-9, abs_tol=1e-15) for x, y in zip(a, b)), (i, a, b)


def test_one_cycle_cycles_sgd_momentum_as_torch_does():
    make = lambda o: S.OneCycleLR(o, max_lr=[0.1, 0.02], total_steps=20)  # noqa: E731
    optimizer = _optimizer("sgd")
    scheduler, momenta = make(optimizer), []
    for _ in range(20):
        momenta.append(optimizer.param_groups[0]["momentum"])
        optimizer.step()
        scheduler.step()
    ours = _optimizer("sgd")
    schedule = Schedule(SCHEDULES.parse({"kind": "one_cycle"}, (), lambda *p: None), ours, Plan.new(20), 10)
    for i in range(20):
        assert math.isclose(ours.param_groups[0]["momentum"], momenta[i], rel_tol=1e-9), i
        schedule.step()


def test_a_resized_plan_continues_where_the_schedule_was():
    plan = Plan.new(12)
    longer = plan.resized(4, 20)  # stopped at step 4 of 12, resumed for 20 in all
    assert [longer.time(s) for s in (0, 4, 12, 20)] == [0, 4, 4 + 8 * 8 / 16, 12]
    finished = plan.resized(12, 16)
    assert [finished.time(s) for s in (12, 14, 16)] == [12, 12, 12]  # a finished schedule holds its end
    assert longer.resized(8, 12).time(12) == 12 and replace(plan) == plan
