"""The fusion pass: kernel counts on the canonical patterns (Inductor's
assertGeneratedKernelCountEqual), recorded decisions, and unchanged results."""
from __future__ import annotations

import numpy as np
import pytest

import nnjit
from nnjit import nn
from nnjit.ir import Op, evaluate, parse, verify
from nnjit.passes.fusion import fuse
from nnjit.passes.fusion_rules import classify
from tests.helpers import assert_close

rng = np.random.default_rng(0)


def fused(fn, *args):
    g = nnjit.trace(fn, *args)
    fg = fuse(g)
    verify(fg)
    assert parse(str(fg)) == fg
    for got, want in zip(evaluate(fg, list(args)), evaluate(g, list(args))):
        assert_close(got, want)
    return fg


def kernels(g) -> list:
    """The nodes that become kernels (constants and reshapes of stored values are free)."""
    return [n for n in g.nodes if n.op not in (Op.CONST, Op.RESHAPE)]


def kinds(g) -> list[str]:
    return [n.attrs["kind"] if n.op == Op.FUSION else n.op.value for n in kernels(g)]


def f32(*shape):
    return rng.standard_normal(shape).astype(np.float32)


def test_elementwise_chain_is_one_kernel():
    g = fused(lambda x: nnjit.tanh(x * 1.5 + 0.5) * nnjit.sigmoid(x) + nnjit.relu(x - 0.25),
              f32(64))
    assert kinds(g) == ["loop"]


def test_broadcast_chain_with_fan_in_and_fan_out():
    def f(x, b):
        y = x + b
        return nnjit.exp(y) * y, y * 2.0
    g = fused(f, f32(4, 5), f32(5))
    assert kinds(g) == ["loop"]
    assert len(g.nodes[-1].types) == 2          # one kernel, two results


def test_softmax_and_log_softmax_are_one_row_kernel_each():
    assert kinds(fused(lambda x: nnjit.softmax(x), f32(8, 10))) == ["reduce"]
    assert kinds(fused(lambda x: nnjit.log_softmax(x, axis=0), f32(8, 10))) == ["reduce"]


def test_cross_entropy_forward_is_one_kernel():
    def loss(z, y):
        return nn.cross_entropy(z, y)
    g = fused(loss, f32(8, 10), rng.integers(0, 10, 8))
    # the labels' range check, the label count (over N, not the N x C mask), the row kernel
    # (logsumexp) and the batch mean
    assert len(kernels(g)) <= 4
    assert sum(n.op == Op.CHECK_INDEX for n in g.nodes) == 1


def test_cross_entropy_and_its_gradient_keep_nothing_of_size_n_by_c():
    """The label pick and the gradient's one-hot stay inside the row loop: only per-row values
    (N of them) reach memory besides the (N, C) gradient itself (issue 14: the 16 MB mask)."""
    n, c = 64, 100
    x = f32(n, c)
    y = rng.integers(0, c, n)
    cf = nnjit.jit(nnjit.value_and_grad(lambda z: nn.cross_entropy(z, y))).lower(x)
    temps = [b for b in cf.lowered().program.buffers if b.kind.name == "TEMP"]
    assert temps and all(b.size <= n for b in temps), [str(b) for b in temps]


def test_linear_bias_relu_is_a_gemm_with_epilogue():
    g = fused(lambda x, w, b: nnjit.relu(nnjit.linear(x, w, b)), f32(4, 6), f32(3, 6), f32(3))
    assert kinds(g) == ["gemm"]
    body = g.nodes[-1].attrs["body"]
    assert {n.op for n in body.nodes} >= {Op.MATMUL, Op.TRANSPOSE, Op.ADD, Op.RELU}


def test_conv_bias_relu_then_pool():
    def f(x, w, b):
        return nnjit.max_pool2d(nnjit.relu(nnjit.conv2d(x, w, b, padding=1)), 2)
    g = fused(f, f32(2, 3, 6, 6), f32(4, 3, 3, 3), f32(4))
    # bias + relu go either into the convolution's epilogue or into the pool's input
    assert kinds(g) in (["conv", "window"], ["conv2d", "window"])


def test_sgd_update_fuses_into_the_weight_gradient_gemm():
    def step(w, x, g):
        return w - 0.1 * (x.T @ g)
    g = fused(step, f32(5, 3), f32(4, 5), f32(4, 3))
    assert kinds(g) == ["gemm"]


def test_a_reshape_between_matmul_and_its_bias_stays_in_the_gemm_epilogue():
    """An RNN's input projection [T*B, 4H] is viewed as [T, B, 4H] before its bias: a reshape
    keeps each element's flat index, so the bias add is still the GEMM's epilogue."""
    g = fused(lambda x, w, b: nnjit.tanh((x @ w).reshape(4, 3, 5) + b),
              f32(12, 6), f32(6, 5), f32(5))
    assert kinds(g) == ["gemm"]

    def two(x, w, b):
        y = x @ w
        return y.reshape(4, 3, 5) + b, y * 2.0
    g = fused(two, f32(12, 6), f32(6, 5), f32(5))
    assert kinds(g) == ["gemm"] and len(g.nodes[-1].types) == 2


def test_a_reshape_that_broadcasts_the_matmul_is_not_an_epilogue():
    def f(x, w, y):
        return (x @ w).reshape(12) + y       # y is [2, 12]: two values per element of C
    g = fused(f, f32(4, 6), f32(6, 3), f32(2, 12))
    assert kinds(g) == ["matmul", "loop"]


