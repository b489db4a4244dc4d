"""Dropout: the mask is Philox(seed, salt) — identical on every call and every backend, equal to
`nnjit.ir.philox.uniform(seed, shape, salt) >= rate` — different for another seed or salt, with
a keep rate within binomial 5-sigma bounds and kept values scaled by 1/(1-rate).
"""
from __future__ import annotations

import numpy as np
import pytest

import nnjit
from nnjit.ir import Op
from nnjit.ir.philox import uniform
from tests.helpers import BACKENDS, assert_close, run

SHAPE = (4, 5, 6)
BIG = (100, 1000)          # 1e5 elements for the statistical checks


def x_of(shape=SHAPE, dtype=np.float32):
    return (np.arange(int(np.prod(shape)), dtype=dtype).reshape(shape) % 7 + 1).astype(dtype)


def want_dropout(x, rate, seed, salt):
    """The reference: keep where Philox uniform >= rate, scale the kept values."""
    keep = uniform(seed, x.shape, salt, x.dtype) >= rate
    return np.where(keep, x * x.dtype.type(1.0 / (1.0 - rate)), x.dtype.type(0)), keep


@pytest.mark.parametrize("rate", [0.1, 0.5, 0.9])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_mask_equals_philox_uniform(backend, rate, dtype):
    x = x_of(dtype=dtype)
    got = run(lambda x: nnjit.dropout(x, rate, seed=1234, salt=5), x, backend=backend)
    want, keep = want_dropout(x, rate, 1234, 5)
    np.testing.assert_array_equal(got != 0, keep)
    assert_close(got, want)
    assert got.dtype == dtype


def test_same_seed_and_salt_same_mask_on_every_call(backend):
    jf = nnjit.jit(lambda x, seed: nnjit.dropout(x, 0.5, seed, salt=3), backend=backend)
    x = x_of()
    a = jf(x, np.int64(42))
    b = jf(x, np.int64(42))
    c = run(lambda x: nnjit.dropout(x, 0.5, 42, salt=3), x, backend=backend)   # constant seed
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(a, c)


def test_same_mask_on_every_backend():
    x = x_of()
    outs = [run(lambda x: nnjit.dropout(x, 0.3, 99, salt=2), x, backend=bk) for bk in BACKENDS]
    want, _ = want_dropout(x, 0.3, 99, 2)
    for o in outs:
        np.testing.assert_array_equal(o, want)


def test_traced_seed_changes_the_mask_without_retracing(backend):
    traces = []

    def f(x, seed):
        traces.append(1)
        return nnjit.dropout(x, 0.5, seed, salt=0)

    jf = nnjit.jit(f, backend=backend)
    x = x_of()
    masks = [jf(x, np.int64(s)) != 0 for s in (0, 1, 2, -1, 2 ** 40)]
    assert len(traces) == 1
    for i in range(len(masks)):
        for j in range(i):
            assert (masks[i] != masks[j]).any()
    np.testing.assert_array_equal(masks[3], uniform(-1, SHAPE, 0) >= 0.5)
    np.testing.assert_array_equal(masks[4], uniform(2 ** 40, SHAPE, 0) >= 0.5)


@pytest.mark.parametrize("change", ["seed", "salt"])
def test_different_seed_or_salt_gives_a_different_mask(backend, change):
    x = x_of()
    a = run(lambda x: nnjit.dropout(x, 0.5, 7, salt=1), x, backend=backend)
    seed, salt = (8, 1) if change == "seed" else (7, 2)
    b = run(lambda x: nnjit.dropout(x, 0.5, seed, salt=salt), x, backend=backend)
    agree = np.mean((a != 0) == (b != 0))
    assert 0.3 < agree < 0.7            # independent masks agree on about half the elements


@pytest.mark.parametrize("rate", [0.1, 0.5, 0.9])
def test_keep_rate_and_scaling_within_statistical_bounds(backend, rate):
    x = np.ones(BIG, np.float32)
    got = run(lambda x: nnjit.dropout(x, rate, seed=2024, salt=0), x, backend=backend)
    n, p = x.size, 1.0 - rate
    sigma = np.sqrt(n * p * (1 - p))
    kept = np.count_nonzero(got)
    assert abs(kept - n * p) < 5 * sigma, (kept, n * p, sigma)
    # kept values are exactly x / (1 - rate) (one f32 multiply), the rest exactly 0
    scale = np.float32(1.0 / (1.0 - rate))
    assert set(np.unique(got).tolist()) == {0.0, float(scale)}
    # so the mean is preserved: E[out] = x, within the same 5-sigma bound
    assert abs(got.mean(dtype=np.float64) - 1.0) < 5 * sigma / (n * p) + 1e-6
    # and the mask is not structured: keep rates of rows and columns agree too
    rows = (got != 0).mean(axis=1)
    assert abs(rows.mean() - p) < 5 * sigma / n and rows.std() < 5 * np.sqrt(p * (1 - p) / 1000)


