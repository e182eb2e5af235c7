"""Stage 4: static shape inference over the IR, before any tensor exists.

Runs each node's shape rule from the registry on its input types (with
symbolic dims), records output types, checks weight ties, and infers the valid
range of integer inputs that feed an embedding. Every problem is reported at
the line of the node (or attribute) that breaks.
"""
from __future__ import annotations

from dataclasses import replace

from ..core.errors import DlspecError, Problem
from ..core.ir import Graph, TensorType
from ..core.layers import REGISTRY, ShapeError


def infer_shapes(graph: Graph) -> Graph:
    graph, problems = infer_draft(graph)
    if problems:
        raise DlspecError(problems)
    inputs = tuple(replace(v, range=v.range or index_range(graph, v.name, graph.types)) for v in graph.inputs)
    return replace(graph, inputs=inputs)


def infer_draft(graph: Graph) -> tuple[Graph, list[Problem]]:
    """The graph with the output types of every node whose rule passed, and the problems (a node after a failed one
    has no types)."""
    types: dict[str, TensorType] = {v.name: v.type for v in graph.inputs}
    problems: list[Problem] = []
    nodes = []
    for node in graph.nodes:
        ins = [types.get(v) for v in node.inputs]
        if any(t is None for t in ins):
            nodes.append(node)  # an upstream node failed; its problem is already reported
            continue
        kind = REGISTRY[node.op]
        try:
            outs = kind.rule(node.a, ins)
        except ShapeError as exc:
            where = f" ({node.context})" if node.context else ""
            problems.append(Problem(f"{node.name} ({node.op}): {exc}{where}", node.attr_loc(exc.attr) if exc.attr else node.loc,
                                    node.name, exc.expected, exc.hint))
            nodes.append(node)
            continue
        types.update(zip(node.outputs, outs))
        nodes.append(replace(node, types=tuple(outs)))
    if not problems:  # parameter shapes come from attributes that a failed shape rule may have refused
        problems += _check_ties(graph)
    problems += _check_ranges(graph, types)
    return replace(graph, nodes=tuple(nodes), types=types), problems


def _check_ties(graph: Graph) -> list[Problem]:
    by_name = {n.name: n for n in graph.nodes}
    problems = []
    for node in graph.nodes:
        own = REGISTRY[node.op].params(node.a)
        for param, target, tparam in node.ties:
            other = by_name.get(target)
            if other is None:
                problems.append(Problem(f"{node.name}: tie target '{target}' is not a layer with parameters",
                                        node.loc, node.name))
                continue
            theirs = REGISTRY[other.op].params(other.a)
            if param not in own or tparam not in theirs:
                missing = node.name if param not in own else other.name
                have = own if param not in own else theirs
                problems.append(Problem(f"{node.name}: cannot tie '{param}' to {other.name}.{tparam}: "
                                        f"{missing} has no such parameter",
                                        node.loc, node.name, expected=", ".join(have) or "no parameters"))
            elif tuple(own[param]) != tuple(theirs[tparam]):
                problems.append(Problem(f"{node.name}: cannot tie '{param}' {list(own[param])} to {other.name}.{tparam} "
                                        f"{list(theirs[tparam])}: shapes differ", node.loc, node.name,
                                        hint="tied parameters must have the same shape"))
    return problems


def _check_ranges(graph: Graph, types: dict[str, TensorType]) -> list[Problem]:
    problems = []
    for v in graph.inputs:
        if v.range is None:
            continue
        lo, hi = v.range
        if lo >= hi:
            problems.append(Problem(f"input '{v.name}': range [{lo}, {hi}) is empty", v.loc, f"model.inputs.{v.name}.range"))
        inferred = index_range(graph, v.name, types)
        if inferred and (lo < inferred[0] or hi > inferred[1]):
            reader = next(n.op for n in graph.nodes if v.name in n.inputs and REGISTRY[n.op].index_range(
                n.a, [types[x] for x in n.inputs]))
            problems.append(Problem(f"input '{v.name}': range [{lo}, {hi}) goes past the {reader} it feeds, which takes "
                                    f"{inferred[0]} to {inferred[1] - 1}", v.loc,
                                    f"model.inputs.{v.name}.range", expected=f"within [{inferred[0]}, {inferred[1]})"))
    return problems


def index_range(graph: Graph, value: str, types: dict[str, TensorType]) -> tuple[int, int] | None:
    """The values an integer input may hold when a layer reads it as indices (an embedding's ids):
    the intersection over every such layer it feeds."""
    lo, hi = None, None
    for node in graph.nodes:
        if value not in node.inputs or any(v not in types for v in node.inputs):
            continue
        ranges = REGISTRY[node.op].index_range(node.a, [types[v] for v in node.inputs])
        for position, (low, high) in ranges.items():
            if node.inputs[position] == value:
                lo, hi = max(low, lo if lo is not None else low), min(high, hi if hi is not None else high)
    return (lo, hi) if lo is not None else None
