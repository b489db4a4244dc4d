"""The pass manager's dumps: stable value names from stage to stage (a diff shows only what a
pass changed), every codegen stage dumpable, and unknown NNJIT_DUMP / NNJIT_LOG values refused
with the valid ones listed."""
from __future__ import annotations

import numpy as np
import pytest

import nnjit
from nnjit.ir import parse
from nnjit.passes.manager import StableNames


def _f(x, w):
    y = x @ w
    z = y * 1.0 + 0.0
    return nnjit.relu(z - (-y)).sum(axis=1) + x.sum(axis=1)


ARGS = (np.ones((4, 3), np.float32), np.ones((3, 3), np.float32))


def test_stable_names_keep_untouched_nodes_and_parse_back():
    cf = nnjit.jit(_f, backend="llvm").lower(*ARGS)
    names = StableNames()
    texts = {s.name: names.text(s.graph) for s in cf.stages_ if isinstance(s.graph, nnjit.Graph)}
    assert texts["input"] == str(cf.stages_[0].graph)      # the first stage is numbered as usual
    before, after = texts["cse"].splitlines(), texts["dce"].splitlines()
    # dce only removes: every line after it was already there, with the same name
    assert set(after) <= set(before) and len(after) < len(before)
    for text in texts.values():
        assert parse(text) is not None       # stable names are valid IR text too


def test_every_codegen_stage_can_be_dumped(monkeypatch, capsys):
    monkeypatch.setenv("NNJIT_DUMP", "lower,block_sums,plan_memory")
    nnjit.jit(_f, backend="llvm")(*ARGS)
    err = capsys.readouterr().err
    for stage in ("lower", "block_sums", "plan_memory"):
        assert f"after {stage}" in err
    assert "program f(" in err and "@ arena+" in err       # kernel IR, buffers placed


@pytest.mark.parametrize("var,value,needle", [
    ("NNJIT_DUMP", "fuse,bogus", "unknown stage(s) bogus; stages: after-all"),
    ("NNJIT_LOG", "recompile", "unknown topic(s) recompile; known: recompiles"),
])
def test_unknown_dump_and_log_values_are_errors(monkeypatch, var, value, needle):
    monkeypatch.setenv(var, value)
    f = nnjit.jit(lambda x: x + 1.0)
    with pytest.raises(nnjit.NnjitError, match=needle.replace("(", r"\(").replace(")", r"\)")):
        f(np.ones(2, np.float32))
        f(np.ones(3, np.float32))          # a recompile consults NNJIT_LOG


def test_stages_of_other_pipelines_are_not_errors(monkeypatch):
    """NNJIT_DUMP=fuse while compiling the unfused baseline just dumps nothing."""
    monkeypatch.setenv("NNJIT_DUMP", "fuse,map_to_gpu")
    nnjit.jit(_f, backend="llvm", fuse=False)(*ARGS)
