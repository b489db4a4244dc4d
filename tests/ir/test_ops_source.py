"""Sources: iota, constants, random_uniform (the documented Philox layout, range, determinism)
and the composites built on them (one_hot, dropout)."""
import hypothesis.strategies as st
import numpy as np
import pytest
from hypothesis import given

import nnjit
from nnjit.ir import prims as P
from tests.helpers import run
from tests.op_cases import (ALL, F32, F64, FLOATS, HYPOTHESIS, I32, I64, INTS, NUMERIC, SRC,
                            assert_error_names, case_params, check_case, compare, here,
                            philox_uniform, shape_error, shapes_st)


@pytest.mark.parametrize("case,dtype", case_params(SRC))
def test_forward(case, dtype, backend):
    check_case(case, case.make_inputs(np.random.default_rng(0), dtype), backend)


@HYPOTHESIS
@given(shape=shapes_st(min_dims=1), data=st.data(), dtype=st.sampled_from(NUMERIC))
def test_iota(backend, shape, data, dtype):
    axis = data.draw(st.integers(0, len(shape) - 1), label="axis")
    got = run(lambda x: P.iota(P.builder_of(x), shape, axis, x.dtype), np.zeros((), dtype),
              backend=backend)
    want = np.zeros(shape, dtype)
    for idx in np.ndindex(*shape):
        want[idx] = idx[axis]
    compare(got, want)


@pytest.mark.parametrize("dtype", ALL)
def test_constants_of_every_dtype(dtype, backend):
    c = (np.arange(6).reshape(2, 3) % 3).astype(dtype)
    got = run(lambda x: (x, nnjit.where(x == x, c, c), c), np.zeros((), dtype), backend=backend)
    compare(got, (np.zeros((), dtype), c, c))


# -- random_uniform ----------------------------------------------------------------------------

def _uniform(seed, shape, salt, dtype, backend):
    return run(lambda s: P.random_uniform(s, shape, salt, dtype), np.int64(seed), backend=backend)


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("seed,salt", [(0, 0), (123, 5), (-1, 2**31 + 3), (2**40 + 7, 1)])
def test_random_uniform_layout(dtype, seed, salt, backend):
    compare(_uniform(seed, (4, 50), salt, dtype, backend), philox_uniform(seed, (4, 50), salt,
                                                                          dtype))


@pytest.mark.parametrize("dtype", FLOATS)
def test_random_uniform_range_determinism_and_independence(dtype, backend):
    u = _uniform(7, (20, 20), 3, dtype, backend)
    assert u.dtype == dtype and u.shape == (20, 20)
    assert (u >= 0).all() and (u < 1).all()
    assert abs(u.mean() - 0.5) < 5 * np.sqrt(1 / 12 / u.size)
    np.testing.assert_array_equal(u, _uniform(7, (20, 20), 3, dtype, backend))   # deterministic
    assert not np.array_equal(u, _uniform(8, (20, 20), 3, dtype, backend))       # seed matters
    assert not np.array_equal(u, _uniform(7, (20, 20), 4, dtype, backend))       # salt matters
    assert not np.array_equal(u, _uniform(7 + 2**32, (20, 20), 3, dtype, backend))
    # The shape fixes only the count: element i is the same in any shape.
    np.testing.assert_array_equal(u.ravel(), _uniform(7, (400,), 3, dtype, backend))
    assert _uniform(7, (0, 3), 3, dtype, backend).shape == (0, 3)
    assert _uniform(7, (), 3, dtype, backend).shape == ()


def test_random_uniform_traced_seed_varies_per_call(backend):
    f = nnjit.jit(lambda s: P.random_uniform(s, (8,), 0, F32), backend=backend)
    a, b = f(np.int64(1)), f(np.int64(2))
    compare(a, philox_uniform(1, (8,), 0, F32))
    compare(b, philox_uniform(2, (8,), 0, F32))


@pytest.mark.parametrize("rate", [0.0, 0.25, 0.5, 0.9, 1.0])
def test_dropout_mask_is_philox_compared_to_rate(rate, backend):
    x = np.random.default_rng(0).uniform(1, 2, (6, 7)).astype(F32)
    got = run(lambda v, s: nnjit.dropout(v, rate, s, salt=4), x, np.int64(99), backend=backend)
    u = philox_uniform(99, x.shape, 4, F32)
    keep = u >= rate
    want = np.where(keep, x * np.float32(1 / (1 - rate)), 0) if rate < 1 else np.zeros_like(x)
    compare(got, want.astype(F32))
    np.testing.assert_array_equal(got == 0, ~keep if rate < 1 else np.ones(x.shape, bool))


# -- one_hot -----------------------------------------------------------------------------------

@pytest.mark.parametrize("idx_dtype", INTS)
@pytest.mark.parametrize("dtype", [F32, F64, I32, np.bool_])
def test_one_hot_of_out_of_range_indices_raises(idx_dtype, dtype, backend):
    """Indices outside [0, n) raise IndexOutOfRange, as torch's one_hot does (negative ones
    too); in-range ones give their rows."""
    idx = np.array([[0, 3, 1], [2, 2, 0]], idx_dtype)
    want = np.zeros((2, 3, 4), dtype)
    for pos in np.ndindex(*idx.shape):
        want[pos + (idx[pos],)] = 1
    compare(run(lambda i: nnjit.one_hot(i, 4, dtype), idx, backend=backend), want)
    for bad in (-1, 4, 100):
        idx[1, 2] = bad
        with pytest.raises(nnjit.IndexOutOfRange, match=f"one_hot: 4 classes: index {bad} "):
            run(lambda i: nnjit.one_hot(i, 4, dtype), idx, backend=backend)


# -- shape and dtype errors --------------------------------------------------------------------

def test_error_random_uniform_seed_not_scalar(backend):
    line = here() + 1
    err = shape_error(lambda s: P.random_uniform(s, (3,), 0, F32), np.zeros(2, I64),
                      backend=backend)
    assert_error_names(err, "random_uniform", [(2,)], line)


def test_error_iota_axis_out_of_range(backend):
    line = here() + 1
    err = shape_error(lambda x: P.iota(P.builder_of(x), (2, 3), 2), np.zeros(()), backend=backend)
    assert_error_names(err, "iota", [(2, 3)], line)


def test_error_one_hot_float_indices(backend):
    line = here() + 1
    err = shape_error(lambda i: nnjit.one_hot(i, 3), np.zeros((2, 5), F32), backend=backend)
    assert_error_names(err, "one_hot", [(2, 5)], line)
