"""Stage 5: the built nn.Module runs, matches inferred shapes and parameter counts, and honours the spec."""
import re
import subprocess
import sys

import pytest
import torch
from support import ROOT, SPECS, VALID, overrides_for

import dlspec
from dlspec.backend.inputs import random_inputs
from dlspec.backend.summary import summarize

PUBLISHED = {  # unique parameters, as published (torchvision / the original papers' reference code)
    "resnet18": 11_689_512,
    "resnet50": 25_557_032,
    "vit-b-16": 86_567_656,
    "gpt2-small": 124_439_808,
    "bert-base": 109_482_240,
    "llama2-7b": 6_738_415_616,
    "llama3-8b": 8_030_261_248,
    "mobilenet-v2": 3_504_872,
    "efficientnet-b0": 5_288_548,
}
VALID_DIR = ROOT / "tests" / "specs" / "valid"


def unique_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())  # parameters() yields a shared Parameter once


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_published_parameter_counts(name):
    spec = dlspec.load(ROOT / "specs" / f"{name}.yaml")
    assert summarize(spec)["params"] == PUBLISHED[name]


@pytest.mark.parametrize("path", SPECS + VALID, ids=lambda p: p.name)
def test_forward_shapes_equal_inferred_shapes(path):
    spec = dlspec.load(path, overrides_for(path))
    model = dlspec.build(spec).eval()
    sizes = {**spec.example_sizes(), "B": 3}
    with torch.no_grad():
        out = model(*random_inputs(spec, sizes))
    outs = out if isinstance(out, tuple) else (out,)
    from dlspec.front.spec import concrete_shape
    assert [tuple(o.shape) for o in outs] == [concrete_shape(o.shape, sizes) for o in spec.outputs]
    assert [str(o.dtype).replace("torch.", "") for o in outs] == [o.dtype for o in spec.outputs]
    assert all(torch.isfinite(o).all() for o in outs if o.is_floating_point())
    # every node's inferred type matches the real intermediate tensor (checked through forward hooks)
    assert unique_params(model) == summarize(spec)["params"]


def test_every_intermediate_shape_matches_inference():
    spec = dlspec.load(VALID_DIR / "layer-zoo.yaml")
    model = dlspec.build(spec).eval()
    sizes = {"B": 2, "L": 5}
    seen = {}
    for name, module in model.named_modules():
        if name:
            module.register_forward_hook(lambda m, i, o, name=name: seen.__setitem__(name, tuple(o.shape)))
    with torch.no_grad():
        model(*random_inputs(spec, sizes))
    from dlspec.front.spec import _shape, concrete_shape
    checked = 0
    for node in spec.graph.nodes:
        if node.name in seen:
            assert seen[node.name] == concrete_shape(_shape(node.types[0]), sizes), node.name
            checked += 1
    assert checked >= 10


def test_state_dict_keys_follow_the_spec():
    model = dlspec.build(ROOT / "specs" / "gpt2-small.yaml", overrides_for(ROOT / "specs" / "gpt2-small.yaml"))
    keys = set(model.state_dict())
    assert {"wte.weight", "wpe.weight", "h.0.ln_1.weight", "h.1.attn.qkv.weight", "h.1.mlp.fc.bias", "ln_f.bias"} <= keys
    resnet = dlspec.build(ROOT / "specs" / "resnet18.yaml", overrides_for(ROOT / "specs" / "resnet18.yaml"))
    assert "layer2.0.downsample.0.weight" in resnet.state_dict() and "layer2.1.conv1.weight" in resnet.state_dict()


def test_weight_tying_shares_one_parameter():
    model = dlspec.build(VALID_DIR / "training-features.yaml")
    assert model.lm_head.weight is model.wte.weight
    total = sum(p.numel() for p in model.parameters())
    assert total == summarize(model.dlspec_spec)["params"]


def test_freezing_and_init_schemes():
    model = dlspec.build(VALID_DIR / "training-features.yaml")
    assert not model.wpe.weight.requires_grad and model.wte.weight.requires_grad
    assert torch.all(model.proj.weight == 0.01) and torch.all(model.proj.bias == 0.5)
    assert torch.all(model.h[0].mlp.fc.bias == 0)
    assert 0.015 < model.wte.weight.std().item() < 0.025
    spec = model.dlspec_spec
    assert summarize(spec)["trainable_params"] == sum(p.numel() for p in model.parameters() if p.requires_grad)


def test_same_seed_same_weights_and_no_global_rng_side_effect():
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    a = dlspec.build(ROOT / "specs" / "seed-mlp.yaml", seed=7)
    after = torch.rand(1)
    b = dlspec.build(ROOT / "specs" / "seed-mlp.yaml", seed=7)
    c = dlspec.build(ROOT / "specs" / "seed-mlp.yaml", seed=8)
    assert torch.equal(before, after)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    assert not torch.equal(a.fc1.weight, c.fc1.weight)


