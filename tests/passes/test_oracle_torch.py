"""Forward values and gradients against PyTorch (float64): conv2d, both poolings, cross-entropy
and an LSTM run with `nnjit.scan` in torch.nn.LSTM's convention.

Marked `oracle`: skipped when torch is not installed (it is not a dependency of nnjit). Each test
draws a random cotangent for the outputs, computes the VJP with `nnjit.grad` through the backend
and with torch autograd, and compares both the outputs and the gradients.
"""
from __future__ import annotations

import numpy as np
import pytest

import nnjit
from nnjit.frontend.pytree import flatten
from tests.helpers import assert_close, run

torch = pytest.importorskip("torch")
F = torch.nn.functional

pytestmark = pytest.mark.oracle

RTOL, ATOL = 1e-9, 1e-10   # float64 on both sides; only summation order differs


def vjp_nnjit(fn, args, argnums, cts, backend):
    """(outputs of fn, grads of sum(out * ct) w.r.t. argnums), computed by `backend`."""
    n = len(args)

    def loss(*a):
        outs = flatten(fn(*a[:n]))[0]
        return sum((o * c).sum() for o, c in zip(outs, a[n:]))

    outs = run(fn, *args, backend=backend)
    grads = run(lambda *a: nnjit.grad(loss, argnums)(*a), *args, *cts, backend=backend)
    return outs, grads


def vjp_torch(fn, args, argnums, cts):
    targs = [torch.tensor(a, requires_grad=i in argnums) if a.dtype.kind == "f"
             else torch.tensor(a) for i, a in enumerate(args)]
    outs = fn(*targs)
    leaves = outs if isinstance(outs, tuple) else (outs,)
    total = sum((o * torch.tensor(c)).sum() for o, c in zip(leaves, cts))
    total.backward()
    to_np = [o.detach().numpy() for o in leaves]
    return (tuple(to_np) if isinstance(outs, tuple) else to_np[0],
            tuple(targs[i].grad.numpy() for i in argnums))


def compare(fn_nnjit, fn_torch, args, argnums, backend, seed=0):
    rng = np.random.default_rng(seed)
    probe = run(fn_nnjit, *args, backend=backend)
    cts = [rng.standard_normal(np.shape(o)) for o in flatten(probe)[0]]
    got_out, got_grads = vjp_nnjit(fn_nnjit, args, argnums, cts, backend)
    want_out, want_grads = vjp_torch(fn_torch, args, argnums, cts)
    for g, w in zip(flatten(got_out)[0], flatten(want_out)[0]):
        assert_close(g, w, rtol=RTOL, atol=ATOL)
    for k, g, w in zip(argnums, got_grads, want_grads):
        assert g.shape == w.shape, f"gradient of argument {k}: {g.shape} vs torch {w.shape}"
        np.testing.assert_allclose(g, w, rtol=RTOL, atol=ATOL,
                                   err_msg=f"gradient of argument {k} differs from torch")


def randn(rng, *shape):
    return rng.standard_normal(shape)


def distinct(rng, *shape):
    """No ties inside pooling windows (tie-breaking is not part of the contract)."""
    n = int(np.prod(shape))
    return ((rng.permutation(n) - n / 2) * 0.1 + rng.uniform(-0.02, 0.02, n)).reshape(shape)


# -- conv2d ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("stride,padding,dilation", [
    (1, 0, 1), (2, 1, 1), (1, 2, 2), ((2, 1), (0, 1), (1, 2)), (3, 1, 2),
])
def test_conv2d(backend, stride, padding, dilation):
    rng = np.random.default_rng(1)
    x, w, b = randn(rng, 2, 3, 7, 6), randn(rng, 4, 3, 3, 2), randn(rng, 4)
    compare(lambda x, w, b: nnjit.conv2d(x, w, b, stride, padding, dilation),
            lambda x, w, b: F.conv2d(x, w, b, stride, padding, dilation),
            (x, w, b), (0, 1, 2), backend)


def test_conv2d_asymmetric_padding(backend):
    """nnjit's ((top, bottom), (left, right)) padding == torch's F.pad followed by conv2d."""
    rng = np.random.default_rng(2)
    x, w = randn(rng, 1, 2, 5, 5), randn(rng, 3, 2, 3, 3)
    compare(lambda x, w: nnjit.conv2d(x, w, stride=2, padding=((0, 2), (1, 0))),
            lambda x, w: F.conv2d(F.pad(x, (1, 0, 0, 2)), w, stride=2),
            (x, w), (0, 1), backend)


# -- pooling ----------------------------------------------------------------------------------

POOLS = [(2, None, 0), (3, 1, 1), (3, 2, 1), ((2, 3), (1, 2), (1, 1)), (1, 1, 0)]


