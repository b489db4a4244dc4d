"""One self-contained interactive page for a compiled function: the graph picture (Graphviz SVG,
inline) with pan and zoom, a list of the kernels, and for the kernel clicked its graph IR, its
kernel IR and, when a profile is given, its measured time. No network: the styles, the script
and the data are in the file.

    >>> open("step.html", "w").write(cf.to_html(profile=cf.profile(*args)))

`step.html#kernel-3` opens with kernel %3 selected.
"""
from __future__ import annotations

import html
import json
import re

from ..codegen.lower import kernel_origins
from ..ir import Graph
from ..ir.kernel import print_kernel
from .viz import KIND_COLORS, kernel_groups, render_svg, to_dot


def node_texts(g: Graph) -> list[str]:
    """The IR text of each top-level node of `g`, as `print(g)` shows it (a fusion node with its
    body), in node order."""
    text = str(g)
    body = text.split("\n", 1)[1].rsplit("\n  return ", 1)[0]
    chunks = re.split(r"\n(?=  %)", "\n" + body)[1:]
    if len(chunks) != len(g.nodes):     # NOTE: the printer puts each node at indent 2
        raise AssertionError(f"{len(chunks)} node texts for {len(g.nodes)} nodes")
    return [c[2:].replace("\n  ", "\n") for c in chunks]


def page_data(cf, profile=None) -> dict:
    """What the page shows, as JSON-able data: one entry per kernel of the final graph."""
    g = cf.graph
    program = cf.lowered().program
    origins = kernel_origins(g)
    by_node: dict[int, list] = {}
    for k in program.kernels:
        if k.name in origins:
            by_node.setdefault(origins[k.name], []).append(k)
    times = {t.name: t for t in profile.kernels} if profile is not None else {}
    total = sum(t.seconds for t in times.values()) or 1.0
    texts = node_texts(g)
    kernels = []
    for grp in kernel_groups(g):
        ks = by_node.get(grp.index, [])
        timing = [{"name": k.name, "ms": times[k.name].seconds * 1e3,
                   "share": times[k.name].seconds / total, "gbs": times[k.name].gbs,
                   "gflops": times[k.name].gflops} for k in ks if k.name in times]
        kernels.append({"index": grp.index, "kind": grp.kind, "ops": grp.ops_summary,
                        "where": grp.where, "types": ", ".join(map(str, grp.node.types)),
                        "graph_ir": texts[grp.index],
                        "kernel_ir": "\n".join(print_kernel(k) for k in ks) or
                                     "(no kernel of its own: an alias of its operand)",
                        "program_kernels": [k.name for k in ks], "timing": timing})
    return {"function": g.name, "backend": cf.options.backend, "kernels": kernels,
            "profiled": profile is not None,
            "call_ms": profile.call_seconds * 1e3 if profile is not None else None,
            "colors": KIND_COLORS}


def to_html(cf, profile=None, detail: bool | None = None) -> str:
    """The page for `cf` (needs Graphviz's `dot` for the picture)."""
    svg = render_svg(to_dot(cf.graph, detail))
    svg = svg[svg.index("<svg"):]                     # drop the XML prolog and doctype
    data = json.dumps(page_data(cf, profile)).replace("</", "<\\/")
    title = html.escape(f"nnjit: @{cf.graph.name}")
    return _PAGE.format(title=title, svg=svg, data=data, style=_STYLE, script=_SCRIPT)


_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>{style}</style></head>
<body>
<main id="view"><div id="tools"><button id="zoom-in" title="zoom in">+</button>
<button id="zoom-out" title="zoom out">&#8722;</button><button id="fit">fit</button>
<span class="hint">drag to pan, wheel to zoom, click a kernel</span></div>
<div id="graph">{svg}</div></main>
<aside id="panel"><h1>{title}</h1><p id="summary"></p>
<ul id="kernel-list"></ul><section id="details"><p class="hint">Click a kernel (here or in
the picture) to see its graph IR, kernel IR and timing.</p></section></aside>
<script type="application/json" id="nnjit-data">{data}</script>
<script>{script}</script>
</body></html>
"""

_STYLE = """
body { margin: 0; display: flex; height: 100vh; font: 13px Helvetica, Arial, sans-serif;
       color: #111827; }
#view { flex: 1 1 60%; position: relative; overflow: hidden; background: #ffffff; }
#graph { width: 100%; height: 100%; cursor: grab; }
#graph svg { width: 100%; height: 100%; }
#tools { position: absolute; bottom: 8px; left: 8px; z-index: 2; background: #f9fafbdd;
         padding: 4px; border-radius: 4px; }
#panel { flex: 0 0 40%; max-width: 560px; overflow: auto; border-left: 1px solid #d1d5db;
         padding: 0 12px; background: #f9fafb; }
