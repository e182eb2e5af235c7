"""Does a dlspec model train as fast as the same model written by hand, and how fast is the front end?

Part 1. For an MLP, a CNN and a small GPT (specs in benchmarks/specs/), build the spec's model and the
same network written by hand in plain PyTorch (the classes below, written the way a person writes them;
the GPT follows nanoGPT). The hand-written modules use the spec's names, so the spec model's state dict
loads into them strictly; both must then give the same outputs and gradients before anything is timed.
Training steps (forward, cross-entropy, backward, AdamW step) of the two are timed side by side in one
process: rounds alternate A/B and B/A, and the table gives medians over rounds and their ratio.

Part 2. Front-end times: `dlspec.load` (read, validate, lower, infer shapes) and `dlspec.build` for
gpt2-small at 48 layers, and `dlspec.load` for a generated 1,000-node spec. Cold first calls run in a
fresh interpreter (its start-up and `import dlspec` are timed apart); warm times are medians in this one.

Part 3. torch.compile of a 48-layer GPT (gpt2-small's layout at width 128), the whole model against
regional compilation (`training.compile: {regional: true}`: each block compiled in place, the 48 instances
of its class sharing one graph). Compile time is the first training step's time less an eager step's,
with inductor's caches off and a fresh cache folder for each (regional is compiled first: any reuse of
its kernels could only flatter the whole model). Step times are then medians
of interleaved rounds of eager, whole and regional.

Usage:  python benchmarks/bench_build.py [--quick]
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parent.parent
SPECS = Path(__file__).resolve().parent / "specs"
sys.path.insert(0, str(ROOT))  # measure this working tree's dlspec, installed or not

import dlspec  # noqa: E402
from dlspec.backend.inputs import random_inputs  # noqa: E402
from dlspec.front.spec import concrete_shape  # noqa: E402

THREADS = 2
TARGET = 1.02  # a dlspec model may cost at most 2% more per training step than the hand-written one


# ---------------------------------------------------------------- the same models, written by hand

class MLP(nn.Module):
    def __init__(self, features: int = 784, hidden: int = 1024, classes: int = 10):
        super().__init__()
        self.fc1 = nn.Linear(features, hidden)
        self.fc2 = nn.Linear(hidden, hidden)
        self.fc3 = nn.Linear(hidden, classes)

    def forward(self, x):
        x = F.relu(self.fc1(x))
        x = F.relu(self.fc2(x))
        return self.fc3(x)


class CNN(nn.Module):
    def __init__(self, width: int = 32, classes: int = 10):
        super().__init__()
        self.conv1 = nn.Conv2d(3, width, 3, padding=1)
        self.conv2 = nn.Conv2d(width, 2 * width, 3, padding=1)
        self.fc1 = nn.Linear(2 * width * 8 * 8, 256)
        self.fc2 = nn.Linear(256, classes)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)  # (B, w, 16, 16)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)  # (B, 2w, 8, 8)
        x = torch.flatten(x, 1)
        x = F.relu(self.fc1(x))
        return self.fc2(x)


@dataclass
class GPTConfig:
    vocab: int = 512
    context: int = 128
    d_model: int = 256
    heads: int = 4
    layers: int = 4


class CausalSelfAttention(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.heads = cfg.heads
        self.qkv = nn.Linear(cfg.d_model, 3 * cfg.d_model)  # q, k, v for all heads in one matmul
        self.out = nn.Linear(cfg.d_model, cfg.d_model)

    def forward(self, x):
        B, T, C = x.size()
        q, k, v = self.qkv(x).split(C, dim=2)
        q = q.view(B, T, self.heads, C // self.heads).transpose(1, 2)  # (B, nh, T, hs)
        k = k.view(B, T, self.heads, C // self.heads).transpose(1, 2)  # (B, nh, T, hs)
        v = v.view(B, T, self.heads, C // self.heads).transpose(1, 2)  # (B, nh, T, hs)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)  # (B, nh, T, hs)
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        return self.out(y)


class FeedForward(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.fc = nn.Linear(cfg.d_model, 4 * cfg.d_model)
        self.proj = nn.Linear(4 * cfg.d_model, cfg.d_model)

    def forward(self, x):
        return self.proj(F.gelu(self.fc(x), approximate="tanh"))  # GPT-2's GELU


class Block(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.ln_1 = nn.LayerNorm(cfg.d_model)
        self.attn = CausalSelfAttention(cfg)
        self.ln_2 = nn.LayerNorm(cfg.d_model)
        self.mlp = FeedForward(cfg)

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        x = x + self.mlp(self.ln_2(x))
        return x


class GPT(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.wte = nn.Embedding(cfg.vocab, cfg.d_model)
        self.wpe = nn.Embedding(cfg.context, cfg.d_model)
        self.h = nn.ModuleList(Block(cfg) for _ in range(cfg.layers))
        self.ln_f = nn.LayerNorm(cfg.d_model)
        self.lm_head = nn.Linear(cfg.d_model, cfg.vocab, bias=False)
        self.wte.weight = self.lm_head.weight  # weight tying
        self.apply(self._init_weights)

    def _init_weights(self, module):
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def forward(self, idx):
        B, T = idx.size()
        pos = torch.arange(0, T, dtype=torch.long, device=idx.device)  # (T,)
        x = self.wte(idx) + self.wpe(pos)  # (B, T, C)
        for block in self.h:
            x = block(x)
        x = self.ln_f(x)
        return self.lm_head(x)  # (B, T, vocab)


# ---------------------------------------------------------------- training-step timing

@dataclass
class Case:
    name: str
    spec: Path
    hand: Callable[[], nn.Module]


CASES = [
    Case("mlp", SPECS / "mlp.yaml", MLP),
    Case("cnn", SPECS / "cnn.yaml", CNN),
    Case("gpt-small", SPECS / "gpt-small.yaml", lambda: GPT(GPTConfig())),
]


def loss_of(model, inputs, target):
    logits = model(*inputs)
    return F.cross_entropy(logits.reshape(-1, logits.size(-1)), target.reshape(-1))


def check_same(spec_model, hand, inputs, target) -> None:
    """The two compute the same function: same weights (strict load), outputs and gradients."""
    hand.load_state_dict(spec_model.state_dict(), strict=True)
    torch.testing.assert_close(hand(*inputs), spec_model(*inputs))
    loss_of(spec_model, inputs, target).backward()
    loss_of(hand, inputs, target).backward()
    spec_grads = {n: p.grad for n, p in spec_model.named_parameters()}
    hand_grads = {n: p.grad for n, p in hand.named_parameters()}
    assert spec_grads.keys() == hand_grads.keys(), (sorted(spec_grads), sorted(hand_grads))
    for name, grad in spec_grads.items():
        torch.testing.assert_close(hand_grads[name], grad, msg=lambda m, name=name: f"gradient of {name}: {m}")
    spec_model.zero_grad(set_to_none=True)
    hand.zero_grad(set_to_none=True)


def stepper(model, inputs, target, net=None):
    """One training step of `model`, run through `net` (a compiled wrapper of it) when given."""
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def step():
        loss = loss_of(model if net is None else net, inputs, target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return step


def time_step(step) -> float:
    start = time.perf_counter()
    step()
    return time.perf_counter() - start


def bench_case(case: Case, budget_s: float, min_rounds: int, warmup: int) -> dict:
    spec_model = dlspec.build(case.spec)
    torch.manual_seed(1)
    hand = case.hand()
    spec = spec_model.dlspec_spec
    inputs = random_inputs(spec)
    *lead, classes = concrete_shape(spec.outputs[0].shape, spec.example_sizes())  # a class id per logits row
    target = torch.randint(0, classes, tuple(lead), generator=torch.Generator().manual_seed(1))
    check_same(spec_model, hand, inputs, target)

    step = {"dlspec": stepper(spec_model, inputs, target), "hand": stepper(hand, inputs, target)}
    for _ in range(warmup):
        for fn in step.values():
            fn()
    # One step of each per round, the order swapped every round (AB BA AB ...): a slow spell on a
    # shared machine hits both sides alike. Rounds run until the time budget is spent.
    times: dict[str, list[float]] = {"dlspec": [], "hand": []}
    deadline = time.perf_counter() + budget_s
    gc.collect()
    gc.disable()  # no collector pauses landing on one side
    try:
        while len(times["hand"]) < min_rounds or time.perf_counter() < deadline:
            for which in ("dlspec", "hand") if len(times["hand"]) % 2 == 0 else ("hand", "dlspec"):
                times[which].append(time_step(step[which]))
    finally:
        gc.enable()
    d, h = times["dlspec"], times["hand"]
    q = statistics.quantiles(h, n=4) if len(h) >= 4 else [min(h), 0, max(h)]
    return {"name": case.name, "params": sum(p.numel() for p in spec_model.parameters()),
            "input": list(inputs[0].shape), "rounds": len(h),
            "hand_ms": statistics.median(h) * 1e3, "dlspec_ms": statistics.median(d) * 1e3,
            "ratio": statistics.median(d) / statistics.median(h),
            "paired": statistics.median(a / b for a, b in zip(d, h)),
            "best": min(d) / min(h), "spread": (q[2] - q[0]) / statistics.median(h)}


# ---------------------------------------------------------------- front-end timing

COLD = r"""
import json, sys, time
t0 = time.perf_counter()
import dlspec
t1 = time.perf_counter()
dlspec.load(sys.argv[1], json.loads(sys.argv[2]))
t2 = time.perf_counter()
print(json.dumps({"import": t1 - t0, "first_load": t2 - t1}))
"""


def cold_load(path: Path, overrides: list[str]) -> dict:
    """`import dlspec` and the first `dlspec.load` in a fresh interpreter (its own start-up not counted)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-c", COLD, str(path), json.dumps(overrides)], env=env,
                          capture_output=True, text=True, check=True, timeout=300)
    return json.loads(done.stdout.strip().splitlines()[-1])