def test_a_reshape_that_would_only_be_copied_out_of_a_kernel_stays_a_view():
    """`r = x.reshape(...)` read by a reduction and by a GEMM: storing r from the reduction's
    kernel would copy x (the LSTM's stacked gates, 8 MB a step); outside it, r aliases x."""
    def f(x, w):
        r = nnjit.exp(x).reshape(12, 8)
        return r.sum(axis=0), r.T @ w
    g = fused(f, f32(4, 3, 8), f32(12, 5))
    reshapes = [n for n in g.nodes if n.op == Op.RESHAPE]
    assert len(reshapes) == 1 and reshapes[0].srcs[0].node.op == Op.EXP
    for n in g.nodes:
        if n.op == Op.FUSION:
            assert all(t.shape != (12, 8) for t in n.types), n
    cf = nnjit.jit(f).lower(f32(4, 3, 8), f32(12, 5))
    temps = [b for b in cf.lowered().program.buffers if b.kind.name == "TEMP"]
    assert sum(b.size == 96 for b in temps) == 1, [str(b) for b in temps]   # exp(x) alone


@pytest.mark.parametrize("shapes", [((12, 6), (6, 5), (4, 3, 5)), ((1, 6), (6, 8), (1, 1, 8)),
                                    ((6, 4), (4, 1), (2, 3, 1)), ((8, 3), (3, 6), (48,))])
def test_gemm_epilogues_through_reshapes_match_the_interpreter(backend, shapes):
    xs, ws, view = shapes

    def f(x, w, b, c):
        y = x @ w
        z = y.reshape(view)
        return nnjit.relu(z + b) * c, z, y - 1.0

    args = (rng.standard_normal(xs), rng.standard_normal(ws), rng.standard_normal(view[-1:]),
            rng.standard_normal(view))
    want = nnjit.jit(f, fuse=False, backend="interp")(*args)
    got = nnjit.jit(f, backend=backend)(*args)
    for a, b in zip(got, want):
        assert a.shape == b.shape
        assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_mlp_training_step_kernel_count():
    model = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 4))

    def step(p, x, y):
        loss, grads = nnjit.value_and_grad(lambda p: nn.cross_entropy(model.apply(p, x), y))(p)
        return nnjit.tree_map(lambda a, b: a - 0.1 * b, p, grads), loss

    args = (model.init(seed=0), f32(5, 6), rng.integers(0, 4, 5))
    unfused = nnjit.compile(step, *args, fuse=False, backend="interp").graph
    g = nnjit.compile(step, *args, backend="interp").graph
    assert len(kernels(g)) <= len(kernels(unfused)) // 3
    assert not any(n.op == Op.FUSION for n in unfused.nodes)


def test_decisions_are_recorded_with_rules_reasons_and_bytes():
    cf = nnjit.compile(lambda x, w: nnjit.softmax(nnjit.relu(x @ w)), f32(4, 3), f32(3, 5),
                       backend="interp")
    report = cf.explain_fusion()
    fused_ = [d for d in report.decisions if d.fused]
    refused = [d for d in report.decisions if not d.fused]
    assert fused_ and all(d.bytes_saved > 0 for d in fused_)
    assert any(d.rule == "one-anchor-per-kernel" and "matmul" in d.producer for d in refused)
    text = str(report)
    assert "not fused [one-anchor-per-kernel]" in text and "kernels:" in text


def test_expensive_producer_is_not_recomputed_per_broadcast_element():
    def f(x, y):
        return nnjit.exp(x)[:, None] + y     # exp over (n,) broadcast to (n, m)
    g = fused(f, f32(6), f32(6, 50))
    assert len(kernels(g)) == 2
    d = nnjit.compile(f, f32(6), f32(6, 50), backend="interp").explain_fusion().decisions
    assert any(x.rule == "no-expensive-recompute" for x in d)


def test_no_cycles_through_a_materialized_consumer():
    def f(x, w):
        a = nnjit.relu(x)
        b = a @ w           # a is needed by the matmul (another kernel) ...
        return a + (b @ w.T)  # ... and by this elementwise kernel that also reads b
    g = fused(f, f32(4, 4), f32(4, 4))
    verify(g)


def test_classify_names_a_template_or_a_reason():
    g = nnjit.trace(lambda x, w: nnjit.relu(x @ w), f32(2, 3), f32(3, 4))
    nodes = set(g.nodes)
    assert classify(nodes, g.outputs)[0] == "gemm"
    g2 = nnjit.trace(lambda x: (x @ x).sum(axis=1), f32(3, 3))
    template, reason = classify(set(g2.nodes), g2.outputs)
    assert template is None and "reduction" in reason


@pytest.mark.parametrize("fuse_flag", [True, False])
def test_fused_and_unfused_give_the_reference_results(backend, fuse_flag):
    model = nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                          nn.Flatten(), nn.Linear(12, 4))

    def step(p, x, y):
        loss, grads = nnjit.value_and_grad(lambda p: nn.cross_entropy(model.apply(p, x), y))(p)
        return grads, loss

    args = (model.init(seed=0, dtype=np.float64), rng.standard_normal((2, 1, 4, 4)),
            rng.integers(0, 4, 2))
    want = nnjit.jit(step, fuse=False, backend="interp")(*args)
    got = nnjit.jit(step, backend=backend, fuse=fuse_flag)(*args)
    for a, b in zip(nnjit.tree_leaves(got), nnjit.tree_leaves(want)):
        assert_close(a, b, rtol=1e-7, atol=1e-9)

