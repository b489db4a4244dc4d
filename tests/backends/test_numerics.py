"""Numerics every backend must get right: IEEE semantics through fused reductions (inf and NaN
are never folded away), and accurate sums at sizes where naive accumulation drifts."""
from __future__ import annotations

import numpy as np
import pytest

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
