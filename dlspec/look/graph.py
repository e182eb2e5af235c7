"""`dlspec graph SPEC`: a picture of the model, from its IR.

One box per node (or, collapsed, per block instance and per repeat: `h.0–h.11  gpt_block ×12`), edges
labelled with the shapes they carry, and the edges that skip ahead (residual and skip connections) in
their own colour. A spec that does not load is drawn as far as the front end gets, its bad nodes marked.

`Picture` is what to draw; `dot_source` writes it for Graphviz, and `draw_fallback` draws it with
matplotlib (one column in program order, skip edges as arcs beside it) where `dot` is not installed.
"""
from __future__ import annotations

import html
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from dlspec.backend.summary import human, node_params
from dlspec.backend.tree import build_tree, collapsed
from dlspec.core.errors import DlspecError, Problem
from dlspec.core.files import atomic_write_bytes
from dlspec.core.ir import Graph, Instance
from dlspec.train.curves import figure_bytes

FORMATS = ("svg", "png", "pdf", "dot")
DOT_TIMEOUT_S = 120
MAX_BOXES = 1500  # drawn; the .dot source has no limit
MAX_PIXELS = 60_000  # the tallest PNG matplotlib writes is 2**16 pixels
SKIP_COLOR = "#1565c0"
BAD_COLOR = "#c62828"


@dataclass(frozen=True)
class Box:
    key: str  # unique among the boxes
    title: str  # the node id (or group name, or input/output name)
    text: str  # the op, the block and its count, or a tensor's type
    kind: str  # input, node, block, output, error, or missing (after a failed node: no shapes)
    problem: str = ""  # what is wrong with it


@dataclass(frozen=True)
class Edge:
    src: str
    dst: str
    label: str  # the shape it carries
    skip: bool  # it passes over boxes in program order: a residual or skip connection


@dataclass(frozen=True)
class Cluster:
    """A block instance drawn expanded: its boxes, inside its parent's."""
    name: str
    label: str
    boxes: tuple[str, ...]
    parent: str | None


@dataclass(frozen=True)
class Picture:
    title: str
    boxes: tuple[Box, ...]
    edges: tuple[Edge, ...]
    clusters: tuple[Cluster, ...] = field(default=())


def picture(graph: Graph | None, problems: list[Problem], title: str, expand: bool = False) -> Picture:
    """What to draw for `graph` (None: the document itself was refused): every node, or each top-level item."""
    if graph is None:
        boxes = tuple(Box(f"error:{i}", str(p.loc or "spec"), p.message, "error", p.message)
                      for i, p in enumerate(problems))
        return Picture(title, boxes, ())
    bad = {p.path: p.message for p in problems if p.path}
    params = node_params(graph)
    units = _units(graph, expand)  # (key, title, text, node indices)
    owner = {v.name: f"in:{v.name}" for v in graph.inputs}
    for key, _, _, nodes in units:
        for i in nodes:
            owner.update((value, key) for value in graph.nodes[i].outputs)
    boxes = [Box(f"in:{v.name}", v.name, f"{v.type} {v.type.dtype}", "input") for v in graph.inputs]
    for key, name, text, nodes in units:
        members = [graph.nodes[i] for i in nodes]
        problem = next((bad[n.name] for n in members if n.name in bad), "")
        count = sum(params[n.name] for n in members)
        kind = "node" if len(members) == 1 and key == members[0].name else "block"
        if not problem and any(not n.types for n in members):
            kind = "missing"
        boxes.append(Box(key, name, text + (f" · {human(count)} params" if count else ""), kind, problem))
    boxes += [Box(f"out:{name}", name, str(graph.types[value]) if value in graph.types else "?", "output")
              for name, value in graph.outputs]
    order = {b.key: i for i, b in enumerate(boxes)}
    edges: dict[tuple[str, str, str], Edge] = {}
    consumers = [(key, graph.nodes[i].inputs) for key, _, _, nodes in units for i in nodes]
    consumers += [(f"out:{name}", (value,)) for name, value in graph.outputs]
    for key, values in consumers:
        for value in values:
            src = owner.get(value)
            if src is None or src == key:
                continue
            label = str(graph.types[value]) if value in graph.types else ""
            edges[(src, key, value)] = Edge(src, key, label, _skips(len(graph.inputs), len(graph.inputs) + len(units),
                                                                    order[src], order[key]))
    matched = {b.problem for b in boxes}
    boxes += [Box(f"error:{i}", str(p.loc or "spec"), p.message, "error", p.message)
              for i, p in enumerate(problems) if p.message not in matched]
    return Picture(title, tuple(boxes), tuple(dict.fromkeys(edges.values())), _clusters(graph) if expand else ())


