"""Lowering graph -> kernel IR, checked by running the kernel IR's own interpreter
(`nnjit.ir.kernel_eval`) against the graph reference, independently of any native backend."""
from __future__ import annotations

import numpy as np
import pytest

import nnjit
from nnjit.codegen import lower_graph
from nnjit.ir import evaluate
from nnjit.ir.kernel import GemmKernel, LoopKernel, ScanKernel
from nnjit.ir.kernel_eval import run_program
from nnjit.codegen.memory_plan import check_plan

rng = np.random.default_rng(0)


def lowered_matches(f, *args):
    g = nnjit.trace(f, *args)
    low = lower_graph(g)
    check_plan(low.plan)
    got = run_program(low.program, list(args))
    want = evaluate(g, list(args))
    for a, b in zip(got, want):
        np.testing.assert_allclose(a.reshape(b.shape), b, rtol=1e-4, atol=1e-5)
    return low.program


def f32(*shape):
    return rng.normal(size=shape).astype(np.float32)


def test_mlp_layer_reductions_and_argmax():
    def mlp(x, w, b):
        h = nnjit.relu(x @ w + b)
        return nnjit.log_softmax(h, axis=-1), h.sum(axis=0), h.argmax(axis=1)

    p = lowered_matches(mlp, f32(4, 3), f32(3, 5), f32(5))
    assert sum(isinstance(k, GemmKernel) for k in p.kernels) == 1


def test_conv_pool_forward():
    def conv(x, w, b):
        y = nnjit.conv2d(x, w, b, stride=1, padding=1)
        return (nnjit.max_pool2d(nnjit.relu(y), 2),
                nnjit.avg_pool2d(y, 2, padding=1, count_include_pad=False))

    lowered_matches(conv, f32(2, 3, 6, 6), f32(4, 3, 3, 3), f32(4))


def test_conv_pool_gradients():
    def loss(x, w, b):
        y = nnjit.relu(nnjit.conv2d(x, w, b, stride=2, padding=1))
        return (nnjit.avg_pool2d(nnjit.max_pool2d(y, 2, stride=1), 2, padding=1) ** 2).sum()

    lowered_matches(nnjit.grad(loss, argnums=(0, 1, 2)), rng.normal(size=(2, 3, 7, 7)),
                    rng.normal(size=(4, 3, 3, 3)), rng.normal(size=4))


def test_lenet_style_gradients_accumulate_rows_and_store_windows():
    """col2im adds colg's rows into dx (no tap loop per pixel); 2x2 stride-2 max pooling's
    gradient stores each window's taps (no read-modify-write of dx, no zero fill)."""
    def loss(x, w1, w2):
        y = nnjit.max_pool2d(nnjit.relu(nnjit.conv2d(x, w1, padding=2)), 2)
        return (nnjit.max_pool2d(nnjit.conv2d(y, w2), 2) ** 2).sum()

    p = lowered_matches(nnjit.grad(loss, argnums=(1, 2)), f32(2, 1, 12, 12), f32(2, 1, 5, 5),
                        f32(3, 2, 3, 3))
    by_name = {k.name: str(k.body) for k in p.kernels if isinstance(k, LoopKernel)}
    col2im = [b for n, b in by_name.items() if n.endswith("col2im")]
    assert col2im and all("reduce for" not in b for b in col2im)
    pools = [b for n, b in by_name.items() if "max_pool2d_grad" in n]
    assert pools and all("z0" not in b for b in pools)  # every window tiles its plane


def test_scan_take_and_their_gradients():
    def step(W, h, x):
        h = nnjit.tanh(h @ W + x)
        return h, h.sum()

    def f(W, xs, emb, idx):
        def loss(W, emb):
            h, _ = nnjit.scan(lambda h, x: step(W, h, x), np.zeros((2, 3)),
                              xs + nnjit.take(emb, idx, axis=0, mode="clip"))
            return (h ** 2).sum()
        h, ys = nnjit.scan(lambda h, x: step(W, h, x), np.zeros((2, 3)), xs)
        return nnjit.grad(loss, argnums=(0, 1))(W, emb), h, ys

    p = lowered_matches(f, rng.normal(size=(3, 3)), rng.normal(size=(5, 2, 3)),
                        rng.normal(size=(7, 3)), rng.integers(-8, 9, size=(5, 2)))
    assert any(isinstance(k, ScanKernel) for k in p.kernels)


def test_movement_random_and_one_hot():
    def misc(x):
        return (nnjit.concat([x, x[:, ::-1] * 2], axis=1), nnjit.pad(x, ((1, 0), (0, 2)), 3.0),
                x.T @ x, nnjit.dropout(x, 0.5, 7), nnjit.one_hot(nnjit.argmax(x, axis=0), 4),
                x.reshape(2, 6).T)

    lowered_matches(misc, f32(3, 4))


def test_reshape_is_an_alias_and_outputs_are_written_in_place():
    p = lowered_matches(lambda x: nnjit.exp(x).reshape(6, 2), f32(3, 4))
    loops = [k for k in p.kernels if isinstance(k, LoopKernel)]
    assert len(loops) == 1 and loops[0].writes == ("out0",)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_kernel_ir_prints(dtype):
    g = nnjit.trace(lambda x: nnjit.softmax(x), np.ones((2, 3), dtype))
    text = str(lower_graph(g).program)
    assert "reduce for" in text and "parallel for" in text
