"""Distributed training through the CLI: 2 CPU processes, gloo, everything on 127.0.0.1 (issue 6).

The runs are a tiny MLP on synthetic data with plain SGD and no dropout, so a 2-process run with the same global
batch must land on the single-process weights up to float rounding. Every test here starts real processes;
they carry the `distributed` mark (`pytest -m "not distributed"` leaves them out) and share the module's runs.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from support import ROOT, TRAINABLE

import dlspec as dlspec_api

pytestmark = [
    pytest.mark.distributed,
    pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(),
                       reason="this torch build has no torch.distributed with the gloo backend"),
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the tests read worker pids from /proc"),
]

STEPS = 300
SPEC = f"""\
dlspec: 1
name: tiny-mlp
model:
  dims: {{B: 8}}
  inputs:
    features: {{shape: [B, 6], dtype: float32}}
  layers:
    - {{id: fc1, op: linear, in: 6, out: 16}}
    - relu
    - {{id: fc2, op: linear, in: 16, out: 3}}
  outputs: {{logits: fc2}}
training:
  seed: 0
  threads: 1
  max_steps: {STEPS}
  accumulate: 2                 # two micro-batches per step: the first one runs under no_sync
  data:
    dataset: {{kind: synthetic_classification, samples: 4000, features: 6, classes: 3}}
    validation: {{fraction: 0.25}}
    batch_size: 8               # the global batch: 4 per process with 2 processes
  loss: {{kind: cross_entropy}}
  optimizer: {{kind: sgd, lr: 0.05, momentum: 0.9}}
  logging: {{every_steps: 50, progress: lines, curves: false}}
  checkpoint: {{every_steps: 50}}
  distributed: {{strategy: ddp, timeout_s: 60}}
"""
RTOL = 1e-5


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}


def dlspec(*args: str, timeout: int = 180) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dlspec", *args], capture_output=True, text=True, cwd=ROOT,
                          env=_env(), timeout=timeout)


def torchrun(*args: str, module: bool = True, timeout: int = 180) -> subprocess.CompletedProcess:
    """`torchrun --nproc-per-node 2 -m dlspec ...` (or a script) on 127.0.0.1 and a free port."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-addr",
                           "127.0.0.1", "--master-port", str(port), *(["-m", "dlspec"] if module else []), *args],
                          capture_output=True, text=True, cwd=ROOT, env=_env(), timeout=timeout)


def ok(result: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)["model"]


def assert_close(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        scale = a[key].abs().max().clamp_min(1e-12)
        assert ((a[key] - b[key]).abs().max() / scale).item() <= RTOL, key


def events(run: Path, kind: str) -> list[dict]:
    import json
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in e.items() if k not in ("time", "examples_per_s", "train_seconds", "run")}
            for e in lines if e["event"] == kind]


def children(pid: int) -> list[int]:
    return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def rank_pid(launcher: int, rank: int) -> int:
    for child in children(launcher):
        if f"RANK={rank}".encode() in Path(f"/proc/{child}/environ").read_bytes().split(b"\0"):
            return child
    raise AssertionError(f"no rank {rank} among the children of {launcher}")


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


class Launch:
    """`dlspec train --nproc 2` in the background, in its own process group; stop() leaves nothing behind."""

    def __init__(self, *args: str):
        self.proc = subprocess.Popen([sys.executable, "-m", "dlspec", "train", *args, "--nproc", "2"], cwd=ROOT,
                                     env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                     start_new_session=True)
        self.workers: list[int] = []

    def wait_for(self, path: Path, limit_s: float = 120) -> None:
        deadline = time.monotonic() + limit_s
        while not path.exists():
            assert self.proc.poll() is None, f"the run ended before {path} appeared:\n{self.proc.stdout.read()}"
            assert time.monotonic() < deadline, f"{path} did not appear"
            time.sleep(0.01)
        self.workers = children(self.proc.pid)

    def stop(self) -> None:
        for pid in [self.proc.pid, *self.workers]:  # torchrun starts each worker in a session of its own
            try:
                os.killpg(pid, signal.SIGKILL)
            except OSError:
                pass
        self.proc.wait(timeout=60)


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("distributed")
    (root / "tiny.yaml").write_text(SPEC)
    return root


@pytest.fixture(scope="module")
def single(runs) -> Path:
    ok(dlspec("train", str(runs / "tiny.yaml"), "--out", str(runs / "single")))
    return runs / "single"


