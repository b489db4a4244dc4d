"""The GEMM's pre-packed entry (`nnjit_gemm_<dt>_prepacked`) against a float64 reference: A, B
or both given in panel form (`gemm.panels`), shapes across K-blocks, M-blocks and N-blocks,
1 and 2 threads, accumulate, and an epilogue that must still see every element once. Plus the
`Panels` layout itself (pack/unpack round trip, sizes)."""
import ctypes
import itertools

import llvmlite.binding as llvm
import numpy as np
import pytest

from nnjit.backends.llvm import gemm
from nnjit.ir.kernel import Panels

RNG = np.random.default_rng(7)
DTYPES = [np.float32, np.float64]
# K past one and two KC blocks (256), M past MC (f32 192, f64 120), N past NC (f64 1024).
SHAPES = [(1, 1, 1), (6, 64, 256), (7, 65, 257), (5, 10, 600), (300, 33, 129), (128, 512, 784),
          (16, 100, 150), (2, 1100, 20), (193, 3, 513),
          # few panels on one side, enough on the other (the split takes the other side)
          (16, 1024, 256), (5, 300, 600), (200, 70, 300)]


def aligned(a: np.ndarray) -> np.ndarray:
    """A 64-byte aligned copy (packed panels are read with aligned vector loads)."""
    raw = np.empty(a.nbytes + 64, np.uint8)
    off = (-raw.ctypes.data) % 64
    out = raw[off:off + a.nbytes].view(a.dtype)
    out[...] = a.reshape(-1)
    return out


def prepacked_call(dtype):
    gemm.ensure_runtime_loaded([dtype])
    i64, p, i32 = ctypes.c_int64, ctypes.c_void_p, ctypes.c_int32
    proto = ctypes.CFUNCTYPE(None, i64, i64, i64, p, i64, i64, p, i64, i64, p, i64, i32,
                             p, p, p, i32, i32)
    return proto(llvm.address_of_symbol(gemm.prepacked_symbol(dtype)))


def run(a, b, flags, nthreads, c=None, accumulate=False):
    """c (+)= a @ b through the prepacked entry, packing the operands `flags` names."""
    m, k = a.shape
    n = b.shape[1]
    dt = a.dtype
    keep = []
    if flags & 1:
        pa = aligned(gemm.panels(dt, "a").pack(np.ascontiguousarray(a.T)))
        a_args = (pa.ctypes.data, gemm.panels(dt, "a").padded(m), 0)
        keep.append(pa)
    else:
        a_args = (a.ctypes.data, a.strides[0] // dt.itemsize, a.strides[1] // dt.itemsize)
    if flags & 2:
        pb = aligned(gemm.panels(dt, "b").pack(b))
        b_args = (pb.ctypes.data, gemm.panels(dt, "b").padded(n), 0)
        keep.append(pb)
    else:
        b_args = (b.ctypes.data, b.strides[0] // dt.itemsize, b.strides[1] // dt.itemsize)
    c = np.full((m, n), np.nan, dt) if c is None else c
    ws = gemm.workspace(dt, nthreads)
    prepacked_call(dt)(m, n, k, *a_args, *b_args, c.ctypes.data, n, int(accumulate),
                       ws.ctypes.data, None, None, nthreads, flags)
    return c


def check(c, ref, k, dtype):
    eps = np.finfo(dtype).eps
    tol = 4 * max(k, 1) * eps * (np.abs(ref).max(initial=0.0) + 1.0)
    assert np.all(np.isfinite(c))
    np.testing.assert_allclose(c, ref, rtol=0, atol=tol)


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("nthreads", [1, 2])
@pytest.mark.parametrize("flags", [1, 2, 3], ids=["A", "B", "AB"])
def test_prepacked_operands_give_the_product(dtype, nthreads, flags):
    for m, n, k in SHAPES:
        a = RNG.standard_normal((m, k)).astype(dtype)
        b = RNG.standard_normal((k, n)).astype(dtype)
        check(run(a, b, flags, nthreads), a.astype(np.float64) @ b, k, dtype)


@pytest.mark.parametrize("flags", [1, 2, 3], ids=["A", "B", "AB"])
def test_prepacked_accumulate_and_transposed_other_operand(flags):
    m, n, k = 70, 130, 300
    a = np.ascontiguousarray(RNG.standard_normal((k, m)).astype(np.float32)).T   # strided A
    b = RNG.standard_normal((k, n)).astype(np.float32)
    c0 = RNG.standard_normal((m, n)).astype(np.float32)
    c = run(a, b, flags, 2, c=c0.copy(), accumulate=True)
    check(c, c0 + a.astype(np.float64) @ b, k, np.float32)


def test_panels_round_trip_and_layout():
    for (k, w), (kc, width) in itertools.product([(1, 1), (3, 2), (600, 65), (257, 6)],
                                                 [(256, 64), (2, 2), (256, 6)]):
        x = RNG.standard_normal((k, w))
        p = Panels(kc, width)
        flat = p.pack(x)
        assert flat.size == p.size(k, w) == k * p.padded(w)
        np.testing.assert_array_equal(p.unpack(flat, k, w), x)
    # K = 3, W = 3, kc = 2, width = 2: block 0 (rows 0-1) then block 1 (row 2), each as
    # panels of two columns, k-major, the last panel zero-padded.
    x = np.arange(9.0).reshape(3, 3)
    np.testing.assert_array_equal(Panels(2, 2).pack(x),
                                  [0, 1, 3, 4, 2, 0, 5, 0, 6, 7, 8, 0])