def median_time(fn, repeats: int) -> float:
    out = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        out.append(time.perf_counter() - start)
    return statistics.median(out)


def once(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def deep_spec(directory: Path, pairs: int = 500) -> Path:
    """A spec of `pairs` linear + relu layers, written out one per line: 2 * pairs nodes."""
    lines = ["dlspec: 1", "name: deep-mlp", "model:", "  vars: {width: 64}", "  inputs:",
             "    x: {shape: [B, width], dtype: float32}", "  layers:"]
    for i in range(pairs):
        lines += [f"    - {{id: fc{i}, op: linear, in: width, out: width}}", "    - relu"]
    path = directory / "deep-mlp.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


def frontend(quick: bool) -> list[dict]:
    rows = []
    repeats = 2 if quick else 5

    gpt2, deep_overrides = ROOT / "specs" / "gpt2-small.yaml", ["model.vars.layers=48"]
    cold = cold_load(gpt2, deep_overrides)
    spec = dlspec.load(gpt2, deep_overrides)
    n = len(spec.graph.nodes)
    rows.append({"what": f"gpt2-small, 48 layers ({n} nodes): load", "cold": cold["first_load"],
                 "warm": median_time(lambda: dlspec.load(gpt2, deep_overrides), repeats)})
    with torch.device("meta"):  # dlspec's own work: codegen, exec, module construction; no weights
        rows.append({"what": "  build on the meta device (codegen + modules)", "cold": None,
                     "warm": median_time(lambda: dlspec.build(spec), repeats)})
        rows.append({"what": "  same model written by hand, meta device", "cold": None,
                     "warm": median_time(lambda: GPT(GPTConfig(50257, 1024, 768, 12, 48)), repeats)})
    if not quick:  # ~1.5 GB of weights each: allocation and init dominate
        rows.append({"what": "  build with weights (load + build)", "cold": None,
                     "warm": once(lambda: dlspec.build(gpt2, deep_overrides))})
        gc.collect()
        rows.append({"what": "  same model written by hand, with weights", "cold": None,
                     "warm": once(lambda: GPT(GPTConfig(50257, 1024, 768, 12, 48)))})
        gc.collect()

    with tempfile.TemporaryDirectory() as tmp:
        path = deep_spec(Path(tmp))
        cold = cold_load(path, [])
        spec = dlspec.load(path)
        rows.append({"what": f"generated spec, {len(spec.graph.nodes)} nodes: load", "cold": cold["first_load"],
                     "warm": median_time(lambda: dlspec.load(path), repeats)})
        rows.append({"what": "  build with weights", "cold": None, "warm": median_time(lambda: dlspec.build(spec), repeats)})
    rows.append({"what": "import dlspec (fresh interpreter)", "cold": cold["import"], "warm": None})
    return rows


# ---------------------------------------------------------------- compile: whole model vs regional

GPT48 = ["model.vars.layers=48", "model.vars.d_model=128", "model.vars.heads=4", "model.vars.vocab=512",
         "model.vars.context=64", "model.dims.T.max=64", "model.dims.T.example=64", "model.dims.B=4"]


def compile_case(layers: int, budget_s: float, min_rounds: int) -> dict:
    import torch._dynamo
    import torch._inductor.config
    from torch._dynamo.utils import counters

    from dlspec.train.distributed import World, wrap
    torch._inductor.config.force_disable_caches = True  # every compile starts cold
    overrides = [o for o in GPT48 if not o.startswith("model.vars.layers")] + [f"model.vars.layers={layers}"]
    spec = dlspec.load(ROOT / "specs" / "gpt2-small.yaml", overrides)
    (idx,) = random_inputs(spec)
    models = {name: dlspec.build(spec) for name in ("eager", "regional", "whole")}
    steps = {name: stepper(model, [idx], idx) for name, model in models.items()}
    out = {"layers": layers, "params": sum(p.numel() for p in models["eager"].parameters())}
    eager = [time_step(steps["eager"]) for _ in range(3)][-1]
    for name, options in (("regional", {"regional": True}), ("whole", {})):
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix=f"bench-{name}-")
        counters.clear()
        net = wrap(models[name], World(), torch.device("cpu"), options)
        steps[name] = stepper(models[name], [idx], idx, net)
        out[f"{name}_compile_s"] = time_step(steps[name]) - eager
        out[f"{name}_graphs"] = counters["stats"]["unique_graphs"]
    times: dict[str, list[float]] = {name: [] for name in steps}
    deadline = time.perf_counter() + budget_s
    order = list(steps)
    while len(times["eager"]) < min_rounds or time.perf_counter() < deadline:
        for name in order:
            times[name].append(time_step(steps[name]))
        order.reverse()
    for name, ts in times.items():
        out[f"{name}_ms"] = statistics.median(ts) * 1e3
    out["rounds"] = len(times["eager"])
    return out