@pytest.fixture(scope="module")
def ddp(runs) -> tuple[Path, subprocess.CompletedProcess]:
    """Through torchrun itself, as the docs show it."""
    result = ok(torchrun("train", str(runs / "tiny.yaml"), "--out", str(runs / "ddp")))
    return runs / "ddp", result


def test_ddp_matches_single_process_with_the_same_global_batch(single, ddp):
    run, result = ddp
    for step in (50, STEPS):
        name = f"checkpoints/step-{step:08d}.pt"
        assert_close(weights(single / name), weights(run / name))
    assert_close(weights(single / "weights.pt"), weights(run / "weights.pt"))
    # metrics are all-reduced before rank 0 logs them: the train loss is the whole global batch's, as in one process
    for one, two in zip(events(single, "train"), events(run, "train"), strict=True):
        assert one["step"] == two["step"] and two["loss"] == pytest.approx(one["loss"], rel=1e-4)
    for one, two in zip(events(single, "eval"), events(run, "eval"), strict=True):
        assert two["val_loss"] == pytest.approx(one["val_loss"], rel=1e-4)
        assert two["val_accuracy"] == one["val_accuracy"]
    # rank 0 alone reports: one start line, one summary, one metrics record per event
    assert result.stdout.count("training tiny-mlp:") == 1 and "x 2 processes (ddp)" in result.stdout
    assert result.stdout.count("stopped by") == 1
    assert [e["step"] for e in events(run, "checkpoint")] == [e["step"] for e in events(single, "checkpoint")]
    assert events(run, "start")[0]["processes"] == 2


def test_killed_ddp_run_resumes_to_the_uninterrupted_weights(runs, ddp):
    uninterrupted, _ = ddp
    out = runs / "killed"
    launch = Launch(str(runs / "tiny.yaml"), "--out", str(out))
    try:
        launch.wait_for(out / "checkpoints" / "step-00000050.pt")
        os.killpg(launch.proc.pid, signal.SIGKILL)  # torchrun's agent and its process group, not the workers
        assert launch.proc.wait(timeout=60) == -signal.SIGKILL
        deadline = time.monotonic() + 30
        while any(alive(p) for p in launch.workers) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not any(alive(p) for p in launch.workers), "the workers outlived the killed launcher"
    finally:
        launch.stop()
    assert not (out / "weights.pt").exists(), "the run finished before it was killed"
    result = ok(dlspec("train", "--resume", str(out), "--nproc", "2"))
    assert "resuming tiny-mlp" in result.stdout
    final, expected = weights(out / "weights.pt"), weights(uninterrupted / "weights.pt")
    assert all(torch.equal(final[k], expected[k]) for k in expected)
    assert events(out, "train") == events(uninterrupted, "train")


def test_fsdp_matches_single_process_and_resumes_across_strategies(runs, single, ddp):
    fsdp = runs / "fsdp"
    result = ok(dlspec("train", str(runs / "tiny.yaml"), "--out", str(fsdp), "--nproc", "2",
                       "--set", "training.distributed.strategy=fsdp", "--set", "training.max_steps=50"))
    assert "x 2 processes (fsdp)" in result.stdout
    assert_close(weights(single / "checkpoints/step-00000050.pt"), weights(fsdp / "weights.pt"))
    # the checkpoint holds the gathered state: one process continues the FSDP run ...
    ok(dlspec("train", "--resume", str(fsdp), "--set", "training.max_steps=100"))
    assert_close(weights(single / "checkpoints/step-00000100.pt"), weights(fsdp / "weights.pt"))
    # ... and FSDP continues a DDP run from its step-50 checkpoint
    ddp_run, _ = ddp
    moved = runs / "ddp-to-fsdp"
    (moved / "checkpoints").mkdir(parents=True)
    for name in ("spec.yaml", "run.json", "metrics.jsonl"):
        shutil.copy(ddp_run / name, moved / name)
    shutil.copy(ddp_run / "checkpoints/step-00000050.pt", moved / "checkpoints/last.pt")
    ok(dlspec("train", "--resume", str(moved), "--nproc", "2", "--set", "training.distributed.strategy=fsdp",
              "--set", "training.max_steps=100"))
    assert_close(weights(ddp_run / "checkpoints/step-00000100.pt"), weights(moved / "weights.pt"))


