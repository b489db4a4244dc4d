"""Numerics every backend must get right: IEEE semantics through fused reductions (inf and NaN
are never folded away), and accurate sums at sizes where naive accumulation drifts."""
from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import nnjit
from tests.helpers import run


@pytest.mark.parametrize("fn", [lambda v: nnjit.mean(-v + v, axis=1),
                                lambda v: nnjit.sum(v - v, axis=1),
                                lambda v: nnjit.sum(v * 0.0, axis=1)])
def test_inf_and_nan_survive_fused_reductions(backend, fn):
    """A reduction of x - x over an axis holding inf is NaN (LLVM may not fold acc + (x - x)
    to acc: that needs nsz, which the accumulation must not carry)."""
    x = np.array([1.25, np.inf, -0.75], np.float32).reshape(1, 3, 1)
    got = run(fn, x, backend=backend)
    assert np.isnan(got).all(), got


# -- accurate sums -----------------------------------------------------------------------------
# Pairwise summation (numpy's) has an error bound of about u * log2(n) * sum|x| (Higham 4.6);
# every backend must stay within a small multiple of it, at every size.
U = {np.float32: 2.0 ** -24, np.float64: 2.0 ** -53}


def pairwise_bound(n: int, abs_sum: float, dtype) -> float:
    return 4 * U[dtype] * max(1, math.ceil(math.log2(max(n, 2)))) * abs_sum


def test_a_sum_of_2_26_tenths_is_accurate(backend):
    """2^26 copies of 0.1 summed in f32 (a naive running sum is 4% low)."""
    if backend == "cuda":
        pytest.skip("too large for the simulator (tested at smaller sizes below)")
    x = np.full(1 << 26, 0.1, np.float32)
    exact = float(np.float32(0.1)) * (1 << 26)
    got = float(run(lambda x: x.sum(), x, backend=backend))
    assert abs(got - exact) <= pairwise_bound(x.size, exact, np.float32), (got, exact)
    mean = float(run(lambda x: x.mean(), x.reshape(4096, -1), backend=backend))
    assert abs(mean - float(np.float32(0.1))) <= pairwise_bound(x.size, 0.1, np.float32)


@pytest.mark.parametrize("n", [(1 << 28) + 12345, 1 << 28])
def test_sums_of_2_28_terms_are_accurate(n):
    """A broadcast scalar (and a pattern computed from indices) summed over 2^28 terms with no
    memory behind them: the fused kernel computes every term inline."""
    x = np.array(0.1, np.float32)
    got = float(run(lambda x: nnjit.broadcast_to(x, (n,)).sum(), x, backend="llvm"))
    exact = float(np.float32(0.1)) * n
    assert abs(got - exact) <= pairwise_bound(n, exact, np.float32), (got, exact)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape,axes", [((1 << 20, 16), (0,)), ((16, 1 << 20), (1,)),
                                        ((64, 3, 4096), (0, 2)), ((1 << 21,), (0,))])
def test_large_reductions_match_fsum(backend, dtype, shape, axes):
    """Row sums, column sums (the bias gradient's shape) and sums over non-adjacent axes of
    random data, against math.fsum of every output."""
    if backend == "cuda":
        pytest.skip("too large for the simulator")
    rng = np.random.default_rng(0)
    x = (rng.standard_normal(shape) + 0.5).astype(dtype)
    got = run(lambda x: nnjit.sum(x, axis=axes), x, backend=backend)
    kept = [d for d in range(x.ndim) if d not in axes]
    rows = np.transpose(x, kept + list(axes)).reshape(got.size, -1).astype(np.float64)
    for g, row in zip(got.reshape(-1), rows):
        want = math.fsum(row)
        assert abs(float(g) - want) <= pairwise_bound(row.size, np.abs(row).sum(), dtype)


@settings(max_examples=10, deadline=None, derandomize=True)
@given(n=st.integers(1, 1 << 22), scale=st.sampled_from([1e-30, 1.0, 1e30]),
       dtype=st.sampled_from([np.float32, np.float64]), seed=st.integers(0, 2 ** 16))
def test_random_sums_match_fsum(n, scale, dtype, seed):
    rng = np.random.default_rng(seed)
    x = ((rng.standard_normal(n) + 1.0) * scale).astype(dtype)   # drifts if summed naively
    got = float(run(lambda x: x.sum(), x, backend="llvm"))
    want = math.fsum(x.astype(np.float64))
    assert abs(got - want) <= pairwise_bound(n, float(np.abs(x.astype(np.float64)).sum()),
                                             dtype)


@pytest.mark.parametrize("shape,axes", [((5000,), (0,)), ((3, 2000), (1,)), ((3000, 8), (0,))])
def test_cuda_sums_are_cascaded(shape, axes):
    """On cuda (small shapes: the simulator runs 4 threads a block, so each adds a long share,
    in cascaded partials) row and column sums of tenths against the exact value."""
    x = np.full(shape, 0.1, np.float32)
    got = run(lambda x: nnjit.sum(x, axis=axes), x, backend="cuda")
    n = x.size // got.size
    exact = float(np.float32(0.1)) * n
    assert np.all(np.abs(got - exact) <= pairwise_bound(n, exact, np.float32)), (got, exact)
