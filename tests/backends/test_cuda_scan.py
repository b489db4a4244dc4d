"""Scans on the CUDA backend (under the simulator here): a small body loops on the device, the
whole scan one launch whatever its length; a body over the work limit keeps the host loop,
which launches the body's kernels every step. Both against the interpreter, forward and
backward, RNN and LSTM; the printed GPU form and `launches()` say which path each scan took."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

import nnjit
from nnjit.codegen.gpu import SIM_TARGET, Target, map_to_gpu
from nnjit.ir.kernel import ScanKernel
from tests.backends.test_cuda_render import BLOCKS, TILED, run_graph
from tests.backends.test_gpu_map import lowered
from tests.helpers import assert_close
from tests.passes.test_autodiff import lstm, lstm_args, rnn_loss

cuda = pytest.importorskip("numba.cuda")
pytestmark = pytest.mark.skipif(not cuda.is_available(), reason="no GPU and no CUDA simulator")

HOST = dataclasses.replace(SIM_TARGET, scan_loop_work=0)       # every scan a host loop


def rnn(h, xs, w):
    return nnjit.scan(lambda h, x: (nnjit.tanh(h @ w + x), h.sum()), h, xs)


def rnn_args(steps: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((2, 3)).astype(np.float32),
            rng.standard_normal((steps, 2, 3)).astype(np.float32),
            (rng.standard_normal((3, 3)) * 0.5).astype(np.float32))


def check(fn, args, target=SIM_TARGET):
    got, want, exe = run_graph(fn, *args, target=target)
    for g, w in zip(got, want):
        assert_close(g, np.asarray(w), rtol=1e-5, atol=1e-5)
    return exe


def scans(exe) -> list[ScanKernel]:
    return [k for k in exe.rendered.program.kernels if isinstance(k, ScanKernel)]


def test_a_small_body_loops_on_the_device():
    text = str(map_to_gpu(lowered(rnn, *rnn_args(5)), SIM_TARGET))
    assert f"in one launch, block ({SIM_TARGET.threads},)" in text
    exe = check(rnn, rnn_args(5))
    assert exe.launches() == [f"k_k0_scan[(1,), ({SIM_TARGET.threads},)] scan x5 in one launch"]
    assert "for _t in range(5):" in exe.cuda_source()


@pytest.mark.parametrize("target", [SIM_TARGET, HOST], ids=["looped", "host"])
def test_launches_per_call_constant_when_looped_linear_on_the_host(target):
    counts = {}
    for steps in (3, 12):
        exe = check(rnn, rnn_args(steps), target)
        before = exe.launch_count
        exe([np.asarray(a) for a in rnn_args(steps, seed=1)])
        counts[steps] = exe.launch_count - before
    if target is HOST:
        assert counts[12] - counts[3] >= 9 * 2          # two body kernels a step
        assert exe.launches()[0].startswith("scan k0_scan x12: host loop, ")
    else:
        assert counts[3] == counts[12] == 1


def test_the_work_limit_picks_the_path():
    args = rnn_args(4)
    small = dataclasses.replace(SIM_TARGET, scan_loop_work=10)      # the body does more
    assert "in one launch" not in str(map_to_gpu(lowered(rnn, *args), small))
    assert "in one launch" in str(map_to_gpu(lowered(rnn, *args), SIM_TARGET))


@pytest.mark.parametrize("target", [SIM_TARGET, BLOCKS, HOST], ids=["sim", "blocks", "host"])
@pytest.mark.parametrize("reverse", [False, True])
def test_rnn_forward_and_gradient_match_the_interpreter(target, reverse):
    def loss(h, xs, w):
        h, ys = nnjit.scan(lambda h, x: (nnjit.tanh(h @ w + x), h.sum()), h, xs,
                           reverse=reverse)
        return (h * h).sum() + (ys * ys).sum()

    args = rnn_args(5, seed=2)
    check(lambda h, xs, w: nnjit.scan(lambda h, x: (nnjit.tanh(h @ w + x), h.sum()), h, xs,
                                      reverse=reverse), args, target)
    exe = check(nnjit.grad(loss, argnums=(0, 1, 2)), args, target)
    assert all(bool(k.block) == (target is not HOST) for k in scans(exe))


def test_rnn_with_closed_over_weights_and_its_gradient():
    rng = np.random.default_rng(4)
    p = {"wx": (rng.standard_normal((3, 4)) * 0.5).astype(np.float32),
         "wh": (rng.standard_normal((4, 4)) * 0.5).astype(np.float32),
         "b": (rng.standard_normal(4) * 0.1).astype(np.float32)}
    h0 = rng.standard_normal((2, 4)).astype(np.float32)
    xs = rng.standard_normal((6, 2, 3)).astype(np.float32)
    check(lambda h0, xs, wx, wh, b: rnn_loss(h0, xs, {"wx": wx, "wh": wh, "b": b}),
          (h0, xs, p["wx"], p["wh"], p["b"]))
    exe = check(nnjit.grad(lambda h0, xs, wx, wh, b: rnn_loss(h0, xs, {"wx": wx, "wh": wh,
                                                                   "b": b}),
                           argnums=(0, 1, 2, 3, 4)), (h0, xs, p["wx"], p["wh"], p["b"]))
    assert scans(exe) and all(k.block for k in scans(exe))


@pytest.mark.parametrize("target", [SIM_TARGET, TILED], ids=["sim", "tiled"])
def test_lstm_forward_and_gradient_match_the_interpreter(target):
    p, xs, h0, c0 = (jax_free_f32(a) for a in lstm_args())
    names = sorted(p)

    def fwd(xs, h0, c0, *ws):
        return lstm(dict(zip(names, ws)), xs, h0, c0)

    def loss(xs, h0, c0, *ws):
        hs, h, c = fwd(xs, h0, c0, *ws)
        return (hs * hs).sum() + h.sum() + (c * c).sum()

    args = (xs, h0, c0, *(p[n] for n in names))
    exe = check(fwd, args, target)
    assert all(k.block for k in scans(exe))
    check(nnjit.grad(loss, argnums=tuple(range(len(args)))), args, target)


def jax_free_f32(tree):
    """lstm_args' float64 arrays (a dict or an array) as float32."""
    if isinstance(tree, dict):
        return {k: np.asarray(v, np.float32) for k, v in tree.items()}
    return np.asarray(tree, np.float32)


def test_nested_scans_keep_the_outer_host_loop_and_loop_the_inner():
    def f(h0, xss, w):
        def outer(h, xs):
            g, _ = nnjit.scan(lambda g, x: (nnjit.tanh(g * w + x), g.sum()), h, xs)
            return g, g.sum()
        return nnjit.scan(outer, h0, xss)

    rng = np.random.default_rng(6)
    args = (rng.standard_normal(3).astype(np.float32),
            rng.standard_normal((2, 3, 3)).astype(np.float32),
            rng.standard_normal(3).astype(np.float32))
    exe = check(f, args)
    (k,) = scans(exe)
    assert not k.block and any(isinstance(b, ScanKernel) and b.block for b in k.body.kernels)


def test_a_scan_of_length_one_and_a_default_target_body():
    check(rnn, rnn_args(1))
    exe = check(rnn, rnn_args(3), Target(threads=4, max_blocks=2, reduce_block=4))
    assert scans(exe)[0].block == 4
