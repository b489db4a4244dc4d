"""Pictures: every kernel is one cluster holding exactly its ops (checked against the fusion
groups by parsing the DOT), big graphs default to one box per kernel, the memory timeline is
labelled in the picture, `nnjit viz -o x.png` is a real PNG, and the --html page works in a real
headless Chromium (skipped where Chromium or Graphviz is absent)."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import textwrap
import zlib

import numpy as np
import pytest

import nnjit
from nnjit.cli import main as cli_main
from nnjit.runtime.viz import DETAIL_MAX_NODES, kernel_groups, node_count

EXAMPLES_DIR = os.path.join(os.path.dirname(__file__), "..", "..", "examples")
needs_dot = pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz not installed")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def readme_layer(x, w, b):
    return nnjit.softmax(nnjit.relu(x @ w + b))


README_ARGS = (np.ones((8, 16), np.float32), np.ones((16, 4), np.float32),
               np.zeros(4, np.float32))


def make_run_step():
    """examples/main.py's training step and its example arguments."""
    sys.path.insert(0, os.path.abspath(EXAMPLES_DIR))
    try:
        import data
        import models
        from main import make_train_step
    finally:
        sys.path.pop(0)
    from nnjit import optim

    model, opt = models.convnet(channels=(16, 32), dropout=0.2), optim.Adam(1e-3)
    params = model.init(seed=0)
    split = data.digits(images=True)
    return make_train_step(model, opt), (params, opt.init(params), split.x_train[:16],
                                         split.y_train[:16], np.float32(1.0), np.int64(0))


@pytest.fixture(scope="module")
def compiled():
    fn, args = make_run_step()
    return {"readme": nnjit.compile(readme_layer, *README_ARGS, backend="interp"),
            "make_run": nnjit.compile(fn, *args, backend="interp")}


def clusters_of(dot: str) -> dict[str, str | None]:
    """Node id -> the cluster it is declared in (None: outside all), from the DOT text; also
    checks that no edge is written inside a cluster (Graphviz would pull its ends in)."""
    where: dict[str, str | None] = {}
    current = None
    for line in dot.splitlines():
        s = line.strip()
        if m := re.match(r"subgraph (cluster_\w+) \{", s):
            current = m.group(1)
        elif s == "}":
            current = None
        elif "->" in s:
            assert current is None, f"edge inside {current}: {s}"
        elif (m := re.match(r"(\w+) \[", s)) and m.group(1) not in ("node", "edge", "graph"):
            where[m.group(1)] = current
    return where


@pytest.mark.parametrize("name", ["readme", "make_run"])
def test_each_kernel_is_one_cluster_holding_exactly_its_ops(compiled, name):
    cf = compiled[name]
    dot = cf.to_dot(detail=True)
    where = clusters_of(dot)
    labels = dict(re.findall(r'^\s*(\w+) \[label="([^\\"]+)', dot, re.M))
    groups = {k: ops for k, _, ops, _ in cf.explain_fusion().groups}
    seen = {}
    for node, cluster in where.items():
        if cluster is None:
            assert re.fullmatch(r"in\d+|c\d+|out\d+", node), node   # inputs, constants, results
        else:
            seen.setdefault(cluster, []).append(labels[node])
    assert set(seen) == {f"cluster_k{k}" for k in groups}
    for k, ops in groups.items():
        drawn = [op for op in seen[f"cluster_k{k}"] if op != "const"]
        assert tuple(drawn) == ops, (k, drawn, ops)
    g = cf.graph
    assert sum(n.startswith("in") for n in where) == len(g.inputs)


def test_large_graphs_default_to_one_box_per_kernel(compiled):
    small, big = compiled["readme"], compiled["make_run"]
    assert node_count(small.graph) <= DETAIL_MAX_NODES < node_count(big.graph)
    assert "subgraph cluster_" in small.to_dot()
    dot = big.to_dot()
    assert "subgraph cluster_" not in dot and "(kernels)" in dot
    boxes = re.findall(r'^\s*k(\d+) \[id="kernel-(\d+)"', dot, re.M)
    assert sorted(int(a) for a, _ in boxes) == [grp.index for grp in kernel_groups(big.graph)]
    # kernel -> kernel edges say which tensor they carry
    edge_labels = re.findall(r"^\s*k\d+ -> k\d+ \[label=\"(\w+\[[\d,]*\])\"\]", dot, re.M)
    assert edge_labels and all(re.fullmatch(r"(f32|f64|i32|i64|bool)\[[\d,]*\]", t)
                               for t in edge_labels)
    assert "conv2d" in dot and "max_pool2d" in dot     # ops summarized in the boxes
    assert "subgraph cluster_" in big.to_dot(detail=True)


def test_memory_timeline_labels_buffers_ticks_and_lower_bound(compiled):
    cf = compiled["make_run"]
    svg = cf.memory_svg()
    plan = cf.memory_plan()
    legend = re.findall(r'<text class="legend"[^>]*>([^<]+)</text>', svg)
    assert len(legend) == len(plan.buffers) > 3
    for b in plan.buffers:
        assert any(t.startswith(f"{b.name} ") for t in legend), b.name
    ticks = re.findall(r'<text class="tick"[^>]*>([^<]+)</text>', svg)
    names = [k.name for k in cf.lowered().program.kernels]
    assert ticks and all(t in names or t.split(" ", 1)[0].isdigit() for t in ticks)
    assert names[0] in ticks
    assert re.search(r"<text[^>]*>liveness lower bound [\d.]+ (B|KiB|MiB)</text>", svg)
    assert "stroke-dasharray" in svg