def test_gradient_checkpointing_gives_the_same_gradients():
    path = VALID_DIR / "training-features.yaml"
    spec = dlspec.load(path)
    plain = dlspec.load(path, ["model.layers.2.checkpoint=false", "model.layers.3.checkpoint=false"])
    a, b = dlspec.build(spec), dlspec.build(plain)
    # the block's call is checkpointed, one block at a time; the plain model has no checkpoint at all
    assert "x = checkpoint(block, x, use_reentrant=False) if self.training else block(x)" in a.code
    assert "checkpoint(" not in b.code
    b.load_state_dict(a.state_dict())
    inputs = random_inputs(spec, {"B": 2, "T": 6})
    a(*inputs).square().mean().backward()
    b(*inputs).square().mean().backward()
    for (name, p), q in zip(a.named_parameters(), b.parameters()):
        if p.grad is not None:
            torch.testing.assert_close(p.grad, q.grad, msg=name)


def test_attention_runs_scaled_dot_product_attention_and_masks_padding():
    spec = dlspec.load(ROOT / "specs" / "seed-transformer.yaml")
    model = dlspec.build(spec).eval()
    tokens, mask = random_inputs(spec, {"B": 2, "T": 6})
    mask[:] = True
    mask[0, 4:] = False
    with torch.no_grad():
        base = model(tokens, mask)
        changed = tokens.clone()
        changed[0, 4:] = (changed[0, 4:] + 1) % 10000  # only padded positions change
        encoder = model.encoder[0]
        # the classifier mean-pools padded positions too, so compare the first encoder layer's real tokens
        x = model.pos(model.embed(tokens))
        y = model.pos(model.embed(changed))
        ea = encoder.attn(x, mask=mask)
        eb = encoder.attn(y, mask=mask)
    torch.testing.assert_close(ea[0, :4], eb[0, :4])
    assert "F.scaled_dot_product_attention" in open(dlspec.core.modules.__file__).read()
    assert base.shape == (2, 2)


def test_generated_code_is_readable_with_shape_comments():
    model = dlspec.build(ROOT / "specs" / "seed-cnn.yaml")
    assert "self.conv1 = nn.Conv2d(3, 32, 3, padding=1)" in model.code
    # the value flowing through the layers is one variable, rebound as a person writes it, with its shape
    assert re.search(r"\n        x = F\.max_pool2d\(x, 2\) +# \[B, 64, 8, 8\]\n", model.code)


EMITTED = [(VALID_DIR / "attention.yaml", [], "Attention"),
           (ROOT / "specs" / "gpt2-small.yaml", overrides_for(ROOT / "specs" / "gpt2-small.yaml"), "Gpt2Small"),
           (VALID_DIR / "module-names.yaml", [], "ModuleNames")]


@pytest.mark.parametrize("path, overrides, cls", EMITTED, ids=lambda v: getattr(v, "stem", ""))
def test_emitted_python_runs_with_torch_only(tmp_path, path, overrides, cls):
    spec = dlspec.load(path, overrides)
    from dlspec.backend.builder import source
    model = dlspec.build(spec).eval()
    out = tmp_path / "model.py"
    out.write_text(source(spec, standalone=True))
    torch.save(model.state_dict(), tmp_path / "w.pt")
    inputs = random_inputs(spec, {**spec.example_sizes(), "B": 2})
    torch.save(inputs, tmp_path / "inputs.pt")
    with torch.no_grad():
        expected = model(*inputs)
    torch.save(expected, tmp_path / "expected.pt")
    script = ("import sys; sys.modules['dlspec'] = None\n"  # importing dlspec now fails
              "import torch, runpy\n"
              f"torch.set_num_threads({torch.get_num_threads()})\n"  # the same kernels' reduction order: equal bits
              f"ns = runpy.run_path({str(out)!r})\n"
              "assert set(sys.modules) & {'dlspec', 'numpy', 'sympy'} <= {'dlspec', 'numpy'}\n"
              f"m = ns[{cls!r}]().eval(); m.load_state_dict(torch.load('w.pt'))\n"
              "with torch.no_grad(): y = m(*torch.load('inputs.pt'))\n"
              "assert torch.equal(y, torch.load('expected.pt')); print('same')\n")
    done = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "same"


def test_ejected_gpt2_small_reads_like_nanogpt():
    """The full-size spec ejects to a Block class, an MLP, attention and a model class that loops over its
    blocks, in 150 lines at most (attention's `build`, `project` and `output` are the seams its other layouts and
    renamed projections use), with init as rules rather than a line per tensor, and only the imports it uses."""
    from dlspec.backend.builder import source
    text = source(dlspec.load(ROOT / "specs" / "gpt2-small.yaml"), standalone=True)
    assert len(text.splitlines()) <= 150 and "import math" not in text
    classes = re.findall(r"^class (\w+)\((nn\.\w+)\):", text, re.M)
    assert classes == [("MultiHeadAttention", "nn.Module"), ("PositionalEmbedding", "nn.Module"), ("Mlp", "nn.Module"),
                       ("GptBlock", "nn.Module"), ("Gpt2Small", "nn.Module")]
    assert "        self.h = nn.ModuleList(GptBlock() for _ in range(12))\n" in text
    assert re.search(r"        for block in self\.h:\n            x = block\(x\) +# \[B, T, 768\]\n", text)
    assert re.search(r"        h = self\.attn\(h\) +# \[B, T, 768\]\n        x = x \+ h ", text)
    assert "self.lm_head.weight = self.wte.weight  # tied" in text
    assert text.count("nn.init.") <= 4 and "def _init_weights(self):" in text


