"""Looking at specs and runs, as users do: `dlspec plot`, `runs`, `graph`, `diff`, `config`, and the curves.png
every run draws. Pictures are checked as pictures: a real PNG of sensible size, not blank, and different when
the data is."""
from __future__ import annotations

import html
import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import yaml
from support import ROOT, SPECS, overrides_for
from test_train import DIGITS_FLAT, mlp, write_spec

import dlspec
from dlspec.cli import main
from dlspec.look import graph as graph_module
from dlspec.train import config, curves, rundir


def picture(path: Path) -> np.ndarray:
    """The pixels of a PNG that is a real picture: a sensible size, and not blank."""
    from matplotlib.image import imread
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    pixels = imread(path)[..., :3]
    height, width = pixels.shape[:2]
    assert 200 <= width <= 12_000 and 200 <= height <= 40_000, (width, height)
    ink = (pixels < 0.9).any(axis=-1).mean()  # what is not (near) white
    assert 0.01 < ink < 0.9, f"{path}: {ink:.1%} of it is drawn"
    packed = (pixels[::3, ::3] * 255).astype(np.int32) @ np.array([65536, 256, 1])
    assert len(np.unique(packed)) > 20  # lines, text and fills, not one flat colour
    return pixels


def differ(a: np.ndarray, b: np.ndarray) -> bool:
    return a.shape != b.shape or bool((np.abs(a - b) > 0.1).any())


def run_main(capsys, *args) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


# ---- curves: every run draws them; `dlspec plot` overlays runs ---------------------------------------------------

@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    """Two short runs of one model at different learning rates, evaluated every 10 steps, curves on."""
    folder = tmp_path_factory.mktemp("runs")
    for name, lr in (("slow", 1e-3), ("fast", 1e-2)):
        spec = write_spec(folder, mlp(), {"threads": 1, "device": "cpu", "max_steps": 30, "data": DIGITS_FLAT,
                                          "optimizer": {"kind": "adamw", "lr": lr},
                                          "evaluation": {"every_steps": 10, "metrics": ["loss", "accuracy"]},
                                          "checkpoint": {"best_metric": "val_accuracy", "every_steps": 10},
                                          "logging": {"every_steps": 5, "curves": True}}, name=f"tiny-{name}")
        dlspec.train.train(dlspec.load(spec), folder / name, progress="off")
    return folder


def test_every_run_draws_its_curves_after_evaluations_and_at_the_end(runs, tmp_path):
    picture(runs / "fast" / "curves.png")
    trained = runs / "slow" / "curves.png"
    run = rundir.RunDir(shutil.copytree(runs / "slow", tmp_path / "slow"))
    run.curves.unlink()
    refresher = curves.Refresher(run)  # what the Trainer calls after each evaluation, and at the end
    refresher.refresh()  # drawn on the refresher's thread
    refresher.future.result()
    picture(run.curves)
    drawn = refresher.future
    refresher.refresh()  # at once again: within nine drawing-times of the last, so skipped
    assert refresher.future is drawn
    run.curves.unlink()
    refresher.finish()  # the end always draws, and waits
    # drawn with every event, as the run drew it: the same picture, byte for byte
    assert run.curves.read_bytes() == trained.read_bytes()


def test_plot_panels_and_overlaid_runs(runs, tmp_path, capsys):
    code, out, _ = run_main(capsys, "plot", runs / "slow", "--out", tmp_path / "one.png")
    assert code == 0 and "loss, val_accuracy, lr, grad_norm, examples_per_s of 1 run" in out
    one = picture(tmp_path / "one.png")
    code, out, _ = run_main(capsys, "plot", runs / "fast", "--out", tmp_path / "fast.png")
    assert differ(one, picture(tmp_path / "fast.png"))  # other data, another picture
    # a folder of runs stands for all of them: overlaid, a legend naming each
    code, out, _ = run_main(capsys, "plot", runs, "--metrics", "loss,lr", "--out", tmp_path / "two.svg")
    assert code == 0 and "loss, lr of 2 runs" in out
    svg = (tmp_path / "two.svg").read_text()
    assert "<svg" in svg and "learning rate" in svg and "2 runs of tiny-" not in svg
    assert all(f"<!-- {name} -->" in svg for name in ("slow", "fast", "train", "validation"))


