"""Stage 5b: turn a checked spec into an nn.Module by executing its generated source.

The source is registered with linecache, so a traceback from forward points at
a readable generated line. Construction runs under a private RNG seeded by
`seed`, so the same spec and seed give the same weights without touching the
caller's random state.
"""
from __future__ import annotations

import contextlib
import functools
import hashlib
import linecache
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from ..core.budget import check_parameters
from ..front.spec import Spec, load
from .codegen import Source, class_name, generate


def generated(spec: Spec, standalone: bool = False) -> Source:
    """The spec's PyTorch source, with the spec node each forward line runs."""
    return generate(spec.graph, class_name(spec.name), standalone=standalone,
                    header=f"{spec.path.name} (spec hash {spec.spec_hash[:12]})")


def source(spec: Spec, standalone: bool = False) -> str:
    return generated(spec, standalone).text


def build(spec_or_path: Spec | str | Path, overrides: Iterable[str] | Mapping[str, Any] = (), seed: int = 0,
          device: str | torch.device | None = None, weights: str | Path | None = None, strict: bool = True) -> nn.Module:
    """Build the nn.Module of a spec (a path, or a Spec from dlspec.load).

    device="meta" builds it without allocating its weights (shapes only: summaries of 7B-parameter specs);
    otherwise a model whose parameters do not fit in memory is refused before the first allocation.
    `weights` loads a checkpoint through the spec's `weights:` mapping (dlspec.weights.load; strict unless
    `strict=False`); `model.weights_report` then says what was loaded."""
    spec = spec_or_path if isinstance(spec_or_path, Spec) else load(spec_or_path, overrides)
    if str(device) != "meta":
        check_parameters(spec.graph)
    text = source(spec)
    namespace = _namespace(text, f"<dlspec:{spec.name}:{spec.spec_hash[:12]}>")
    with torch.random.fork_rng(devices=[]), torch.device(device) if device else contextlib.nullcontext(), \
            _NoMetaInit() if str(device) == "meta" else contextlib.nullcontext():
        torch.manual_seed(seed)
        model = namespace[class_name(spec.name)]()
    model.dlspec_spec = spec
    model.code = text
    if weights is not None:
        from ..weights.load import load_into
        model.weights_report = load_into(model, Path(weights), strict=strict)
    return model


class _NoMetaInit(TorchFunctionMode):
    """Initialisers write nothing on the meta device, yet `normal_` there runs a Python kernel whose first call
    imports torch._dynamo (a second of a `dlspec build` summary): skip it."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in (torch.Tensor.normal_, nn.init.normal_):
            tensor = args[0] if args else kwargs["tensor"]
            if tensor.is_meta:
                return tensor
        return func(*args, **kwargs)


@functools.lru_cache(maxsize=64)
def _namespace(text: str, filename: str) -> dict:
    """The executed source, once per distinct source: building a spec again gives instances of the same class,
    and the classes live in a module named after their source's hash, so TorchScript gives them the same
    names in every process (an export is byte-identical whatever was built before)."""
    linecache.cache[filename] = (len(text), None, text.splitlines(True), filename)
    namespace: dict = {"__name__": "dlspec_model_" + hashlib.sha256(text.encode()).hexdigest()[:16]}
    exec(compile(text, filename, "exec"), namespace)
    return namespace


def blocks(model: nn.Module) -> Iterator[tuple[str, nn.Module]]:
    """The outermost block instances of a built model, by module path (`h.0`, `h.1`, ...): the units that
    FSDP shards one by one and regional compilation compiles. Modules inside them are not listed."""
    names = {inst.name for inst in model.dlspec_spec.graph.instances}
    for inst in model.dlspec_spec.graph.instances:
        parts = inst.name.split(".")
        if not any(".".join(parts[:end]) in names for end in range(1, len(parts))):
            yield inst.name, model.get_submodule(inst.name)
