"""Built models work under torch.compile: dlspec's generated code causes no graph breaks."""
import pytest
import torch
from support import ROOT, SPECS, overrides_for

import dlspec
from dlspec.backend.inputs import random_inputs


@pytest.fixture(autouse=True)
def fresh_dynamo():
    torch._dynamo.reset()  # each test traces from scratch, not from another test's cache
    yield
    torch._dynamo.reset()


# besides the shipped specs: per-block checkpointing, and blocks that are nn.Sequential (ids 0, 1, ..)
TRACED = SPECS + [ROOT / "tests" / "specs" / "valid" / name
                  for name in ("training-features.yaml", "module-names.yaml", "attention.yaml")]


@pytest.mark.parametrize("training", [False, True], ids=["eval", "train"])
@pytest.mark.parametrize("path", TRACED, ids=lambda p: p.stem)
def test_every_spec_traces_as_one_graph(path, training):
    model = dlspec.build(path, overrides_for(path)).train(training)  # train mode takes the dropout/checkpoint branches
    inputs = random_inputs(model.dlspec_spec)
    explained = torch._dynamo.explain(model)(*inputs)
    reasons = "\n".join(str(r) for r in explained.break_reasons)
    assert explained.graph_break_count == 0, \
        f"{path.name} ({model.training=}): graph breaks\n{reasons}\n--- generated code ---\n{model.code}"
    assert explained.graph_count == 1


def test_compiled_seed_cnn_matches_eager():
    path = next(p for p in SPECS if p.stem == "seed-cnn")
    model = dlspec.build(path).eval()
    (x,) = random_inputs(model.dlspec_spec, {"B": 4})
    compiled = torch.compile(model, backend="eager", fullgraph=True)
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), model(x))


def test_regional_compilation_compiles_a_repeated_block_once():
    """`training.compile: {regional: true}` compiles each block instance in place; the instances of one class
    share one graph, so four layers cost one compilation, and state-dict keys stay the model's own."""
    from torch._dynamo.utils import counters

    from dlspec.train.distributed import World, wrap
    path = next(p for p in SPECS if p.stem == "gpt2-small")
    overrides = [*overrides_for(path), "model.vars.layers=4", "model.vars.d_model=64", "model.vars.heads=4"]
    model = dlspec.build(path, overrides).eval()
    (idx,) = random_inputs(model.dlspec_spec, {"B": 2, "T": 16})
    with torch.no_grad():
        expected = model(idx)
    keys = list(model.state_dict())
    counters.clear()
    net = wrap(model, World(), torch.device("cpu"), {"regional": True, "backend": "eager"})
    assert net is model and list(model.state_dict()) == keys
    with torch.no_grad():
        torch.testing.assert_close(net(idx), expected)
        net(idx)  # a second call reuses the compiled code
    assert counters["stats"]["unique_graphs"] == 1  # one GptBlock graph for h.0 .. h.3; the rest runs eagerly
    assert all(block._compiled_call_impl is not None for block in model.h)


def test_regional_compilation_of_a_model_without_blocks_compiles_the_whole():
    from dlspec.train.distributed import World, wrap
    model = dlspec.build(next(p for p in SPECS if p.stem == "seed-mlp"))
    net = wrap(model, World(), torch.device("cpu"), {"regional": True, "backend": "eager"})
    assert isinstance(net, torch._dynamo.eval_frame.OptimizedModule) and net._orig_mod is model
