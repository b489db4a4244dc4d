"""argmax/argmin on the GPU split a row over a block's threads: each thread keeps the first best
of its strided share, then a max tree and a min tree over the positions give numpy's answer
(the first maximum; the first NaN wins). The printed GPU form, then values against numpy on
rows with ties, NaNs, infinities and integer extremes, long rows and many rows, on several
launch geometries, under the simulator."""
from __future__ import annotations

import re

import numpy as np
import pytest

import nnjit
from nnjit.codegen.gpu import SIM_TARGET, Target, map_to_gpu
from nnjit.ir.kernel import GpuKernel, print_kernel
from tests.backends.test_gpu_map import expect, lowered

cuda = pytest.importorskip("numba.cuda")
needs_cuda = pytest.mark.skipif(not cuda.is_available(), reason="no GPU and no CUDA simulator")

BLOCKS = Target(threads=16, max_blocks=3, reduce_block=16, reduce_min=1)
PAIRS = Target(threads=2, max_blocks=2, reduce_block=2, reduce_min=1)


def test_argmax_over_few_long_rows_is_split_over_a_block():
    p = lowered(lambda a: nnjit.argmax(a, axis=1), np.zeros((3, 300), np.float32))
    (k,) = map_to_gpu(p, Target(threads=8, max_blocks=4, reduce_block=8, reduce_min=16)).kernels
    assert re.sub(r"  // .*", "", print_kernel(k)) == expect("""
        kernel k0_argmax(reads in0; writes out0) on grid (3,) x block (8,), shared 128B:
          sh0: f32[8] shared @ smem+0
          sh1: i64[8] shared @ smem+64
          block for i0 in [0, 3):
            let acc0: f32 = -inf
            let acc0_i: i64 = 0
            let p0: f32 = -inf
            let p1: i64 = 0
            thread for r0_0 in [0, 300):
              let take0: bool = ((in0[((i0 * 300) + r0_0)] > p0) || (isnan(in0[((i0 * 300) + r0_0)]) && not(isnan(p0))))
              p0 = where(take0, in0[((i0 * 300) + r0_0)], p0)
              p1 = where(take0, r0_0, p1)
            let m0: f32 = p0
            block_reduce max m0 via sh0
            let c0: i64 = where(((p0 == m0) || (isnan(p0) && isnan(m0))), p1, 9223372036854775807)
            block_reduce min c0 via sh1
            let take1: bool = ((m0 > acc0) || (isnan(m0) && not(isnan(acc0))))
            acc0 = where(take1, m0, acc0)
            acc0_i = where(take1, c0, acc0_i)
            thread for t0 in [0, 1):
              out0[i0] = acc0_i""")  # noqa: E501


def test_argmax_over_many_short_rows_stays_one_thread_per_row():
    p = lowered(lambda a: nnjit.argmax(a, axis=1), np.zeros((500, 7), np.float32))
    (k,) = map_to_gpu(p, Target()).kernels
    assert isinstance(k, GpuKernel) and not k.shared and k.block == (256,)


def _launches(exe) -> list[GpuKernel]:
    return [k for k in exe.rendered.program.kernels if isinstance(k, GpuKernel)]


def tricky_rows(rng, rows: int, n: int, dtype) -> np.ndarray:
    """Rows of few distinct values (many ties), and for floats NaNs, infinities and whole rows
    of -inf or of one value; for ints the type's extremes."""
    x = rng.integers(-3, 3, (rows, n)).astype(dtype)
    if np.dtype(dtype).kind == "f":
        x[rng.random((rows, n)) < 0.01] = np.inf
        x[rng.random((rows, n)) < 0.01] = -np.inf
        x[0] = -np.inf
        if rows > 2:
            x[1, n // 3] = x[1, n - 1] = np.nan           # the first NaN wins
            x[2, :] = 1.5
        if rows > 3:
            x[3, n - 1] = np.nan                            # a NaN in the last thread's share
    else:
        info = np.iinfo(dtype)
        x[0] = info.min
        if rows > 2:
            x[1, n // 2] = x[1, n - 3] = info.max
    return x


def _compile(fn, x, target):
    from tests.backends.test_cuda_render import run_graph

    got, want, exe = run_graph(fn, x, target=target)
    return got, exe


@needs_cuda
@pytest.mark.parametrize("target", [BLOCKS, PAIRS, SIM_TARGET], ids=["blocks", "pairs", "sim"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int32, np.int64])
def test_argmax_and_argmin_match_numpy_on_ties_nans_and_extremes(target, dtype):
    rng = np.random.default_rng(7)
    x = tricky_rows(rng, 5, 37, dtype)
    got, exe = _compile(lambda a: (nnjit.argmax(a, axis=1), nnjit.argmin(a, axis=1),
                                   nnjit.argmax(a, axis=0)), x, target)
    np.testing.assert_array_equal(got[0], np.argmax(x, axis=1))
    np.testing.assert_array_equal(got[1], np.argmin(x, axis=1))
    np.testing.assert_array_equal(got[2], np.argmax(x, axis=0))
    if target is not SIM_TARGET:
        assert any(k.shared for k in _launches(exe))


@needs_cuda
def test_long_rows_of_5000_get_a_block_each_on_the_default_target():
    rng = np.random.default_rng(3)
    x = tricky_rows(rng, 4, 5000, np.float32)
    x[2, 4999] = 9.0                      # the maximum in the last element
    got, exe = _compile(lambda a: (nnjit.argmax(a, axis=-1), nnjit.argmin(a, axis=-1)), x,
                        SIM_TARGET)
    np.testing.assert_array_equal(got[0], np.argmax(x, axis=-1))
    np.testing.assert_array_equal(got[1], np.argmin(x, axis=-1))
    assert all(k.block == (SIM_TARGET.reduce_block,) and k.shared for k in _launches(exe))


@needs_cuda
def test_many_rows_with_ties_on_a_block_per_row():
    rng = np.random.default_rng(5)
    x = rng.integers(0, 4, (300, 40)).astype(np.float32)
    x[rng.random(x.shape) < 0.02] = np.nan
    got, _ = _compile(lambda a: nnjit.argmax(a, axis=1), x, BLOCKS)
    np.testing.assert_array_equal(got[0], np.argmax(x, axis=1))


@needs_cuda
def test_argmax_of_a_fused_expression_and_beside_other_reductions():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((3, 50)).astype(np.float32)
    x[1, 10] = np.nan
    got, _ = _compile(lambda a: (nnjit.argmax(nnjit.relu(a) * 2.0, axis=1), a.max(axis=1),
                                 nnjit.logsumexp(a, axis=1)), x, BLOCKS)
    np.testing.assert_array_equal(got[0], np.argmax(np.maximum(x, 0) * 2, axis=1))
    np.testing.assert_array_equal(got[1], x.max(axis=1))
