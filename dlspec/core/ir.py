"""The IR: an immutable graph of typed nodes, and the block instances that group them.

Lowering expands blocks, repeats and residuals, so every node is one layer with a
qualified name (`h.3.attn`) that is also its module path and state-dict prefix; the
flat node list is what shape inference, summaries and export checks walk. Each use
of a block is also recorded as an `Instance` over a contiguous run of those nodes,
which is what the code generator turns into a module class of its own. Passes
return new graphs (`dataclasses.replace`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

from .errors import Loc


def dim_str(dim) -> str:
    return str(dim)


@dataclass(frozen=True)
class TensorType:
    shape: tuple  # of int | sympy.Expr (symbolic dims such as B, T)
    dtype: str  # torch dtype name: float32, int64, bool, ...

    @property
    def rank(self) -> int:
        return len(self.shape)

    def __str__(self) -> str:
        return "[" + ", ".join(dim_str(d) for d in self.shape) + "]"


@dataclass(frozen=True)
class Value:
    """A named graph input."""

    name: str
    type: TensorType
    loc: Loc | None
    range: tuple[int, int] | None = None  # valid [lo, hi) of an integer input


@dataclass(frozen=True)
class Node:
    name: str  # qualified, unique: module path and state-dict prefix
    op: str  # a layer kind from the registry
    attrs: tuple[tuple[str, Any], ...]
    inputs: tuple[str, ...]  # value names consumed
    outputs: tuple[str, ...]  # value names produced
    loc: Loc | None
    context: str = ""  # "in block instance h.3 (spec.yaml:40:7)" for errors inside expanded blocks
    attr_locs: tuple[tuple[str, Loc], ...] = ()
    region: str | None = None  # gradient-checkpointed region this node belongs to
    trainable: bool = True
    init: tuple[tuple[str, Mapping], ...] = ()  # (param name or '*weight'/'*bias', scheme)
    ties: tuple[tuple[str, str, str], ...] = ()  # (param, target node, target param)
    types: tuple[TensorType, ...] = ()  # output types, set by shape inference

    @property
    def a(self) -> dict:
        return dict(self.attrs)

    def attr_loc(self, name: str) -> Loc | None:
        return dict(self.attr_locs).get(name, self.loc)


@dataclass(frozen=True)
class Instance:
    """One use of a block: `graph.nodes[nodes.start:nodes.stop]` is its body, all named `name.*`.

    Instances nest (an `mlp` inside `h.3`); a repeated block gives one instance per copy (`h.0` ..).
    """

    name: str  # qualified, unique: module path and state-dict prefix, as for nodes
    block: str  # the block definition it instantiates
    params: tuple[tuple[str, Any], ...]  # the block's parameters, resolved
    input_names: tuple[str, ...]  # the block's names for the inputs passed (x, mask), in order
    inputs: tuple[str, ...]  # value names passed in, one per input name
    outputs: tuple[str, ...]  # value names it returns
    nodes: range  # indices of its body in graph.nodes
    loc: Loc | None
    checkpoint: bool = False  # its call is recomputed in backward (it roots a checkpointed region)
    init: tuple[tuple[str, Mapping], ...] = ()  # init schemes in force inside it, its own first


@dataclass(frozen=True)
class Graph:
    name: str
    inputs: tuple[Value, ...]
    nodes: tuple[Node, ...]
    outputs: tuple[tuple[str, str], ...]  # (output name, value name)
    output_locs: tuple[tuple[str, Loc | None], ...] = ()
    types: Mapping[str, TensorType] = field(default_factory=dict)  # value name -> type, set by shape inference
    instances: tuple[Instance, ...] = ()  # every block instance, outer before inner
    init: tuple[tuple[str, Mapping], ...] = ()  # the model-wide init schemes (model.init)

    def producer(self) -> dict[str, Node]:
        return {v: n for n in self.nodes for v in n.outputs}