def cli_error(runs: Path, capsys, *sets: str) -> str:
    """`dlspec train --nproc 2` in this process: these errors come before any process is started."""
    from dlspec.cli import main
    out = runs / "refused"
    code = main(["train", str(runs / "tiny.yaml"), "--out", str(out), "--nproc", "2",
                 *[a for s in sets for a in ("--set", s)]])
    captured = capsys.readouterr()
    assert code == 1, captured.err
    assert captured.out == "" and "Traceback" not in captured.err and not out.exists()
    return captured.err


def test_batch_that_the_processes_cannot_share_is_refused_before_starting(runs, capsys):
    err = cli_error(runs, capsys, "training.data.batch_size=9")
    assert err.startswith("<--set training.data.batch_size>:1:1: error: batch_size 9 cannot be split evenly over "
                          "2 processes\n  expected: a multiple of 2\n  hint: batch_size is the global batch")
    assert err.count("error:") == 1


def test_nccl_on_cpu_is_refused(runs, capsys):
    err = cli_error(runs, capsys, "training.distributed.backend=nccl")
    assert "error: the nccl backend needs CUDA devices, but this run trains on cpu" in err
    assert "hint: use `backend: auto`" in err and err.count("error:") == 1


def test_fsdp_missing_from_torch_is_a_located_error(runs, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "torch.distributed.fsdp", None)  # what an import of a missing module does
    err = cli_error(runs, capsys, "training.distributed.strategy=fsdp")
    assert err.startswith("<--set training.distributed.strategy>:1:1: error: strategy fsdp is not available with "
                          f"torch {torch.__version__}")
    assert "hint: use `strategy: ddp`" in err and err.count("error:") == 1


def test_a_rank_that_dies_stops_the_run_with_a_message(runs):
    out = runs / "dies"
    launch = Launch(str(runs / "tiny.yaml"), "--out", str(out))
    try:
        launch.wait_for(out / "checkpoints" / "step-00000050.pt")
        os.kill(rank_pid(launch.proc.pid, 1), signal.SIGKILL)
        output, _ = launch.proc.communicate(timeout=120)
    finally:
        launch.stop()
    assert launch.proc.returncode == 1, output
    assert "Traceback" not in output and "internal error" not in output, output
    assert output.count("error: distributed training failed: rank 1 (pid ") == 1, output
    assert "was killed by SIGKILL" in output
    assert not (out / "weights.pt").exists()


def test_a_rank_that_stalls_ends_the_run_after_the_collective_timeout(runs):
    out = runs / "stalls"
    launch = Launch(str(runs / "tiny.yaml"), "--out", str(out), "--set", "training.distributed.timeout_s=5")
    stalled = None
    try:
        launch.wait_for(out / "checkpoints" / "step-00000050.pt")
        stalled = rank_pid(launch.proc.pid, 1)
        os.kill(stalled, signal.SIGSTOP)
        lines = []
        for line in launch.proc.stdout:  # rank 0 gives up on its own, while rank 1 is still stopped
            lines.append(line)
            if "did not answer" in line:
                break
        os.kill(stalled, signal.SIGCONT)  # torchrun's SIGTERM, pending while stopped, now ends it
        output = "".join(lines) + launch.proc.stdout.read()  # the rest, with what the loop read ahead
        launch.proc.wait(timeout=120)
    finally:
        if stalled is not None:
            try:
                os.kill(stalled, signal.SIGCONT)
            except OSError:
                pass
        launch.stop()
    assert launch.proc.returncode == 1, output
    assert "Traceback" not in output and "internal error" not in output, output
    assert output.count("error: rank 0 of 2: another process did not answer within 5 s") == 1, output
    assert "hint: a process is stuck" in output


# ---- transformers: FSDP shards each block, DDP replicates; both equal one process (issue 13) ----------------
# One torchrun launch trains every run below in one process group (the worker joins it once and calls the Python
# API for each run), so the many small runs share one start-up. Dropout is off and the optimizer is plain SGD, so
# runs that see the same global batches must agree up to float rounding.

WORKER = """\
import json, os, sys
import torch.distributed as dist
import dlspec, dlspec.train
plan = json.loads(open(sys.argv[1]).read())
launched = int(os.environ.get("WORLD_SIZE", "1")) > 1
if launched:
    dist.init_process_group("gloo")  # one group for every run: dlspec.train leaves a group it did not create
for run in plan:
    dlspec.train.train(dlspec.load(run["spec"], run["overrides"]), run["out"], progress="off")
    if launched:
        dist.barrier()
if launched:
    dist.destroy_process_group()
"""