# ---------------------------------------------------------------- report

def fmt_s(v: float | None) -> str:
    return "-" if v is None else f"{v:.3f} s"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a fast smoke run: few rounds, no full-size builds")
    args = parser.parse_args(argv)
    torch.set_num_threads(THREADS)
    budget_s, min_rounds, warmup = (2.0, 3, 1) if args.quick else (55.0, 20, 3)

    print(f"dlspec {dlspec.__version__}, torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"{budget_s:g} s of interleaved rounds per model (at least {min_rounds})")
    print("\ntraining step: forward + cross-entropy + backward + AdamW step, ms per step")
    header = (f"{'model':<10} {'params':>7} {'input':<15} {'rounds':>6} {'hand':>8} {'dlspec':>8} "
              f"{'ratio':>6} {'paired':>6} {'best':>6} {'spread':>6}")
    print(header)
    print("-" * len(header))
    for case in CASES:
        r = bench_case(case, budget_s, min_rounds, warmup)
        flag = "" if r["ratio"] <= TARGET else f"  above {TARGET}"
        print(f"{r['name']:<10} {r['params'] / 1e6:>6.2f}M {str(r['input']):<15} {r['rounds']:>6} {r['hand_ms']:>8.1f} "
              f"{r['dlspec_ms']:>8.1f} {r['ratio']:>6.3f} {r['paired']:>6.3f} {r['best']:>6.3f} {r['spread']:>6.1%}{flag}",
              flush=True)
    print("hand, dlspec: median step time; ratio = their quotient (target <= 1.02); paired = median of the\n"
          "per-round quotients; best = quotient of the fastest steps; spread = interquartile range of the\n"
          "hand-written step times over their median: the noise floor of this machine right now")

    print("\nfront end")
    header = f"{'':<52} {'cold':>9} {'warm':>9}"
    print(header)
    print("-" * len(header))
    for row in frontend(args.quick):
        print(f"{row['what']:<52} {fmt_s(row['cold']):>9} {fmt_s(row['warm']):>9}", flush=True)
    print("cold = first call in a fresh interpreter after `import dlspec`; warm = median of repeated calls here")

    layers = 4 if args.quick else 48
    print(f"\ntorch.compile, {layers}-layer GPT (width 128, batch 4 x 64 tokens): whole model vs regional")
    r = compile_case(layers, budget_s, min_rounds)
    header = f"{'':<10} {'compile':>9} {'graphs':>6} {'step':>9} {'vs eager':>8}"
    print(header)
    print("-" * len(header))
    print(f"{'eager':<10} {'-':>9} {'-':>6} {r['eager_ms']:>7.1f}ms {1:>8.2f}")
    for name in ("whole", "regional"):
        print(f"{name:<10} {r[name + '_compile_s']:>8.1f}s {r[name + '_graphs']:>6} {r[name + '_ms']:>7.1f}ms "
              f"{r[name + '_ms'] / r['eager_ms']:>8.2f}", flush=True)
    print(f"compile = first step less an eager step; graphs = distinct graphs dynamo compiled; step = median of "
          f"{r['rounds']} interleaved rounds.\nregional compiles {r['whole_compile_s'] / r['regional_compile_s']:.1f}x "
          f"faster; its step is {r['regional_ms'] / r['whole_ms']:.2f}x the whole model's")
    return 0


if __name__ == "__main__":
    sys.exit(main())
