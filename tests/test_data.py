"""Data at real scale, as users bring it: token files (memory-mapped, random windows, `dlspec data tokenize`,
`dlspec generate`), image folders with per-example transforms in loader workers, CSV and Parquet as people
have them, and the data checks of `dlspec validate`. Exact resume with each.

The 1 GB token run of the acceptance criteria is benchmarks/tokens_at_scale.py (too big for the suite).
"""
from __future__ import annotations

import importlib
import json
import runpy
from pathlib import Path

import numpy as np
import pytest
import torch
from references import _stand_in
from test_train import (
    ROOT,
    assert_same_tensors,
    assert_user_error,
    cli,
    events,
    kill_after_checkpoint,
    mlp,
    train,
    weights,
    write_spec,
)

import dlspec
import dlspec.train
from dlspec.cli import main
from dlspec.train import images, rundir, tokenizer
from dlspec.train.config import parse as parse_training
from dlspec.train.data import train_batches
from dlspec.train.setup import check_data
from dlspec.train.tables import Shard, TokenTable


def gpt(vocab: int, block: int = 16, d: int = 32) -> dict:
    """A one-block GPT over `vocab` ids with a context of `block`."""
    return {"vars": {"vocab": vocab, "context": block, "d": d},
            "dims": {"T": {"example": block, "min": 1, "max": block}},
            "inputs": {"tokens": {"shape": ["B", "T"], "dtype": "int64"}},
            "layers": [{"id": "wte", "op": "embedding", "num": "vocab", "dim": "d"},
                       {"id": "wpe", "op": "pos_embedding", "max_len": "context", "dim": "d"},
                       {"id": "h", "op": "gpt_block", "dim": "d", "heads": 2, "dropout": 0.1, "repeat": 1},
                       {"id": "ln_f", "op": "layer_norm", "dim": "d"},
                       {"id": "lm_head", "op": "linear", "in": "d", "out": "vocab", "bias": False}],
            "outputs": {"logits": "lm_head"}}


def learnable(n: int, vocab: int = 61, seed: int = 0) -> np.ndarray:
    """Runs of the sequence t -> (3 t + 1) mod vocab, restarted at random: the next id follows from the last."""
    rng = np.random.default_rng(seed)
    out, t = np.empty(n, dtype=np.uint16), 0
    for i in range(n):
        t = int(rng.integers(vocab)) if i % 97 == 0 else (3 * t + 1) % vocab
        out[i] = t
    return out


# ---- tokens ---------------------------------------------------------------------------------------------------

