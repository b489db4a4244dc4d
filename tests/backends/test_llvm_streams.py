"""Streams and prefetches. Long elementwise loops peel scalar iterations so that their vector
loop reads one of the caller's arrays at 64-byte aligned addresses, then run in blocks that
prefetch their inputs ahead (`render_loops.StreamPlan`); a GEMM epilogue reading a weight row
by row prefetches the next block's rows. None of it may change a result: every start offset,
chunk boundaries of either alignment, arrays shorter than one peel, out= and donated buffers,
each dtype."""
from __future__ import annotations

import numpy as np
import pytest

import nnjit
from nnjit.backends.llvm.render_loops import STREAM_MIN_EXTENT, VECTOR_ALIGN


def at_offset(values: np.ndarray, shift: int) -> np.ndarray:
    """A copy of `values` starting `shift` elements past a 64-byte boundary."""
    raw = np.empty(values.nbytes + 2 * VECTOR_ALIGN, np.uint8)
    start = (-raw.ctypes.data) % VECTOR_ALIGN + shift * values.itemsize
    view = raw[start:start + values.nbytes].view(values.dtype).reshape(values.shape)
    view[...] = values
    return view


def chain(x):
    return nnjit.maximum(x * 0.5 + 0.25, 0.0) - x * 0.125


def values(n: int, dtype) -> np.ndarray:
    return np.random.default_rng(n).standard_normal(n).astype(dtype)


@pytest.mark.parametrize("threads", ["1", "2"])
# STREAM_MIN_EXTENT + 3: one chunk; 2**18 + 7: chunks of 16385, so chunk starts differ in alignment
@pytest.mark.parametrize("n", [STREAM_MIN_EXTENT + 3, (1 << 18) + 7])
def test_every_start_offset_gives_the_interpreters_answer(monkeypatch, threads, n):
    monkeypatch.setenv("NNJIT_NUM_THREADS", threads)
    x = values(n, np.float32)
    want = nnjit.jit(chain, backend="interp")(x)
    fn = nnjit.jit(chain, backend="llvm")
    for shift in range(VECTOR_ALIGN // 4):
        np.testing.assert_array_equal(fn(at_offset(x, shift)), want, err_msg=f"shift {shift}")


@pytest.mark.parametrize("dtype", [np.float64, np.int32, np.int64])
def test_other_element_sizes(dtype):
    x = values(STREAM_MIN_EXTENT * 5 + 1, np.float64)
    x = (x * 100).astype(dtype)
    fn = nnjit.jit(lambda v: v * 3 + v, backend="llvm")
    for shift in range(VECTOR_ALIGN // np.dtype(dtype).itemsize):
        np.testing.assert_array_equal(fn(at_offset(x, shift)), x * 3 + x)


def test_bool_results_and_two_inputs_of_different_alignment():
    n = 3 * STREAM_MIN_EXTENT + 5
    a, b = values(n, np.float32), values(n + 1, np.float32)[1:]
    fn = nnjit.jit(lambda x, y: x < y, backend="llvm")
    for sa, sb in [(0, 1), (3, 0), (5, 11), (15, 15)]:
        np.testing.assert_array_equal(fn(at_offset(a, sa), at_offset(b, sb)), a < b)


@pytest.mark.parametrize("shift", [0, 1, 7, 15])
def test_out_and_donated_buffers_at_any_offset(shift):
    x = values(4 * STREAM_MIN_EXTENT + 9, np.float32)
    want = nnjit.jit(chain, backend="interp")(x)
    out = at_offset(np.zeros_like(x), (shift + 5) % 16)
    nnjit.jit(chain, backend="llvm")(at_offset(x, shift), out=out)
    np.testing.assert_array_equal(out, want)
    donated = at_offset(x, shift)
    result = nnjit.jit(chain, backend="llvm", donate_argnums=(0,))(donated)
    np.testing.assert_array_equal(result, want)


def test_strided_and_offset_reads_are_not_anchors_but_still_right():
    # x[1:] + x[:-1] reads x at two offsets (no single alignment serves both); x[::2] is strided.
    x = values(4 * STREAM_MIN_EXTENT, np.float32)
    fn = nnjit.jit(lambda v: v[1:] + v[:-1] + v[::2].repeat(2)[:-1], backend="llvm")
    np.testing.assert_array_equal(fn(at_offset(x, 3)), x[1:] + x[:-1] + x[::2].repeat(2)[:-1])


def test_only_long_loops_reading_arrays_front_to_back_are_streams():
    def blocks(fn, *args) -> set[str]:
        text = nnjit.jit(fn, backend="llvm").lower(*args).llvm_ir()
        return {part for part in (".peel", ".prefetch", ".block") if part in text}

    long, short = values(4 * STREAM_MIN_EXTENT, np.float32), values(64, np.float32)
    assert blocks(chain, long) == {".peel", ".prefetch", ".block"}
    assert blocks(chain, short) == set()
    # A 2-D kernel's top loop is over rows: its inner loop is the one vectorized.
    assert blocks(lambda v: v.sum(axis=1), long.reshape(64, -1)) == set()
    # Reading x at two offsets, x is no stream to align to or prefetch (nothing else is read).
    assert blocks(lambda v: v[1:] - v[:-1], long) == set()


def test_a_fused_weight_update_prefetches_the_next_block_of_the_weight():
    # SGD on x @ w fuses the update into the weight gradient's GEMM epilogue, which reads w.
    x, w = values(16 * 300, np.float32).reshape(16, 300), values(300 * 200, np.float32)
    w = w.reshape(300, 200)

    def step(w, x):
        return w - 0.1 * nnjit.grad(lambda w: (x @ w).sum())(w)

    cf = nnjit.jit(step, backend="llvm").lower(w, x)
    epilogue = cf.llvm_ir().split(".epilogue\"(")[1].split("\n}\n")[0]
    assert "llvm.prefetch" in epilogue
    want = nnjit.jit(step, backend="interp")(w, x)
    np.testing.assert_allclose(cf(w, x), want, rtol=1e-5, atol=1e-5)