@pytest.mark.parametrize("kernel,stride,padding", POOLS)
def test_max_pool2d(backend, kernel, stride, padding):
    rng = np.random.default_rng(3)
    x = distinct(rng, 2, 2, 6, 7)
    compare(lambda x: nnjit.max_pool2d(x, kernel, stride, padding),
            lambda x: F.max_pool2d(x, kernel, stride, padding), (x,), (0,), backend)


@pytest.mark.parametrize("count_include_pad", [True, False])
@pytest.mark.parametrize("kernel,stride,padding", POOLS)
def test_avg_pool2d(backend, kernel, stride, padding, count_include_pad):
    rng = np.random.default_rng(4)
    x = randn(rng, 2, 2, 6, 7)
    compare(lambda x: nnjit.avg_pool2d(x, kernel, stride, padding, count_include_pad),
            lambda x: F.avg_pool2d(x, kernel, stride, padding,
                                   count_include_pad=count_include_pad),
            (x,), (0,), backend)


# -- cross-entropy ----------------------------------------------------------------------------

def cross_entropy(logits, labels):
    """Mean over the batch of -log softmax(logits)[label]."""
    n, c = logits.shape
    return -(nnjit.one_hot(labels, c, np.float64) * nnjit.log_softmax(logits)).sum() / n


@pytest.mark.parametrize("n,c", [(1, 2), (6, 5), (4, 10)])
def test_cross_entropy(backend, n, c):
    rng = np.random.default_rng(5)
    z = randn(rng, n, c) * 3.0
    y = rng.integers(0, c, n)
    compare(cross_entropy, lambda z, y: F.cross_entropy(z, y), (z, y), (0,), backend)


# -- LSTM -----------------------------------------------------------------------------------------

def lstm(xs, h0, c0, w_ih, w_hh, b_ih, b_hh):
    """torch.nn.LSTM (one layer) as an nnjit.scan: gates i, f, g, o; W_ih (4H, I), W_hh (4H, H).
    Returns (outputs (T, B, H), h_T, c_T)."""
    n = h0.shape[-1]

    def step(carry, x):
        h, c = carry
        gates = x @ w_ih.T + b_ih + h @ w_hh.T + b_hh
        i, f = nnjit.sigmoid(gates[:, :n]), nnjit.sigmoid(gates[:, n:2 * n])
        g, o = nnjit.tanh(gates[:, 2 * n:3 * n]), nnjit.sigmoid(gates[:, 3 * n:])
        c = f * c + i * g
        h = o * nnjit.tanh(c)
        return (h, c), h

    (h, c), hs = nnjit.scan(step, (h0, c0), xs)
    return hs, h, c


def torch_lstm(xs, h0, c0, w_ih, w_hh, b_ih, b_hh):
    inp, hid = xs.shape[-1], h0.shape[-1]
    mod = torch.nn.LSTM(inp, hid, dtype=torch.float64)
    # the module's parameters are the (differentiable) tensors passed in
    del mod.weight_ih_l0, mod.weight_hh_l0, mod.bias_ih_l0, mod.bias_hh_l0
    mod.weight_ih_l0, mod.weight_hh_l0, mod.bias_ih_l0, mod.bias_hh_l0 = w_ih, w_hh, b_ih, b_hh
    out, (h, c) = mod(xs, (h0[None], c0[None]))
    return out, h[0], c[0]


@pytest.mark.parametrize("steps,batch,inp,hid", [(1, 1, 2, 3), (4, 2, 3, 5), (6, 3, 1, 2)])
def test_lstm(backend, steps, batch, inp, hid):
    rng = np.random.default_rng(6)
    s = 1 / np.sqrt(hid)
    args = (randn(rng, steps, batch, inp), randn(rng, batch, hid) * 0.5,
            randn(rng, batch, hid) * 0.5, rng.uniform(-s, s, (4 * hid, inp)),
            rng.uniform(-s, s, (4 * hid, hid)), rng.uniform(-s, s, 4 * hid),
            rng.uniform(-s, s, 4 * hid))
    compare(lstm, torch_lstm, args, tuple(range(7)), backend)


def test_lstm_module_copy_matches_functional_torch():
    """The weight swap in torch_lstm really drives torch.nn.LSTM (guards the oracle itself)."""
    rng = np.random.default_rng(7)
    mod = torch.nn.LSTM(2, 3, dtype=torch.float64)
    xs = torch.tensor(randn(rng, 3, 1, 2))
    want, (h, c) = mod(xs)
    params = [p.detach() for p in (mod.weight_ih_l0, mod.weight_hh_l0, mod.bias_ih_l0,
                                   mod.bias_hh_l0)]
    got, h2, c2 = torch_lstm(xs, torch.zeros(1, 3, dtype=torch.float64),
                             torch.zeros(1, 3, dtype=torch.float64), *params)
    torch.testing.assert_close(got, want)
    torch.testing.assert_close(h2, h[0])