def test_blocks_are_modules_whose_forward_runs():
    """A block instance is a module with its own forward: a hook on model.h[3] fires, with the block's output."""
    path = ROOT / "specs" / "gpt2-small.yaml"
    model = dlspec.build(path, [*overrides_for(path), "model.vars.layers=4"]).eval()
    assert [type(b).__name__ for b in model.h] == ["GptBlock"] * 4 and type(model.h[0].mlp).__name__ == "Mlp"
    seen = []
    model.h[3].register_forward_hook(lambda module, args, out: seen.append((module, out.shape)))
    (idx,) = random_inputs(model.dlspec_spec, {"B": 2, "T": 5})
    with torch.no_grad():
        model(idx)
    assert seen == [(model.h[3], torch.Size([2, 5, 768]))]


def test_one_class_per_distinct_block_body():
    """resnet18's stages: the two identical blocks of layer1 share a class; the first block of layers 2-4 (strided,
    with a projection shortcut) and the second differ in parameters, so each gets its own."""
    model = dlspec.build(ROOT / "specs" / "resnet18.yaml", overrides_for(ROOT / "specs" / "resnet18.yaml"))
    names = {stage: [type(b).__name__ for b in getattr(model, stage)] for stage in ("layer1", "layer2", "layer3")}
    assert names == {"layer1": ["ResnetBasicBlock"] * 2, "layer2": ["ResnetBasicBlock2", "ResnetBasicBlock3"],
                     "layer3": ["ResnetBasicBlock4", "ResnetBasicBlock5"]}
    assert '"""resnet_basic_block(in_ch=64, out_ch=128, stride=2)"""' in model.code
    assert "        for block in self.layer2:\n            x = block(x)" in model.code


def test_init_schemes_of_blocks_and_their_nodes(tmp_path):
    """`init:` on a repeated block and on a node inside a block: the most specific scheme wins, once per copy."""
    path = tmp_path / "init.yaml"
    path.write_text("""\
dlspec: 1
name: init
blocks:
  pair:
    params: {d: int}
    layers:
      - {id: a, op: linear, in: d, out: d, init: {bias: {scheme: constant, value: 3.0}}}
      - {id: b, op: linear, in: d, out: d}
model:
  inputs: {x: {shape: [B, 4]}}
  init: {weight: zeros, bias: zeros}
  layers:
    - {id: p, op: pair, d: 4, repeat: 3, init: {weight: ones}}
    - {id: q, op: pair, d: 4}
""")
    model = dlspec.build(path)
    for block in model.p:
        assert torch.all(block.a.weight == 1) and torch.all(block.b.weight == 1)  # the repeat's own init
        assert torch.all(block.a.bias == 3) and torch.all(block.b.bias == 0)    # a's own bias; the model's
    assert torch.all(model.q.a.weight == 0) and torch.all(model.q.a.bias == 3) and torch.all(model.q.b.bias == 0)
    assert "        for block in self.p:\n" in model.code  # one loop for the three copies


def test_any_module_name_and_string_parameter_gives_valid_code(tmp_path):
    """Ids and string parameters reach the generated source (module names, docstrings, method names): quotes,
    backslashes and non-ASCII letters must neither break it nor run as code."""
    path = tmp_path / "names.yaml"
    path.write_text(r'''dlspec: 1
name: names
blocks:
  b:
    params: {s: {type: str, default: "a\"\"\"b\\n"}}
    layers:
      - {id: 'q"""\x', op: linear, in: 4, out: 4}
      - {op: residual, id: 'r"', checkpoint: true, body: [gelu]}
      - {op: residual, id: r_, checkpoint: true, body: [gelu]}
model:
  inputs: {x: {shape: [B, 4]}}
  layers:
    - {id: é, op: b}
    - {id: 'w"', op: linear, in: 4, out: 4, checkpoint: true}
''')
    model = dlspec.build(path).train()
    assert dict(model.dlspec_spec.graph.instances[0].params) == {"s": 'a"""b\\n'}
    assert set(model.state_dict()) == {'é.q"""\\x.weight', 'é.q"""\\x.bias', 'w".weight', 'w".bias'}
    x = torch.randn(2, 4)
    model(x).sum().backward()
    plain = dlspec.build(path, ["model.layers.1.checkpoint=false"])
    torch.testing.assert_close(plain.eval()(x), model.eval()(x))