def _user_file(tmp_path) -> str:
    path = tmp_path / "model.py"
    path.write_text(textwrap.dedent("""
        import numpy as np
        import nnjit

        def layer(x, w, b):
            return nnjit.softmax(nnjit.relu(x @ w + b))

        EXAMPLES = {"layer": (np.ones((8, 16), np.float32), np.ones((16, 4), np.float32),
                              np.zeros(4, np.float32))}
    """))
    return str(path)


@needs_dot
def test_viz_png_is_a_real_png(tmp_path):
    out = tmp_path / "g.png"
    assert cli_main(["viz", _user_file(tmp_path), "--backend", "interp", "-o", str(out)]) == 0
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    assert (tmp_path / "g.dot").read_text().startswith("digraph")


def test_viz_unknown_extension_and_missing_graphviz_are_errors(tmp_path, capsys, monkeypatch):
    path = _user_file(tmp_path)
    assert cli_main(["viz", path, "--backend", "interp", "-o", str(tmp_path / "g.jpg")]) == 1
    assert "unknown picture type '.jpg'; use .svg, .png, .dot" in capsys.readouterr().err
    assert cli_main(["viz", path, "--memory", str(tmp_path / "m.png")]) == 1
    assert "use .svg" in capsys.readouterr().err
    monkeypatch.setattr(shutil, "which", lambda name: None)
    assert cli_main(["viz", path, "--backend", "interp", "-o", str(tmp_path / "g.png")]) == 1
    err = capsys.readouterr().err
    assert "Graphviz `dot` program, which is not installed" in err and "apt-get" in err
    assert not (tmp_path / "g.png").exists()
    assert cli_main(["viz", path, "--backend", "interp", "-o", str(tmp_path / "g.dot")]) == 0


def _chromium(*args: str) -> subprocess.CompletedProcess:
    profile = tempfile.mkdtemp(prefix="nnjit-chromium-")
    try:
        return subprocess.run(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
             "--no-first-run", "--disable-background-networking", "--disable-component-update",
             "--disable-sync", f"--user-data-dir={profile}", *args],
            capture_output=True, timeout=120)
    finally:
        shutil.rmtree(profile, ignore_errors=True)


def _png_colors(path: str) -> int:
    """How many distinct RGB(A) pixel values a non-interlaced 8-bit PNG holds (stdlib only)."""
    data = open(path, "rb").read()
    pos, chunks = 8, {}
    idat = b""
    while pos < len(data):
        n = int.from_bytes(data[pos:pos + 4], "big")
        kind, body = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + n]
        chunks.setdefault(kind, body)
        if kind == b"IDAT":
            idat += body
        pos += 12 + n
    w, h = int.from_bytes(chunks[b"IHDR"][:4], "big"), int.from_bytes(chunks[b"IHDR"][4:8], "big")
    depth, ctype = chunks[b"IHDR"][8], chunks[b"IHDR"][9]
    assert depth == 8 and ctype in (2, 6), (depth, ctype)
    bpp = 3 if ctype == 2 else 4
    raw, stride, prev, colors = zlib.decompress(idat), w * bpp, bytearray(w * bpp), set()
    for y in range(0, h):
        f, line = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        for i in range(stride):
            a = line[i - bpp] if i >= bpp else 0
            b, c = prev[i], prev[i - bpp] if i >= bpp else 0
            if f == 1:
                line[i] = (line[i] + a) & 255
            elif f == 2:
                line[i] = (line[i] + b) & 255
            elif f == 3:
                line[i] = (line[i] + (a + b) // 2) & 255
            elif f == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        if y % 4 == 0:
            colors.update(bytes(line[i:i + 3]) for i in range(0, stride, bpp * 2))
        prev = line
    return len(colors)


@needs_dot
@pytest.mark.skipif(CHROMIUM is None, reason="Chromium not installed")
def test_html_page_renders_and_runs_in_headless_chromium(tmp_path):
    src = _user_file(tmp_path)
    page = tmp_path / "page.html"
    assert cli_main(["viz", src, "-o", str(tmp_path / "g.svg"), "--html", str(page),
                     "--profile"]) == 0
    text = page.read_text()
    assert "http://" not in text.replace("http://www.w3.org", "") and "https://" not in text
    url = page.as_uri()
    shot = tmp_path / "shot.png"
    r = _chromium(f"--screenshot={shot}", "--window-size=1200,800", url)
    assert shot.exists(), r.stderr.decode(errors="replace")[-2000:]
    assert _png_colors(str(shot)) >= 8            # a picture, not a blank page
    dom = _chromium("--dump-dom", url).stdout.decode()
    assert 'data-ready="true"' in dom                # the script ran to its end
    items = re.findall(r'<li class="kernel"[^>]*data-kernel="(\d+)"', dom)
    assert items == ["0", "1"]                       # the kernel list the script built
    assert "ms a call" in dom and 'id="kernel-1"' in dom
    # what a click shows, through the page's link form (#kernel-N selects kernel N)
    dom = _chromium("--dump-dom", url + "#kernel-1").stdout.decode()
    details = dom[dom.index('id="details"'):]
    assert "kernel %1: reduce" in details and "graph IR" in details and "kernel IR" in details
    assert "fusion(" in details and "reduce for" in details    # graph IR, then kernel IR
    assert "GFLOP/s" in details and re.search(r"<td>k1_fusion</td><td>[\d.]+</td>", details)
    assert re.search(r'<li class="kernel selected"[^>]*data-kernel="1"', dom)