def test_the_loss_panel_marks_evaluations_and_the_best_step(runs):
    figure = curves._figure([curves.Run("slow", tuple(rundir.RunDir(runs / "slow").events()))], ["loss", "val_accuracy"])
    loss, accuracy = figure.axes[:2]
    lines = {line.get_label(): line for line in loss.get_lines()}
    assert set(lines) == {"train", "validation"} and lines["validation"].get_marker() == "o"
    assert loss.get_xlabel() == "step" and loss.get_ylabel() == "loss"
    summary = json.loads((runs / "slow" / "summary.json").read_text())
    best = next(line for line in accuracy.get_lines() if line.get_label().startswith("best"))
    assert (best.get_xdata()[0], best.get_ydata()[0]) == (summary["best_step"], summary["best_value"])
    assert best.get_marker() == "*"


def test_plot_errors(runs, tmp_path, capsys):
    code, _, err = run_main(capsys, "plot", runs / "slow", "--metrics", "val_acuracy")
    assert code == 2 and "no run logged 'val_acuracy'" in err and "did you mean 'val_accuracy'" in err
    code, _, err = run_main(capsys, "plot", tmp_path)
    assert code == 2 and "holds no run" in err
    code, _, err = run_main(capsys, "plot", runs / "slow", "--out", tmp_path / "curves.gif")
    assert code == 2 and "unknown picture format '.gif'" in err
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "spec.yaml").write_text("dlspec: 1\n")
    (tmp_path / "broken" / "metrics.jsonl").write_text('{"event": "start", "step": 0}\nnot json\n{"event": "end"}')
    code, _, err = run_main(capsys, "plot", tmp_path / "broken")
    assert code == 1 and "metrics.jsonl:2: not a metrics record" in err and "Traceback" not in err


# ---- runs: the table -----------------------------------------------------------------------------------------------

def test_runs_table_sorted_by_a_metric(runs, tmp_path, capsys):
    code, out, _ = run_main(capsys, "runs", runs, "--sort", "val_accuracy", "--json")
    rows = json.loads(out)
    best = {r["name"]: max(e["val_accuracy"] for e in rundir.RunDir(runs / r["name"]).events() if e["event"] == "eval")
            for r in rows}
    assert code == 0 and [r["name"] for r in rows] == sorted(best, key=lambda n: -best[n])
    assert all(r["state"] == "finished" and r["steps"] == 30 and r["best_metric"] == "val_accuracy" for r in rows)
    summary = json.loads((runs / rows[0]["name"] / "summary.json").read_text())
    assert rows[0]["best_value"] == best[rows[0]["name"]] == summary["best_value"]
    assert rows[0]["params"] == summary["parameters"]
    code, out, _ = run_main(capsys, "runs", runs, "--sort", "val_loss")
    lines = out.splitlines()
    assert lines[0].split() == ["run", "spec", "hash", "params", "steps", "best", "at", "step", "time", "stopped", "by",
                                "state"]
    assert len(lines) == 4 and all("val_loss" in line and "finished" in line for line in lines[2:])
    # a run killed after a checkpoint: its log ends there, and it can be resumed
    killed = rundir.RunDir(shutil.copytree(runs / "slow", tmp_path / "killed"))
    at = next(e for e in killed.events() if e["event"] == "checkpoint" and e["step"] == 20)
    text = killed.metrics.read_text()
    killed.metrics.write_text(text[:text.index(json.dumps(at)[:40])] + json.dumps(at) + "\n")
    (killed.path / "summary.json").unlink()
    code, out, _ = run_main(capsys, "runs", tmp_path)
    row = next(line for line in out.splitlines() if line.startswith("killed"))
    assert code == 0 and "20/30" in row and row.endswith("resumable")
    code, _, err = run_main(capsys, "runs", runs, "--sort", "val_acc")
    assert code == 2 and "did you mean 'val_accuracy'" in err


# ---- graph -------------------------------------------------------------------------------------------------------

def _dot(capsys, spec: Path, tmp_path: Path, *args: str) -> tuple[int, str]:
    out = tmp_path / "model.dot"
    code, _, _ = run_main(capsys, "graph", spec, "--out", out, *args)
    return code, out.read_text()


@pytest.mark.parametrize("name", ["resnet18", "gpt2-small", "unet"])
def test_graph_names_every_node(name, tmp_path, capsys):
    path = ROOT / "specs" / f"{name}.yaml"
    spec = dlspec.load(path, overrides_for(path))
    code, expanded = _dot(capsys, path, tmp_path, "--expand", *[f"--set={o}" for o in overrides_for(path)])
    assert code == 0 and all(f'"{n.name}" [label=<<b>{n.name}</b>' in expanded for n in spec.graph.nodes)
    assert all(f"subgraph \"cluster_{i.name}\"" in expanded for i in spec.graph.instances)
    code, collapsed = _dot(capsys, path, tmp_path, *[f"--set={o}" for o in overrides_for(path)])
    tree = graph_module.build_tree(spec.graph)
    assert all(f'"{g.name}" [label=<<b>{g.name}</b>' in collapsed for g in graph_module.collapsed(tree))
    # every edge carries a shape
    assert all("[label=\"[" in line for line in collapsed.splitlines() if " -> " in line)


