"""The IR: a flat, immutable graph of typed nodes.

Blocks, repeats and residuals are expanded by lowering, so every node here is
one layer with a qualified name (`h.3.attn`) that is also its module path and
state-dict prefix. Passes return new graphs (`dataclasses.replace`).
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
class Graph:
    name: str
    inputs: tuple[Value, ...]
    nodes: tuple[Node, ...]
    outputs: tuple[tuple[str, str], ...]  # (output name, value name)
    output_locs: tuple[tuple[str, Loc | None], ...] = ()
    types: Mapping[str, TensorType] = field(default_factory=dict)  # value name -> type, set by shape inference

    def producer(self) -> dict[str, Node]:
        return {v: n for n in self.nodes for v in n.outputs}
