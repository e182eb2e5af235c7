"""What `dlspec build` reports: one row per node, parameter totals, size and forward MACs.

Counts come from the registry's parameter shapes (tied parameters counted once);
a test checks them against the built module.
"""
from __future__ import annotations

from ..core import dims as D
from ..core.ir import Graph
from ..core.layers import REGISTRY
from ..front.spec import Spec
from .tree import build_tree, collapsed


def node_params(graph: Graph) -> dict[str, int]:
    """Unique parameters owned by each node (a tied parameter belongs to its target)."""
    out = {}
    for node in graph.nodes:
        tied = {param for param, _, _ in node.ties}
        shapes = REGISTRY[node.op].params(node.a)
        out[node.name] = sum(D.product(s) for p, s in shapes.items() if p not in tied)
    return out


def macs_per_example(spec: Spec, sizes: dict[str, int]) -> int:
    """Forward multiply-accumulates of one example with the symbolic dims at `sizes` (the batch dim is 1)."""
    sizes = {**spec.example_sizes(), **sizes, **({spec.batch_dim: 1} if spec.batch_dim else {})}
    return sum(_node_macs(spec.graph, node, sizes) for node in spec.graph.nodes)


def _node_macs(graph: Graph, node, sizes: dict[str, int]) -> int:
    macs = REGISTRY[node.op].macs(node.a, [graph.types[v] for v in node.inputs], list(node.types))
    return D.substitute(D.normalize(macs), sizes) if macs else 0


def summarize(spec: Spec, model=None) -> dict:
    """The summary of a spec; given its built module (on any device, the meta device included), the
    parameter count is checked against the module's own."""
    graph = spec.graph
    counts = node_params(graph)
    if model is not None:
        built = sum(p.numel() for p in model.parameters())  # a tied Parameter is yielded once
        if built != sum(counts.values()):
            raise AssertionError(f"{spec.name}: the registry counts {sum(counts.values()):,} parameters, "
                                 f"the built module has {built:,}")
    sizes = spec.example_sizes()
    per_example = {**sizes, **({spec.batch_dim: 1} if spec.batch_dim else {})}
    rows, total_macs = [], 0
    for node in graph.nodes:
        macs = _node_macs(graph, node, per_example)
        total_macs += macs
        rows.append({"id": node.name, "op": node.op, "shape": ", ".join(str(t) for t in node.types),
                     "params": counts[node.name], "trainable": node.trainable, "macs": macs,
                     "tied": {param: f"{target}.{target_param}" for param, target, target_param in node.ties}})
    params = sum(counts.values())
    trainable = sum(counts[n.name] for n in graph.nodes if n.trainable)
    blocks = [_group_row(graph, group, rows[group.nodes.start:group.nodes.stop]) for group in collapsed(build_tree(graph))]
    return {
        "name": spec.name, "file": str(spec.path), "spec_hash": spec.spec_hash,
        "params": params, "trainable_params": trainable, "size_mb": round(params * 4 / 1e6, 3),
        "macs_per_example": total_macs, "flops_per_example": 2 * total_macs, "example_sizes": per_example,
        "inputs": [{"name": i.name, "shape": list(i.shape), "dtype": i.dtype} for i in spec.inputs],
        "outputs": [{"name": o.name, "shape": list(o.shape), "dtype": o.dtype} for o in spec.outputs],
        "nodes": rows,
        "blocks": blocks,
    }


def _group_row(graph: Graph, group, rows: list[dict]) -> dict:
    """The row of a collapsed group: its nodes' parameters and MACs summed, the shape it hands on."""
    if len(rows) == 1:
        return {**rows[0], "count": 1}
    frozen = sum(not r["trainable"] for r in rows)
    tied = {f"{r['id']}.{param}": target for r in rows for param, target in r["tied"].items()}
    return {"id": group.name, "op": group.label, "shape": ", ".join(str(graph.types[v]) for v in group.outputs),
            "params": sum(r["params"] for r in rows), "trainable": frozen == 0,
            "frozen": "all" if frozen == len(rows) else ("some" if frozen else "none"),
            "macs": sum(r["macs"] for r in rows), "tied": tied, "count": group.count}


def human(n: float) -> str:
    """1.18G, 512K, 64: a count to three significant digits."""
    for unit, size in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= size:
            return f"{n / size:.3g}{unit}"
    return str(int(n))


def format_summary(s: dict, max_rows: int = 400, expand: bool = False) -> str:
    """The table `dlspec build` prints: one row per block instance or repeat (`h.0–h.11  gpt_block ×12`),
    or with `expand` one per node."""
    rows = s["nodes"] if expand else s["blocks"]
    widths = [max([len("node")] + [len(r["id"]) for r in rows]), max([len("op")] + [len(r["op"]) for r in rows]),
              max([len("output shape")] + [len(r["shape"]) for r in rows])]
    head = f"{'node':<{widths[0]}}  {'op':<{widths[1]}}  {'output shape':<{widths[2]}}  {'params':>12}  {'MACs':>8}"
    lines = [f"{s['name']}  ({s['file']})", head, "-" * len(head)]
    shown = rows if len(rows) <= max_rows else rows[: max_rows // 2] + [None] + rows[-max_rows // 2:]
    for r in shown:
        if r is None:
            lines.append(f"... {len(rows) - max_rows} more rows (--json lists all) ...")
            continue
        notes = [f"{param} tied to {target}" for param, target in r["tied"].items()]
        notes += [] if r["trainable"] else ["partly frozen" if r.get("frozen") == "some" else "frozen"]
        note = f"  ({'; '.join(notes)})" if notes else ""
        lines.append(f"{r['id']:<{widths[0]}}  {r['op']:<{widths[1]}}  {r['shape']:<{widths[2]}}  {r['params']:>12,}"
                     f"  {human(r['macs']):>8}{note}")
    lines.append("-" * len(head))
    if not expand and len(s["blocks"]) < len(s["nodes"]):
        lines.append(f"{len(s['nodes'])} nodes in {len(s['blocks'])} rows: blocks and repeats collapsed (--expand shows "
                     "every node)")
    sizes = ", ".join(f"{k}={v}" for k, v in s["example_sizes"].items())
    lines += [
        "inputs:            " + "; ".join(f"{i['name']} [{', '.join(map(str, i['shape']))}] {i['dtype']}" for i in s["inputs"]),
        "outputs:           " + "; ".join(f"{o['name']} [{', '.join(map(str, o['shape']))}] {o['dtype']}" for o in s["outputs"]),
        f"parameters:        {s['params']:,}",
        f"trainable:         {s['trainable_params']:,}",
        f"size (fp32):       {s['size_mb']:.2f} MB",
        f"forward / example: {human(s['macs_per_example'])} MACs, {human(s['flops_per_example'])} FLOPs"
        + (f" (at {sizes})" if sizes else ""),
    ]
    return "\n".join(lines)