def test_graph_collapses_repeats_and_shows_skip_connections(tmp_path, capsys):
    code, text = _dot(capsys, ROOT / "specs" / "gpt2-small.yaml", tmp_path)
    assert '"h.0–h.11" [label=<<b>h.0–h.11</b><br/>gpt_block ×12 · 85.1M params>' in text
    assert '"wpe" -> "h.0–h.11" [label="[B, T, 768]"]' in text and "h.3" not in text
    code, text = _dot(capsys, ROOT / "specs" / "gpt2-small.yaml", tmp_path, "--expand", "--set", "model.vars.layers=2")
    skips = [line for line in text.splitlines() if graph_module.SKIP_COLOR in line and " -> " in line]
    # each block's two residuals: the stream jumps over the attention and over the MLP
    assert [line.strip().split(" [")[0] for line in skips] == [
        '"wpe" -> "h.0.residual_0"', '"h.0.residual_0" -> "h.0.residual_1"',
        '"h.0.residual_1" -> "h.1.residual_0"', '"h.1.residual_0" -> "h.1.residual_1"']
    code, text = _dot(capsys, ROOT / "specs" / "unet.yaml", tmp_path)  # the U-Net's skips, collapsed too
    assert sum(graph_module.SKIP_COLOR in line for line in text.splitlines() if " -> " in line) == 4


def test_graph_of_a_spec_that_fails_is_drawn_up_to_the_error(tmp_path, capsys):
    bad = ROOT / "tests" / "specs" / "invalid" / "linear-in-mismatch.yaml"
    out = tmp_path / "bad.dot"
    code, printed, err = run_main(capsys, "graph", bad, "--out", out)
    assert code == 1 and f"wrote {out}" in printed and "fc1 (linear): in is 4096 but the input has 16384" in err
    text = out.read_text()
    marked = next(line for line in text.splitlines() if line.startswith('  "fc1" ['))
    assert graph_module.BAD_COLOR in marked and "✗ fc1 (linear): in is 4096" in marked
    assert '"flatten_0" -> "fc1" [label="[B, 16384]"]' in text  # everything before it has its shapes
    # an unknown op does not lower: the nodes before it are drawn, and the problem beside them
    spec = tmp_path / "unknown.yaml"
    spec.write_text("dlspec: 1\nname: u\nmodel:\n  inputs: {x: {shape: [B, 4]}}\n  layers:\n"
                    "    - {id: fc, op: linear, in: 4, out: 8}\n    - {id: act, op: relux}\n  outputs: {y: act}\n")
    code, _, err = run_main(capsys, "graph", spec, "--out", tmp_path / "unknown.dot")
    text = html.unescape((tmp_path / "unknown.dot").read_text())
    assert code == 1 and '"fc" [label=<<b>fc</b>' in text and "unknown layer kind 'relux'" in text
    assert f"{spec}:7:" in text  # the problem's box says where


@pytest.mark.parametrize("with_dot", [False, True], ids=["matplotlib", "graphviz"])
def test_graph_pictures(with_dot, tmp_path, capsys, monkeypatch):
    if with_dot and graph_module.dot_program() is None:
        pytest.skip("Graphviz dot is not installed")
    if not with_dot:
        monkeypatch.setattr(graph_module, "dot_program", lambda: None)
    how = "Graphviz dot" if with_dot else "matplotlib"
    code, out, _ = run_main(capsys, "graph", ROOT / "specs" / "unet.yaml", "--out", tmp_path / "unet.png")
    assert code == 0 and how in out and "4 skip connections" in out
    picture(tmp_path / "unet.png")
    path = ROOT / "specs" / "digits-cnn.yaml"
    code, out, _ = run_main(capsys, "graph", path, "--out", tmp_path / "cnn.png")
    cnn = picture(tmp_path / "cnn.png")
    code, out, _ = run_main(capsys, "graph", path, "--set", "model.vars.width=8", "--out", tmp_path / "narrow.png")
    assert differ(cnn, picture(tmp_path / "narrow.png"))  # other shapes on the edges, another picture
    code, _, _ = run_main(capsys, "graph", ROOT / "tests" / "specs" / "invalid" / "linear-in-mismatch.yaml", "--out",
                          tmp_path / "bad.png")
    bad = picture(tmp_path / "bad.png")
    assert code == 1 and ((np.abs(bad - np.array([0.776, 0.157, 0.157])) < 0.05).all(axis=-1)).sum() > 100  # red
    code, _, _ = run_main(capsys, "graph", path, "--expand", "--out", tmp_path / "cnn.svg")
    assert "<svg" in (tmp_path / "cnn.svg").read_text()


