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
    problems += _check_ranges(graph)
    if problems:
        raise DlspecError(problems)
    inputs = tuple(replace(v, range=v.range or _id_range(graph, v.name)) for v in graph.inputs)
    return replace(graph, inputs=inputs, nodes=tuple(nodes), types=types)


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


def _check_ranges(graph: Graph) -> list[Problem]:
    problems = []
    for v in graph.inputs:
        if v.range is None:
            continue
        lo, hi = v.range
        if lo >= hi:
            problems.append(Problem(f"input '{v.name}': range [{lo}, {hi}) is empty", v.loc, f"model.inputs.{v.name}.range"))
        inferred = _id_range(graph, v.name)
        if inferred and (lo < inferred[0] or hi > inferred[1]):
            problems.append(Problem(f"input '{v.name}': range [{lo}, {hi}) goes past the embedding it feeds, which has "
                                    f"{inferred[1]} entries", v.loc, f"model.inputs.{v.name}.range",
                                    expected=f"within [0, {inferred[1]})"))
    return problems


def _id_range(graph: Graph, value: str) -> tuple[int, int] | None:
    """The ids a layer fed directly by `value` accepts (an embedding's [0, num))."""
    for node in graph.nodes:
        id_range = REGISTRY[node.op].id_range
        if id_range is not None and node.inputs[:1] == (value,):
            return id_range(node.a)
    return None
