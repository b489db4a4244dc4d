"""Scan-aware autodiff: the forward scan saves its per-step contractions and transcendentals, the
backward body reads them instead of recomputing, and a weight's per-step matmul cotangents
become one matmul over the stacked steps after the loop. Structure is checked on the IR, values
against float64 finite differences (`tests.gradcheck`) on every backend."""
from __future__ import annotations

import numpy as np
import pytest

import nnjit
from nnjit import nn
from nnjit.ir import Op
from nnjit.passes.dce import eliminate_dead_code
from nnjit.passes.simplify import simplify
from tests.gradcheck import check_grads
from tests.helpers import assert_close, run

RNG = np.random.default_rng(77)


def randn(*shape, scale=1.0):
    return RNG.standard_normal(shape) * scale


def optimized_grad_graph(loss, args, argnums):
    """The gradient graph as the pipeline sees it after cleanup (simplify, dce)."""
    return eliminate_dead_code(simplify(nnjit.trace(nnjit.grad(loss, argnums), *args)))


def scans(g):
    return [n for n in g.nodes if n.op == Op.SCAN]


def matmuls(g):
    return [n for n in g.nodes if n.op == Op.MATMUL]


def upstream(v, ops=(Op.RESHAPE, Op.TRANSPOSE)):
    """`v` with reshapes and transposes taken off."""
    while v.node.op in ops:
        v = v.node.srcs[0]
    return v


LSTM = nn.LSTM(3, 5)
LSTM_PARAMS = LSTM.init(seed=0, dtype=np.float64)


def lstm_loss(p, x):
    out, (h, c) = LSTM.apply(p, x)
    return (out * out).sum() + (h * c).sum()


def test_lstm_backward_body_reads_saved_values_and_weight_gradient_is_one_matmul():
    g = optimized_grad_graph(lstm_loss, (LSTM_PARAMS, randn(6, 2, 3)), 0)
    fwd, bwd = scans(g)
    assert (fwd.attrs["reverse"], bwd.attrs["reverse"]) == (False, True)
    # The forward body's one contraction h @ W_hh^T; the backward body's one contraction is the
    # recurrence dh = dz @ W_hh, no recomputed h @ W_hh^T and no per-step h^T @ dz update.
    assert len(matmuls(fwd.attrs["body"])) == 1
    (back,) = matmuls(bwd.attrs["body"])
    const_inputs = set(bwd.attrs["body"].inputs[-bwd.attrs["num_consts"]:])
    assert any(upstream(s) in const_inputs for s in back.srcs)
    # No weight accumulator rides in the backward carry: just the cotangents of h and c.
    assert bwd.attrs["num_carry"] == 2
    # W_hh's gradient: one matmul over the stacked steps, reading the forward scan's saved
    # carries and the backward scan's stacked gate cotangents.
    stacked = [m for m in matmuls(g)
               if {upstream(s).node for s in m.srcs} == {fwd, bwd}]
    assert len(stacked) == 1
    a, b = stacked[0].srcs
    assert 6 * 2 in (a.type.shape[-1], a.type.shape[-2])     # T * B rows contracted
    # The transcendentals of the forward body are stacked for the backward pass.
    fwd_outs = fwd.attrs["body"].outputs
    assert sum(v.node.op in (Op.SIGMOID, Op.TANH) for v in fwd_outs) >= 4
    back_body = bwd.attrs["body"]
    assert not any(n.op in (Op.SIGMOID, Op.TANH) for n in back_body.nodes)


def test_lstm_gradient_matches_finite_differences_and_the_interpreter(backend):
    x = randn(5, 2, 3)
    got = check_grads(lstm_loss, (LSTM_PARAMS, x), (0, 1), backend=backend, scalar=True)
    want = run(lambda p, x: nnjit.grad(lstm_loss, (0, 1))(p, x), LSTM_PARAMS, x)
    for a, b in zip(nnjit.tree_leaves(got), nnjit.tree_leaves(want)):
        assert_close(a, b)


def rnn(h0, xs, w, u, reverse):
    def body(h, x):
        h = nnjit.tanh(x @ u + h @ w)
        return h, h * h
    h, ys = nnjit.scan(body, h0, xs, reverse=reverse)
    return h, ys


@pytest.mark.parametrize("reverse", [False, True])
def test_reverse_scan_weight_gradients(backend, reverse):
    args = (randn(2, 4), randn(5, 2, 3), randn(4, 4, scale=0.5), randn(3, 4, scale=0.5))
    check_grads(lambda *a: rnn(*a, reverse), args, (0, 1, 2, 3), backend=backend)
    g = optimized_grad_graph(lambda *a: rnn(*a, reverse)[1].sum(), args, (2, 3))
    _, bwd = scans(g)
    assert bwd.attrs["reverse"] == (not reverse)
    assert len(matmuls(bwd.attrs["body"])) == 1          # dh = dz @ w^T only
    assert bwd.attrs["num_carry"] == 1                   # no weight accumulators