TIED = """\
dlspec: 1
name: tied-gpt
blocks:
  token_embedding:
    params: {vocab: int, dim: int}
    layers:
      - {id: wte, op: embedding, num: vocab, dim: dim}
model:
  vars: {vocab: 16, d: 32}
  dims: {T: {example: 8, max: 8}}
  inputs: {tokens: {shape: [B, T], dtype: int64}}
  init: {weight: {scheme: normal, std: 0.02}, bias: zeros}
  layers:
    - {id: embed, op: token_embedding, vocab: vocab, dim: d}        # a block of its own: FSDP leaves it to the root
    - {id: wpe, op: pos_embedding, max_len: 8, dim: d}
    - {id: h, op: gpt_block, dim: d, heads: 4, repeat: 2, checkpoint: true}
    - {id: ln_f, op: layer_norm, dim: d}
    - {id: lm_head, op: linear, in: d, out: vocab, bias: false, tie: {weight: embed}}
  outputs: {logits: lm_head}
training:
  seed: 0
  threads: 1
  max_steps: 6
  data:
    dataset: {kind: synthetic_tokens, samples: 256, length: 8, vocab: 16, task: reverse}
    validation: {fraction: 0.25}
    batch_size: 8
  optimizer: {kind: sgd, lr: 0.5}
  checkpoint: {every_steps: 3}
"""

SGD = {"kind": "sgd", "lr": 0.2, "momentum": 0.9}


def _bert_data(path: Path) -> None:
    """BERT inputs with real padding (a third of each row is padding) and a regression target for `pooled`."""
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 64, (64, 12), generator=g)
    mask = torch.ones(64, 12, dtype=torch.bool)
    mask[:, 8:] = False
    torch.save({"input_ids": ids, "token_type_ids": (torch.arange(12) >= 6).long().expand(64, 12).clone(),
                "attention_mask": mask, "target": torch.randn(64, 32, generator=g)}, path)


def _comparison_runs(root: Path) -> dict[str, tuple[str, dict]]:
    """The transformers whose runs must agree: (spec, overrides) by name."""
    (root / "tied.yaml").write_text(TIED)
    _bert_data(root / "bert.pt")
    char = {"model.vars.layers": 2, "model.vars.d_model": 32, "model.vars.dropout": 0.0, "training.threads": 1,
            "training.max_steps": 4, "training.optimizer": SGD, "training.scheduler": {"kind": "constant"},
            "training.data.batch_size": 8, "training.data.eval_batch_size": 64, "training.evaluation.every_steps": 4}
    bert = {"model.vars.layers": 2, "model.vars.vocab": 64, "model.vars.positions": 16, "model.dims.T.max": 16,
            "model.vars.dim": 32,
            "model.vars.heads": 4, "model.vars.hidden": 64, "model.vars.dropout": 0.0,
            "training": {"seed": 0, "threads": 1, "max_steps": 4, "optimizer": SGD,
                         "loss": {"kind": "mse", "output": "pooled", "target": "target"},
                         "data": {"dataset": {"kind": "pt", "path": str(root / "bert.pt")}, "batch_size": 8,
                                  "validation": {"fraction": 0.25}}}}
    return {"char-gpt": (str(ROOT / "specs" / "char-gpt.yaml"), char), "tied": (str(root / "tied.yaml"), {}),
            "bert": (str(ROOT / "specs" / "bert-base.yaml"), bert)}


def _quick_training(spec_path: Path, root: Path) -> tuple[str, dict]:
    """A spec of specs/ at reduced size, trained for two steps: on its own data, or on random data shaped by
    its inputs and first output (class labels for logits, a regression target otherwise)."""
    from support import overrides_for

    from dlspec.backend.inputs import random_inputs
    from dlspec.front.spec import concrete_shape
    overrides = dict(o.split("=", 1) for o in overrides_for(spec_path))
    spec = dlspec_api.load(spec_path, overrides)
    steps = {"training.max_steps": 2, "training.threads": 1}
    if spec.training is not None:
        # loader workers (digits-folder) would be two more processes a rank, for what test_data checks
        return str(spec_path), {**overrides, **steps, "training.data.batch_size": 8, "training.data.num_workers": 0,
                                "training.data.persistent_workers": False}
    sizes = {**spec.example_sizes(), "B": 16}
    fields = {i.name: t for i, t in zip(spec.inputs, random_inputs(spec, sizes, seed=1))}
    out = spec.outputs[0]
    shape = concrete_shape(out.shape, sizes)
    if out.name == "logits":
        fields["target"] = torch.randint(0, shape[-1], shape[:-1], generator=torch.Generator().manual_seed(1))
        loss = {"kind": "cross_entropy"}
    else:
        fields["target"] = torch.randn(shape, generator=torch.Generator().manual_seed(1))
        loss = {"kind": "mse", "output": out.name}
    torch.save(fields, root / f"{spec_path.stem}.pt")
    training = {"seed": 0, "threads": 1, "max_steps": 2, "loss": loss, "optimizer": {"kind": "sgd", "lr": 0.01},
                "data": {"dataset": {"kind": "pt", "path": str(root / f"{spec_path.stem}.pt")}, "batch_size": 4,
                         "validation": {"fraction": 0}}}  # no evaluation, no best.pt: less to write
    return str(spec_path), {**overrides, "training": training}


