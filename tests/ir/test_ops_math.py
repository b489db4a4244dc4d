"""The math, reduction and creation ops of issue 12 at their edges, on every backend: numpy's
floor_divide and remainder with negative, zero and infinite operands, round's ties, IEEE
specials of sin/cos/erf/expm1/log1p, prod's gradient at zeros, cumsum over long axes, empty and
NaN reductions, creation ops inside traced functions, and random.normal's statistics."""
import math

import numpy as np
import pytest

import nnjit
from tests.gradcheck import check_grads
from tests.helpers import run
from tests.op_cases import FLOATS, INTS, compare

NAN, INF = np.nan, np.inf


# -- elementwise ---------------------------------------------------------------------------------

def _grid_pairs(values, dtype):
    a, b = np.meshgrid(np.array(values, dtype), np.array(values, dtype))
    return a.ravel(), b.ravel()


@pytest.mark.parametrize("dtype", FLOATS)
def test_floor_divide_and_remainder_match_numpy_floats(dtype, backend):
    """x == y * (x // y) + x % y with numpy's signs, over signed zeros, infinities, nan and
    exact multiples; `//` and `%` are the operators."""
    a, b = _grid_pairs([-7.5, -3.0, -1.0, -0.0, 0.0, 0.3, 1.0, 2.5, 7.0, INF, -INF, NAN], dtype)
    got_q, got_r = run(lambda x, y: (x // y, x % y), a, b, backend=backend)
    with np.errstate(all="ignore"):
        want_q, want_r = np.floor_divide(a, b), np.remainder(a, b)
    np.testing.assert_array_equal(got_q, want_q)
    np.testing.assert_array_equal(np.isnan(got_r), np.isnan(want_r))
    np.testing.assert_allclose(got_r, want_r, rtol=1e-6)
    nonzero_q = want_q != 0
    np.testing.assert_array_equal(np.signbit(got_q[~nonzero_q & ~np.isnan(want_q)]),
                                  np.signbit(want_q[~nonzero_q & ~np.isnan(want_q)]))


@pytest.mark.parametrize("dtype", INTS)
def test_floor_divide_and_remainder_match_numpy_ints(dtype, backend):
    """Floored for negative operands; x // 0 == x % 0 == 0 (numpy, without its warning)."""
    a, b = _grid_pairs([-7, -3, -1, 0, 1, 2, 5], dtype)
    got_q, got_r = run(lambda x, y: (x // y, x % y), a, b, backend=backend)
    with np.errstate(all="ignore"):
        want_q, want_r = np.floor_divide(a, b), np.remainder(a, b)
    compare((got_q, got_r), (want_q.astype(dtype), want_r.astype(dtype)))
    got = run(lambda x: (7 // x, x // 2.5), np.array([2, -3], dtype), backend=backend)
    compare(got, (np.array([3, -3], dtype), np.array([0.0, -2.0], np.float32)))


@pytest.mark.parametrize("dtype", FLOATS)
def test_round_floor_ceil_ties_and_specials(dtype, backend):
    x = np.array([0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 0.49999997, -0.0, 1e30, INF, -INF, NAN,
                  -0.3, 2.0 ** 52 + 1 if dtype == np.float64 else 2.0 ** 23 + 1], dtype)
    got = run(lambda v: (nnjit.round(v), nnjit.floor(v), nnjit.ceil(v), v.round()), x,
              backend=backend)
    for g, w in zip(got, (np.rint(x), np.floor(x), np.ceil(x), np.round(x))):
        np.testing.assert_array_equal(g, w)
        assert np.array_equal(np.signbit(g), np.signbit(w))    # round(-0.3) == -0.0
    ints = np.array([-3, 0, 7], np.int32)
    compare(run(lambda v: (nnjit.floor(v), nnjit.round(v)), ints, backend=backend), (ints, ints))


@pytest.mark.parametrize("dtype", FLOATS)
def test_transcendental_specials(dtype, backend):
    x = np.array([0.0, -0.0, INF, -INF, NAN, 1e-30, -40.0, 40.0, 800.0], dtype)
    got = run(lambda v: (nnjit.sin(v), nnjit.cos(v), nnjit.erf(v), nnjit.expm1(v)), x,
              backend=backend)
    with np.errstate(all="ignore"):
        want = (np.sin(x), np.cos(x), np.vectorize(math.erf, otypes=[dtype])(x), np.expm1(x))
    for g, w in zip(got, want):
        compare(g, w.astype(dtype))
    y = np.array([-1.0, -2.0, 0.0, -0.0, 1e-30, INF, NAN], dtype)
    with np.errstate(all="ignore"):
        compare(run(nnjit.log1p, y, backend=backend), np.log1p(y))


@pytest.mark.parametrize("dtype", FLOATS)
def test_sin_cos_large_arguments(dtype, backend):
    """Correctly reduced far beyond 1e5, up to the largest finite values (the LLVM backend's
    Payne-Hanek reductions; CUDA: libdevice)."""
    x = np.array([1e5, -1e5 + 0.5, 3.0e7, 1e12, -7.7e20, 3.4e38], dtype)
    if dtype == np.float64:
        x = np.concatenate([x, [1e200, -1.7e308, math.ldexp(6381956970095103, 797)]])
    got = run(lambda v: (nnjit.sin(v), nnjit.cos(v)), x, backend=backend)
    want = (np.sin(x.astype(np.longdouble)), np.cos(x.astype(np.longdouble)))
    tol = dict(rtol=2e-6, atol=1e-7) if dtype == np.float32 else dict(rtol=1e-14, atol=1e-30)
    compare(got, tuple(w.astype(dtype) for w in want), **tol)


def test_integer_operands_compute_in_float32(backend):
    got = run(lambda v: (nnjit.sin(v), nnjit.erf(v)), np.array([0, 1, -2], np.int64),
              backend=backend)
    assert got[0].dtype == np.float32 and got[1].dtype == np.float32
    compare(got[0], np.sin(np.array([0.0, 1.0, -2.0], np.float32)))


@pytest.mark.parametrize("dtype", FLOATS)
def test_clip_sign_nan_semantics(dtype, backend):
    x = np.array([NAN, -2.0, 0.5, 3.0, -0.0, INF], dtype)
    got = run(lambda v: (nnjit.clip(v, -1.0, 1.0), v.clip(None, 0.0), v.clip(1.0),
                         nnjit.clip(v, 2.0, 1.0), nnjit.sign(v)), x, backend=backend)
    want = (np.clip(x, -1, 1), np.clip(x, None, 0), np.clip(x, 1, None), np.clip(x, 2, 1),
            np.sign(x))
    for g, w in zip(got, want):
        compare(g, w.astype(dtype))
    assert not np.signbit(got[-1][4])          # numpy 2: sign(-0.0) == +0.0


def test_clip_needs_a_bound():
    with pytest.raises(nnjit.ShapeError, match="clip: one of a_min or a_max"):
        nnjit.trace(lambda v: nnjit.clip(v), np.zeros(3, np.float32))


def test_activation_gradients_match_finite_differences(backend):
    x = np.array([-2.3, -0.7, -1e-3, 0.4, 1.9, 5.0])
    for fn in (nnjit.gelu, lambda v: nnjit.gelu(v, approximate="tanh"),
               lambda v: nnjit.leaky_relu(v, 0.1), nnjit.elu, nnjit.selu, nnjit.hard_sigmoid,
               lambda v: v.clip(-1.0, 1.0), nnjit.erf, nnjit.sin):
        check_grads(fn, (x,), (0,), backend=backend)


def test_elu_is_accurate_near_zero(backend):
    """expm1, not exp(x) - 1: a tiny negative input keeps its digits in float32."""
    x = np.array([-1e-7, -3e-9, -1e-20], np.float32)
    compare(run(nnjit.elu, x, backend=backend),
            np.expm1(x.astype(np.float64)).astype(np.float32), rtol=1e-6)


# -- reductions ----------------------------------------------------------------------------------

def test_prod_gradient_with_zeros(backend):
    """No zero: y / x; one zero: the product of the others at it, 0 elsewhere; two: all 0."""
    x = np.array([[2.0, 3.0, 4.0], [2.0, 0.0, 4.0], [0.0, 3.0, 0.0]])
    g = run(nnjit.grad(lambda v: nnjit.sum(nnjit.prod(v, 1) * np.array([1.0, 2.0, 3.0]))), x,
            backend=backend)
    np.testing.assert_allclose(g, [[12.0, 8.0, 6.0], [0.0, 16.0, 0.0], [0.0, 0.0, 0.0]])
    check_grads(lambda v: nnjit.prod(v, 1), (x,), (0,), backend=backend)


def test_prod_empty_and_ints(backend):
    got = run(lambda v, i: (nnjit.prod(v, 1), i.prod(), nnjit.prod(v[:, :0], 1)),
              np.arange(1.0, 7.0, dtype=np.float32).reshape(2, 3), np.array([-2, 3, 7], np.int32),
              backend=backend)
    compare(got, (np.array([6.0, 120.0], np.float32), np.int32(-42),
                  np.ones(2, np.float32)))


@pytest.mark.parametrize("n", [1, 64, 65, 100_000])
def test_cumsum_long_axis_is_accurate(n, backend):
    """Against a float64 running sum: the blocked scan's error stays near a few ulp of the
    running total (a sequential float32 loop drifts like n * eps)."""
    if backend == "cuda" and n > 5000:
        pytest.skip("the CUDA simulator runs Python per thread")
    rng = np.random.default_rng(0)
    x = rng.uniform(0.0, 1.0, (2, n)).astype(np.float32)
    got = run(lambda v: nnjit.cumsum(v, 1), x, backend=backend)
    want = np.cumsum(x.astype(np.float64), 1)
    rel = np.abs(got - want) / want
    assert rel.max() < 2e-6, rel.max()


def test_cumsum_graph_is_linear_in_n():
    """A few matmuls per level of 64, not one op per element (or a quadratic mask)."""
    g = nnjit.trace(lambda v: nnjit.cumsum(v), np.zeros(1_000_000, np.float32))
    assert len(g.nodes) < 60
    assert max(n.out.type.size for n in g.nodes) <= 64 * 64 * 1000


def test_cumsum_vjp_is_reversed_cumsum(backend):
    x = np.arange(1.0, 131.0).reshape(1, 130)
    g = run(nnjit.grad(lambda v: nnjit.sum(nnjit.cumsum(v, -1) * v)), x, backend=backend)
    want = np.cumsum(x[:, ::-1], -1)[:, ::-1] + np.cumsum(x, -1)
    np.testing.assert_allclose(g, want)


def test_empty_and_nan_reductions(backend):
    x = np.array([[NAN, 1.0, -2.0], [3.0, 0.0, -2.0]], np.float32)
    got = run(lambda v: (v.argmin(1), v.argmin(), nnjit.any(v[:, :0], 1), nnjit.all(v[:, :0], 1),
                         v.any(0), v.all(0), nnjit.var(v, 0), v.std(1, ddof=1)), x,
              backend=backend)
    want = (np.argmin(x, 1), np.argmin(x), np.zeros(2, bool), np.ones(2, bool), x.any(0),
            x.all(0), x.var(0), x.std(1, ddof=1))
    for g, w in zip(got, want):
        compare(g, w)


def test_min_and_argmin_of_bools_and_int_extremes(backend):
    b = np.array([[True, False], [True, True]])
    i = np.array([np.iinfo(np.int32).min, 5, np.iinfo(np.int32).max], np.int32)
    got = run(lambda u, v: (u.min(1), u.argmin(1), v.min(), v.argmin()), b, i, backend=backend)
    compare(got, (b.min(1), np.argmin(b, 1), i.min(), np.int64(0)))


# -- creation and random -----------------------------------------------------------------------

def test_creation_ops_in_traced_functions(backend):
    """numpy constants: folded into the kernels; dtypes as asked, f32 / i64 by default."""
    assert nnjit.zeros((2, 3)).dtype == np.float32 and nnjit.arange(4).dtype == np.int64
    assert nnjit.full(2, True).dtype == np.bool_ and nnjit.arange(0.0, 1.0, 0.25).size == 4
    assert nnjit.eye(3, dtype=nnjit.float64).dtype == np.float64

    def f(x):
        h = nnjit.zeros((3,))
        for _ in range(2):
            h = nnjit.tanh(x @ nnjit.eye(3) + h + nnjit.ones(3) * 0.5)
        return h + nnjit.arange(3) + nnjit.full((1, 3), 2.0)

    x = np.arange(6, dtype=np.float32).reshape(2, 3) / 6
    h = np.zeros(3, np.float32)
    for _ in range(2):
        h = np.tanh(x + h + 0.5)
    compare(run(f, x, backend=backend), (h + np.arange(3) + 2.0).astype(np.float32))
    with pytest.raises(nnjit.ShapeError, match="shape must be non-negative ints"):
        nnjit.zeros((2, -1))


def test_random_normal_statistics_and_backends(backend):
    """Mean 0 and variance 1 within 4 standard errors; the same numbers on every backend for
    one seed; two draws in one function differ (auto salt); an int seed gives a constant."""
    n = 2000 if backend == "cuda" else 200_000     # the simulator runs Python per thread

    def f(seed):
        return nnjit.random.normal(seed, (n,)), nnjit.random.normal(seed, (4,))

    a, b = run(f, np.int64(1234), backend=backend)
    ref, _ = run(f, np.int64(1234), backend="interp")
    np.testing.assert_allclose(a, ref, rtol=1e-5, atol=1e-6)
    assert abs(a.mean()) < 4 / np.sqrt(n) and abs(a.var() - 1) < 4 * np.sqrt(2 / n)
    assert not np.allclose(a[:4], b)
    const = nnjit.random.normal(1234, (4,))
    assert const.dtype == np.float32 and np.isfinite(const).all()
    u = run(lambda s: nnjit.random.uniform(s, (1000,), np.float64), np.int64(7), backend=backend)
    assert u.dtype == np.float64 and (u >= 0).all() and (u < 1).all()


def test_random_rejects_bad_seeds_and_dtypes():
    with pytest.raises(nnjit.ShapeError, match="seed must be an int"):
        nnjit.random.normal(1.5, (2,))
    with pytest.raises(nnjit.ShapeError, match="dtype must be float32 or float64"):
        nnjit.random.normal(0, (2,), np.int32)
