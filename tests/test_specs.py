"""The shipped specs as a user meets them: every spec with a `training:` section trains a few steps; the
full-size Llama specs summarise on the meta device within a laptop's memory; dims declared a multiple let
the U-Net's skip connections validate. (Validation, building and export of every spec are in
test_validate, test_build and test_export.)"""
from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest
import torch
from support import ROOT, TRAINABLE, TRAINING, overrides_for

import dlspec
import dlspec.train
from dlspec.core.errors import DlspecError


@pytest.mark.parametrize("path", [p for p in TRAINABLE if TRAINING[p]], ids=lambda p: p.stem)
def test_every_spec_with_a_training_section_trains(path, tmp_path):
    spec = dlspec.load(path, overrides_for(path) + ["training.max_steps=3", "training.threads=1",
                                                     "training.device=cpu"])
    summary = dlspec.train.train(spec, tmp_path / "run", progress="off")
    assert summary["steps"] == 3 and math.isfinite(summary["train_loss"])
    assert (tmp_path / "run" / "checkpoints" / "last.pt").is_file()


@pytest.mark.parametrize("name, params", [("llama2-7b", 6_738_415_616), ("llama3-8b", 8_030_261_248)])
def test_full_size_llama_summarises_on_the_meta_device_under_a_gigabyte(name, params):
    """`dlspec build` without --out builds on the meta device: the module is constructed (its parameter
    count checked against the registry's) but no weight is allocated."""
    # the peak resident memory of this process alone (VmHWM; getrusage would count the parent it forked from)
    script = ("import re, sys\nfrom dlspec.cli import main\n"
              f"code = main(['build', {str(ROOT / 'specs' / (name + '.yaml'))!r}, '--json'])\n"
              "status = open('/proc/self/status').read()\n"
              "print(re.search(r'VmHWM:\\s+(\\d+)', status).group(1), file=sys.stderr)\nsys.exit(code)\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["params"] == params and summary["trainable_params"] == params
    peak_kib = int(done.stderr.strip().splitlines()[-1])
    assert peak_kib < 1024 * 1024, f"{peak_kib / 1024:.0f} MiB"


def test_meta_build_has_the_published_parameters_and_no_storage():
    model = dlspec.build(ROOT / "specs" / "llama3-8b.yaml", device="meta")
    assert sum(p.numel() for p in model.parameters()) == 8_030_261_248
    assert all(p.device.type == "meta" for p in model.parameters())
    assert model.layers[0].self_attn.kv_heads == 8 and model.layers[0].self_attn.rope.inv_freq.device.type == "meta"


def test_multiple_of_proves_the_unet_skip_connections_match():
    spec = dlspec.load(ROOT / "specs" / "unet.yaml")
    assert str(spec.graph.types["up4.upsample"]) == "[B, 128, H/8, W/8]" == str(spec.graph.types["enc4.relu_1"])
    assert spec.dims["H"].multiple_of == 16 and spec.dims["H"].min == 32
    with pytest.raises(DlspecError) as info:  # the same U-Net for any H: floor(H/8) vs 2*floor(H/16) unproven
        dlspec.load(ROOT / "specs" / "unet.yaml", ["model.dims.H={example: 64, min: 32}"])
    problem = info.value.problems[0]
    assert "up4.join (concat)" in problem.message
    assert problem.hint == ("they are equal when H is a multiple of 16: declare `dims: {H: {multiple_of: 16, min: 16}}`")
    model = dlspec.build(spec).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 48, 80)).shape == (1, 2, 48, 80)


def test_a_dim_example_must_be_an_allowed_multiple(tmp_path):
    with pytest.raises(DlspecError) as info:
        dlspec.load(ROOT / "specs" / "unet.yaml", ["model.dims.H={example: 40, min: 32, multiple_of: 16}"])
    assert "not a multiple of 16" in info.value.problems[0].message
