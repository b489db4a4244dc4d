"""Helpers shared by the tests: the backend list and tolerant comparison."""
from __future__ import annotations

import numpy as np

# The backends every op, gradient and model test runs on. Later backends join this list.
BACKENDS = ["interp", "llvm", "cuda"]


def run(fn, *args, backend: str = "interp"):
    """fn(*args) compiled for `backend` (a fresh jit, so every call compiles for this backend)."""
    import nnjit

    return nnjit.jit(fn, backend=backend)(*args)


def assert_close(got, want, dtype=None, rtol=None, atol=None):
    """Compare with tolerances by dtype: f32 results from native code may differ in the last
    bits (different summation order, vector math)."""
    got, want = np.asarray(got), np.asarray(want)
    assert got.shape == want.shape, f"shape {got.shape} != {want.shape}"
    dt = dtype or want.dtype
    if np.dtype(dt).kind == "f":
        tight = np.dtype(dt) == np.float64
        np.testing.assert_allclose(got, want, rtol=rtol or (1e-9 if tight else 2e-5),
                                   atol=atol or (1e-11 if tight else 1e-5), equal_nan=True)
    else:
        np.testing.assert_array_equal(got, want)
