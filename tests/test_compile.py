"""Built models work under torch.compile: dlspec's generated code causes no graph breaks."""
import pytest
import torch
from support import SPECS, overrides_for

import dlspec
from dlspec.backend.inputs import random_inputs


@pytest.fixture(autouse=True)
def fresh_dynamo():
    torch._dynamo.reset()  # each test traces from scratch, not from another test's cache
    yield
    torch._dynamo.reset()


@pytest.mark.parametrize("training", [False, True], ids=["eval", "train"])
@pytest.mark.parametrize("path", SPECS, ids=lambda p: p.stem)
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