def _units(graph: Graph, expand: bool) -> list[tuple[str, str, str, range]]:
    """The boxes between inputs and outputs: every node, or each collapsed group of the top level."""
    if expand:
        return [(n.name, n.name, n.op, range(i, i + 1)) for i, n in enumerate(graph.nodes)]
    return [(g.name, g.name, g.label, g.nodes) for g in collapsed(build_tree(graph))]


def _skips(start: int, stop: int, src: int, dst: int) -> bool:
    """Whether an edge passes over layers: boxes `start..stop-1` (between the inputs and the outputs) lying
    strictly between its ends in program order."""
    return min(dst, stop) - max(src + 1, start) > 0


def _clusters(graph: Graph) -> tuple[Cluster, ...]:
    names = {inst.name for inst in graph.instances}

    def parent(inst: Instance) -> str | None:
        parts = inst.name.split(".")
        return next((".".join(parts[:end]) for end in range(len(parts) - 1, 0, -1) if ".".join(parts[:end]) in names),
                    None)

    out = []
    for inst in graph.instances:
        inner = {i.name for i in graph.instances if i.name.startswith(inst.name + ".")}
        own = tuple(graph.nodes[i].name for i in inst.nodes
                    if not any(graph.nodes[i].name.startswith(name + ".") for name in inner))
        out.append(Cluster(inst.name, f"{inst.name}: {inst.block}", own, parent(inst)))
    return tuple(out)


# ---- Graphviz -----------------------------------------------------------------------------------------------

_STYLE = {
    "input": 'shape=oval, fillcolor="#e3f2e5", color="#3c8d40"',
    "output": 'shape=oval, fillcolor="#fff3d6", color="#b7791f"',
    "node": 'fillcolor="#eef3fb", color="#4a6fa5"',
    "block": 'fillcolor="#dde7f7", color="#2f4f86", penwidth=1.6',
    "missing": 'fillcolor="#f2f2f2", color="#9e9e9e", fontcolor="#777777"',
    "error": f'shape=note, fillcolor="#fde0dc", color="{BAD_COLOR}", penwidth=2',
}


def dot_source(pic: Picture) -> str:
    """The picture in Graphviz's language: top to bottom, blocks as nested clusters when expanded."""
    lines = ["digraph model {",
             f'  graph [rankdir=TB, labelloc=t, fontname="Helvetica", fontsize=14, nodesep=0.35, ranksep=0.4, '
             f'label={_quote(pic.title)}];',
             '  node [shape=box, style="rounded,filled", fontname="Helvetica", fontsize=11, margin="0.15,0.06"];',
             '  edge [fontname="Helvetica", fontsize=9, color="#555555", fontcolor="#333333", arrowsize=0.7];']
    clustered = {key for c in pic.clusters for key in c.boxes}
    for box in pic.boxes:
        if box.key not in clustered:
            lines.append("  " + _dot_box(box))
    by_key = {b.key: b for b in pic.boxes}

    def cluster(c: Cluster, indent: str) -> None:
        lines.append(f"{indent}subgraph {_quote('cluster_' + c.name)} {{")
        lines.append(f'{indent}  label={_quote(c.label)}; labeljust=l; style="rounded,dashed"; color="#8fa6c8"; '
                     'fontsize=10;')
        lines.extend(f"{indent}  {_dot_box(by_key[key])}" for key in c.boxes if key in by_key)
        for child in pic.clusters:
            if child.parent == c.name:
                cluster(child, indent + "  ")
        lines.append(f"{indent}}}")

    for c in pic.clusters:
        if c.parent is None:
            cluster(c, "  ")
    for e in pic.edges:
        style = f', color="{SKIP_COLOR}", fontcolor="{SKIP_COLOR}", penwidth=1.6' if e.skip else ""
        lines.append(f"  {_quote(e.src)} -> {_quote(e.dst)} [label={_quote(e.label)}{style}];")
    lines.append("}")
    return "\n".join(lines) + "\n"


def _dot_box(box: Box) -> str:
    """A box: its id in bold over its op (or type), and what is wrong with it, in red."""
    style = _STYLE["error"] if box.problem else _STYLE[box.kind]
    lines = [f"<b>{_html(box.title)}</b>", *(_html(line) for line in _wrap(box.text).split("\n"))]
    if box.problem and box.kind != "error":
        lines += [f'<font color="{BAD_COLOR}">{_html(line)}</font>' for line in _wrap("✗ " + box.problem).split("\n")]
    return f"{_quote(box.key)} [label=<{'<br/>'.join(lines)}>, {style}];"


def _html(text: str) -> str:
    return html.escape(text, quote=True)


