"""The hand-off a deployment engineer receives, used as it is: files that take inputs as the data set gives
them (the training preprocessing inside, or in preprocess.json), parity on real validation data, smaller
variants, `dlspec predict`, the model card and its script, and an opset the declared onnxruntime loads.

One short digits-CNN run is shared (a module fixture), exported once with both variants.
"""
from __future__ import annotations

import csv
import json
import os
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from PIL import Image
from sklearn.datasets import load_breast_cancer, load_digits

import dlspec
from dlspec.cli import main
from dlspec.export import config as export_config
from dlspec.export import parity, preprocess, rundata, to_onnx, variants
from dlspec.export.provenance import provenance, to_onnx_metadata
from dlspec.export.schema import RUNTIME_OPSETS, VARIANTS
from dlspec.front.document import dump_text

REPO = Path(__file__).resolve().parents[1]
DIGITS = REPO / "specs" / "digits-cnn.yaml"


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def cli(capsys, *args) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    assert "Traceback" not in err, err
    return code, out, err


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """Two epochs of the digits CNN (normalised images, a 20% validation split)."""
    path = tmp_path_factory.mktemp("run") / "digits"
    dlspec.train.train(dlspec.load(DIGITS, ["training.epochs=2"]), path, progress="off")
    return path


@pytest.fixture(scope="module")
def handoff(run, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("handoff")
    umask = os.umask(0o022)
    try:
        code = main(["export", str(DIGITS), "--checkpoint", str(run), "--out", str(out), "--variants", "fp16,int8_dynamic"])
    finally:
        os.umask(umask)
    assert code == 0
    return out


def digits_validation() -> tuple[np.ndarray, np.ndarray]:
    """The run's validation images and labels exactly as scikit-learn gives them: float64 values 0..16, [N, 8, 8]
    (the split is training's: a permutation seeded with training.seed, its first 20%)."""
    bunch = load_digits()
    order = torch.randperm(len(bunch.images), generator=torch.Generator().manual_seed(0)).numpy()
    val = order[: round(len(order) * 0.2)]
    return bunch.images[val], bunch.target[val]


def accuracy(session: ort.InferenceSession, feed: dict, labels: np.ndarray) -> float:
    return float((session.run(None, feed)[0].argmax(-1) == labels).mean())


# ---- the files take raw inputs ---------------------------------------------------------------------------------

def test_onnx_on_raw_digits_reaches_the_run_validation_accuracy(run, handoff):
    images, labels = digits_validation()
    best = json.loads((run / "summary.json").read_text())["best_value"]  # of best.pt, the exported weights
    session = ort.InferenceSession(str(handoff / "digits-cnn.onnx"), providers=["CPUExecutionProvider"])
    assert accuracy(session, {"image": images[:, None].astype(np.float32)}, labels) == pytest.approx(best, abs=1e-9)
    meta = session.get_modelmeta().custom_metadata_map
    assert json.loads(meta["dlspec.classes"]) == [str(i) for i in range(10)]
    prep = json.loads(meta["dlspec.preprocessing"])
    stats = json.loads((run / "run.json").read_text())["normalize"]["image"]
    assert prep["embedded"] and prep["inputs"]["image"]["mean"] == stats["mean"]
    assert [i["name"] for i in json.loads(meta["dlspec.inputs"])] == ["image"]


def test_parity_runs_every_file_on_the_raw_validation_examples(run, handoff):
    report = json.loads((handoff / "parity.json").read_text())
    assert report["ok"] and report["real_data"]["examples"] == 359 and report["real_data"]["metric"] == "accuracy"
    best = json.loads((run / "summary.json").read_text())["best_value"]
    assert report["real_data"]["eager"] == pytest.approx(best, abs=1e-9)
    for artifact in report["artifacts"]:
        real = artifact["real_data"]
        assert real["ok"] and real["agree"] >= 0.99, artifact["file"]
        if artifact["variant"] is None:
            assert real["agree"] == 1.0 and real["max_abs"] < 1e-4
    int8 = next(a for a in report["artifacts"] if a["variant"] == "int8_dynamic")
    fp32 = next(a for a in report["artifacts"] if a["file"] == "digits-cnn.onnx")
    assert int8["size"] < fp32["size"] / 2 and int8["real_data"]["agree"] >= 0.99
    assert set(report["latency_ms"]) == {"digits-cnn.onnx", "digits-cnn.fp16.onnx", "digits-cnn.int8_dynamic.onnx"}


def test_a_file_without_the_preprocessing_fails_the_real_data_check(run, tmp_path):
    """An .onnx exported with `preprocessing: external` fed raw images (the step a deployment would forget) is
    judged on the raw validation examples against the eager model with training's normalisation."""
    spec = dlspec.load(DIGITS)
    assert main(["export", str(DIGITS), "--checkpoint", str(run), "--format", "onnx", "--preprocessing", "external",
                 "--out", str(tmp_path)]) == 0
    data = rundata.load(spec, run / "checkpoints" / "best.pt", 1000)
    model = dlspec.build(spec)
    model.load_state_dict(torch.load(run / "checkpoints" / "best.pt", weights_only=True)["model"])
    reference = preprocess.wrap(model.eval(), spec, data.preprocessing)
    path = tmp_path / "digits-cnn.onnx"
    forgot = parity.Candidate("onnx", path, "opset", lambda: to_onnx.load(path, spec))
    config = export_config.resolve(spec)
    result = parity.check(spec, reference, [forgot], config, ({"B": 4},), {"source": "test"}, data.validation)
    real = result.artifacts[0].real
    assert not real.ok and real.agree < 0.9 and "agrees with eager's" in real.failure


def test_external_preprocessing_writes_preprocess_json_and_the_card_applies_it(run, tmp_path, capsys):
    code, out, err = cli(capsys, "export", DIGITS, "--checkpoint", run, "--format", "onnx", "--preprocessing",
                         "external", "--out", tmp_path)
    assert code == 0, err
    steps = json.loads((tmp_path / "preprocess.json").read_text())
    stats = json.loads((run / "run.json").read_text())["normalize"]["image"]
    assert steps["embedded"] is False and steps["inputs"]["image"]["std"] == stats["std"]
    images, labels = digits_validation()
    x = (images[:, None].astype(np.float32) - np.float32(stats["mean"])) / np.float32(stats["std"])
    session = ort.InferenceSession(str(tmp_path / "digits-cnn.onnx"), providers=["CPUExecutionProvider"])
    assert accuracy(session, {"image": x}, labels) == pytest.approx(json.loads((run / "summary.json").read_text())
                                                                    ["best_value"], abs=1e-9)
    _run_card_script(tmp_path)
    code, out, err = cli(capsys, "verify", tmp_path / "digits-cnn.onnx", "--spec", DIGITS, "--checkpoint", run)
    assert code == 0 and "parity: pass" in out, err


def test_a_data_kind_that_records_uint8_channels_last_images_gets_a_file_that_takes_them(run, tmp_path, capsys):
    """A data kind whose table holds float CHW values converted from stored uint8 HWC records how (run.json
    `data.raw`): the file then takes uint8 [B, H, W, C] and does the conversion itself."""
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    record = json.loads((copy / "run.json").read_text())
    record["data"] = {"raw": {"image": {"dtype": "uint8", "layout": "channels_last", "scale": 1.0}}}
    (copy / "run.json").write_text(json.dumps(record))
    code, out, err = cli(capsys, "export", DIGITS, "--checkpoint", copy, "--format", "onnx", "--out", tmp_path / "x")
    assert code == 0, err
    session = ort.InferenceSession(str(tmp_path / "x" / "digits-cnn.onnx"), providers=["CPUExecutionProvider"])
    image = session.get_inputs()[0]
    assert image.type == "tensor(uint8)" and image.shape == ["B", 8, 8, 1]
    images, labels = digits_validation()
    best = json.loads((run / "summary.json").read_text())["best_value"]
    assert accuracy(session, {"image": images[..., None].astype(np.uint8)}, labels) == pytest.approx(best, abs=1e-9)


# ---- a CSV classifier with normalize ----------------------------------------------------------------------------

def test_a_csv_classifier_with_normalize_runs_on_raw_rows(tmp_path, capsys):
    bunch = load_breast_cancer()  # 30 features from 0.001 to 4,254: a model of raw values would be lost
    names = [f"f{i}" for i in range(30)]
    with (tmp_path / "cancer.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(names + ["diagnosis"])
        writer.writerows([*row, int(y)] for row, y in zip(bunch.data.tolist(), bunch.target))
    spec = tmp_path / "cancer.yaml"
    spec.write_text(
        "dlspec: 1\nname: cancer\nmodel:\n  inputs: {features: {shape: [B, 30]}}\n  layers:\n"
        "    - {id: fc1, op: linear, in: 30, out: 32}\n    - relu\n    - {id: head, op: linear, in: 32, out: 2}\n"
        "training:\n  seed: 0\n  epochs: 8\n  data:\n"
        f"    dataset: {{kind: csv, path: cancer.csv, columns: {{features: [{', '.join(names)}], label: diagnosis}}}}\n"
        "    validation: {fraction: 0.25}\n    batch_size: 32\n    normalize: {features: standard}\n"
        "  optimizer: {kind: adamw, lr: 0.01}\n  evaluation: {metrics: [accuracy]}\n"
        "  checkpoint: {best_metric: val_accuracy}\n")
    summary = dlspec.train.train(dlspec.load(spec), tmp_path / "run", progress="off")
    code, out, err = cli(capsys, "export", spec, "--checkpoint", tmp_path / "run", "--format", "onnx",
                         "--out", tmp_path / "x")
    assert code == 0, err
    order = torch.randperm(len(bunch.data), generator=torch.Generator().manual_seed(0)).numpy()
    val = order[: round(len(order) * 0.25)]
    session = ort.InferenceSession(str(tmp_path / "x" / "cancer.onnx"), providers=["CPUExecutionProvider"])
    raw = {"features": bunch.data[val].astype(np.float32)}
    assert accuracy(session, raw, bunch.target[val]) == pytest.approx(summary["best_value"], abs=1e-9)
    assert summary["best_value"] > 0.9
    # predict reads the columns the model was trained on, by name, from a CSV as it comes
    code, out, err = cli(capsys, "predict", tmp_path / "x" / "cancer.onnx", tmp_path / "cancer.csv",
                         "--out", tmp_path / "p.csv")
    assert code == 0, err
    predicted = [row["prediction"] for row in csv.DictReader((tmp_path / "p.csv").open())]
    assert np.mean(np.array(predicted, dtype=int) == bunch.target) > 0.9


def test_a_regression_trained_on_normalised_targets_predicts_in_the_targets_units(tmp_path, capsys):
    spec = tmp_path / "reg.yaml"
    spec.write_text(
        "dlspec: 1\nname: reg\nmodel:\n  inputs: {features: {shape: [B, 10]}}\n  layers:\n"
        "    - {id: fc1, op: linear, in: 10, out: 16}\n    - relu\n    - {id: head, op: linear, in: 16, out: 1}\n"
        "training:\n  seed: 0\n  epochs: 2\n  loss: {kind: mse}\n  data:\n    dataset: {kind: diabetes}\n"
        "    validation: {fraction: 0.2}\n    batch_size: 32\n    normalize: {features: standard, target: standard}\n")
    dlspec.train.train(dlspec.load(spec), tmp_path / "run", progress="off")
    code, out, err = cli(capsys, "export", spec, "--checkpoint", tmp_path / "run", "--format", "onnx",
                         "--preprocessing", "external", "--out", tmp_path / "x")
    assert code == 0, err
    assert "mse of eager PyTorch" in out and "output: times std" in out
    stats = json.loads((tmp_path / "run" / "run.json").read_text())["normalize"]
    model = dlspec.build(dlspec.load(spec))
    model.load_state_dict(torch.load(tmp_path / "run" / "checkpoints" / "best.pt", weights_only=True)["model"])
    x = torch.rand(5, 10) * 0.1
    with torch.no_grad():
        expected = model.eval()((x - torch.tensor(stats["features"]["mean"])) / torch.tensor(stats["features"]["std"]))
    expected = expected * stats["target"]["std"][0] + stats["target"]["mean"][0]
    np.savez(tmp_path / "x.npz", features=x.numpy())
    code, out, err = cli(capsys, "predict", tmp_path / "x" / "reg.onnx", tmp_path / "x.npz", "--out", tmp_path / "p.json")
    assert code == 0, err
    predicted = [row["outputs"]["output"] for row in json.loads((tmp_path / "p.json").read_text())]
    np.testing.assert_allclose(np.array(predicted), expected.numpy(), rtol=1e-5)  # diabetes units, 25 to 346


# ---- dlspec predict ------------------------------------------------------------------------------------------------

def test_predict_gives_the_same_classes_from_the_onnx_file_and_from_the_run(run, handoff, tmp_path, capsys):
    images, _ = digits_validation()
    np.savez(tmp_path / "hundred.npz", image=images[:100, None].astype(np.float32))
    code, out, err = cli(capsys, "predict", handoff / "digits-cnn.onnx", tmp_path / "hundred.npz",
                         "--out", tmp_path / "onnx.csv")
    assert code == 0, err
    assert "digits-cnn.onnx (onnx): 100 examples" in out and "... 80 more in" in out
    code, out, err = cli(capsys, "predict", run, tmp_path / "hundred.npz", "--out", tmp_path / "run.json", "--top", "2")
    assert code == 0, err
    from_onnx = [row["prediction"] for row in csv.DictReader((tmp_path / "onnx.csv").open())]
    from_run = [row["top"][0]["class"] for row in json.loads((tmp_path / "run.json").read_text())]
    assert len(from_onnx) == 100 and from_onnx == from_run
    assert all(len(row["top"]) == 2 for row in json.loads((tmp_path / "run.json").read_text()))


def test_predict_reads_a_folder_of_images(handoff, tmp_path, capsys):
    images, _ = digits_validation()
    pixels = np.round(images[:6] * 255 / 16).astype(np.uint8)  # PNGs of the digits, 0..255
    (tmp_path / "pngs").mkdir()
    for i, p in enumerate(pixels):
        Image.fromarray(p, mode="L").save(tmp_path / "pngs" / f"{i}.png")
    np.savez(tmp_path / "same.npz", image=(pixels[:, None] * (16 / 255)).astype(np.float32))
    code, from_png, err = cli(capsys, "predict", handoff / "digits-cnn.pt2", tmp_path / "pngs", "--pixel-scale", 16 / 255)
    assert code == 0, err
    code, from_npz, err = cli(capsys, "predict", handoff / "digits-cnn.pt2", tmp_path / "same.npz")
    assert code == 0, err
    classes = re.compile(r": (\S+) 0\.\d+")
    assert classes.findall(from_png) == classes.findall(from_npz) and len(classes.findall(from_png)) == 6


def test_predict_refuses_what_it_cannot_read_with_a_usage_error(handoff, tmp_path, capsys):
    (tmp_path / "notes.md").write_text("hello")
    code, _, err = cli(capsys, "predict", handoff / "digits-cnn.onnx", tmp_path / "notes.md")
    assert code == 2 and "cannot tell what" in err
    code, _, err = cli(capsys, "predict", handoff / "digits-cnn.onnx", "--text", "abc")
    assert code == 2 and "character-level language model" in err
    code, _, err = cli(capsys, "predict", handoff / "digits-cnn.onnx", tmp_path / "notes.md", "--out", tmp_path / "p.xlsx")
    assert code == 2 and "--out" in err


def test_a_crafted_preprocessing_record_is_refused_not_run(handoff, tmp_path, capsys):
    model = onnx.load(str(handoff / "digits-cnn.onnx"))
    for prop in model.metadata_props:
        if prop.key == "dlspec.preprocessing":
            record = json.loads(prop.value)
            record["inputs"]["image"]["std"] = [0.0]
            prop.value = json.dumps(record)
    onnx.save(model, str(tmp_path / "digits-cnn.onnx"))
    np.savez(tmp_path / "one.npz", image=np.zeros((1, 1, 8, 8), np.float32))
    code, _, err = cli(capsys, "predict", tmp_path / "digits-cnn.onnx", tmp_path / "one.npz")
    assert code == 1 and "records a preprocessing dlspec never writes" in err


# ---- the model card ------------------------------------------------------------------------------------------------

def _run_card_script(folder: Path) -> str:
    """The model card's ONNX Runtime script, run as written from the export folder with nothing but numpy and
    onnxruntime."""
    text = (folder / "README.md").read_text()
    script = re.search(r"```python\n(.*?)```", text, re.S).group(1)
    assert len([line for line in script.splitlines() if line.strip()]) <= 12
    done = subprocess.run([sys.executable, "-c", script], cwd=folder, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_a_teammate_can_read_every_file_of_the_handoff(handoff):
    names = {p.name: stat.S_IMODE(p.stat().st_mode) for p in handoff.iterdir()}
    assert {"README.md", "parity.json", "digits-cnn.int8_dynamic.onnx", "digits-cnn.fp16.onnx"} <= set(names)
    assert set(names.values()) == {0o644}  # as the umask (022) says


def test_the_model_card_describes_the_handoff_and_its_script_runs(handoff):
    text = (handoff / "README.md").read_text()
    for section in ("## Files", "## Inputs", "## Outputs", "## Preprocessing", "## Classes", "## Parity"):
        assert section in text
    assert "| `image` | [B, 1, 8, 8] | float32 | B |" in text and "| `logits` | [B, 10] | float32 | B |" in text
    assert "minus mean" in text and "digits-cnn.int8_dynamic.onnx" in text and "real data: 359 of 359" in text
    spec = dlspec.load(DIGITS)
    assert spec.spec_hash in text and "best.pt" in text
    printed = _run_card_script(handoff)
    assert re.match(r"\[\('\d', -?\d", printed)  # the top classes by name, with their scores


def test_verify_rederives_a_variant_exactly(run, handoff, capsys):
    code, out, err = cli(capsys, "verify", handoff / "digits-cnn.int8_dynamic.onnx", "--spec", DIGITS, "--checkpoint", run)
    assert code == 0, err
    assert "content: identical" in out and "digits-cnn.int8_dynamic.onnx" in out


# ---- settings, opset, records ----------------------------------------------------------------------------------

def test_every_variant_is_made_and_described():
    assert set(variants.MAKERS) == set(VARIANTS)


def test_the_variants_are_listed_in_the_export_section_with_their_agreement(tmp_path, capsys):
    spec = tmp_path / "s.yaml"
    spec.write_text(DIGITS.read_text() + "export:\n  formats: [pt2]\n  variants: [fp16, {kind: fp16, argmax: 0.5}]\n")
    code, _, err = cli(capsys, "export", spec, "--out", tmp_path / "x")
    assert code == 1 and "variant 'fp16' is listed twice" in err and "variants are made from the .onnx file" in err
    assert f"{spec}:" in err


def test_the_default_opset_is_the_newest_the_installed_onnxruntime_loads(monkeypatch):
    """Loading the exports of every spec in onnxruntime 1.19 and 1.20 fails at opset 22 and works at 21 (run
    with DLSPEC_LOWEST_ONNXRUNTIME to see it); 1.21 and later load 22."""
    versions = {"1.19.2": 21, "1.20.1": 21, "1.21.0": 22, "1.32.0": 22, "2.0.0": 22}
    for version, opset in versions.items():
        monkeypatch.setattr(export_config.importlib.metadata, "version", lambda name, v=version: v)
        assert export_config.default_opset() == opset
    lowest = re.search(r'"onnxruntime>=([\d.]+)', (REPO / "pyproject.toml").read_text()).group(1)
    assert tuple(map(int, lowest.split("."))) == RUNTIME_OPSETS[0][0]  # the table starts at the declared bound


@pytest.mark.skipif(not os.environ.get("DLSPEC_LOWEST_ONNXRUNTIME"),
                    reason="set DLSPEC_LOWEST_ONNXRUNTIME to a folder holding the lowest declared onnxruntime "
                           "(pip install --no-deps --target DIR onnxruntime==1.19.2)")
def test_an_export_under_the_lowest_declared_onnxruntime_loads_and_passes(run, tmp_path):
    folder = str(Path(os.environ["DLSPEC_LOWEST_ONNXRUNTIME"]).resolve())
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([folder, str(REPO)]), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "dlspec", "export", str(DIGITS), "--checkpoint", str(run), "--out",
                           str(tmp_path), "--variants", "fp16,int8_dynamic"], capture_output=True, text=True, env=env,
                          timeout=600)
    assert done.returncode == 0, done.stderr
    assert "(opset 21)" in done.stdout and "parity: pass" in done.stdout
    probe = "import onnxruntime; print(onnxruntime.__version__)"
    version = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env).stdout.strip()
    lowest = re.search(r'"onnxruntime>=([\d.]+)', (REPO / "pyproject.toml").read_text()).group(1)
    assert version.startswith(lowest)


def test_the_recorded_spec_written_back_loads_to_the_same_hash(tmp_path):
    """char-gpt's `init` patterns apply in the order written: the record keeps it."""
    spec = dlspec.load(REPO / "specs" / "char-gpt.yaml")
    record = json.loads(to_onnx_metadata(provenance(spec, {"source": "initialised", "seed": 0},
                                                    export_config.resolve(spec)))["dlspec.front.spec"])
    (tmp_path / "again.yaml").write_text(dump_text(record))
    assert dlspec.load(tmp_path / "again.yaml").spec_hash == spec.spec_hash