def test_weight_used_twice_and_transposed_and_against_a_loop_invariant(backend):
    """Three cotangent terms for w: h^T dz and (w^T-side) dz^T h are per-step products (one
    matmul each after the loop), dz k^T has a loop-invariant factor and stays in the carry."""
    def f(h0, xs, w, k):
        def body(h, x):
            z = h @ w + (w @ h.T).T + w @ k + x
            h = nnjit.sigmoid(z)
            return h, h
        return nnjit.scan(body, h0, xs)

    args = (randn(3, 3), randn(4, 3, 3), randn(3, 3, scale=0.4), randn(3, 3, scale=0.4))
    check_grads(f, args, (0, 1, 2, 3), backend=backend)
    g = optimized_grad_graph(lambda *a: f(*a)[1].sum(), args, (2,))
    _, bwd = scans(g)
    assert bwd.attrs["num_carry"] == 2                   # dh and the w @ k accumulator


def test_several_carries_int_sequence_and_int_carry(backend):
    """Token ids as an integer sequence (an embedding lookup inside the body), an integer
    step counter carried along, two float carries."""
    def f(emb, w, tokens, h0, c0):
        def body(carry, tok):
            h, c, t = carry
            e = nnjit.take(emb, tok, axis=0)                     # (B, E)
            z = e @ w[:, :3] + h @ w[:, 3:] * nnjit.cast(t, np.float64)
            c = c * nnjit.sigmoid(z) + nnjit.tanh(z)
            h = nnjit.tanh(c) * 0.5
            return (h, c, t + 1), h
        (h, c, t), hs = nnjit.scan(body, (h0, c0, np.int64(1)), tokens)
        return hs, c

    tokens = np.array([[0, 3], [2, 2], [1, 0], [3, 1]])
    args = (randn(4, 3), randn(3, 6, scale=0.5), tokens, randn(2, 3), randn(2, 3))
    check_grads(f, args, (0, 1, 3, 4), backend=backend)


def test_nested_scans_with_a_weight_captured_through_both_bodies(backend):
    def f(h0, xss, w):
        def outer(h, xs):
            def inner(g, x):
                g = nnjit.tanh(g @ w + x)
                return g, g
            g, gs = nnjit.scan(inner, h, xs)
            return g * 0.5 + h, gs.sum(axis=0)
        return nnjit.scan(outer, h0, xss)

    args = (randn(2, 3), randn(3, 2, 2, 3), randn(3, 3, scale=0.5))
    check_grads(f, args, (0, 1, 2), backend=backend)


@pytest.mark.parametrize("kind", ["LSTM", "GRU", "RNN"])
def test_stacked_bidirectional_layers_on_native_backends_match_the_interpreter(kind):
    model = getattr(nn, kind)(3, 4, num_layers=2, bidirectional=True)
    p = model.init(seed=3)
    x = RNG.standard_normal((5, 2, 3)).astype(np.float32)

    def loss(p, x):
        out, _ = model.apply(p, x)
        return (out * out).sum()
    step = nnjit.value_and_grad(loss, (0, 1))
    want = run(step, p, x)
    got = run(step, p, x, backend="llvm")
    for a, b in zip(nnjit.tree_leaves(got), nnjit.tree_leaves(want)):
        assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_empty_batch_gradient_is_zero_sized(backend):
    p = LSTM.init(seed=1, dtype=np.float64)
    grads = run(lambda p, x: nnjit.grad(lstm_loss, (0, 1))(p, x), p, np.zeros((4, 0, 3)),
                backend=backend)
    assert grads[1].shape == (4, 0, 3)
    for k, v in grads[0].items():
        assert v.shape == p[k].shape and not v.any(), k


def test_gru_bias_inside_the_loop_is_one_sum_after_it(backend):
    """GRU keeps b_hh inside the loop (r * (h W_hn^T + b_hn)): its gradient, the per-step row
    sums of the gate cotangents, is one sum over the stacked steps; the backward carry holds
    only dh."""
    gru = nn.GRU(3, 4)
    p = gru.init(seed=4, dtype=np.float64)

    def loss(p, x):
        out, h = gru.apply(p, x)
        return (out * out).sum() + h.sum()
    x = randn(5, 2, 3)
    check_grads(loss, (p, x), (0, 1), backend=backend, scalar=True)
    g = optimized_grad_graph(loss, (p, x), 0)
    _, bwd = scans(g)
    assert bwd.attrs["num_carry"] == 1
    assert not any(n.op == Op.SUM for n in bwd.attrs["body"].nodes)
