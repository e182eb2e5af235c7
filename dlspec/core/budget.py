"""How much memory a model needs, computed from the IR before any tensor exists, and how much there is.

A spec can ask for a 10^6 x 10^6 linear layer or a batch of 10^9: both are valid algebra, and both
would make torch try to allocate terabytes. Parameters and activations are counted from the shape
rules, and a model that cannot fit in the memory this process may use is refused with the sizes,
before the first allocation.
"""
from __future__ import annotations

import os
import resource
from pathlib import Path
from typing import Mapping

from . import dims as D
from .errors import DlspecError, Loc
from .ir import Graph
from .layers import REGISTRY

BYTES = {"float64": 8, "float32": 4, "float16": 2, "bfloat16": 2, "int64": 8, "int32": 4, "int16": 2, "int8": 1,
         "uint8": 1, "bool": 1}
PARAM_BYTES = 4  # parameters are created in fp32


def memory_limit() -> int:
    """Bytes this process may still use: the machine's memory, lowered by a cgroup limit (a container) and by
    an address-space rlimit (`ulimit -v`) less what is already mapped."""
    limits = [os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")]
    try:
        text = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        if text.isdigit():
            limits.append(int(text))
    except OSError:
        pass
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    if soft != resource.RLIM_INFINITY:
        limits.append(max(soft - _mapped(), 0))
    return min(limits)


def _mapped() -> int:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


def human(n: int | float) -> str:
    for unit, size in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{int(n)} bytes"


def parameter_bytes(graph: Graph) -> dict[str, int]:
    """Bytes of the parameters each node creates (a tied parameter is created, then replaced: counted)."""
    return {node.name: REGISTRY[node.op].param_count(node.a) * PARAM_BYTES for node in graph.nodes}


def activation_bytes(graph: Graph, sizes: Mapping[str, int]) -> dict[str, int]:
    """Bytes of each node's outputs at the given dim sizes: what a training step keeps for backward."""
    out = {}
    for node in graph.nodes:
        total = 0
        for t in node.types:
            total += D.substitute(D.normalize(D.product(t.shape)), dict(sizes)) * BYTES.get(t.dtype, 8)
        out[node.name] = total
    return out


def check_parameters(graph: Graph) -> None:
    """Refuse a model whose parameters cannot be allocated here, naming the largest layer."""
    per_node = parameter_bytes(graph)
    total, limit = sum(per_node.values()), memory_limit()
    if total <= limit:
        return
    node = next(n for n in graph.nodes if n.name == max(per_node, key=per_node.get))
    raise DlspecError.single(
        f"the model's parameters take {human(total)} ({node.name} ({node.op}) alone {human(per_node[node.name])}), "
        f"more than the {human(limit)} of memory this process can use", node.loc, expected=f"at most {human(limit)}",
        hint="summaries need no memory (`dlspec build` without --out builds on the meta device); "
             "to build it, reduce the sizes with --set")


def check_activations(graph: Graph, sizes: Mapping[str, int], where: str, loc: Loc | None = None) -> None:
    """Refuse sizes at which one forward pass's activations (plus the parameters) cannot fit here.

    `where` says which sizes these are ("the export sizes B=1000000000"), `loc` where they were set."""
    per_node = activation_bytes(graph, sizes)
    total = sum(per_node.values()) + sum(parameter_bytes(graph).values())
    limit = memory_limit()
    if total > limit:
        largest = max(per_node, key=per_node.get) if per_node else None
        node = next((n for n in graph.nodes if n.name == largest), None)
        raise DlspecError.single(
            f"at {where} one forward pass needs {human(total)} (parameters and activations; {largest} alone "
            f"outputs {human(per_node.get(largest, 0))}), more than the {human(limit)} of memory this process can use",
            loc or (node.loc if node else None), expected=f"at most {human(limit)}", hint="use smaller sizes")