def _wrap(text: str, width: int = 48) -> str:
    words, lines, line = text.split(), [], ""
    for word in words:
        if line and len(line) + len(word) + 1 > width:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}".strip()
    return "\n".join(lines + [line])


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def dot_program() -> str | None:
    return shutil.which("dot")


def render_dot(source: str, fmt: str, program: str) -> bytes:
    try:
        done = subprocess.run([program, f"-T{fmt}"], input=source.encode(), capture_output=True, timeout=DOT_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise DlspecError.single(f"Graphviz dot took more than {DOT_TIMEOUT_S} s", hint="draw it collapsed (without "
                                 "--expand), or write the .dot source and render it yourself") from None
    if done.returncode != 0:
        raise DlspecError.single(f"Graphviz dot failed: {done.stderr.decode(errors='replace').strip()[:300]}",
                                 hint="write the .dot source (--out model.dot) to see what it was given")
    return done.stdout


# ---- matplotlib, where dot is not installed -----------------------------------------------------------------

_FILL = {"input": ("#e3f2e5", "#3c8d40"), "output": ("#fff3d6", "#b7791f"), "node": ("#eef3fb", "#4a6fa5"),
         "block": ("#dde7f7", "#2f4f86"), "missing": ("#f2f2f2", "#9e9e9e"), "error": ("#fde0dc", BAD_COLOR)}
_ROW = 0.62  # inches per box
_BOX_W, _BOX_H = 3.3, 0.46  # inches


def draw_fallback(pic: Picture, fmt: str) -> bytes:
    """One column of boxes in program order; an edge to the next box is a short arrow, one that skips ahead an
    arc on the right (nested by length), labelled with its shape; expanded blocks are frames on the left."""
    from matplotlib.figure import Figure
    from matplotlib.patches import FancyArrowPatch, FancyBboxPatch, Rectangle

    rows = {b.key: i for i, b in enumerate(pic.boxes)}
    depth = {c.name: _depth(c, pic.clusters) for c in pic.clusters}
    indent = 0.22 * (max(depth.values(), default=-1) + 1)
    skips = sorted((e for e in pic.edges if e.skip or rows[e.dst] - rows[e.src] != 1),
                   key=lambda e: rows[e.dst] - rows[e.src])
    lanes = _lanes(skips, rows)
    width = indent + _BOX_W + 0.5 + 0.42 * (max(lanes.values(), default=-1) + 1) + 2.2
    height = _ROW * len(pic.boxes) + 1.0
    fig = Figure(figsize=(width, height))
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_xlim(0, width)
    ax.set_ylim(height, 0)
    ax.axis("off")
    ax.text(0.15, 0.35, pic.title, fontsize=12, va="center", weight="bold")
    x0 = indent + 0.15

    def y(key: str) -> float:
        return 0.85 + _ROW * rows[key] + _BOX_H / 2

    for c in pic.clusters:  # frames behind the boxes
        inside = [rows[k] for k in _all_boxes(c, pic.clusters) if k in rows]
        if inside:
            left = 0.15 + 0.22 * depth[c.name]
            top, bottom = 0.85 + _ROW * min(inside) - 0.08, 0.85 + _ROW * max(inside) + _BOX_H + 0.08
            ax.add_patch(Rectangle((left, top), x0 + _BOX_W + 0.08 - left, bottom - top, fill=False, ls="--", lw=0.8,
                                   ec="#8fa6c8"))
            ax.text(left + 0.02, top + 0.06, c.label, fontsize=6.5, color="#50688f", va="top", ha="right", rotation=90,
                    rotation_mode="anchor")
    for box in pic.boxes:
        fill, edge = _FILL["error" if box.problem else box.kind]
        top = 0.85 + _ROW * rows[box.key]
        ax.add_patch(FancyBboxPatch((x0, top), _BOX_W, _BOX_H, boxstyle="round,pad=0,rounding_size=0.08", fc=fill,
                                    ec=edge, lw=2 if box.problem else 1))
        ax.text(x0 + 0.1, top + _BOX_H / 2, box.title, fontsize=8.5, weight="bold", va="center",
                color="#777777" if box.kind == "missing" else "black")
        ax.text(x0 + _BOX_W - 0.1, top + _BOX_H / 2, _shorten(box.text, 34), fontsize=7.5, va="center", ha="right",
                color="#444444")
        if box.problem and box.kind != "error":
            ax.text(x0 + _BOX_W + 0.15, top + _BOX_H / 2, "✗ " + _shorten(box.problem, 90), fontsize=7.5,
                    color=BAD_COLOR, va="center")
    right = x0 + _BOX_W
    for e in pic.edges:
        if e in lanes:
            continue
        top, bottom = y(e.src) + _BOX_H / 2, y(e.dst) - _BOX_H / 2
        ax.add_patch(FancyArrowPatch((x0 + _BOX_W / 2, top), (x0 + _BOX_W / 2, bottom), arrowstyle="-|>",
                                     mutation_scale=8, color="#555555", lw=0.9))
        ax.text(x0 + _BOX_W / 2 + 0.08, (top + bottom) / 2, e.label, fontsize=6.5, color="#333333", va="center")
    for e, lane in lanes.items():
        out = right + 0.3 + 0.42 * lane
        color = SKIP_COLOR if e.skip else "#555555"
        ys, yd = y(e.src), y(e.dst)
        ax.plot([right, out, out, right + 0.06], [ys, ys, yd, yd], color=color, lw=1.2)
        ax.add_patch(FancyArrowPatch((right + 0.08, yd), (right, yd), arrowstyle="-|>", mutation_scale=8, color=color,
                                     lw=1.2))
        ax.text(out + 0.05, (ys + yd) / 2, e.label, fontsize=6.5, color=color, va="center", rotation=90)
    return figure_bytes(fig, fmt, dpi=min(110, MAX_PIXELS / height))


def _lanes(edges: list[Edge], rows: dict[str, int]) -> dict[Edge, int]:
    """A lane per long edge, the shortest innermost, reusing a lane where the rows do not overlap."""
    taken: list[list[tuple[int, int]]] = []
    lanes = {}
    for e in edges:
        span = (min(rows[e.src], rows[e.dst]), max(rows[e.src], rows[e.dst]))
        lane = next((i for i, used in enumerate(taken) if all(span[1] < a or span[0] > b for a, b in used)), len(taken))
        if lane == len(taken):
            taken.append([])
        taken[lane].append(span)
        lanes[e] = lane
    return lanes


def _depth(c: Cluster, clusters: tuple[Cluster, ...]) -> int:
    by_name = {x.name: x for x in clusters}
    depth = 0
    while c.parent is not None:
        c, depth = by_name[c.parent], depth + 1
    return depth


def _all_boxes(c: Cluster, clusters: tuple[Cluster, ...]) -> list[str]:
    return list(c.boxes) + [k for child in clusters if child.parent == c.name for k in _all_boxes(child, clusters)]


def _shorten(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit - 1] + "…"


# ---- the command --------------------------------------------------------------------------------------------

def add_arguments(p) -> None:
    p.add_argument("spec", metavar="SPEC")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a value by its dotted path, e.g. model.vars.layers=2 (repeatable)")
    p.add_argument("--out", metavar="FILE", help="the picture: .svg, .png, .pdf, or .dot for Graphviz's source "
                                                  "(default: NAME.svg)")
    p.add_argument("--expand", action="store_true", help="draw every node, blocks as frames (default: one box per "
                                                          "block instance and per repeat)")


def run(args) -> int:
    from dlspec.front.spec import draft, load
    try:
        spec = load(args.spec, args.overrides)
        graph, problems, name = spec.graph, [], spec.name
    except DlspecError as exc:
        if exc.usage:
            raise
        graph, _ = draft(args.spec, args.overrides)
        problems, name = list(exc.problems), graph.name if graph is not None else Path(args.spec).stem
    out = Path(args.out or f"{name}.svg")
    fmt = out.suffix.lstrip(".").lower()
    if fmt not in FORMATS:
        raise DlspecError.single(f"cannot draw {out}: unknown picture format '{out.suffix}'", usage=True,
                                 expected=", ".join(f".{f}" for f in FORMATS))
    title = f"{name}  ({args.spec})" + (f" — {len(problems)} problem{'s' * (len(problems) != 1)}" if problems else "")
    pic = picture(graph, problems, title, args.expand)
    if fmt != "dot" and len(pic.boxes) > MAX_BOXES:
        raise DlspecError.single(f"{len(pic.boxes):,} boxes are too many to draw (at most {MAX_BOXES:,})", usage=True,
                                 hint="draw it collapsed (without --expand), or write Graphviz's source: --out model.dot")
    source, program = dot_source(pic), dot_program()
    if fmt == "dot":
        atomic_write_bytes(out, source.encode())
        how = "Graphviz source"
    elif program:
        atomic_write_bytes(out, render_dot(source, fmt, program))
        how = "Graphviz dot"
    else:
        atomic_write_bytes(out, draw_fallback(pic, fmt))
        how = "matplotlib (Graphviz dot is not installed)"
    units = sum(b.kind not in ("input", "output", "error") for b in pic.boxes)
    print(f"wrote {out}: {units} {'nodes' if args.expand else 'boxes'}, {sum(e.skip for e in pic.edges)} skip "
          f"connections ({how})")
    if problems:
        raise DlspecError(problems)  # drawn up to them; the command still fails
    return 0
