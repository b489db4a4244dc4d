"""Pictures of a compiled function: the graph as Graphviz DOT (fused groups as clusters) and the
memory plan as an SVG timeline (buffers as boxes: time across, arena offset down)."""
from __future__ import annotations

import html
import shutil
import subprocess

from ..codegen.memory_plan import MemoryPlan
from ..ir import Graph, NnjitError, Op

_KIND_COLORS = {"loop": "#dbeafe", "reduce": "#fde68a", "gemm": "#fecaca", "conv": "#fbcfe8",
                "window": "#d9f99d"}


def to_dot(g: Graph) -> str:
    """`g` as DOT: one box per node, fusion nodes as clusters of their bodies."""
    lines = ["digraph nnjit {", "  rankdir=TB;", "  node [shape=box, style=rounded, "
             "fontname=Helvetica, fontsize=10];"]
    ids: dict = {}

    def node_id(v) -> str:
        return ids[v]

    for i, v in enumerate(g.inputs):
        ids[v] = f"in{i}"
        lines.append(f'  in{i} [label="{_esc(v.node.attrs["name"])}\\n{v.type}", '
                     f'shape=ellipse];')
    for k, n in enumerate(g.nodes):
        if n.op == Op.FUSION:
            body: Graph = n.attrs["body"]
            kind = n.attrs["kind"]
            lines.append(f"  subgraph cluster_{k} {{")
            lines.append(f'    label="kernel {k}: {kind}"; style=filled; '
                         f'color="{_KIND_COLORS.get(kind, "#e5e7eb")}";')
            inner: dict = {}
            for bi, (bv, src) in enumerate(zip(body.inputs, n.srcs)):
                inner[bv] = node_id(src)
            for j, m in enumerate(body.nodes):
                nid = f"n{k}_{j}"
                lines.append(f'    {nid} [label="{_label(m)}"];')
                for s in m.srcs:
                    if s in inner:
                        lines.append(f"    {inner[s]} -> {nid};")
                inner.update({o: nid for o in m.outs})
            lines.append("  }")
            for o, bo in zip(n.outs, body.outputs):
                ids[o] = inner[bo]
        else:
            nid = f"n{k}"
            lines.append(f'  {nid} [label="{_label(n)}"];')
            for s in n.srcs:
                lines.append(f"  {node_id(s)} -> {nid};")
            ids.update({o: nid for o in n.outs})
    for i, v in enumerate(g.outputs):
        lines.append(f'  out{i} [label="result {i}\\n{v.type}", shape=ellipse];')
        lines.append(f"  {node_id(v)} -> out{i};")
    lines.append("}")
    return "\n".join(lines)


def _label(n) -> str:
    t = ", ".join(map(str, n.types))
    loc = f"\\n{n.loc.file.rsplit('/', 1)[-1]}:{n.loc.line}" if n.loc else ""
    return _esc(f"{n.op.value}\\n{t}") + _esc(loc)


def _esc(s: str) -> str:
    return s.replace('"', '\\"')


def render_svg(dot: str) -> str:
    """Run Graphviz's `dot` on `dot`; a clear error says how to install it when missing."""
    exe = shutil.which("dot")
    if exe is None:
        raise NnjitError("the Graphviz `dot` program is not installed; install it (Debian/Ubuntu:"
                         " `apt-get install graphviz`, macOS: `brew install graphviz`) or view "
                         "the .dot file with any Graphviz viewer")
    res = subprocess.run([exe, "-Tsvg"], input=dot, capture_output=True, text=True, timeout=60)
    if res.returncode != 0:
        raise NnjitError(f"dot failed: {res.stderr.strip()}")
    return res.stdout


def memory_svg(plan: MemoryPlan, title: str = "memory plan") -> str:
    """The memory plan as an SVG picture: each buffer a box spanning its live kernels
    (x) at its arena offset (y); the liveness lower bound is a dashed line."""
    w, h, left, top = 900, 480, 70, 40
    steps = max(plan.num_kernels, 1)
    arena = max(plan.arena_bytes, 1)
    sx = (w - left - 20) / steps
    sy = (h - top - 40) / arena
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" '
           f'font-family="Helvetica" font-size="11">',
           f'<text x="{left}" y="20" font-size="14">{html.escape(title)}: arena '
           f'{_kib(plan.arena_bytes)}, lower bound {_kib(plan.lower_bound_bytes)}, no reuse '
           f'{_kib(plan.no_reuse_bytes)}</text>',
           f'<rect x="{left}" y="{top}" width="{w - left - 20}" height="{h - top - 40}" '
           f'fill="none" stroke="#999"/>']
    palette = ["#60a5fa", "#f87171", "#34d399", "#fbbf24", "#a78bfa", "#f472b6", "#22d3ee"]
    for i, b in enumerate(sorted(plan.buffers, key=lambda b: b.start)):
        x = left + b.start * sx
        y = top + b.offset * sy
        bw = max((b.end - b.start + 1) * sx - 1, 1)
        bh = max(b.nbytes * sy, 1)
        out.append(f'<rect x="{x:.1f}" y="{y:.1f}" width="{bw:.1f}" height="{bh:.1f}" '
                   f'fill="{palette[i % len(palette)]}" fill-opacity="0.7" stroke="#333" '
                   f'stroke-width="0.5"><title>{html.escape(b.name)}: {b.nbytes} B, kernels '
                   f'{b.start}..{b.end}, offset {b.offset}</title></rect>')
    lb = top + plan.lower_bound_bytes * sy
    out.append(f'<line x1="{left}" y1="{lb:.1f}" x2="{w - 20}" y2="{lb:.1f}" stroke="#000" '
               f'stroke-dasharray="4 3"/>')
    out.append(f'<text x="{left}" y="{h - 15}">kernel (time) &#8594;</text>')
    out.append(f'<text x="5" y="{top + 12}">offset 0</text>')
    out.append(f'<text x="5" y="{h - 42}">{_kib(plan.arena_bytes)}</text>')
    out.append("</svg>")
    return "\n".join(out)


def _kib(n: int) -> str:
    return f"{n / 1024:.1f} KiB" if n < 1 << 20 else f"{n / (1 << 20):.2f} MiB"
