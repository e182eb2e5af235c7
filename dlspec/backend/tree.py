"""The module tree the generated code follows: the model and each block instance are scopes.

A scope's direct items are the nodes and block instances whose innermost enclosing instance it is, in
program order. Copies of a repeated node or block (`h.0`, `h.1`, ...) sit in a container, an
nn.ModuleList named after the item (`h`). Names say where a thing is: a node or instance named
`a.b.c` is a direct item of the longest instance name that prefixes it, so ids may be any module name
(digits included) without ambiguity.
"""
from __future__ import annotations

import keyword
from dataclasses import dataclass

from ..core.ir import Graph, Instance, Node
from ..core.layers import REGISTRY

Item = Node | Instance


@dataclass(frozen=True)
class Tree:
    graph: Graph
    instances: dict[str, Instance]
    parent: dict[str, str]  # node or instance name -> the scope it is a direct item of ("" is the model)
    items: dict[str, tuple[Item, ...]]  # scope -> its direct items, in program order
    containers: dict[str, int]  # module path of each repeat container -> number of copies
    sequential: frozenset[str]  # scopes whose modules are all named 0, 1, ..: nn.Sequential, reached by index

    def relative(self, name: str, scope: str) -> str:
        return _relative(name, scope)

    def accessor(self, path: str, scope: str, base: str = "self") -> str:
        """Python that reaches the module at `path` from the module of `scope`: `self.h[0].attn`."""
        if path == scope:
            return base
        out, walked = base, scope
        for part in self.relative(path, scope).split("."):
            if walked in self.containers or walked in self.sequential:
                out += f"[{part}]"
            else:
                out = f"{out}.{part}" if is_attribute(part) else f"getattr({out}, {part!r})"
            walked = f"{walked}.{part}" if walked else part
        return out

    def has_module(self, item: Item) -> bool:
        return _has_module(item)

    def owner_init(self, name: str) -> tuple:
        """The init schemes in force around a node or instance (those of its scope)."""
        scope = self.parent[name]
        return self.instances[scope].init if scope else self.graph.init


def _relative(name: str, scope: str) -> str:
    return name[len(scope) + 1:] if scope else name


def _has_module(item: Item) -> bool:
    return isinstance(item, Instance) or REGISTRY[item.op].construct is not None


def is_attribute(name: str) -> bool:
    """Whether `self.<name>` is valid Python (ids like `0` are reached another way)."""
    return name.isidentifier() and name.isascii() and not keyword.iskeyword(name)


def build_tree(graph: Graph) -> Tree:
    instances = {inst.name: inst for inst in graph.instances}

    def scope_of(name: str) -> str:
        parts = name.split(".")
        for end in range(len(parts) - 1, 0, -1):
            prefix = ".".join(parts[:end])
            if prefix in instances:
                return prefix
        return ""

    parent = {n.name: scope_of(n.name) for n in graph.nodes}
    parent.update({i.name: scope_of(i.name) for i in graph.instances})
    # program order: an instance sits where its body starts (before the node at that index), outer first
    keyed: list[tuple[tuple, Item]] = [((i, 1, 0), n) for i, n in enumerate(graph.nodes)]
    keyed += [((inst.nodes.start, 0, k), inst) for k, inst in enumerate(graph.instances)]
    items: dict[str, list[Item]] = {"": [], **{name: [] for name in instances}}
    for _, item in sorted(keyed, key=lambda pair: pair[0]):
        items[parent[item.name]].append(item)
    containers: dict[str, int] = {}
    sequential = set()
    for scope, members in items.items():
        names = [_relative(m.name, scope) for m in members if _has_module(m)]
        for name in names:  # a copy `h.3` (an id has no dot): its container is `h`
            base, dot, index = name.rpartition(".")
            if dot and index.isdigit():  # (a draft of a failed block leaves its nodes, `h.0.ln_1`, at the top)
                path = f"{scope}.{base}" if scope else base
                containers[path] = max(containers.get(path, 0), int(index) + 1)
        if names and names == [str(k) for k in range(len(names))]:
            sequential.add(scope)
    return Tree(graph, instances, parent, {k: tuple(v) for k, v in items.items()}, containers, frozenset(sequential))


@dataclass(frozen=True)
class Group:
    """One item of a collapsed view of a scope: a node, a block instance, or the copies of a repeat."""

    name: str  # "wte", "h.0", or "h.0–h.11" for the copies of a repeat
    op: str  # the layer kind or block name
    count: int  # copies (1 unless repeated)
    nodes: range  # indices in graph.nodes of every node inside it
    outputs: tuple[str, ...]  # the values it hands on (its last copy's)

    @property
    def label(self) -> str:
        """`gpt_block ×12`, or the op alone."""
        return f"{self.op} ×{self.count}" if self.count > 1 else self.op


def collapsed(tree: Tree, scope: str = "") -> list[Group]:
    """The direct items of `scope`, each block instance one group, the copies of a repeat one group."""
    index = {n.name: i for i, n in enumerate(tree.graph.nodes)}
    groups: list[Group] = []
    container = None
    for item in tree.items[scope]:
        base, dot, _ = _relative(item.name, scope).rpartition(".")
        path = (f"{scope}.{base}" if scope else base) if dot else None
        nodes = item.nodes if isinstance(item, Instance) else range(index[item.name], index[item.name] + 1)
        op = item.block if isinstance(item, Instance) else item.op
        if path is not None and path == container and groups[-1].op == op:
            last = groups[-1]
            first_name = last.name.split("–")[0]
            groups[-1] = Group(f"{first_name}–{item.name}", op, last.count + 1, range(last.nodes.start, nodes.stop),
                               item.outputs)
        else:
            groups.append(Group(item.name, op, 1, nodes, item.outputs))
        container = path if path in tree.containers else None
    return groups
