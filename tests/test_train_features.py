"""Each feature of a spec's `training:` section, checked against an independent computation.

Where a run's result can be recomputed by hand (a loss or metric on a validation file, an optimizer step on
one full batch, a learning-rate formula), the test does so with plain torch and compares; where it cannot
(what an augmentation drew), it checks the property that must hold. Models and data are tiny.
"""
from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from test_train import DIGITS_FLAT, assert_user_error, events, load, mlp, train, weights, write_spec

import dlspec
from dlspec.cli import main
from dlspec.train import augment


def _npz(path: Path, **fields: torch.Tensor) -> Path:
    np.savez(path, **{k: v.numpy() for k, v in fields.items()})
    return path


def _blobs(n: int, seed: int, features: int = 4, classes: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    """Separable classes: a Gaussian blob around a random centre per class."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(classes, features, generator=torch.Generator().manual_seed(99)) * 4
    label = torch.randint(0, classes, (n,), generator=g)
    return centres[label] + torch.randn(n, features, generator=g), label


def _model(run: Path) -> torch.nn.Module:
    """The trained model of a run, rebuilt from its resolved spec and final weights."""
    model = dlspec.build(dlspec.load(run / "spec.yaml"))
    model.load_state_dict(weights(run))
    return model.eval()


def _close(a: float, b: float, rel: float = 1e-5) -> bool:
    return math.isclose(a, b, rel_tol=rel, abs_tol=1e-7)


# ---- data sources -------------------------------------------------------------------------------------------------

IMAGE_MODEL = {"inputs": {"image": {"shape": ["B", 1, 8, 8], "dtype": "float32"}},
               "layers": ["flatten", {"id": "head", "op": "linear", "in": 64, "out": 10}], "outputs": {"logits": "head"}}
TOKEN_MODEL = {"inputs": {"tokens": {"shape": ["B", "T"], "dtype": "int64"}},
               "layers": [{"id": "emb", "op": "embedding", "num": 12, "dim": 16},
                          {"id": "head", "op": "linear", "in": 16, "out": 12}], "outputs": {"logits": "head"}}

# kind: (dataset options, model, examples, metric, threshold): trained briefly, each must beat chance clearly
BUNDLED = {
    "digits-image": ({"kind": "digits", "layout": "image"}, IMAGE_MODEL, 1797, "val_accuracy", 0.9),
    "digits-flat": ({"kind": "digits", "layout": "flat"}, mlp(), 1797, "val_accuracy", 0.9),
    "iris": ({"kind": "iris"}, mlp(4, 16, 3), 150, "val_accuracy", 0.9),
    "wine": ({"kind": "wine"}, mlp(13, 16, 3), 178, "val_accuracy", 0.9),
    "breast_cancer": ({"kind": "breast_cancer"}, mlp(30, 16, 2), 569, "val_accuracy", 0.93),
    "diabetes": ({"kind": "diabetes"}, mlp(10, 16, 1), 442, "val_rmse", 62.0),  # the target's std is 77
    "synthetic_classification": ({"kind": "synthetic_classification", "samples": 400, "features": 8, "classes": 3},
                                 mlp(8, 16, 3), 400, "val_accuracy", 0.65),
    "synthetic_regression": ({"kind": "synthetic_regression", "samples": 400, "features": 5, "targets": 2,
                              "noise": 0.1}, mlp(5, 16, 2), 400, "val_rmse", 15.0),
    "synthetic_tokens": ({"kind": "synthetic_tokens", "samples": 400, "length": 6, "vocab": 12, "task": "copy"},
                         TOKEN_MODEL, 400, "val_accuracy", 0.95),
}


@pytest.mark.parametrize("case", BUNDLED)
def test_bundled_and_synthetic_data_sets(tmp_path, case):
    dataset, model, examples, metric, threshold = BUNDLED[case]
    field = next(iter(model["inputs"]))
    regression = metric == "val_rmse"
    training = {"max_steps": 60, "data": {"dataset": dataset, "batch_size": 32, "validation": {"fraction": 0.25}},
                "optimizer": {"kind": "adamw", "lr": 0.03 if not regression else 0.3},
                "evaluation": {"metrics": ["loss", "rmse", "mae"] if regression else ["loss", "accuracy"]}}
    if regression:
        training["loss"] = {"kind": "mse"}
    if model is not TOKEN_MODEL:
        training["data"]["normalize"] = {field: "standard"}
    summary, run = train(tmp_path, model, training)
    start = events(run, "start")[0]
    assert start["train_examples"] + start["val_examples"] == examples
    assert start["val_examples"] == round(examples * 0.25)
    assert summary[metric] >= threshold if not regression else summary[metric] <= threshold, summary
    if regression:  # and still learning after the first epoch
        assert summary["val_rmse"] < events(run, "eval")[0]["val_rmse"]


def _dataset(doc: dict, seed: int = 0):
    from dlspec.train.datasets import DATA_KINDS, Source, load
    return load(DATA_KINDS.parse(doc, ("training", "data", "dataset"), _no_problem), Source(Path("."), seed, lambda _: None))


def _no_problem(*problem):
    raise AssertionError(problem)


def test_synthetic_generators_are_deterministic():
    for kind, options in [("synthetic_classification", {"samples": 50}), ("synthetic_regression", {"samples": 50}),
                          ("synthetic_tokens", {"samples": 50, "task": "sort"})]:
        a, b, c = (_dataset({"kind": kind, **options, **extra}) for extra in [{}, {}, {"seed": 5}])
        assert all(torch.equal(a.fields[k], b.fields[k]) for k in a.fields)
        assert not torch.equal(a.fields[a.input_field], c.fields[c.input_field])
    tokens = _dataset({"kind": "synthetic_tokens", "samples": 20, "task": "sort"})
    assert torch.equal(tokens.fields["targets"], tokens.fields["tokens"].sort(dim=1).values)


def _file_data(tmp_path: Path) -> tuple[dict, dict]:
    x, y = _blobs(160, seed=1)
    vx, vy = _blobs(40, seed=2)
    return {"features": x, "label": y}, {"features": vx, "label": vy}


def _write_csv(path: Path, fields: dict) -> None:
    rows = ["a,b,c,d,species"] + [",".join(f"{v:.6f}" for v in row) + f",{int(label)}"
                                  for row, label in zip(fields["features"].tolist(), fields["label"])]
    path.write_text("\n".join(rows) + "\n")


@pytest.mark.parametrize("kind", ["npz", "pt", "csv"])
def test_data_files_with_a_separate_validation_file(tmp_path, kind):
    train_fields, val_fields = _file_data(tmp_path)
    for name, fields in (("train", train_fields), ("val", val_fields)):
        if kind == "npz":
            _npz(tmp_path / f"{name}.npz", **fields)
        elif kind == "pt":
            torch.save(fields, tmp_path / f"{name}.pt")
        else:
            _write_csv(tmp_path / f"{name}.csv", fields)
    extra = {"columns": {"features": ["a", "b", "c", "d"], "label": "species"}} if kind == "csv" else {}
    data = {"dataset": {"kind": kind, "path": f"train.{kind}", **extra}, "batch_size": 16,
            "validation": {"dataset": {"kind": kind, "path": f"val.{kind}", **extra}}, "eval_batch_size": 64}
    summary, run = train(tmp_path, mlp(4, 16, 3), {"epochs": 5, "data": data, "optimizer": {"kind": "adam", "lr": 0.02}})
    start = events(run, "start")[0]
    assert (start["train_examples"], start["val_examples"]) == (160, 40)
    # the reported metrics are those of the final weights on exactly the validation file
    with torch.no_grad():
        logits = _model(run)(val_fields["features"])
    assert _close(summary["val_loss"], F.cross_entropy(logits, val_fields["label"]).item())
    assert _close(summary["val_accuracy"], (logits.argmax(-1) == val_fields["label"]).float().mean().item())
    assert summary["val_accuracy"] >= 0.9


def test_text_file_for_a_character_language_model(tmp_path):
    text = "the quick brown fox jumps over the lazy dog.\n" * 30
    (tmp_path / "corpus.txt").write_text(text)
    model = {"inputs": {"tokens": {"shape": ["B", "T"], "dtype": "int64"}},
             "layers": [{"id": "emb", "op": "embedding", "num": 32, "dim": 16},
                        {"id": "head", "op": "linear", "in": 16, "out": 32}], "outputs": {"logits": "head"}}
    data = {"dataset": {"kind": "text", "path": "corpus.txt", "block": 8}, "batch_size": 32,
            "validation": {"fraction": 0.2}}
    summary, run = train(tmp_path, model, {"max_steps": 80, "data": data, "optimizer": {"kind": "adamw", "lr": 0.05},
                                           "evaluation": {"metrics": ["loss", "accuracy", "perplexity"]}})
    vocab = json.loads((run / "vocab.json").read_text())
    assert vocab == {"chars": "".join(sorted(set(text))), "block": 8}
    cut = int(len(text) * 0.8)
    start = events(run, "start")[0]
    assert start["train_examples"] == cut - 8  # a window at every offset of the training text
    assert start["val_examples"] == (len(text) - cut - 9) // 8 + 1  # windows side by side in the held-out tail
    # a bigram model of a repeated sentence: most next characters are certain
    assert summary["val_accuracy"] > 0.7 and summary["val_perplexity"] < 3
    # the validation tail, scored by hand: every character once
    ids = torch.tensor([vocab["chars"].index(c) for c in text[cut:]])
    n = (len(ids) - 9) // 8 + 1
    windows = torch.stack([ids[i * 8:i * 8 + 9] for i in range(n)])
    with torch.no_grad():
        logits = _model(run)(windows[:, :-1])
    loss = F.cross_entropy(logits.reshape(-1, 32), windows[:, 1:].reshape(-1)).item()
    assert _close(summary["val_loss"], loss) and _close(summary["val_perplexity"], math.exp(loss))


def test_text_validation_file_must_use_the_training_alphabet(tmp_path, capsys):
    (tmp_path / "train.txt").write_text("abcabcabc" * 10)
    (tmp_path / "val.txt").write_text("abcxyz" * 10)
    model = {"inputs": {"tokens": {"shape": ["B", "T"], "dtype": "int64"}},
             "layers": [{"id": "emb", "op": "embedding", "num": 8, "dim": 4},
                        {"id": "head", "op": "linear", "in": 4, "out": 8}], "outputs": {"logits": "head"}}
    spec = write_spec(tmp_path, model, {"data": {"dataset": {"kind": "text", "path": "train.txt", "block": 4},
                                                 "validation": {"dataset": {"kind": "text", "path": "val.txt"}}}})
    code = main(["train", str(spec), "--out", str(tmp_path / "run")])
    assert_user_error(code, capsys.readouterr().err, "val.txt has characters outside the training alphabet: 'xyz'")


def test_normalisation_uses_training_statistics_everywhere(tmp_path):
    g = torch.Generator().manual_seed(0)
    image = torch.rand(96, 3, 4, 4, generator=g) * torch.tensor([1.0, 5.0, 20.0])[:, None, None] + 3
    label = (image[:, 0].mean(dim=(1, 2)) > image[:, 0].mean()).long()
    val_image, val_label = image[:32] * 1.1, label[:32]
    _npz(tmp_path / "train.npz", image=image, label=label)
    _npz(tmp_path / "val.npz", image=val_image, label=val_label)
    model = {"inputs": {"image": {"shape": ["B", 3, 4, 4], "dtype": "float32"}},
             "layers": ["flatten", {"id": "head", "op": "linear", "in": 48, "out": 2}], "outputs": {"logits": "head"}}
    data = {"dataset": {"kind": "npz", "path": "train.npz"}, "validation": {"dataset": {"kind": "npz", "path": "val.npz"}},
            "batch_size": 32, "eval_batch_size": 64, "normalize": {"image": "standard"}}
    summary, run = train(tmp_path, model, {"max_steps": 6, "data": data}, run="standard")
    stats = json.loads((run / "run.json").read_text())["normalize"]["image"]
    assert np.allclose(stats["mean"], image.mean(dim=(0, 2, 3)).tolist(), rtol=1e-5)  # one per channel
    assert np.allclose(stats["std"], image.std(dim=(0, 2, 3)).tolist(), rtol=1e-5)
    mean, std = (torch.tensor(stats[k])[None, :, None, None] for k in ("mean", "std"))
    with torch.no_grad():  # validation is normalised with the training split's statistics
        expected = F.cross_entropy(_model(run)((val_image - mean) / std), val_label).item()
    assert _close(summary["val_loss"], expected)
    # minmax and explicit statistics
    data["normalize"] = {"image": "minmax"}
    _, run = train(tmp_path, model, {"max_steps": 1, "data": data}, run="minmax")
    stats = json.loads((run / "run.json").read_text())["normalize"]["image"]
    low, high = image.amin(dim=(0, 2, 3)), image.amax(dim=(0, 2, 3))
    assert np.allclose(stats["mean"], low.tolist()) and np.allclose(stats["std"], (high - low).tolist(), rtol=1e-5)
    data["normalize"] = {"image": {"mean": [1, 2, 3], "std": 2}}
    _, run = train(tmp_path, model, {"max_steps": 1, "data": data}, run="explicit")
    assert json.loads((run / "run.json").read_text())["normalize"]["image"] == {"mean": [1.0, 2.0, 3.0], "std": [2.0]}


def test_augmentations_on_real_batches():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(64, 1, 6, 6, generator=g) + 1  # no zeros inside, so padding shows
    batch = {"image": x, "label": torch.zeros(64, dtype=torch.int64)}

    def augmented(ops, seed=1):
        parsed = [augment.AUGMENTATIONS.parse(op, ("augment", i), _no_problem) for i, op in enumerate(ops)]
        built = augment.build(parsed, {"image": (1, 6, 6), "label": ()}, "image", lambda _: None)
        return augment.apply(batch, built, torch.Generator().manual_seed(seed))

    def run(ops, seed=1):
        return augmented(ops, seed)["image"]

    assert torch.equal(run([{"op": "random_flip", "p": 1.0}]), x.flip(-1))
    assert torch.equal(run([{"op": "random_flip", "p": 1.0, "dim": 1}]), x.flip(2))
    assert torch.equal(run([{"op": "random_flip", "p": 0.0}]), x)
    flipped = run([{"op": "random_flip"}])
    per_example = [bool(torch.equal(a, b.flip(-1))) for a, b in zip(flipped, x)]
    assert 10 < sum(per_example) < 54  # about half, each example either flipped or untouched
    assert all(f or torch.equal(a, b) for f, a, b in zip(per_example, flipped, x))
    # random_crop: every example is the original shifted by at most `padding`, zeros coming in at the border
    cropped = run([{"op": "random_crop", "padding": 1}])
    padded = F.pad(x, (1, 1, 1, 1))
    shifts = []
    for out, pad in zip(cropped, padded):
        found = [(dy, dx) for dy in range(3) for dx in range(3) if torch.equal(out, pad[:, dy:dy + 6, dx:dx + 6])]
        assert found
        shifts.append(found[0])
    assert len(set(shifts)) > 4
    # noise: Gaussian with the given std, the labels untouched
    noisy = augmented([{"op": "noise", "std": 0.5}])
    assert abs((noisy["image"] - x).std().item() - 0.5) < 0.03 and noisy["label"] is batch["label"]
    # the same seed draws the same augmentation: what makes a resumed run see the same batches
    ops = [{"op": "random_flip"}, {"op": "random_crop", "padding": 2}, {"op": "noise", "std": 0.1}]
    assert torch.equal(run(ops, seed=3), run(ops, seed=3)) and not torch.equal(run(ops, seed=3), run(ops, seed=4))


def test_training_with_augmentation_leaves_validation_alone(tmp_path):
    x, y = _blobs(64, seed=3, features=64, classes=10)
    _npz(tmp_path / "val.npz", image=x.reshape(-1, 1, 8, 8), label=y)
    data = {"dataset": {"kind": "digits", "layout": "image"}, "batch_size": 64, "eval_batch_size": 64,
            "validation": {"dataset": {"kind": "npz", "path": "val.npz"}},
            "augment": [{"op": "random_flip", "p": 0.5}, {"op": "random_crop", "padding": 1}, {"op": "noise", "std": 0.1}]}
    summary, run = train(tmp_path, IMAGE_MODEL, {"max_steps": 5, "data": data})
    with torch.no_grad():
        expected = F.cross_entropy(_model(run)(x.reshape(-1, 1, 8, 8)), y).item()
    assert _close(summary["val_loss"], expected)


def test_augmentation_that_cannot_apply_is_an_error(tmp_path, capsys):
    spec = write_spec(tmp_path, mlp(), {"data": {**DIGITS_FLAT, "augment": [{"op": "random_crop", "padding": 1}]}})
    code = main(["train", str(spec), "--out", str(tmp_path / "run")])
    assert_user_error(code, capsys.readouterr().err, "random_crop needs examples with at least 2 dims", f"{spec}:")


# ---- losses and metrics: the reported values recomputed from the final weights ----------------------------------

def _loss_case(kind: str):
    """(model, train fields, val fields, loss section, metrics, reference(out, val) -> {metric: value})."""
    g = torch.Generator().manual_seed(4)
    x, y = _blobs(120, seed=5)
    vx, vy = _blobs(48, seed=6)
    if kind in ("cross_entropy", "nll"):
        loss = {"kind": kind, "class_weights": [1.0, 2.0, 0.5]}
        if kind == "cross_entropy":
            loss["label_smoothing"] = 0.1
        model = mlp(4, 16, 3, tail=({"id": "logp", "op": "log_softmax"},) if kind == "nll" else ())

        def reference(out, val):
            fn = F.nll_loss if kind == "nll" else lambda o, t, **k: F.cross_entropy(o, t, label_smoothing=0.1, **k)
            return {"val_loss": fn(out, val["label"], weight=torch.tensor(loss["class_weights"])).item(),
                    "val_accuracy": (out.argmax(-1) == val["label"]).float().mean().item(),
                    "val_top2_accuracy": (out.topk(2).indices == val["label"][:, None]).any(-1).float().mean().item()}
        return model, {"features": x, "label": y}, {"features": vx, "label": vy}, loss, ["loss", "accuracy",
                                                                                           "top2_accuracy"], reference
    if kind == "ignore_index":
        y, vy = y.clone(), vy.clone()
        y[::4], vy[::3] = -1, -1  # unlabelled examples

        def reference(out, val):
            keep = val["label"] != -1
            return {"val_loss": F.cross_entropy(out, val["label"], ignore_index=-1).item(),
                    "val_accuracy": (out[keep].argmax(-1) == val["label"][keep]).float().mean().item()}
        return (mlp(4, 16, 3), {"features": x, "label": y}, {"features": vx, "label": vy},
                {"kind": "cross_entropy", "ignore_index": -1}, ["loss", "accuracy"], reference)
    if kind in ("mse", "l1", "smooth_l1"):
        w = torch.randn(4, 2, generator=g)
        target, vtarget = x @ w, vx @ w
        loss = {"kind": kind, **({"beta": 0.5} if kind == "smooth_l1" else {})}
        fn = {"mse": F.mse_loss, "l1": F.l1_loss, "smooth_l1": lambda a, b: F.smooth_l1_loss(a, b, beta=0.5)}[kind]

        def reference(out, val):
            err = out - val["target"]
            return {"val_loss": fn(out, val["target"]).item(), "val_mae": err.abs().mean().item(),
                    "val_rmse": err.square().mean().sqrt().item()}
        return (mlp(4, 16, 2), {"features": x, "target": target}, {"features": vx, "target": vtarget}, loss,
                ["loss", "mae", "rmse"], reference)
    if kind == "bce_with_logits":
        target, vtarget = (y == 0).float()[:, None], (vy == 0).float()[:, None]

        def reference(out, val):
            return {"val_loss": F.binary_cross_entropy_with_logits(out, val["target"],
                                                                   pos_weight=torch.tensor(2.0)).item()}
        return (mlp(4, 16, 1), {"features": x, "target": target}, {"features": vx, "target": vtarget},
                {"kind": "bce_with_logits", "pos_weight": 2.0}, ["loss"], reference)
    # token-level cross-entropy over [B, T, V] logits
    tokens = torch.randint(0, 12, (120, 6), generator=g)
    vtokens = torch.randint(0, 12, (48, 6), generator=g)
    model = {"inputs": {"tokens": {"shape": ["B", "T"], "dtype": "int64"}},
             "layers": [{"id": "emb", "op": "embedding", "num": 12, "dim": 16},
                        {"id": "head", "op": "linear", "in": 16, "out": 12}], "outputs": {"logits": "head"}}

    def reference(out, val):
        flat, labels = out.reshape(-1, 12), val["targets"].reshape(-1)
        ce = F.cross_entropy(flat, labels).item()
        return {"val_loss": ce, "val_perplexity": math.exp(ce),
                "val_accuracy": (flat.argmax(-1) == labels).float().mean().item(),
                "val_top3_accuracy": (flat.topk(3).indices == labels[:, None]).any(-1).float().mean().item()}
    return (model, {"tokens": tokens, "targets": (tokens + 1) % 12}, {"tokens": vtokens, "targets": (vtokens + 1) % 12},
            {"kind": "cross_entropy"}, ["loss", "accuracy", "top3_accuracy", "perplexity"], reference)


LOSS_CASES = ["cross_entropy", "ignore_index", "nll", "mse", "l1", "smooth_l1", "bce_with_logits", "token_level"]


@pytest.mark.parametrize("kind", LOSS_CASES)
def test_losses_and_metrics_match_a_hand_computation(tmp_path, kind):
    model, train_fields, val_fields, loss, metrics, reference = _loss_case(kind)
    _npz(tmp_path / "train.npz", **train_fields)
    _npz(tmp_path / "val.npz", **val_fields)
    data = {"dataset": {"kind": "npz", "path": "train.npz"}, "batch_size": 24, "eval_batch_size": 48,
            "validation": {"dataset": {"kind": "npz", "path": "val.npz"}}}
    summary, run = train(tmp_path, model, {"max_steps": 15, "data": data, "loss": loss,
                                           "optimizer": {"kind": "adam", "lr": 0.02},
                                           "evaluation": {"every_steps": 5, "metrics": metrics},
                                           "logging": {"every_steps": 1}})
    with torch.no_grad():
        out = _model(run)(next(iter(val_fields.values())))
    expected = reference(out, val_fields)
    assert set(expected) == {f"val_{m}" for m in metrics}
    for name, value in expected.items():
        assert _close(summary[name], value), (name, summary[name], value)
    losses = [e["loss"] for e in events(run, "train")]
    assert len(losses) == 15 and all(math.isfinite(v) for v in losses) and losses[-1] < losses[0]


def test_several_loss_terms_on_several_outputs_sum_with_their_scales(tmp_path):
    """A classifier with a regression head: cross-entropy on one output plus 0.1 x MSE on the other."""
    x, y = _blobs(120, seed=5)
    vx, vy = _blobs(48, seed=6)
    w = torch.randn(4, 2, generator=torch.Generator().manual_seed(7))
    _npz(tmp_path / "train.npz", features=x, label=y, box=x @ w)
    _npz(tmp_path / "val.npz", features=vx, label=vy, box=vx @ w)
    model = {"inputs": {"features": {"shape": ["B", 4], "dtype": "float32"}},
             "layers": [{"id": "trunk", "op": "linear", "in": 4, "out": 16}, "relu",
                        {"id": "cls", "op": "linear", "in": 16, "out": 3},
                        {"id": "reg", "op": "linear", "in": 16, "out": 2, "from": "relu_0"}],
             "outputs": {"logits": "cls", "box": "reg"}}
    loss = [{"kind": "cross_entropy", "output": "logits", "target": "label"},
            {"kind": "mse", "output": "box", "target": "box", "scale": 0.1}]
    data = {"dataset": {"kind": "npz", "path": "train.npz"}, "batch_size": 24, "eval_batch_size": 48,
            "validation": {"dataset": {"kind": "npz", "path": "val.npz"}}}
    summary, run = train(tmp_path, model, {"max_steps": 10, "data": data, "loss": loss,
                                           "optimizer": {"kind": "adam", "lr": 0.02},
                                           "evaluation": {"every_steps": 5, "metrics": ["loss"]}})
    with torch.no_grad():
        logits, box = _model(run)(vx)
    expected = F.cross_entropy(logits, vy) + 0.1 * F.mse_loss(box, vx @ w)
    assert _close(summary["val_loss"], expected.item()), (summary["val_loss"], expected.item())


def test_metric_that_does_not_fit_the_loss_is_an_error(tmp_path, capsys):
    spec = write_spec(tmp_path, mlp(), {"data": DIGITS_FLAT, "evaluation": {"metrics": ["loss", "rmse"]}})
    code = main(["train", str(spec), "--out", str(tmp_path / "run")])
    assert_user_error(code, capsys.readouterr().err, "metric 'rmse' needs a regression output; 'out' is classified",
                      f"{spec}:")


# ---- optimizers: a few full-batch steps against torch.optim by hand ---------------------------------------------

NORM_MODEL = {"inputs": {"features": {"shape": ["B", 4], "dtype": "float32"}},
              "layers": [{"id": "fc1", "op": "linear", "in": 4, "out": 8}, {"id": "ln", "op": "layer_norm", "dim": 8},
                         "relu", {"id": "head", "op": "linear", "in": 8, "out": 3}],
              "outputs": {"logits": "head"}}
OPTIMIZERS = {
    "sgd-nesterov": ({"kind": "sgd", "lr": 0.1, "momentum": 0.9, "nesterov": True, "weight_decay": 0.1},
                     lambda groups: torch.optim.SGD(groups, lr=0.1, momentum=0.9, nesterov=True)),
    "sgd-decay-all": ({"kind": "sgd", "lr": 0.1, "momentum": 0.5, "weight_decay": 0.1, "decay_bias_and_norm": True},
                      lambda groups: torch.optim.SGD(groups, lr=0.1, momentum=0.5)),
    "adam": ({"kind": "adam", "lr": 0.01, "betas": [0.8, 0.99], "eps": 1e-6, "weight_decay": 0.01},
             lambda groups: torch.optim.Adam(groups, lr=0.01, betas=(0.8, 0.99), eps=1e-6)),
    "adamw-fused": ({"kind": "adamw", "lr": 0.01, "weight_decay": 0.1, "fused": True},
                    lambda groups: torch.optim.AdamW(groups, lr=0.01)),
    "rmsprop": ({"kind": "rmsprop", "lr": 0.01, "momentum": 0.5, "alpha": 0.9, "centered": True, "weight_decay": 0.01},
                lambda groups: torch.optim.RMSprop(groups, lr=0.01, momentum=0.5, alpha=0.9, centered=True)),
}


@pytest.mark.parametrize("case", OPTIMIZERS)
def test_optimizers_match_torch_with_decay_rules_and_groups(tmp_path, case):
    options, reference_optimizer = OPTIMIZERS[case]
    x, y = _blobs(32, seed=7)
    _npz(tmp_path / "data.npz", features=x, label=y)
    optimizer = {**options, "groups": [{"params": "head.*", "lr": options["lr"] / 10}]}
    data = {"dataset": {"kind": "npz", "path": "data.npz"}, "batch_size": 32, "shuffle": False,
            "validation": {"fraction": 0}}
    _, run = train(tmp_path, NORM_MODEL, {"seed": 0, "max_steps": 3, "data": data, "optimizer": optimizer})
    # by hand: weight decay on matrices only (unless decay_bias_and_norm), a tenth of the lr for the head
    model = dlspec.build(dlspec.load(run / "spec.yaml"), seed=0)
    decay_all = options.get("decay_bias_and_norm", False)
    groups = [{"params": [p], "lr": options["lr"] / (10 if name.startswith("head.") else 1),
               "weight_decay": options["weight_decay"] if p.ndim >= 2 or decay_all else 0.0}
              for name, p in model.named_parameters()]
    opt = reference_optimizer(groups)
    for _ in range(3):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    trained = weights(run)
    for name, value in model.state_dict().items():
        assert torch.allclose(trained[name], value, atol=1e-6, rtol=1e-5), name
    state = load(run / "checkpoints" / "last.pt")["optimizer"]
    assert {g["lr"] for g in state["param_groups"]} == {options["lr"], options["lr"] / 10}
    if case == "adamw-fused":
        assert all(g["fused"] for g in state["param_groups"])


def test_unknown_optimizer_option_and_unmatched_group(tmp_path, capsys):
    spec = write_spec(tmp_path, mlp(), {"data": DIGITS_FLAT, "optimizer": {"kind": "adam", "momentum": 0.9}})
    code = main(["train", str(spec), "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert_user_error(code, err, "'momentum' is not an option of optimizer kind 'adam'",
                      "hint: 'momentum' belongs to rmsprop, sgd")
    line = next(i for i, text in enumerate(spec.read_text().splitlines(), 1) if "momentum" in text)
    assert f"{spec}:{line}:" in err
    spec = write_spec(tmp_path, mlp(), {"data": DIGITS_FLAT, "optimizer": {"kind": "adam", "groups": [{"params": "enc.*"}]}})
    code = main(["train", str(spec), "--out", str(tmp_path / "run")])
    assert_user_error(code, capsys.readouterr().err, "parameter group 0 (enc.*) matches no trainable parameter")


# ---- learning-rate schedules: the lr each step used, from metrics.jsonl ------------------------------------------

def _anneal(start: float, end: float, pct: float) -> float:
    return end + (start - end) / 2 * (math.cos(math.pi * pct) + 1)


def _restart(i: int) -> float:  # t_0 = 3, t_mult = 2: periods 3, 6, 12
    t_cur, t_i = (i, 3) if i < 3 else (i - 3, 6) if i < 9 else (i - 9, 12)
    return _anneal(0.1, 0.0, t_cur / t_i)


# 64 examples in batches of 16: 4 steps an epoch, 3 epochs, lr 0.1; e = i // 4 is the epoch of step index i
SCHEDULES = {
    "constant": ({"kind": "constant"}, lambda i: 0.1),
    "step": ({"kind": "step", "step_size": 1, "gamma": 0.5}, lambda i: 0.1 * 0.5 ** (i // 4)),
    "step-per-batch": ({"kind": "step", "interval": "step", "step_size": 5, "gamma": 0.5},
                       lambda i: 0.1 * 0.5 ** (i // 5)),
    "multistep": ({"kind": "multistep", "milestones": [2], "gamma": 0.1}, lambda i: 0.1 if i // 4 < 2 else 0.01),
    "exponential": ({"kind": "exponential", "gamma": 0.9}, lambda i: 0.1 * 0.9 ** (i // 4)),
    "cosine": ({"kind": "cosine"}, lambda i: _anneal(0.1, 0.0, i / 12)),
    "cosine-min-lr": ({"kind": "cosine", "min_lr": 0.01}, lambda i: _anneal(0.1, 0.01, i / 12)),
    "cosine_restarts": ({"kind": "cosine_restarts", "t_0": 3, "t_mult": 2}, _restart),
    "one_cycle": ({"kind": "one_cycle", "pct_start": 0.25},  # peak at index 2, the final lr at the last step
                  lambda i: _anneal(0.004, 0.1, i / 2) if i <= 2 else _anneal(0.1, 0.004 / 1e4, (i - 2) / 9)),
    "warmup-cosine": ({"kind": "cosine", "min_lr": 0.01, "warmup_steps": 4, "warmup_start": 0.1},
                      lambda i: 0.1 * (0.1 + 0.9 * i / 4) if i < 4 else _anneal(0.1, 0.01, (i - 4) / 8)),
    "warmup-step": ({"kind": "step", "step_size": 1, "gamma": 0.5, "warmup_steps": 2},
                    lambda i: 0.1 * 0.5 ** (i // 4) * (0.01 + 0.99 * i / 2 if i < 2 else 1)),
    # warm-up ramps up to where the schedule starts (one-cycle starts low), then the schedule runs its course
    "warmup-one_cycle": ({"kind": "one_cycle", "pct_start": 0.3, "warmup_steps": 2},
                         lambda i: 0.004 * (0.01 + 0.99 * i / 2) if i < 2 else
                         _anneal(0.004, 0.1, (i - 2) / 2) if i - 2 <= 2 else _anneal(0.1, 4e-7, (i - 4) / 7)),
}


def _schedule_run(tmp_path: Path, scheduler: dict, **training) -> Path:
    x, y = _blobs(64, seed=8)
    vx, vy = _blobs(16, seed=9)
    _npz(tmp_path / "train.npz", features=x, label=y)
    _npz(tmp_path / "val.npz", features=vx, label=vy)
    data = {"dataset": {"kind": "npz", "path": "train.npz"}, "batch_size": 16,
            "validation": {"dataset": {"kind": "npz", "path": "val.npz"}}}
    _, run = train(tmp_path, mlp(4, 8, 3), {"epochs": 3, "data": data, "optimizer": {"kind": "sgd", "lr": 0.1},
                                            "scheduler": scheduler, "logging": {"every_steps": 1}, **training})
    return run


@pytest.mark.parametrize("case", SCHEDULES)
def test_schedules_produce_the_expected_learning_rates(tmp_path, case):
    scheduler, expected = SCHEDULES[case]
    run = _schedule_run(tmp_path, scheduler)
    lrs = [e["lr"] for e in events(run, "train")]
    assert len(lrs) == 12
    for i, lr in enumerate(lrs):
        assert math.isclose(lr, expected(i), rel_tol=1e-6, abs_tol=1e-12), (i, lrs, [expected(j) for j in range(12)])


def test_plateau_lowers_the_lr_when_validation_stalls(tmp_path):
    # an lr of 1e-6 changes nothing the threshold notices: every evaluation after the first is a plateau
    run = _schedule_run(tmp_path, {"kind": "plateau", "patience": 1, "factor": 0.5},
                        optimizer={"kind": "sgd", "lr": 1e-6}, evaluation={"every_steps": 2})
    assert [e["step"] for e in events(run, "eval")] == [2, 4, 6, 8, 10, 12]
    lrs = [e["lr"] / 1e-6 for e in events(run, "train")]
    # the third and fifth evaluations (steps 6 and 10) see two bad evaluations in a row: the lr halves after them
    assert [round(v, 6) for v in lrs] == [1.0] * 6 + [0.5] * 4 + [0.25] * 2


# ---- precision and compile ----------------------------------------------------------------------------------------

def _val_files(tmp_path: Path) -> dict:
    x, y = _blobs(96, seed=10)
    vx, vy = _blobs(32, seed=11)
    _npz(tmp_path / "train.npz", features=x, label=y)
    _npz(tmp_path / "val.npz", features=vx, label=vy)
    return {"dataset": {"kind": "npz", "path": "train.npz"}, "batch_size": 16, "eval_batch_size": 32,
            "validation": {"dataset": {"kind": "npz", "path": "val.npz"}}}


def test_bf16_autocast_on_cpu(tmp_path):
    data = _val_files(tmp_path)
    vx, vy = (torch.from_numpy(np.load(tmp_path / "val.npz")[k]) for k in ("features", "label"))
    summary, run = train(tmp_path, mlp(4, 16, 3), {"max_steps": 12, "precision": "bf16", "data": data})
    model = _model(run)
    assert all(p.dtype == torch.float32 for p in model.parameters())  # master weights stay fp32
    with torch.no_grad():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = model(vx)
        assert low.dtype == torch.bfloat16
        full = model(vx)
    assert _close(summary["val_loss"], F.cross_entropy(low.float(), vy).item())
    assert not _close(summary["val_loss"], F.cross_entropy(full, vy).item(), rel=1e-6)  # it really ran in bf16
    fp32, _ = train(tmp_path, mlp(4, 16, 3), {"max_steps": 12, "data": data}, run="fp32")
    assert abs(fp32["val_loss"] - summary["val_loss"]) < 0.05  # and still trains the same model


def test_compile(tmp_path):
    """torch.compile on one tiny model: same training as eager up to rounding. One batch shape and no
    evaluation, so that a single graph is compiled (compiling is slow on a small CPU)."""
    x, y = _blobs(48, seed=10)
    _npz(tmp_path / "data.npz", features=x, label=y)
    data = {"dataset": {"kind": "npz", "path": "data.npz"}, "batch_size": 16, "validation": {"fraction": 0}}
    compiled, run = train(tmp_path, mlp(4, 8, 3), {"max_steps": 4, "compile": True, "data": data}, run="compiled")
    eager, reference = train(tmp_path, mlp(4, 8, 3), {"max_steps": 4, "data": data}, run="eager")
    assert set(weights(run)) == {"fc1.weight", "fc1.bias", "head.weight", "head.bias"}  # no _orig_mod. prefix
    for name, value in weights(reference).items():
        assert torch.allclose(weights(run)[name], value, atol=1e-5), name
    assert not torch.equal(weights(reference)["fc1.weight"], dlspec.build(dlspec.load(run / "spec.yaml"))
                           .state_dict()["fc1.weight"])  # it trained


# ---- stability: clipping, accumulation, the NaN/Inf guard -------------------------------------------------------

@pytest.mark.parametrize("clip", [{"norm": 0.05}, {"value": 0.01}])
def test_gradient_clipping(tmp_path, clip):
    x, y = _blobs(32, seed=12)
    _npz(tmp_path / "data.npz", features=x, label=y)
    data = {"dataset": {"kind": "npz", "path": "data.npz"}, "batch_size": 32, "shuffle": False,
            "validation": {"fraction": 0}}
    _, run = train(tmp_path, mlp(4, 8, 3), {"max_steps": 1, "data": data, "grad_clip": clip,
                                            "optimizer": {"kind": "sgd", "lr": 1.0}, "logging": {"every_steps": 1}})
    model = dlspec.build(dlspec.load(run / "spec.yaml"), seed=0)
    F.cross_entropy(model(x), y).backward()
    grads = {n: p.grad for n, p in model.named_parameters()}
    norm = torch.sqrt(sum(g.square().sum() for g in grads.values()))
    assert math.isclose(events(run, "train")[0]["grad_norm"], norm.item(), rel_tol=1e-5)  # logged before clipping
    assert norm > 0.1  # so that clipping matters
    if "norm" in clip:
        clipped = {n: g * 0.05 / norm for n, g in grads.items()}
    else:
        clipped = {n: g.clamp(-0.01, 0.01) for n, g in grads.items()}
    trained = weights(run)
    for name, p in model.named_parameters():  # one SGD step with lr 1: the weights moved by exactly the clipped grad
        assert torch.allclose(trained[name], p.detach() - clipped[name], atol=1e-6), name


def test_gradient_accumulation_equals_a_bigger_batch(tmp_path):
    x, y = _blobs(72, seed=13)  # 72 = 4.5 batches of 16: the last accumulation group is a single micro-batch
    _npz(tmp_path / "data.npz", features=x, label=y)
    data = {"dataset": {"kind": "npz", "path": "data.npz"}, "validation": {"fraction": 0}}
    base = {"seed": 1, "epochs": 2, "optimizer": {"kind": "sgd", "lr": 0.2, "momentum": 0.9}}
    _, big = train(tmp_path, mlp(4, 8, 3), {**base, "data": {**data, "batch_size": 16}}, run="big")
    _, accumulated = train(tmp_path, mlp(4, 8, 3), {**base, "accumulate": 2, "data": {**data, "batch_size": 8}},
                           run="accumulated")
    _, small = train(tmp_path, mlp(4, 8, 3), {**base, "data": {**data, "batch_size": 8}}, run="small")
    assert events(big, "start")[0]["steps_per_epoch"] == events(accumulated, "start")[0]["steps_per_epoch"] == 5
    for name, value in weights(big).items():
        assert torch.allclose(weights(accumulated)[name], value, atol=1e-6), name
    assert not torch.allclose(weights(small)["fc1.weight"], weights(big)["fc1.weight"], atol=1e-3)


def _nan_data(tmp_path: Path) -> dict:
    x, y = _blobs(40, seed=14)
    x[21, 2] = float("nan")  # example 21: the 6th batch of 4 in file order
    _npz(tmp_path / "data.npz", features=x, label=y)
    return {"dataset": {"kind": "npz", "path": "data.npz"}, "batch_size": 4, "shuffle": False,
            "validation": {"fraction": 0}}


def test_nan_guard_stops_and_keeps_the_last_good_checkpoint(tmp_path, capsys):
    spec = write_spec(tmp_path, mlp(4, 8, 3), {"threads": 1, "epochs": 1, "data": _nan_data(tmp_path),
                                               "checkpoint": {"every_steps": 2}})
    run = tmp_path / "run"
    code = main(["train", str(spec), "--out", str(run)])
    err = capsys.readouterr().err
    assert_user_error(code, err, f"error: the loss or gradient became NaN/Inf at step 6 (epoch 1, batch 6); training "
                      f"stopped, the last good checkpoint is {run / 'checkpoints' / 'last.pt'} (step 4)",
                      "set nan_guard: skip")
    assert err.count("error:") == 1
    last = load(run / "checkpoints" / "last.pt")
    assert last["step"] == 4 and all(torch.isfinite(t).all() for t in last["model"].values())
    assert not (run / "weights.pt").exists()


def test_nan_guard_skip_leaves_the_model_untouched(tmp_path):
    model = {"inputs": {"features": {"shape": ["B", 4], "dtype": "float32"}},
             "dims": {"B": {"min": 2}},  # batch norm trains on two or more examples a batch
             "layers": [{"id": "fc1", "op": "linear", "in": 4, "out": 8}, {"id": "bn", "op": "batch_norm1d", "dim": 8},
                        "relu", {"id": "head", "op": "linear", "in": 8, "out": 3}], "outputs": {"logits": "head"}}
    summary, run = train(tmp_path, model, {"epochs": 1, "nan_guard": "skip", "data": _nan_data(tmp_path),
                                           "logging": {"every_steps": 1}})
    skipped = events(run, "skipped_step")
    assert [(e["step"], e["batch"]) for e in skipped] == [(6, 6)]
    assert summary["steps"] == 10 and math.isfinite(summary["train_loss"])
    final = weights(run)
    assert all(torch.isfinite(t).all() for t in final.values())  # running statistics included
    assert final["bn.num_batches_tracked"].item() == 9
    assert [e["step"] for e in events(run, "train")] == list(range(1, 11))


# ---- evaluation: every N steps, early stopping, the best checkpoint ---------------------------------------------

def test_evaluation_every_n_steps_early_stopping_and_best_checkpoint(tmp_path):
    data = {**DIGITS_FLAT, "validation": {"fraction": 0.2}}
    summary, run = train(tmp_path, mlp(), {"max_steps": 60, "data": data, "evaluation": {"every_steps": 15},
                                           "optimizer": {"kind": "adamw", "lr": 0.01},
                                           "checkpoint": {"best_metric": "val_accuracy"}}, run="best")
    evals = events(run, "eval")
    assert [e["step"] for e in evals] == [15, 30, 45, 60]
    best = max(evals, key=lambda e: e["val_accuracy"])
    kept = load(run / "checkpoints" / "best.pt")
    assert (kept["metric"], kept["value"], kept["step"]) == ("val_accuracy", best["val_accuracy"], best["step"])
    assert (summary["best_value"], summary["best_step"]) == (best["val_accuracy"], best["step"])
    # by default the best model is the one with the lowest validation loss
    _, run = train(tmp_path, mlp(), {"max_steps": 30, "data": data, "evaluation": {"every_steps": 10}}, run="loss")
    kept = load(run / "checkpoints" / "best.pt")
    assert kept["metric"] == "val_loss" and kept["value"] == min(e["val_loss"] for e in events(run, "eval"))
    # early stopping: with a min_delta nothing reaches, the run stops after `patience` evaluations without progress
    summary, run = train(tmp_path, mlp(), {"max_steps": 200, "data": data, "evaluation": {"every_steps": 5},
                                           "early_stopping": {"metric": "val_accuracy", "patience": 3,
                                                              "min_delta": 0.5}}, run="early")
    assert summary["steps"] == 20
    assert summary["stopped_by"] == "early stopping (val_accuracy did not improve for 3 evaluations)"
    assert [e["step"] for e in events(run, "eval")] == [5, 10, 15, 20]


def test_early_stopping_on_a_metric_that_is_not_logged(tmp_path, capsys):
    spec = write_spec(tmp_path, mlp(), {"data": DIGITS_FLAT, "early_stopping": {"metric": "val_acuracy"}})
    code = main(["train", str(spec), "--out", str(tmp_path / "run")])
    assert_user_error(code, capsys.readouterr().err, "metric 'val_acuracy' is not logged by this run",
                      "did you mean 'val_accuracy'?")


# ---- progress -------------------------------------------------------------------------------------------------

def test_progress_lines_bar_and_off(tmp_path, capsys):
    spec = write_spec(tmp_path, mlp(), {"threads": 1, "max_steps": 20, "data": DIGITS_FLAT, "logging": {"every_steps": 10}})
    assert main(["train", str(spec), "--out", str(tmp_path / "auto")]) == 0  # not a terminal: lines
    captured = capsys.readouterr()
    lines = captured.out.splitlines()
    assert [line.split("  ")[0] for line in lines if line.startswith("step ")] == ["step 10", "step 20"]
    assert "examples_per_s" in lines[1] and "eta 0:00" in lines[2] and "\r" not in captured.out + captured.err
    assert main(["train", str(spec), "--out", str(tmp_path / "bar"), "--progress", "bar"]) == 0
    captured = capsys.readouterr()
    assert "20/20" in captured.err and "step/s" in captured.err and "loss=" in captured.err  # tqdm's bar
    assert not any(line.startswith("step ") for line in captured.out.splitlines())
    assert main(["train", str(spec), "--out", str(tmp_path / "off"), "--progress", "off"]) == 0
    captured = capsys.readouterr()
    assert captured.out.startswith("---") and "val accuracy" in captured.out  # only the summary table


def test_tensorboard_files_and_a_clear_error_without_the_package(tmp_path, capsys, monkeypatch):
    spec = write_spec(tmp_path, mlp(), {"threads": 1, "max_steps": 2, "data": DIGITS_FLAT,
                                        "logging": {"tensorboard": True, "every_steps": 1}})
    with monkeypatch.context() as patch:
        patch.setitem(sys.modules, "torch.utils.tensorboard", None)  # as if tensorboard were not installed
        code = main(["train", str(spec), "--out", str(tmp_path / "without")])
        assert_user_error(code, capsys.readouterr().err, "logging.tensorboard needs the tensorboard package", f"{spec}:")

    pytest.importorskip("tensorboard")  # the dev extra installs it
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    assert main(["train", str(spec), "--out", str(tmp_path / "run")]) == 0
    assert list((tmp_path / "run" / "tensorboard").glob("events.out.tfevents.*"))
    events = EventAccumulator(str(tmp_path / "run" / "tensorboard")).Reload()
    logged = [line for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines() if '"train"' in line]
    losses = [e.value for e in events.Scalars("train/loss")]
    assert len(losses) == len(logged) == 2  # every logged step reached TensorBoard
    # the metrics are curves; the counts of other events (start/processes, checkpoint/batch) are not logged
    tags = events.Tags()["scalars"]
    assert {t.split("/")[0] for t in tags} == {"train", "eval", "final"} and "eval/val_accuracy" in tags
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert events.Scalars("final/val_accuracy")[0].value == pytest.approx(summary["val_accuracy"])
    # hparams: the resolved training section (defaults included) beside the final metrics
    from tensorboard.plugins.hparams import plugin_data_pb2
    content = events.PluginTagToContent("hparams")
    start = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"]).session_start_info
    assert start.hparams["max_steps"].number_value == 2 and start.hparams["optimizer.kind"].string_value == "adamw"
    assert start.hparams["optimizer.eps"].number_value == pytest.approx(1e-8)  # a default the spec does not write
    experiment = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/experiment"]).experiment
    assert "final/val_accuracy" in {m.name.tag for m in experiment.metric_infos}


def test_device_choice(tmp_path, capsys):
    summary, _ = train(tmp_path, mlp(), {"max_steps": 1, "device": "auto", "data": DIGITS_FLAT}, run="auto")
    expected = "cuda:0" if torch.cuda.is_available() else "mps" if torch.backends.mps.is_available() else "cpu"
    assert summary["device"] == expected  # auto: cuda > mps > cpu
    summary, _ = train(tmp_path, mlp(), {"max_steps": 1, "device": "cpu", "data": DIGITS_FLAT}, run="cpu")
    assert summary["device"] == "cpu"
    if not torch.cuda.is_available():
        spec = write_spec(tmp_path, mlp(), {"device": "cuda", "data": DIGITS_FLAT})
        code = main(["train", str(spec), "--out", str(tmp_path / "cuda")])
        assert_user_error(code, capsys.readouterr().err, "device 'cuda' was asked for, but this torch sees no CUDA "
                          "device", "use `device: auto`")


def test_loader_workers_do_not_change_the_result(tmp_path):
    """Batches are index lists fixed by (seed, epoch) and augmentation runs in the main process, so worker
    processes and pinned memory change only speed."""
    training = {"seed": 2, "max_steps": 12, "data": {**DIGITS_FLAT, "augment": [{"op": "noise", "std": 0.1}]}}
    _, plain = train(tmp_path, mlp(dropout=0.2), training, run="plain")
    training["data"] = {**training["data"], "num_workers": 2, "pin_memory": torch.cuda.is_available()}
    _, workers = train(tmp_path, mlp(dropout=0.2), training, run="workers")
    for name, value in weights(plain).items():
        assert torch.equal(weights(workers)[name], value), name


@pytest.mark.parametrize("case", ["missing field", "other shape", "label out of range"])
def test_a_separate_validation_file_is_checked_too(tmp_path, capsys, case):
    x, y = _blobs(40, seed=15)
    _npz(tmp_path / "train.npz", features=x, label=y)
    val = {"missing field": {"features": x}, "other shape": {"features": x[:, :3], "label": y},
           "label out of range": {"features": x, "label": y + 2}}[case]
    _npz(tmp_path / "val.npz", **val)
    spec = write_spec(tmp_path, mlp(4, 8, 3), {"data": {"dataset": {"kind": "npz", "path": "train.npz"},
                                                        "validation": {"dataset": {"kind": "npz", "path": "val.npz"}}}})
    code = main(["train", str(spec), "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    message = {"missing field": "the validation data set has no field 'label'",
               "other shape": "validation field 'features' has examples of float32 [3], training ones are float32 [4]",
               "label out of range": "label out of range: field 'label' holds labels 2..4, but output 'out' has 3 "
                                     "classes (in the validation data)"}[case]
    assert code == 1 and message in err and f"{spec}:" in err and "Traceback" not in err, err
    assert not (tmp_path / "run").exists()


def test_inputs_are_matched_by_name_or_mapped(tmp_path, capsys):
    x, y = _blobs(48, seed=16)
    _npz(tmp_path / "data.npz", features=x, extra=x * 2, label=y)  # two candidate inputs: no default
    model = mlp(4, 8, 3, field="x")
    data = {"dataset": {"kind": "npz", "path": "data.npz"}, "validation": {"fraction": 0}}
    spec = write_spec(tmp_path, model, {"data": data})
    code = main(["train", str(spec), "--out", str(tmp_path / "nomap")])
    assert_user_error(code, capsys.readouterr().err, "no data field for model input 'x'",
                      "hint: map it: `inputs: {x: features}`")
    summary, run = train(tmp_path, model, {"max_steps": 2, "data": {**data, "inputs": {"x": "extra"}}}, run="mapped")
    assert summary["steps"] == 2
    spec = write_spec(tmp_path, model, {"data": {**data, "inputs": {"xx": "extra"}}})
    code = main(["train", str(spec), "--out", str(tmp_path / "typo")])
    assert_user_error(code, capsys.readouterr().err, "'xx' is not an input of the model", "did you mean 'x'?")


def test_gradient_checkpointing_from_the_model_spec(tmp_path):
    """`checkpoint: true` on a layer recomputes it in backward; training gives the same weights."""
    data = {**DIGITS_FLAT, "validation": {"fraction": 0}}
    plain = mlp()
    checkpointed = mlp()
    checkpointed["layers"][0] = {**checkpointed["layers"][0], "checkpoint": True}
    _, a = train(tmp_path, plain, {"max_steps": 5, "data": data}, run="plain")
    _, b = train(tmp_path, checkpointed, {"max_steps": 5, "data": data}, run="checkpointed")
    assert "checkpoint(" in dlspec.build(dlspec.load(b / "spec.yaml")).code
    for name, value in weights(a).items():
        assert torch.allclose(weights(b)[name], value, atol=1e-6), name


# ---- speed: no host sync per step, throughput, threads, fused AdamW -----------------------------------------------

def _host_reads(monkeypatch, run_training) -> int:
    """How many times the host reads a tensor's value (item, tolist, bool, float, int) during `run_training()`."""
    count = [0]
    for name in ("item", "tolist", "__bool__", "__float__", "__int__"):
        original = getattr(torch.Tensor, name)

        def counted(self, *args, _original=original, **kwargs):
            count[0] += 1
            return _original(self, *args, **kwargs)
        monkeypatch.setattr(torch.Tensor, name, counted)
    run_training()
    monkeypatch.undo()
    return count[0]


def test_a_step_never_waits_for_the_device(tmp_path, monkeypatch):
    """The loss, the grad norm and the NaN guard are read at log steps only: more steps, no more reads."""
    data = {**DIGITS_FLAT, "validation": {"fraction": 0}}  # no evaluation, and 45 steps in the first epoch
    reads = {steps: _host_reads(monkeypatch, lambda steps=steps: train(
        tmp_path, mlp(), {"max_steps": steps, "data": data, "logging": {"every_steps": 100}}, run=f"run{steps}"))
        for steps in (5, 40)}
    assert reads[5] == reads[40], reads


def test_the_guard_names_the_exact_step_when_it_reads_later(tmp_path, capsys):
    """Logging every 50 steps and no checkpoint before the epoch's end: read at step 10, it names step 6."""
    spec = write_spec(tmp_path, mlp(4, 8, 3), {"threads": 1, "epochs": 1, "data": _nan_data(tmp_path)})
    code = main(["train", str(spec), "--out", str(tmp_path / "run")])
    assert_user_error(code, capsys.readouterr().err, "became NaN/Inf at step 6 (epoch 1, batch 6)",
                      "no checkpoint had been written yet")


def test_throughput_tokens_per_second_and_mfu_from_the_specs_macs(tmp_path):
    data = {"dataset": {"kind": "synthetic_tokens", "samples": 64, "length": 8, "vocab": 12}, "batch_size": 16}
    summary, run = train(tmp_path, TOKEN_MODEL, {"max_steps": 4, "data": data, "logging": {"every_steps": 2,
                                                                                              "peak_tflops": 0.001}})
    macs = 8 * (16 * 12)  # per example: 8 tokens through the 16 -> 12 head (the embedding is a lookup)
    for record in events(run, "train"):
        assert math.isclose(record["tokens_per_s"], record["examples_per_s"] * 8, rel_tol=1e-9)
        assert math.isclose(record["mfu"], record["examples_per_s"] * 6 * macs / 1e9, rel_tol=1e-9)
    assert math.isclose(summary["mfu"], summary["examples_per_s"] * 6 * macs / 1e9, rel_tol=0.02)  # both rounded
    summary, run = train(tmp_path, mlp(), {"max_steps": 2, "data": DIGITS_FLAT}, run="features")
    assert "tokens_per_s" not in summary and "mfu" not in summary  # not a token model; the CPU's peak is unknown


def test_threads_default_from_model_size_and_cores():
    from dlspec.train import device as devices
    before = torch.get_num_threads()
    try:
        cpu = torch.device("cpu")
        assert devices.threads(None, cpu, 1e8, 1) == (1, "a small model: 0.1 GFLOP a step")
        count, why = devices.threads(None, cpu, 1e11, 1)
        assert count == devices.cpu_cores() and why.startswith("100 GFLOP a step on") and torch.get_num_threads() == count
        assert devices.threads(None, cpu, 1e11, 64)[0] == 1  # 64 processes on this machine share its cores
        assert devices.threads(3, cpu, 1e11, 1) == (3, "training.threads")
    finally:
        torch.set_num_threads(before)


def test_the_start_line_says_how_many_threads_and_why(tmp_path, capsys):
    spec = write_spec(tmp_path, mlp(), {"max_steps": 1, "data": DIGITS_FLAT, "device": "cpu"})
    assert main(["train", str(spec), "--out", str(tmp_path / "run"), "--progress", "lines"]) == 0
    assert ", 1 thread (a small model: " in capsys.readouterr().out.splitlines()[0]
    assert events(tmp_path / "run", "start")[0]["threads"] == 1


@pytest.mark.parametrize("kind", ["adam", "adamw"])
def test_adam_runs_its_fused_kernel_where_torch_has_one(kind):
    from dlspec.train import optim
    o = optim.OPTIMIZERS.parse({"kind": kind}, ("optimizer",), lambda *p: pytest.fail(str(p)))
    params = [("w", torch.nn.Parameter(torch.zeros(3, 3))), ("b", torch.nn.Parameter(torch.zeros(3)))]
    optimizer = optim.build(params, o, torch.device("cpu"), lambda _: None)
    assert all(g["fused"] for g in optimizer.param_groups)
    o = optim.OPTIMIZERS.parse({"kind": kind, "fused": False}, ("optimizer",), lambda *p: pytest.fail(str(p)))
    optimizer = optim.build(params, o, torch.device("cpu"), lambda _: None)
    assert all(g["foreach"] and not g["fused"] for g in optimizer.param_groups)