# ---- diff ------------------------------------------------------------------------------------------------------

BASE = {"inputs": {"x": {"shape": ["B", 16]}},
        "blocks": None,
        "layers": [{"id": "fc1", "op": "linear", "in": 16, "out": 32}, "relu",
                   {"id": "body", "op": "mlp_block", "dim": 32, "repeat": 2},
                   {"id": "head", "op": "linear", "in": 32, "out": 4}],
        "outputs": {"logits": "head"}}
BLOCKS = {"mlp_block": {"params": {"dim": "int"}, "layers": [
    {"op": "residual", "body": [{"id": "fc", "op": "linear", "in": "dim", "out": "dim"}, "relu"]}]}}


def _spec(folder: Path, name: str, change=None) -> Path:
    model = json.loads(json.dumps(BASE))
    del model["blocks"]
    if change:
        change(model)
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump({"dlspec": 1, "name": "pair", "blocks": BLOCKS, "model": model}, sort_keys=False))
    return path


def _diff(capsys, a: Path, b: Path) -> tuple[int, dict, str]:
    code, out, _ = run_main(capsys, "diff", a, b, "--json")
    text_code, text, _ = run_main(capsys, "diff", a, b)
    assert text_code == code
    return code, json.loads(out), text


def _widen(model):
    model["layers"][0]["out"] = 48
    model["layers"][2]["dim"] = 48
    model["layers"][3]["in"] = 48


def _rename(model):
    model["layers"][3]["id"] = "classifier"
    model["outputs"]["logits"] = "classifier"


def test_diff_identical(tmp_path, capsys):
    code, d, text = _diff(capsys, _spec(tmp_path, "a"), _spec(tmp_path, "b"))
    assert code == 0 and d["same_model"] and d["checkpoint"]["loads"] == "strict" and d["signature"]["same"]
    assert not any(d["nodes"][k] for k in d["nodes"]) and d["params"]["delta"] == 0
    assert "same model" in text and "loads as it is (strict)" in text


def test_diff_widened_layer(tmp_path, capsys):
    code, d, text = _diff(capsys, _spec(tmp_path, "a"), _spec(tmp_path, "b", _widen))
    assert code == 1 and not d["same_model"]
    changed = {c["node"]: c for c in d["nodes"]["changed"]}
    assert "out 32 -> 48" in changed["fc1"]["changes"] and changed["fc1"]["params"] == [16 * 32 + 32, 16 * 48 + 48]
    assert "in 32 -> 48" in changed["body.0.fc"]["changes"] and "output [B, 32] -> [B, 48]" in changed["body.1.fc"]["changes"]
    a, b = dlspec.load(tmp_path / "a.yaml"), dlspec.load(tmp_path / "b.yaml")
    params = [sum(p.numel() for p in dlspec.build(s).parameters()) for s in (a, b)]
    assert d["params"] == {"a": params[0], "b": params[1], "delta": params[1] - params[0]}
    assert d["macs_per_example"]["delta"] == params[1] - params[0] - (48 - 32) * 2 - (48 - 32)  # biases add no MACs
    reshaped = {r["key"]: r for r in d["checkpoint"]["reshaped"]}
    assert d["checkpoint"]["loads"] == "no" and reshaped["fc1.weight"]["to"] == [48, 16] and "head.bias" not in reshaped
    assert d["checkpoint"]["carried"] == ["head.bias"] and d["signature"]["same"]
    assert "~ body.*.fc (×2)" in text and "does not load: 7 tensors changed shape" in text


def test_diff_added_block(tmp_path, capsys):
    code, d, text = _diff(capsys, _spec(tmp_path, "a"),
                          _spec(tmp_path, "b", lambda m: m["layers"][2].update(repeat=4)))
    assert code == 1 and [b["name"] for b in d["blocks"]["added"]] == ["body.2", "body.3"]
    assert d["nodes"]["added"] == [] and d["params"]["delta"] == 2 * (32 * 32 + 32)
    assert d["checkpoint"]["loads"] == "partial" and sorted(d["checkpoint"]["new"]) == [
        "body.2.fc.bias", "body.2.fc.weight", "body.3.fc.bias", "body.3.fc.weight"]
    assert "+ body.2–body.3" in text and "mlp_block ×2" in text and "loads with strict=False only" in text


