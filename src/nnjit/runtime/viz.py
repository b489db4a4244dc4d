"""Pictures of a compiled function's graph, as Graphviz DOT, at two levels:

- ops (`detail=True`): every node; each kernel is one cluster holding exactly its nodes (a fusion
  node's body, or the one op of a single-op kernel); graph inputs, constants and results sit
  outside every cluster.
- kernels (`detail=False`): one box per kernel with its ops summarized, edges labelled with the
  tensor they carry. Graphs with more than `DETAIL_MAX_NODES` nodes are drawn this way by
  default: an op-level drawing of a training step is thousands of pixels wide.

`render(dot, "svg" | "png")` runs Graphviz. The memory timeline is in `viz_memory`, the
interactive page in `viz_html`.
"""
from __future__ import annotations

import re
import shutil
import subprocess
from collections import Counter
from dataclasses import dataclass

from ..ir import Graph, NnjitError, Node, Op, Value

# Above this many drawn nodes (inputs, constants, ops inside kernels, results), the default
# picture is the kernel-level one.
DETAIL_MAX_NODES = 60

KIND_COLORS = {"loop": "#dbeafe", "reduce": "#fde68a", "gemm": "#fecaca", "conv": "#fbcfe8",
               "window": "#d9f99d", "single": "#e5e7eb"}


@dataclass(frozen=True)
class KernelGroup:
    """One kernel of the final graph: top-level node `index` (the `%k` of fusion reports), its
    template kind ("single" for an unfused op) and the nodes it computes."""

    index: int
    kind: str
    node: Node
    members: tuple[Node, ...]

    @property
    def ops_summary(self) -> str:
        """The ops in program order, repeats counted: "conv2d, add, relu" or "mul x3, add"."""
        counts = Counter(m.op.value for m in self.members if m.op != Op.CONST)
        return ", ".join(op if n == 1 else f"{op} x{n}" for op, n in counts.items())

    @property
    def where(self) -> str:
        """Every user line (and module scope) the kernel computes, in program order."""
        return "; ".join(dict.fromkeys(str(m.loc) for m in self.members if m.loc))


def kernel_groups(g: Graph) -> list[KernelGroup]:
    """The kernels of `g` as FusionReport numbers them: every top-level node but constants."""
    out = []
    for k, n in enumerate(g.nodes):
        if n.op == Op.CONST:
            continue
        if n.op == Op.FUSION:
            out.append(KernelGroup(k, n.attrs["kind"], n, tuple(n.attrs["body"].nodes)))
        else:
            out.append(KernelGroup(k, "single", n, (n,)))
    return out


def node_count(g: Graph) -> int:
    """How many boxes the op-level picture has."""
    inner = sum(len(n.attrs["body"].nodes) if n.op == Op.FUSION else 1 for n in g.nodes)
    return len(g.inputs) + inner + len(g.outputs)


def to_dot(g: Graph, detail: bool | None = None) -> str:
    """`g` as DOT: op-level with `detail=True`, kernel-level with False; None picks by size
    (op-level up to DETAIL_MAX_NODES nodes)."""
    if detail is None:
        detail = node_count(g) <= DETAIL_MAX_NODES
    return _op_dot(g) if detail else _kernel_dot(g)


# -- op level ------------------------------------------------------------------------------------

def _op_dot(g: Graph) -> str:
    lines = _header(g, "ops")
    ids: dict[Value, str] = {}
    edges: list[str] = []      # NOTE: all edges go after the clusters: an edge statement inside
    #                            a cluster pulls both of its ends into that cluster.
    _outside_nodes(g, ids, lines)
    for grp in kernel_groups(g):
        k, n = grp.index, grp.node
        lines.append(f'  subgraph cluster_k{k} {{')
        lines.append(f'    id="kernel-{k}"; label="{_esc(_group_title(grp))}"; '
                     f'style="rounded,filled"; color="#6b7280"; '
                     f'fillcolor="{KIND_COLORS.get(grp.kind, "#e5e7eb")}"; fontname=Helvetica;')
        if n.op == Op.FUSION:
            body: Graph = n.attrs["body"]
            inner: dict[Value, str] = {bv: ids[s] for bv, s in zip(body.inputs, n.srcs)}
            for j, m in enumerate(body.nodes):
                nid = f"n{k}_{j}"
                lines.append(f'    {nid} [label="{_node_label(m)}"];')
                edges += [f"  {inner[s]} -> {nid};" for s in m.srcs]
                inner.update({o: nid for o in m.outs})
            ids.update({o: inner[bo] for o, bo in zip(n.outs, body.outputs)})
        else:
            nid = f"n{k}"
            lines.append(f'    {nid} [label="{_node_label(n)}"];')
            edges += [f"  {ids[s]} -> {nid};" for s in n.srcs]
            ids.update({o: nid for o in n.outs})
        lines.append("  }")
    lines += edges
    lines += _results(g, ids, lambda v: "")
    lines.append("}")
    return "\n".join(lines)


# -- kernel level --------------------------------------------------------------------------------