def test_uniform_values_are_uniform():
    """The mask's source: Philox uniforms in [0, 1) with flat deciles (chi-square, 9 dof)."""
    u = uniform(5, BIG, 0)
    assert u.min() >= 0.0 and u.max() < 1.0
    counts = np.histogram(u, bins=10, range=(0, 1))[0]
    chi2 = ((counts - u.size / 10) ** 2 / (u.size / 10)).sum()
    assert chi2 < 40                      # p < 1e-5 for 9 degrees of freedom


def test_training_false_is_the_identity(backend):
    x = x_of()
    got = run(lambda x: nnjit.dropout(x, 0.5, 3, training=False), x, backend=backend)
    np.testing.assert_array_equal(got, x)
    g = nnjit.trace(lambda x: nnjit.dropout(x, 0.5, 3, training=False), x)
    assert not any(n.op == Op.RANDOM_UNIFORM for n in g.nodes)


def test_rate_zero_is_the_identity(backend):
    x = x_of()
    np.testing.assert_array_equal(run(lambda x: nnjit.dropout(x, 0.0, 3), x, backend=backend), x)
    assert nnjit.trace(lambda x: nnjit.dropout(x, 0.0, 3), x).nodes == ()


def test_rate_one_drops_everything(backend):
    x = x_of()
    np.testing.assert_array_equal(run(lambda x: nnjit.dropout(x, 1.0, 3), x, backend=backend),
                                  np.zeros_like(x))


def test_bad_rate_is_an_error():
    with pytest.raises(nnjit.ShapeError, match="dropout: rate must be in"):
        nnjit.trace(lambda x: nnjit.dropout(x, 1.5, 3), x_of())


def test_two_dropouts_in_one_trace_draw_different_masks(backend):
    def f(x):
        return nnjit.dropout(x, 0.5, 11), nnjit.dropout(x, 0.5, 11)

    x = x_of()
    a, b = run(f, x, backend=backend)
    assert 0.3 < np.mean((a != 0) == (b != 0)) < 0.7
    # the automatic salts are 0 and 1, in trace order
    np.testing.assert_array_equal(a != 0, uniform(11, SHAPE, 0) >= 0.5)
    np.testing.assert_array_equal(b != 0, uniform(11, SHAPE, 1) >= 0.5)
    salts = [n.attrs["salt"] for n in nnjit.trace(f, x).nodes if n.op == Op.RANDOM_UNIFORM]
    assert salts == [0, 1]


def test_auto_salts_are_unique_across_scan_bodies_and_grad(backend):
    """A dropout in a scan body or inside grad does not reuse the salt of one outside it."""
    def f(x):
        a = nnjit.dropout(x, 0.5, 5)
        _, ys = nnjit.scan(lambda c, t: (c, nnjit.dropout(t, 0.5, 5)), x[0], x)
        g = nnjit.grad(lambda p: nnjit.dropout(p, 0.5, 5).sum())(x)
        b = nnjit.dropout(x, 0.5, 5)
        return a, ys, g, b

    x = np.ones((6, 6), np.float32)
    g = nnjit.trace(f, x)
    salts = [n.attrs["salt"] for n in g.walk() if n.op == Op.RANDOM_UNIFORM]
    assert len(set(salts)) == len(salts) == 4
    a, ys, gr, b = run(f, x, backend=backend)
    masks = [a != 0, gr != 0, b != 0]
    for i in range(3):
        for j in range(i):
            assert (masks[i] != masks[j]).any()
    # the scan body draws the same mask at every step (same seed and salt): rows are equal
    assert (ys != 0).all(axis=0).sum() + (ys == 0).all(axis=0).sum() == 6
    assert not ((ys[0] != 0) == (a[0] != 0)).all()


def test_int_input_draws_f32_uniforms_and_gives_f32(backend):
    x = np.arange(1, 61, dtype=np.int32).reshape(6, 10)
    got = run(lambda x: nnjit.dropout(x, 0.25, 3, salt=4), x, backend=backend)
    want, _ = want_dropout(x.astype(np.float32), 0.25, 3, 4)
    assert got.dtype == np.float32
    assert_close(got, want)


def test_dropout_gradient_uses_the_same_mask(backend):
    x = x_of()

    def loss(x):
        return (nnjit.dropout(x, 0.5, 21, salt=0) * 3.0).sum()

    g = run(nnjit.grad(loss), x, backend=backend)
    keep = uniform(21, SHAPE, 0) >= 0.5
    assert_close(g, np.where(keep, np.float32(2.0) * 3.0, 0.0).astype(np.float32))