def test_token_windows_across_shards_held_out_tail_and_spread_validation(tmp_path):
    a, b = np.arange(0, 100, dtype=np.uint16), np.arange(1000, 1050, dtype=np.uint32)
    a.tofile(tmp_path / "a.bin")
    np.save(tmp_path / "b.npy", b)
    spec = write_spec(tmp_path, gpt(2000, 8), {"data": {"dataset": {"kind": "tokens", "path": "*.[bn]*", "block": 8},
                                                        "validation": {"fraction": 0}}})
    table = check_data(dlspec.load(spec)).train
    assert isinstance(table, TokenTable) and [Path(s.path).name for s in table.shards] == ["a.bin", "b.npy"]
    assert len(table) == (100 - 8) + (50 - 8) and table.draws == 150 // 8
    batch = table.gather(torch.tensor([0, 91, 92, 133]))
    assert batch["tokens"][:, 0].tolist() == [0, 91, 1000, 1041]  # offsets in a.bin, then in b.npy: none crosses
    assert torch.equal(batch["targets"][:, :-1], batch["tokens"][:, 1:])
    assert table.value_range("tokens") == (0, 1049)
    train, val = table.split(0.2, seed=0)  # the tail: the last 30 tokens, windows side by side
    assert train.tokens == 120 and val.tokens == 30 and not val.random and len(val) == 3
    assert val.gather(torch.arange(3))["tokens"][:, 0].tolist() == [1020, 1028, 1036]
    spread = TokenTable((Shard(str(tmp_path / "a.bin"), "uint16", 0, 0, 100),), 8, max_windows=4).for_validation()
    assert len(spread) == 4 and spread.gather(torch.arange(4))["tokens"][:, 0].tolist() == [0, 23, 46, 69]
    drawn = train_batches(table, parse_training(
        {"data": {"dataset": {"kind": "digits"}, "batch_size": 4}}, lambda p: None).data, 0, 3, 0, 1)
    assert len(drawn) == -(-(150 // 8) // 4) and drawn[2] == drawn[2] and drawn[1] != drawn[2]  # pure per batch


def test_a_gpt_learns_token_files_and_resumes_bit_exactly_after_sigkill(tmp_path):
    """Random windows of two .npy shards and a .bin validation file; SIGKILL after a checkpoint, resume, and
    get the uninterrupted run's exact weights; the loss falls on the learnable sequence."""
    ids = learnable(24_000)
    np.save(tmp_path / "train-0.npy", ids[:10_000])
    np.save(tmp_path / "train-1.npy", ids[10_000:20_000])
    ids[20_000:].tofile(tmp_path / "val.bin")
    training = {"seed": 1, "max_steps": 60, "threads": 1, "device": "cpu",
                "data": {"dataset": {"kind": "tokens", "path": "train-*.npy", "block": 16},
                         "validation": {"dataset": {"kind": "tokens", "path": "val.bin", "block": 16,
                                                    "eval_windows": 32}},
                         "batch_size": 16},
                "optimizer": {"kind": "adamw", "lr": 0.01}, "evaluation": {"every_steps": 30},
                "checkpoint": {"every_steps": 10}, "logging": {"every_steps": 10}}
    spec = write_spec(tmp_path, gpt(64), training, "tokens")
    killed = tmp_path / "killed"
    kill_after_checkpoint(spec, killed, 20)

    reference = dlspec.train.train(dlspec.load(spec), tmp_path / "reference", progress="off")
    losses = [e["loss"] for e in events(tmp_path / "reference", "train")]
    assert losses[-1] < 0.6 * losses[0], losses  # the next id follows from the last: the model finds it
    assert reference["val_accuracy"] > 0.5, reference
    done = cli("train", "--resume", killed)
    assert done.returncode == 0, done.stderr
    assert_same_tensors(weights(killed), weights(tmp_path / "reference"))
    start = events(tmp_path / "reference", "start")[0]
    assert start["train_examples"] == 2 * (10_000 - 16) and start["val_examples"] == 32


def test_tokenize_bytes_and_bpe_and_generate_decodes_with_the_same_tokenizer(tmp_path, capsys):
    text = "def spam(eggs):\n    return eggs * 2  # ünïcode\n" * 60
    (tmp_path / "a.txt").write_text(text, encoding="utf-8")
    (tmp_path / "b.txt").write_text("class Ham:\n    pass\n" * 40, encoding="utf-8")
    assert main(["data", "tokenize", str(tmp_path / "a.txt"), "--out", str(tmp_path / "bytes"), "--val-fraction",
                 "0", "--shard-tokens", "1000"]) == 0
    meta = json.loads((tmp_path / "bytes" / "meta.json").read_text())
    assert meta["tokenizer"] == {"kind": "bytes", "vocab_size": 256} and meta["dtype"] == "uint16" and not meta["val"]
    shards = [np.fromfile(tmp_path / "bytes" / name, dtype=np.uint16) for name in meta["train"]]
    assert [len(s) for s in shards[:-1]] == [1000] * (len(shards) - 1)
    assert bytes(np.concatenate(shards).astype(np.uint8)) == text.encode("utf-8")

    assert main(["data", "tokenize", str(tmp_path / "a.txt"), str(tmp_path / "b.txt"), "--out", str(tmp_path / "bpe"),
                 "--tokenizer", "bpe", "--vocab-size", "300"]) == 0
    out = capsys.readouterr().out
    assert "in a spec: dataset: {kind: tokens, path: " in out and "val.bin" in out
    codec = tokenizer.load_file(tmp_path / "bpe" / "tokenizer.json")
    train_ids = np.fromfile(tmp_path / "bpe" / "train.bin", dtype=np.uint16).tolist()
    assert 256 < codec.vocab_size <= 300 and train_ids[:len(codec.encode(text[:200]))][:20] == codec.encode(text[:200])[:20]
    assert codec.decode(train_ids).startswith(text[:500])
    # a tokenizer.json given on the command line encodes as it says; --out must be new or empty
    assert main(["data", "tokenize", str(tmp_path / "b.txt"), "--out", str(tmp_path / "again"), "--tokenizer",
                 str(tmp_path / "bpe" / "tokenizer.json"), "--val-fraction", "0"]) == 0
    again = np.fromfile(tmp_path / "again" / "train.bin", dtype=np.uint16).tolist()
    assert again[:-1] == codec.encode("class Ham:\n    pass\n" * 40) and again[-1] == codec.eot
    assert_user_error(main(["data", "tokenize", str(tmp_path / "b.txt"), "--out", str(tmp_path / "bpe")]),
                      capsys.readouterr().err, "already holds files", exit_code=2)

    training = {"max_steps": 3, "data": {"dataset": {"kind": "tokens", "path": "bpe/train.bin", "block": 16},
                                         "validation": {"dataset": {"kind": "tokens", "path": "bpe/val.bin", "block": 16}},
                                         "batch_size": 4}}
    _, run = train(tmp_path, gpt(300), training)
    assert (run / "tokenizer.json").read_text() == (tmp_path / "bpe" / "tokenizer.json").read_text()
    assert json.loads((run / "run.json").read_text())["tokenizer"] == {"kind": "bpe", "vocab_size": codec.vocab_size,
                                                                        "block": 16}
    capsys.readouterr()
    assert main(["generate", str(run), "--prompt", "def ", "--tokens", "12", "--seed", "3"]) == 0
    sample = capsys.readouterr().out[:-1]
    from dlspec.train.generate import generate
    assert sample.startswith("def ") and generate(run, "def ", 12, seed=3) == sample


def test_token_data_errors_are_located(tmp_path, capsys):
    np.arange(10, dtype=np.uint16).tofile(tmp_path / "odd.bin")
    with open(tmp_path / "odd.bin", "ab") as f:
        f.write(b"x")
    np.save(tmp_path / "floats.npy", np.zeros(100, dtype=np.float32))
    np.arange(100, dtype=np.uint16).tofile(tmp_path / "big.bin")
    cases = [("odd.bin", "not a whole number of uint16 ids"), ("floats.npy", "a 1-D array of integer token ids"),
             ("missing.bin", "data file 'missing.bin' does not exist"),
             ("big.bin", "data field 'tokens' holds values 0..79, outside the range [0, 64)")]
    for path, message in cases:
        spec = write_spec(tmp_path, gpt(64, 8), {"data": {"dataset": {"kind": "tokens", "path": path, "block": 8},
                                                          "validation": {"fraction": 0.2}}})
        assert_user_error(main(["validate", str(spec)]), capsys.readouterr().err, message)


# ---- image folders ----------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def digit_images(tmp_path_factory) -> tuple[Path, np.ndarray, np.ndarray]:
    """All 1,797 bundled digits as PNGs in class folders (pixel = value x 15), and the same images and labels
    in the folder's order, as numbers 0..16 like the in-memory digits set."""
    write = runpy.run_path(str(ROOT / "specs" / "data" / "make_digits_png.py"))["write"]
    root = tmp_path_factory.mktemp("digits") / "png"
    write(root)
    files = sorted(root.glob("*/*.png"))
    from sklearn.datasets import load_digits
    digits = load_digits()
    index = [int(f.stem) for f in files]
    return root, digits.images[index][:, None].astype(np.float32), digits.target[index]


CNN = {"vars": {"width": 16}, "inputs": {"image": {"shape": ["B", 1, 8, 8], "dtype": "float32"}},
       "layers": [{"id": "conv1", "op": "conv2d", "in": 1, "out": "width", "kernel": 3, "padding": 1}, "relu",
                  {"op": "max_pool2d", "kernel": 2}, "flatten", {"id": "fc", "op": "linear", "in": "width * 16", "out": 10}],
       "outputs": {"logits": "fc"}}


def test_an_image_folder_trains_a_cnn_as_well_as_the_same_digits_in_memory(tmp_path, digit_images):
    root, pixels, labels = digit_images
    np.savez(tmp_path / "digits.npz", image=pixels, label=labels)  # the in-memory digits, in the folder's order
    common = {"seed": 0, "epochs": 4, "optimizer": {"kind": "adamw", "lr": 0.01}, "evaluation": {"metrics": ["accuracy"]}}
    data = {"validation": {"fraction": 0.2}, "batch_size": 32, "normalize": {"image": "standard"}}
    folder, run = train(tmp_path, CNN, {**common, "data": {**data, "dataset": {"kind": "image_folder", "path": str(root)}}},
                        run="folder")
    memory, _ = train(tmp_path, CNN, {**common, "data": {**data, "dataset": {"kind": "npz", "path": "digits.npz"}}},
                      run="memory")
    assert memory["val_accuracy"] > 0.9 and abs(folder["val_accuracy"] - memory["val_accuracy"]) <= 0.01, (folder, memory)
    record = rundir.RunDir(run).preprocessing()
    assert record["classes"] == {"label": [str(d) for d in range(10)]} and record["inputs"] == {"image": "image"}
    assert record["data"] == {"kind": "image_folder", "decode": {"size": [8, 8], "channels": 1, "resize": "shorter_side"},
                              "scale": "pixels / 255"}
    mean, std = record["normalize"]["image"]["mean"][0], record["normalize"]["image"]["std"][0]
    decoded = images.decode(sorted(root.glob("3/*.png"))[0], **record["data"]["decode"])  # inference, as recorded
    assert torch.allclose(decoded * 255 / 15, torch.from_numpy(pixels[labels == 3][0]))
    assert 0.2 < mean < 0.4 and 0.3 < std < 0.45


def test_per_example_transforms_in_workers_resume_exactly(tmp_path, digit_images):
    """Rotation, resized crops, colour jitter and erasing per example in two worker processes, mixup per batch:
    a run stopped at step 8 and resumed (workers kept between epochs) ends with the weights of a run that
    never stopped and had no workers."""
    root = digit_images[0]
    augment = [{"op": "random_rotation", "degrees": 20}, {"op": "random_resized_crop", "scale": [0.6, 1.0]},
               {"op": "color_jitter", "brightness": 0.3, "contrast": 0.3}, {"op": "random_erasing", "p": 0.5},
               {"op": "mixup", "alpha": 0.4}]
    training = {"seed": 5, "max_steps": 16, "optimizer": {"kind": "adamw", "lr": 0.01},
                "data": {"dataset": {"kind": "image_folder", "path": str(root)}, "validation": {"fraction": 0.9},
                         "batch_size": 16, "normalize": {"image": {"mean": 0.3, "std": 0.35}}, "augment": augment}}
    _, plain = train(tmp_path, CNN, training, run="plain")
    workers = {**training["data"], "num_workers": 2, "persistent_workers": True, "prefetch_factor": 2}
    _, stopped = train(tmp_path, CNN, {**training, "max_steps": 8, "data": workers}, run="stopped")
    dlspec.train.train(dlspec.load(stopped / "spec.yaml", ["training.max_steps=16"]), resume=stopped, progress="off")
    assert_same_tensors(weights(stopped), weights(plain))


def test_transforms_match_torchvisions_functional_ops():
    _stand_in()
    tv = importlib.import_module("torchvision.transforms.v2.functional")
    x = torch.rand(3, 9, 7)
    rotated = tv.rotate(x, 30.0, interpolation=tv.InterpolationMode.BILINEAR)
    assert torch.allclose(images.rotate(x, 30.0), rotated, atol=1e-6)
    assert torch.equal(images.resized_crop(x, 1, 2, 5, 4), tv.resized_crop(x, 1, 2, 5, 4, [9, 7], antialias=True))
    assert torch.allclose(images.adjust_hue(x, 0.2), tv.adjust_hue(x, 0.2), atol=1e-6)
    assert torch.allclose(images.grayscale(x), tv.rgb_to_grayscale(x), atol=1e-6)
    g = torch.Generator().manual_seed(0)
    erased = images.random_erasing(x, g, p=1.0, scale=[0.1, 0.2], ratio=[0.5, 2.0], value=-1.0)
    box = (erased == -1).all(0)
    rows, cols = box.any(1).nonzero().flatten(), box.any(0).nonzero().flatten()
    assert box.sum() == len(rows) * len(cols) > 0  # one rectangle
    assert torch.equal(erased, tv.erase(x, int(rows[0]), int(cols[0]), len(rows), len(cols), torch.tensor(-1.0)))
    jittered = images.color_jitter(x, torch.Generator().manual_seed(1), 0.5, 0.5, 0.5, 0.1)
    assert torch.equal(jittered, images.color_jitter(x, torch.Generator().manual_seed(1), 0.5, 0.5, 0.5, 0.1))
    assert jittered.shape == x.shape and 0 <= jittered.min() and jittered.max() <= 1


def test_a_damaged_image_is_one_clear_error_from_a_worker(tmp_path, capsys):
    for label in ("a", "b"):
        (tmp_path / "img" / label).mkdir(parents=True)
        for i in range(4):
            from PIL import Image
            Image.new("RGB", (12, 10), (i * 40, 0, 0)).save(tmp_path / "img" / label / f"{i}.png")
    (tmp_path / "img" / "b" / "9.jpg").write_bytes(b"not a jpeg")
    model = {"inputs": {"image": {"shape": ["B", 3, 8, 8], "dtype": "float32"}},
             "layers": ["flatten", {"id": "fc", "op": "linear", "in": 192, "out": 2}], "outputs": {"logits": "fc"}}
    spec = write_spec(tmp_path, model, {"max_steps": 4, "threads": 1, "data": {
        "dataset": {"kind": "image_folder", "path": "img"}, "batch_size": 9, "num_workers": 1,
        "validation": {"fraction": 0}}})
    code = main(["train", str(spec), "--out", str(tmp_path / "run")])
    assert_user_error(code, capsys.readouterr().err, "cannot decode image", "9.jpg")
    assert not (tmp_path / "run").exists()  # failed before its first step: no run directory left behind


# ---- tables as people have them ----------------------------------------------------------------------------------

HEADER = "id,age,height,colour,weight_kg,species\n"
ROWS = """1,3,1.2,0.5,10,cat
2,,1.5,0.1,12,dog
3,5,1.1,0.2,NA,cat
4,7,1.9,0.7,30,bird
"""


def test_csv_with_words_for_labels_rest_and_globs_and_missing_cells(tmp_path, capsys):
    (tmp_path / "pets.csv").write_text(HEADER + ROWS * 5)
    model = mlp(4, 8, 3)
    data = {"dataset": {"kind": "csv", "path": "pets.csv", "columns": {"label": "species", "features": "rest"}},
            "batch_size": 4, "validation": {"fraction": 0}}
    spec = write_spec(tmp_path, mlp(5, 8, 3), {"data": data})
    assert_user_error(main(["validate", str(spec)]), capsys.readouterr().err, "pets.csv:3: column 'age' has no value "
                      "(5 missing in that column)", "fill: {age: 0}")
    data["dataset"]["fill"] = {"age": 4, "weight_kg": 15.5}
    spec = write_spec(tmp_path, model, {"data": data})
    assert_user_error(main(["validate", str(spec)]), capsys.readouterr().err,
                      "data field 'features' has examples of shape [5]")  # id is a column too: `rest` takes it
    data["dataset"]["columns"] = {"label": "species", "features": ["age", "height", "colour", "weight_kg"]}
    summary, run = train(tmp_path, model, {"max_steps": 2, "data": data})
    assert rundir.RunDir(run).preprocessing()["classes"] == {"label": ["bird", "cat", "dog"]}
    data["dataset"]["columns"] = {"label": "species", "features": "[ahw]*"}  # a glob: age, height, weight_kg
    table = check_data(dlspec.load(write_spec(tmp_path, mlp(3, 8, 3), {"data": data}))).train
    assert table.fields["features"][1].tolist() == [4.0, 1.5, 12.0] and table.fields["label"][:4].tolist() == [1, 2, 1, 0]
    assert table.fields["features"][2, 2].item() == 15.5
    # without `columns`: the label-like column is the label, the rest the features; a word among numbers is located
    (tmp_path / "words.csv").write_text("x,y,label\n1,2,a\n3,oops,b\n")
    spec = write_spec(tmp_path, mlp(2, 8, 2), {"data": {"dataset": {"kind": "csv", "path": "words.csv"}}})
    assert_user_error(main(["validate", str(spec)]), capsys.readouterr().err, "words.csv:3: column 'y' holds 'oops', "
                      "not a number")


def test_parquet_and_npz_float64_as_float32_with_a_note(tmp_path, capsys):
    import pyarrow as pa
    import pyarrow.parquet as pq
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 3))
    species = np.array(["b", "a"])[(x[:, 0] > 0).astype(int)]
    pq.write_table(pa.table({"f1": x[:, 0], "f2": x[:, 1], "f3": pa.array(list(x[:, 2][:-1]) + [None]),
                             "kind": species}), tmp_path / "t.parquet")
    data = {"dataset": {"kind": "parquet", "path": "t.parquet", "columns": {"label": "kind", "features": "f*"}},
            "batch_size": 16, "validation": {"fraction": 0}}
    spec = write_spec(tmp_path, mlp(3, 8, 2), {"data": data})
    assert_user_error(main(["validate", str(spec)]), capsys.readouterr().err, "t.parquet, row 64: column 'f3' has no value")
    data["dataset"]["fill"] = 0
    _, run = train(tmp_path, mlp(3, 8, 2), {"max_steps": 2, "data": data})
    assert rundir.RunDir(run).preprocessing()["classes"] == {"label": ["a", "b"]}
    # the crash: a float64 .npz trained a float32 model into "mat1 and mat2 must have the same dtype"
    np.savez(tmp_path / "f64.npz", features=x, label=(x[:, 0] > 0).astype(np.int32))
    spec = write_spec(tmp_path, mlp(3, 8, 2), {"max_steps": 2, "threads": 1, "data": {
        "dataset": {"kind": "npz", "path": "f64.npz"}, "batch_size": 16}})
    assert main(["train", str(spec), "--out", str(tmp_path / "f64"), "--progress", "off"]) == 0
    start = events(tmp_path / "f64", "start")[0]
    assert start["notes"] == ["f64.npz: field 'features' is float64, read as float32 (`dtypes: {features: float64}` "
                              "keeps it)"]


