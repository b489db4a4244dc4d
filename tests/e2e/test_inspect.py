"""Seeing what the compiler did: stage dumps (API and NNJIT_DUMP/NNJIT_DUMP_DIR), fusion
explanations, memory-plan tables and pictures, DOT graphs, bisect, and the `nnjit` CLI."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import nnjit
from nnjit.cli import main as cli_main
from nnjit.ir import Op, parse

rng = np.random.default_rng(0)
X, W = rng.standard_normal((4, 3)).astype(np.float32), rng.standard_normal((3, 5)).astype(
    np.float32)


def model(x, w):
    return nnjit.softmax(nnjit.relu(x @ w) * 2.0)


def test_every_stage_is_kept_and_parses_back():
    cf = nnjit.compile(model, X, W, backend="interp")
    assert cf.stages()[0] == "input" and cf.stages()[-1] == "fuse"
    for stage in cf.stages():
        g = parse(cf.ir(stage))
        assert g == next(s.graph for s in cf.stages_ if s.name == stage)
    assert set(cf.pass_times()) == set(cf.stages())
    with pytest.raises(KeyError, match="no stage"):
        cf.ir("nope")


def test_nnjit_dump_dir_writes_one_numbered_file_per_stage(tmp_path, monkeypatch):
    monkeypatch.setenv("NNJIT_DUMP", "after-all")
    monkeypatch.setenv("NNJIT_DUMP_DIR", str(tmp_path))
    cf = nnjit.compile(model, X, W, backend="interp")
    files = sorted(os.listdir(tmp_path))
    assert len(files) == len(cf.stages())
    assert files[0].endswith(".00.input.nnir") and files[-1].endswith(".fuse.nnir")
    for f in files:
        text = (tmp_path / f).read_text()
        assert text.startswith("// stage")
        parse(text.split("\n", 1)[1])


def test_nnjit_dump_prints_diffs_to_stderr(monkeypatch, capsys):
    monkeypatch.setenv("NNJIT_DUMP", "fuse")
    monkeypatch.delenv("NNJIT_DUMP_DIR", raising=False)
    nnjit.compile(model, X, W)
    err = capsys.readouterr().err
    assert "after fuse" in err and "// diff:" in err and "fusion(" in err


def test_explain_fusion_memory_plan_kernels_and_dot():
    cf = nnjit.compile(model, X, W)
    report = cf.explain_fusion()
    assert report.num_kernels == 2 and "reduce" in str(report)
    plan = cf.memory_plan()
    assert plan.lower_bound_bytes <= plan.arena_bytes <= plan.no_reuse_bytes
    assert "liveness lower bound" in plan.table()
    svg = cf.memory_svg()
    assert svg.startswith("<svg") and svg.rstrip().endswith("</svg>")
    assert len(cf.kernels()) >= 2
    dot = cf.to_dot()
    assert dot.startswith("digraph") and "subgraph cluster_" in dot


def test_bisect_finds_nothing_when_backends_agree():
    assert nnjit.debug.bisect(model, X, W, backend="interp") is None


def test_bisect_names_the_first_differing_node_and_its_line(monkeypatch):
    from nnjit import debug

    real = debug._run_isolated

    def miscompiled(n, values, options):
        # A backend whose exp is off by 1%, as a broken kernel would be.
        outs = real(n, values, options)
        has_exp = n.op == Op.EXP or (n.op == Op.FUSION and any(
            m.op == Op.EXP for m in n.attrs["body"].nodes))
        return [o * 1.01 for o in outs] if has_exp else outs

    monkeypatch.setattr(debug, "_run_isolated", miscompiled)

    def bad(x, w):
        y = nnjit.relu(x @ w)
        return nnjit.exp(y) + 1.0    # the line the report must name

    line = bad.__code__.co_firstlineno + 2
    report = debug.bisect(bad, X, W, backend="interp", fuse=False)
    assert report is not None and report.node.startswith("exp")
    assert f"test_inspect.py:{line}" in report.loc and report.max_rel_error > 0.005
    fused = debug.bisect(bad, X, W, backend="interp")
    assert fused is not None and fused.kernel_op.startswith("fusion") and "exp" in fused.node
    assert "first differing node: exp" in str(fused)


def _write_user_file(tmp_path):
    path = tmp_path / "user_model.py"
    path.write_text(textwrap.dedent("""
        import numpy as np
        import nnjit

        def f(x, w):
            return nnjit.softmax(nnjit.relu(x @ w))

        EXAMPLES = {"f": (np.ones((4, 3), np.float32), np.ones((3, 5), np.float32))}
    """))
    return str(path)


def test_cli_dump_explain_and_errors(tmp_path, capsys):
    path = _write_user_file(tmp_path)
    assert cli_main(["dump", path, "--kernel-ir"]) == 0
    out = capsys.readouterr().out
    assert "after input" in out and "after fuse" in out and "kernel k" in out
    assert cli_main(["explain", f"{path}:f"]) == 0
    assert "fusion decisions" in capsys.readouterr().out
    assert cli_main(["dump", str(tmp_path / "missing.py")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("nnjit: error: no such file") and "Traceback" not in err
    assert cli_main(["dump", f"{path}:g"]) == 1
    assert "no entry for 'g'" in capsys.readouterr().err


def test_cli_viz_writes_dot_and_explains_missing_graphviz(tmp_path, capsys):
    path = _write_user_file(tmp_path)
    out = tmp_path / "g.svg"
    rc = cli_main(["viz", path, "-o", str(out), "--memory", str(tmp_path / "mem.svg")])
    assert (tmp_path / "g.dot").read_text().startswith("digraph")
    if rc == 0:
        assert out.read_text().lstrip().startswith(("<?xml", "<svg", "<!DOCTYPE"))
        assert (tmp_path / "mem.svg").exists()
    else:
        assert "apt-get install graphviz" in capsys.readouterr().err


def test_cli_is_installed_as_a_console_script(tmp_path):
    res = subprocess.run([sys.executable, "-m", "nnjit.cli", "--help"], capture_output=True,
                         text=True, timeout=60)
    assert res.returncode == 0 and "dump" in res.stdout and "bench" in res.stdout