def _worker(root: Path, plan: list[dict], name: str, launched: bool) -> None:
    (root / "worker.py").write_text(WORKER)
    (root / f"{name}.json").write_text(json.dumps(plan))
    args = [str(root / "worker.py"), str(root / f"{name}.json")]
    result = torchrun(*args, module=False, timeout=600) if launched else \
        subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=ROOT, env=_env(), timeout=600)
    ok(result)


@pytest.fixture(scope="module")
def transformer_runs(runs) -> Path:
    """Each comparison case alone, under DDP and under FSDP; then every shipped spec under FSDP."""
    root = runs / "transformers"
    root.mkdir()
    cases = _comparison_runs(root)
    single = [{"spec": s, "overrides": o, "out": str(root / f"{n}-single")} for n, (s, o) in cases.items()]
    _worker(root, single, "single", launched=False)
    plan = [{"spec": s, "overrides": {**o, "training.distributed": {"strategy": strategy}},
             "out": str(root / f"{n}-{strategy}")}
            for n, (s, o) in cases.items() for strategy in ("ddp", "fsdp")]
    plan[-3]["overrides"]["training.max_steps"] = 3  # tied-gpt under FSDP stops half way; one process resumes it
    for path in TRAINABLE:
        spec, overrides = _quick_training(path, root)
        plan.append({"spec": spec, "overrides": {**overrides, "training.distributed": {"strategy": "fsdp"}},
                     "out": str(root / f"spec-{path.stem}")})
    _worker(root, plan, "launched", launched=True)
    return root


@pytest.mark.parametrize("case", ["char-gpt", "tied", "bert"])
def test_fsdp_and_ddp_transformers_match_one_process(transformer_runs, case):
    single = weights(transformer_runs / f"{case}-single" / "weights.pt")
    assert_close(single, weights(transformer_runs / f"{case}-ddp" / "weights.pt"))
    if case == "tied":  # FSDP stopped at step 3 of 6: its weights are the single run's step-3 checkpoint's
        assert_close(weights(transformer_runs / "tied-single/checkpoints/step-00000003.pt"),
                     weights(transformer_runs / "tied-fsdp" / "weights.pt"))
    else:
        assert_close(single, weights(transformer_runs / f"{case}-fsdp" / "weights.pt"))
    start = events(transformer_runs / f"{case}-fsdp", "start")[0]
    assert start["processes"] == 2 and start["strategy"] == "fsdp"


def test_one_process_resumes_an_fsdp_transformer_run_with_tied_weights(transformer_runs):
    run = transformer_runs / "tied-fsdp"
    ok(dlspec("train", "--resume", str(run), "--set", "training.max_steps=6"))
    resumed, expected = weights(run / "weights.pt"), weights(transformer_runs / "tied-single" / "weights.pt")
    assert_close(expected, resumed)
    assert "lm_head.weight" not in resumed or torch.equal(resumed["lm_head.weight"], resumed["embed.wte.weight"])


@pytest.mark.parametrize("path", TRAINABLE, ids=lambda p: p.stem)
def test_every_spec_trains_under_fsdp(transformer_runs, path):
    run = transformer_runs / f"spec-{path.stem}"
    (start,) = events(run, "start")
    assert start["strategy"] == "fsdp" and start["processes"] == 2
    (end,) = events(run, "end")
    assert end["steps"] == 2 and end["processes"] == 2
    final = weights(run / "weights.pt")
    assert all(torch.isfinite(t).all() for t in final.values() if t.is_floating_point())
