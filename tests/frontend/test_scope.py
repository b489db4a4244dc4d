"""Module-path provenance: what an nn.Module traces carries its path (torch's named_modules
names) in the loc's scope, through the text format, autodiff, fusion reports and kernels."""
from __future__ import annotations

import numpy as np

import nnjit
from nnjit import nn
from nnjit.ir import parse


def test_ops_carry_their_module_path_through_every_view():
    inner = nn.Sequential(nn.Linear(4, 8), nn.ReLU())
    model = nn.Sequential(inner, nn.Linear(8, 2))
    p = model.init(seed=0)
    x = np.ones((3, 4), np.float32)
    y = np.array([0, 1, 1])

    def loss(p, x, y):
        return nn.cross_entropy(model.apply(p, x), y)

    cf = nnjit.jit(nnjit.value_and_grad(loss), backend="llvm").lower(p, x, y)
    g = cf.stages_[0].graph
    scopes = {n.loc.scope for n in g.nodes if n.loc}
    assert {"0.0", "0.1", "1"} <= scopes            # forward and backward nodes alike
    text = cf.ir("input")
    assert 'scope "0.0"' in text and parse(text) == g
    report = str(cf.explain_fusion())
    assert "[0.0]" in report and "[1]" in report
    assert any("[0.0]" in line for line in cf.kernels())
    table = cf.memory_plan().table()                 # buffers name their writer's scope too
    assert "written by" in table and ("[0.0]" in table or "[0.1]" in table), table


def test_plain_functions_have_no_scope():
    g = nnjit.trace(lambda x: nnjit.relu(x) * 2.0, np.ones(3, np.float32))
    assert all(n.loc.scope == "" for n in g.nodes if n.loc)
    assert ' scope "' not in str(g)