def _kernel_dot(g: Graph) -> str:
    lines = _header(g, "kernels")
    ids: dict[Value, str] = {}
    _outside_nodes(g, ids, lines)
    from_kernel: set[str] = set()
    edges: list[str] = []
    for grp in kernel_groups(g):
        k, n = grp.index, grp.node
        nid = f"k{k}"
        outs = ", ".join(map(str, n.types))
        results = [str(i) for i, v in enumerate(g.outputs) if v in n.outs]
        text = [_group_title(grp), *_wrap(grp.ops_summary, 44), *_wrap(f"-> {outs}", 44)]
        if results:     # drawn in the box: one ellipse per result widens big graphs a lot
            text.append(f"= result {', '.join(results)}")
        if grp.where:
            text.append(_short_where(grp))
        lines.append(f'  {nid} [id="kernel-{k}", label="{_esc(chr(10).join(text))}", '
                     f'fillcolor="{KIND_COLORS.get(grp.kind, "#e5e7eb")}", '
                     f'style="rounded,filled"];')
        seen = set()
        for s in n.srcs:
            if s in seen:
                continue
            seen.add(s)
            label = f' [label="{s.type}"]' if ids[s] in from_kernel else ""
            edges.append(f"  {ids[s]} -> {nid}{label};")
        ids.update({o: nid for o in n.outs})
        from_kernel.add(nid)
    lines += edges
    outs = [(i, v) for i, v in enumerate(g.outputs) if ids[v] not in from_kernel]
    for i, v in outs:    # results that are inputs or constants
        lines.append(f'  out{i} [label="result {i}\\n{v.type}", shape=ellipse];')
        lines.append(f"  {ids[v]} -> out{i};")
    lines.append("}")
    return "\n".join(lines)


# -- shared pieces -------------------------------------------------------------------------------

def _header(g: Graph, level: str) -> list[str]:
    return ["digraph nnjit {",
            f'  label="@{_esc(g.name)} ({level})"; labelloc=t; fontname=Helvetica;',
            "  rankdir=TB; nodesep=0.15; ranksep=0.3;",
            "  node [shape=box, style=rounded, fontname=Helvetica, fontsize=10];",
            "  edge [fontname=Helvetica, fontsize=9, color=\"#4b5563\"];"]


def _outside_nodes(g: Graph, ids: dict[Value, str], lines: list[str]) -> None:
    """Graph inputs and top-level constants: drawn outside every kernel's cluster."""
    for i, v in enumerate(g.inputs):
        ids[v] = f"in{i}"
        lines.append(f'  in{i} [label="{_esc(v.node.attrs["name"])}\\n{v.type}", '
                     f'shape=box, style="rounded,filled", fillcolor="#f3f4f6", fontsize=9, '
                     f'margin="0.04,0.02", height=0.3];')
    for k, n in enumerate(g.nodes):
        if n.op == Op.CONST:
            ids[n.out] = f"c{k}"
            lines.append(f'  c{k} [label="const\\n{n.type}", shape=note, fontsize=9];')


def _results(g: Graph, ids: dict[Value, str], label) -> list[str]:
    out = []
    for i, v in enumerate(g.outputs):
        out.append(f'  out{i} [label="result {i}\\n{v.type}", shape=ellipse, style=filled, '
                   f'fillcolor="#dcfce7"];')
        out.append(f"  {ids[v]} -> out{i}{label(v)};")
    return out


def _group_title(grp: KernelGroup) -> str:
    return f"kernel %{grp.index}: {grp.kind}"


def _short_where(grp: KernelGroup) -> str:
    """The first user line (file name only) and module scope, e.g. "main.py:12 [0.conv]"."""
    m = next(m for m in grp.members if m.loc)
    loc = m.loc
    at = f"{loc.file.rsplit('/', 1)[-1]}:{loc.line}"
    more = len({str(x.loc) for x in grp.members if x.loc}) - 1
    return at + (f" [{loc.scope}]" if loc.scope else "") + (f" (+{more} lines)" if more else "")


def _wrap(text: str, width: int) -> list[str]:
    lines, cur = [], ""
    for word in text.split(", "):
        if cur and len(cur) + len(word) + 2 > width:
            lines.append(cur + ",")
            cur = word
        else:
            cur = f"{cur}, {word}" if cur else word
    return lines + [cur] if cur else lines


def _node_label(n: Node) -> str:
    t = ", ".join(map(str, n.types))
    loc = ""
    if n.loc:
        loc = f"\n{n.loc.file.rsplit('/', 1)[-1]}:{n.loc.line}"
        if n.loc.scope:
            loc += f" [{n.loc.scope}]"
    return _esc(f"{n.op.value}\n{t}{loc}")


def _esc(s: str) -> str:
    """A DOT string's contents: quotes and backslashes escaped, newlines as \\n."""
    return s.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


# -- Graphviz ------------------------------------------------------------------------------------

FORMATS = ("svg", "png")


def render(dot: str, fmt: str = "svg") -> bytes:
    """Run Graphviz's `dot -T<fmt>` on `dot`; a clear error says how to install it when it is
    missing."""
    if fmt not in FORMATS:
        raise NnjitError(f"cannot render {fmt!r}; formats: {', '.join(FORMATS)}")
    exe = shutil.which("dot")
    if exe is None:
        raise NnjitError(f"drawing {fmt.upper()} needs the Graphviz `dot` program, which is not "
                         "installed; install it (Debian/Ubuntu: `apt-get install graphviz`, "
                         "macOS: `brew install graphviz`) or write a .dot file instead")
    res = subprocess.run([exe, f"-T{fmt}"], input=dot.encode(), capture_output=True,
                         timeout=120)
    if res.returncode != 0:
        raise NnjitError(f"dot failed: {res.stderr.decode(errors='replace').strip()}")
    return res.stdout


def render_svg(dot: str) -> str:
    """`render(dot, "svg")` as text."""
    return render(dot, "svg").decode()


def svg_size(svg: str) -> tuple[int, int]:
    """The (width, height) in pixels that Graphviz wrote on the <svg> element (pt = px at 72
    dpi, what a browser shows at 100%)."""
    m = re.search(r'<svg[^>]*\bwidth="([\d.]+)pt"[^>]*\bheight="([\d.]+)pt"', svg)
    if not m:
        raise NnjitError("not a Graphviz SVG: no width/height in pt")
    return round(float(m.group(1)) * 96 / 72), round(float(m.group(2)) * 96 / 72)