h1 { font-size: 16px; } h2 { font-size: 14px; margin: 12px 0 4px; }
.hint { color: #6b7280; }
#kernel-list { list-style: none; padding: 0; margin: 0; }
.kernel { padding: 3px 6px; margin: 2px 0; border-radius: 3px; cursor: pointer;
          border-left: 6px solid #9ca3af; background: #ffffff; }
.kernel:hover { background: #eef2ff; } .kernel.selected { background: #c7d2fe; }
.kernel .ms { float: right; color: #374151; }
pre { background: #ffffff; border: 1px solid #e5e7eb; padding: 6px; overflow: auto;
      font: 11px Menlo, Consolas, monospace; max-height: 320px; }
table { border-collapse: collapse; } td, th { padding: 2px 6px; text-align: right; }
#graph .selected polygon, #graph .selected path { stroke: #dc2626; stroke-width: 3px; }
#graph g.node, #graph g.cluster { cursor: pointer; }
"""

_SCRIPT = r"""
(function () {
  "use strict";
  const data = JSON.parse(document.getElementById("nnjit-data").textContent);
  const svg = document.querySelector("#graph svg");
  const list = document.getElementById("kernel-list");
  const details = document.getElementById("details");
  const byIndex = new Map(data.kernels.map(k => [k.index, k]));
  document.getElementById("summary").textContent =
    data.kernels.length + " kernels, backend " + data.backend +
    (data.profiled ? ", " + data.call_ms.toFixed(3) + " ms a call" : ", not profiled");

  function el(tag, text, cls) {
    const e = document.createElement(tag);
    if (text !== undefined) e.textContent = text;
    if (cls) e.className = cls;
    return e;
  }
  function kernelMs(k) { return k.timing.reduce((s, t) => s + t.ms, 0); }

  for (const k of data.kernels) {
    const li = el("li", "%" + k.index + " " + k.kind + ": " + k.ops, "kernel");
    li.dataset.kernel = k.index;
    li.style.borderLeftColor = data.colors[k.kind] ? "#6b7280" : "#9ca3af";
    li.style.background = data.colors[k.kind] || "#ffffff";
    if (data.profiled && k.timing.length) {
      li.prepend(el("span", kernelMs(k).toFixed(4) + " ms", "ms"));
    }
    li.addEventListener("click", () => select(k.index));
    list.appendChild(li);
  }

  function select(index) {
    const k = byIndex.get(index);
    if (!k) return;
    document.querySelectorAll(".selected").forEach(e => e.classList.remove("selected"));
    const li = list.querySelector('[data-kernel="' + index + '"]');
    if (li) li.classList.add("selected");
    const g = document.getElementById("kernel-" + index);
    if (g) g.classList.add("selected");
    details.replaceChildren();
    details.appendChild(el("h2", "kernel %" + k.index + ": " + k.kind + " -> " + k.types));
    if (k.where) details.appendChild(el("p", k.where));
    if (data.profiled) {
      if (k.timing.length) {
        const t = el("table");
        const head = el("tr");
        ["kernel", "ms", "share", "GB/s", "GFLOP/s"].forEach(h => head.appendChild(el("th", h)));
        t.appendChild(head);
        for (const r of k.timing) {
          const row = el("tr");
          [r.name, r.ms.toFixed(4), (100 * r.share).toFixed(1) + "%", r.gbs.toFixed(2),
           r.gflops.toFixed(2)].forEach(v => row.appendChild(el("td", v)));
          t.appendChild(row);
        }
        details.appendChild(el("h2", "time"));
        details.appendChild(t);
      } else details.appendChild(el("p", "no timed kernel", "hint"));
    }
    details.appendChild(el("h2", "graph IR"));
    details.appendChild(el("pre", k.graph_ir));
    details.appendChild(el("h2", "kernel IR (" + (k.program_kernels.join(", ") || "none") + ")"));
    details.appendChild(el("pre", k.kernel_ir));
  }

  svg.querySelectorAll("g.node, g.cluster").forEach(g => {
    const m = /^kernel-(\d+)$/.exec(g.id);
    if (m) g.addEventListener("click", ev => { ev.stopPropagation(); select(+m[1]); });
  });

  // pan and zoom: move and scale the viewBox
  const vb0 = svg.viewBox.baseVal;
  const home = [vb0.x, vb0.y, vb0.width, vb0.height];
  let view = home.slice();
  svg.removeAttribute("width"); svg.removeAttribute("height");
  function apply() { svg.setAttribute("viewBox", view.join(" ")); }
  function zoom(f, cx, cy) {
    const r = svg.getBoundingClientRect();
    const px = cx === undefined ? 0.5 : (cx - r.left) / r.width;
    const py = cy === undefined ? 0.5 : (cy - r.top) / r.height;
    const w = view[2] * f, h = view[3] * f;
    view = [view[0] + (view[2] - w) * px, view[1] + (view[3] - h) * py, w, h];
    apply();
  }
  svg.addEventListener("wheel", ev => {
    ev.preventDefault(); zoom(ev.deltaY > 0 ? 1.15 : 1 / 1.15, ev.clientX, ev.clientY);
  }, { passive: false });
  let drag = null;
  svg.addEventListener("mousedown", ev => { drag = [ev.clientX, ev.clientY, view.slice()]; });
  window.addEventListener("mouseup", () => { drag = null; });
  window.addEventListener("mousemove", ev => {
    if (!drag) return;
    const r = svg.getBoundingClientRect();
    const s = Math.max(drag[2][2] / r.width, drag[2][3] / r.height);
    view = [drag[2][0] - (ev.clientX - drag[0]) * s, drag[2][1] - (ev.clientY - drag[1]) * s,
            drag[2][2], drag[2][3]];
    apply();
  });
  document.getElementById("zoom-in").onclick = () => zoom(1 / 1.25);
  document.getElementById("zoom-out").onclick = () => zoom(1.25);
  document.getElementById("fit").onclick = () => { view = home.slice(); apply(); };
  apply();
  // page.html#kernel-3 opens with kernel %3 selected (a link to one kernel)
  const linked = /^#kernel-(\d+)$/.exec(location.hash);
  if (linked) select(+linked[1]);
  document.body.dataset.ready = "true";
})();
"""