def test_diff_changed_head(tmp_path, capsys):
    code, d, text = _diff(capsys, _spec(tmp_path, "a"), _spec(tmp_path, "b", lambda m: m["layers"][3].update(out=10)))
    assert code == 1 and d["nodes"]["changed"][0]["node"] == "head" and len(d["nodes"]["changed"]) == 1
    assert d["signature"]["outputs"]["changed"] == [{"name": "logits", "from": "[B, 4] float32", "to": "[B, 10] float32"}]
    assert [r["key"] for r in d["checkpoint"]["reshaped"]] == ["head.weight", "head.bias"]
    assert "~ output logits: [B, 4] float32 -> [B, 10] float32" in text


def test_diff_renamed_node(tmp_path, capsys):
    code, d, text = _diff(capsys, _spec(tmp_path, "a"), _spec(tmp_path, "b", _rename))
    assert code == 1 and d["nodes"]["renamed"] == [{"from": "head", "to": "classifier", "op": "linear"}]
    assert d["nodes"]["added"] == d["nodes"]["removed"] == [] and d["params"]["delta"] == 0
    assert d["checkpoint"]["renamed"] == [{"from": "head.weight", "to": "classifier.weight"},
                                          {"from": "head.bias", "to": "classifier.bias"}]
    assert "> head -> classifier" in text and "head.weight -> classifier.weight (loads with a key map)" in text


def test_the_readme_diff_is_current(capsys, monkeypatch):
    """docs/img/gpt2-small-diff.txt is what `dlspec diff` prints for the README's example."""
    monkeypatch.chdir(ROOT)
    code, out, _ = run_main(capsys, "diff", "specs/gpt2-small.yaml", "docs/img/gpt2-24x1024.yaml")
    assert code == 1 and out == (ROOT / "docs" / "img" / "gpt2-small-diff.txt").read_text(), \
        "run `dlspec diff specs/gpt2-small.yaml docs/img/gpt2-24x1024.yaml > docs/img/gpt2-small-diff.txt`"


def test_diff_of_git_revisions(tmp_path, capsys):
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    spec = _spec(tmp_path, "model")
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.invalid"]
    for args in (["init", "-q"], ["add", "model.yaml"], ["commit", "-qm", "a"]):
        subprocess.run(git + args, cwd=tmp_path, check=True, timeout=60)
    _spec(tmp_path, "model", _widen)
    code, d, _ = _diff(capsys, Path(f"{spec}@HEAD"), spec)
    assert code == 1 and "out 32 -> 48" in d["nodes"]["changed"][0]["changes"]
    code, _, err = run_main(capsys, "diff", f"{spec}@nosuchrev", spec)
    assert code == 2 and "model.yaml is not in git revision nosuchrev" in err


# ---- config ----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("path", SPECS, ids=lambda p: p.stem)
def test_config_prints_the_resolved_spec_that_loads_as_the_same_model(path, tmp_path, capsys):
    code, out, _ = run_main(capsys, "config", path, *[f"--set={o}" for o in overrides_for(path)])
    assert code == 0 and out.startswith(f"# dlspec config {path}")
    resolved = path.parent / f".resolved-{tmp_path.name}-{path.name}"  # beside it: relative data paths still work
    try:
        resolved.write_text(out)
        original, again = dlspec.load(path, overrides_for(path)), dlspec.load(resolved)
        assert again.spec_hash == original.spec_hash
        if original.training:
            assert config.resolved(config.parse(again.training, again.locate)) == again.training
            assert again.training == config.resolved(config.parse(original.training, original.locate))
    finally:
        resolved.unlink(missing_ok=True)


def test_config_writes_defaults_and_overrides(capsys):
    code, out, _ = run_main(capsys, "config", ROOT / "specs" / "digits-cnn.yaml", "--set", "training.optimizer.lr=1e-3")
    doc = yaml.safe_load(out)
    assert doc["training"]["optimizer"] == {"kind": "adamw", "decay_bias_and_norm": False, "lr": 0.001,
                                            "weight_decay": 0.01, "betas": [0.9, 0.999], "eps": 1e-8, "amsgrad": False}
    assert doc["training"]["data"]["eval_batch_size"] == 256 and doc["training"]["logging"]["curves"] is True
    fc = doc["model"]["layers"][-1]
    assert fc == {"id": "fc", "op": "linear", "in": "2 * width * 16", "out": "classes", "bias": True}
    assert "  - {id: fc, op: linear, in: 2 * width * 16, out: classes, bias: true}" in out  # as specs are written
