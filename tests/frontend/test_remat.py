"""`nnjit.checkpoint`: a block's forward values are recomputed in the backward pass. The
gradients are unchanged, the backward graph holds a second copy of the block behind
optimization barriers (which CSE does not merge back), and the memory plan's peak is lower."""
from __future__ import annotations

import numpy as np
import pytest

import nnjit
from nnjit import nn
from nnjit.ir import Op
from tests.helpers import assert_close

D, LAYERS, N = 32, 6, 64


def _weights():
    rng = np.random.default_rng(0)
    return ([rng.standard_normal((D, D)).astype(np.float32) * 0.2 for _ in range(LAYERS)],
            rng.standard_normal((N, D)).astype(np.float32))


def _layer(h, w):
    return nnjit.tanh(nnjit.tanh(h @ w) * 1.5 + 0.1)


def _loss(checkpointed: bool):
    block = nnjit.checkpoint(_layer) if checkpointed else _layer

    def loss(ws, x):
        h = x
        for w in ws:
            h = block(h, w)
        return nnjit.mean(h * h)
    return loss


def test_checkpointed_mlp_gives_the_same_gradients(backend):
    ws, x = _weights()
    plain = nnjit.jit(nnjit.value_and_grad(_loss(False)), backend=backend)(ws, x)
    remat = nnjit.jit(nnjit.value_and_grad(_loss(True)), backend=backend)(ws, x)
    assert_close(remat[0], plain[0])
    for a, b in zip(remat[1], plain[1]):
        assert_close(a, b)


def test_checkpoint_lowers_the_memory_plan_peak():
    ws, x = _weights()
    plans = {}
    for ck in (False, True):
        cf = nnjit.jit(nnjit.grad(_loss(ck)), backend="llvm").lower(ws, x)
        plans[ck] = cf.memory_plan()
    # without: every layer's two tanh outputs (N x D floats each) live until the backward pass
    assert plans[True].arena_bytes < 0.75 * plans[False].arena_bytes
    assert plans[True].total_bytes < plans[False].total_bytes
    assert plans[True].num_kernels > plans[False].num_kernels          # the recomputation


def test_the_backward_pass_recomputes_the_block_behind_barriers():
    ws, x = _weights()
    g_plain = nnjit.trace(nnjit.grad(_loss(False)), ws, x)
    g_remat = nnjit.trace(nnjit.grad(_loss(True)), ws, x)
    count = lambda g, op: sum(n.op == op for n in g.nodes)            # noqa: E731
    # forward LAYERS, backward 2 per layer, and the recomputed LAYERS
    assert count(g_plain, Op.MATMUL) == 3 * LAYERS
    assert count(g_remat, Op.MATMUL) == 4 * LAYERS
    assert count(g_remat, Op.OPTIMIZATION_BARRIER) == 2 * LAYERS      # h and w of each block
    # after simplify and CSE, no recomputed matmul was merged back: only the gradient of x
    # (not asked for) is gone, in both
    for ck, per_layer in ((False, 3), (True, 4)):
        cf = nnjit.jit(nnjit.grad(_loss(ck)), fuse=False).lower(ws, x)
        assert count(cf.graph, Op.MATMUL) == per_layer * LAYERS - 1


def test_checkpoint_without_grad_and_with_pytrees(backend):
    ws, x = _weights()

    @nnjit.checkpoint
    def block(params, h):
        return {"out": _layer(h, params["w"]), "skip": h}

    f = nnjit.jit(lambda p, h: block(p, h), backend=backend)
    out = f({"w": ws[0]}, x)
    assert_close(out["out"], np.tanh(np.tanh(x @ ws[0]) * 1.5 + 0.1))
    assert_close(out["skip"], x)
    concrete = block({"w": ws[0]}, x)            # numpy in: compiled and run
    assert_close(concrete["out"], out["out"])


def test_checkpoint_of_a_block_with_a_scan_and_captured_weights(backend):
    lstm = nn.LSTM(3, 4)
    p = lstm.init(seed=0)
    rng = np.random.default_rng(1)
    xs, head = rng.standard_normal((5, 2, 3)).astype(np.float32), \
        rng.standard_normal((4,)).astype(np.float32)

    def loss(p, xs, ck):
        def block(xs):
            hs, _ = lstm.apply(p, xs)             # p is captured by the block
            return nnjit.tanh(hs) * head
        return nnjit.sum((nnjit.checkpoint(block) if ck else block)(xs))

    got = nnjit.jit(nnjit.grad(lambda p, xs: loss(p, xs, True)), backend=backend)(p, xs)
    want = nnjit.jit(nnjit.grad(lambda p, xs: loss(p, xs, False)), backend=backend)(p, xs)
    for a, b in zip(nnjit.tree_leaves(got), nnjit.tree_leaves(want)):
        assert_close(a, b)