def test_validate_checks_the_data_unless_told_not_to(tmp_path, capsys):
    (tmp_path / "pets.csv").write_text(HEADER + ROWS)
    spec = write_spec(tmp_path, mlp(4, 8, 3), {"data": {"dataset": {"kind": "csv", "path": "pets.csv", "fill": 0,
                                                                    "columns": {"label": "species", "features": [
                                                                        "age", "hieght", "colour", "weight_kg"]}}}})
    assert_user_error(main(["validate", str(spec)]), capsys.readouterr().err, "the file has no column 'hieght'",
                      "did you mean 'height'")
    assert main(["validate", "--no-data", str(spec)]) == 0
    spec.write_text(spec.read_text().replace("pets.csv", "gone.csv"))
    assert_user_error(main(["validate", str(spec)]), capsys.readouterr().err, "data file 'gone.csv' does not exist")


def test_a_run_that_fails_before_its_first_step_leaves_nothing_behind(tmp_path, monkeypatch):
    from dlspec.train.loop import Trainer

    def fail(self, *args, **kwargs):
        raise RuntimeError("the first forward failed")
    monkeypatch.setattr(Trainer, "_micro", fail)
    spec = write_spec(tmp_path, mlp(), {"max_steps": 2, "threads": 1, "data": {"dataset": {"kind": "digits",
                                                                                          "layout": "flat"}}})
    with pytest.raises(RuntimeError):
        dlspec.train.train(spec, tmp_path / "run", progress="off")
    assert not (tmp_path / "run").exists()
    (tmp_path / "mine").mkdir()  # a folder the user made stays, empty
    with pytest.raises(RuntimeError):
        dlspec.train.train(spec, tmp_path / "mine", progress="off")
    assert list((tmp_path / "mine").iterdir()) == []
    # a run killed before its first checkpoint left files; --out may reuse its folder
    monkeypatch.undo()
    (tmp_path / "killed").mkdir()
    for name in ("spec.yaml", "run.json", "metrics.jsonl"):
        (tmp_path / "killed" / name).write_text("{}")
    summary = dlspec.train.train(spec, tmp_path / "killed", progress="off")
    assert summary["steps"] == 2 and (tmp_path / "killed" / "weights.pt").is_file()


def test_worker_options_without_workers(capsys):
    """`persistent_workers: true` with no workers is refused where it is written; `false` asks for nothing."""
    spec = str(ROOT / "specs" / "digits-folder.yaml")
    assert main(["validate", spec, "--no-data", "--set", "training.data.num_workers=0"]) == 1
    assert "digits-folder.yaml:34:25: error: `persistent_workers` applies to loader worker processes" in \
        capsys.readouterr().err
    assert main(["validate", spec, "--no-data", "--set", "training.data.num_workers=0",
                 "--set", "training.data.persistent_workers=false"]) == 0
