"""Elementwise ops against independent numpy: every case of the table on fixed and on
hypothesis-drawn (broadcasting, size-0 and size-1) shapes, IEEE edge cases, and shape errors."""
import hypothesis.strategies as st
import numpy as np
import pytest
from hypothesis import given

import nnjit
from tests.helpers import run
from tests.op_cases import (EW, F32, F64, FLOATS, HYPOTHESIS, INTS, assert_error_names,
                            case_params, cases, check_case, compare, here, ids, shape_error)

NAN, INF = np.nan, np.inf
SHAPED = [c for c in cases(EW) if c.shapes is not None]


@pytest.mark.parametrize("case,dtype", case_params(EW))
def test_forward(case, dtype, backend):
    check_case(case, case.make_inputs(np.random.default_rng(0), dtype), backend)


@pytest.mark.parametrize("case", SHAPED, ids=ids(SHAPED))
@HYPOTHESIS
@given(data=st.data())
def test_forward_broadcasting(case, backend, data):
    """Operand shapes drawn so they broadcast: size-0 and size-1 dims, dropped leading dims."""
    shapes = data.draw(case.shapes, label="shapes")
    dtype = data.draw(st.sampled_from(case.dtypes), label="dtype")
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1), label="seed"))
    check_case(case, case.make_inputs(rng, dtype, shapes), backend)


def test_scalar_operands(backend):
    """0-d tensors with 0-d tensors, and 0-d against 2-d."""
    a, b = np.float32(1.5), np.arange(6, dtype=np.float32).reshape(2, 3)
    got = run(lambda x, y: (x * x, x - y, nnjit.maximum(y, x)), np.asarray(a), b,
              backend=backend)
    compare(got, (np.float32(2.25), a - b, np.where(b >= a, b, a).astype(np.float32)))


# -- IEEE edge cases (numpy semantics) ---------------------------------------------------------

@pytest.mark.parametrize("dtype", FLOATS)
def test_maximum_minimum_propagate_nan(dtype, backend):
    a = np.array([NAN, 1.0, NAN, -INF, INF, 2.0, -3.0], dtype)
    b = np.array([1.0, NAN, NAN, 5.0, 3.0, 2.0, -INF], dtype)
    nan = np.isnan(a) | np.isnan(b)
    want_max = np.where(nan, NAN, np.where(a >= b, a, b)).astype(dtype)
    want_min = np.where(nan, NAN, np.where(a <= b, a, b)).astype(dtype)
    got = run(lambda x, y: (nnjit.maximum(x, y), nnjit.minimum(x, y)), a, b, backend=backend)
    compare(got, (want_max, want_min))


@pytest.mark.parametrize("dtype", FLOATS)
def test_exp_overflow_and_underflow(dtype, backend):
    x = np.array([1000.0, -1000.0, 88.8, 710.0, -INF, INF, NAN, 0.0, -104.0], dtype)
    got = run(nnjit.exp, x, backend=backend)
    with np.errstate(over="ignore"):
        want = np.exp(x.astype(F64)).astype(dtype)   # exp(88.8) overflows f32 only
    compare(got, want)
    assert np.isinf(got[[0, 3, 5]]).all() and got[1] == 0 and got[4] == 0
    assert np.isinf(got[2]) == (dtype == F32)


@pytest.mark.parametrize("dtype", FLOATS)
def test_log_sqrt_domain_edges(dtype, backend):
    x = np.array([0.0, -0.0, -1.0, INF, 1.0, NAN, 4.0], dtype)
    got_log, got_sqrt = run(lambda v: (nnjit.log(v), nnjit.sqrt(v)), x, backend=backend)
    compare(got_log, np.array([-INF, -INF, NAN, INF, 0.0, NAN, np.log(4.0)], dtype))
    compare(got_sqrt, np.array([0.0, -0.0, NAN, INF, 1.0, NAN, 2.0], dtype))


@pytest.mark.parametrize("dtype", FLOATS)
def test_sigmoid_tanh_tails(dtype, backend):
    x = np.array([-1000.0, -100.0, -80.0, -30.0, -1.0, 0.0, 1.0, 30.0, 100.0, 1000.0, -INF, INF],
                 dtype)
    sig, th = run(lambda v: (nnjit.sigmoid(v), nnjit.tanh(v)), x, backend=backend)
    x64 = x.astype(F64)
    with np.errstate(over="ignore"):
        want_sig = 1.0 / (1.0 + np.exp(-x64))
    assert not np.isnan(sig).any() and not np.isnan(th).any()
    compare(sig, want_sig.astype(dtype))
    compare(th, np.tanh(x64).astype(dtype))
    # Relative accuracy in the lower tail, where sigmoid(x) ~ exp(x) is tiny but normal.
    tail = (x64 >= -80) & (x64 < 0)
    np.testing.assert_allclose(sig[tail], want_sig[tail], rtol=1e-5 if dtype == F32 else 1e-12)
    assert (sig >= 0).all() and (sig <= 1).all()


@pytest.mark.parametrize("dtype", FLOATS)
def test_division_by_zero_and_pow_edges(dtype, backend):
    a = np.array([1.0, -1.0, 0.0, 0.0, -2.0, -2.0, 0.0, INF, NAN, 1.0], dtype)
    b = np.array([0.0, 0.0, 0.0, 0.0, 2.0, 0.5, -1.0, 0.0, 0.0, NAN], dtype)
    q, p = run(lambda x, y: (x / y, x ** y), a, b, backend=backend)
    compare(q[:3], np.array([INF, -INF, NAN], dtype))
    # C99 pow: 0**0 = 1, (-2)**2 = 4, (-2)**0.5 = nan, 0**-1 = inf, inf**0 = nan**0 = 1**nan = 1.
    compare(p[3:], np.array([1.0, 4.0, NAN, INF, 1.0, 1.0, 1.0], dtype))


@pytest.mark.parametrize("dtype", FLOATS)
def test_comparisons_with_nan(dtype, backend):
    a = np.array([NAN, 1.0, NAN, INF, -0.0], dtype)
    b = np.array([NAN, NAN, 1.0, INF, 0.0], dtype)
    got = run(lambda x, y: (x == y, x != y, x < y, x <= y, x > y, x >= y), a, b,
              backend=backend)
    want = tuple(np.array(v) for v in ([0, 0, 0, 1, 1], [1, 1, 1, 0, 0], [0, 0, 0, 0, 0],
                                       [0, 0, 0, 1, 1], [0, 0, 0, 0, 0], [0, 0, 0, 1, 1]))
    compare(got, tuple(w.astype(bool) for w in want))


def test_where_ignores_nan_in_the_unselected_branch(backend):
    c = np.array([True, False, True])
    x = np.array([1.0, NAN, INF], np.float32)
    y = np.array([NAN, 2.0, NAN], np.float32)
    compare(run(nnjit.where, c, x, y, backend=backend), np.array([1.0, 2.0, INF], np.float32))


@pytest.mark.parametrize("src", FLOATS)
@pytest.mark.parametrize("dst", INTS)
def test_cast_float_to_int_truncates_saturates_and_zeroes_nan(src, dst, backend):
    x = np.array([NAN, INF, -INF, 3e9, -3e9, 1e19, -1e19, 2.7, -2.7, -0.5, 2.0**31], src)
    info = np.iinfo(dst)
    sat = [0, info.max, info.min]
    fits = [3_000_000_000, -3_000_000_000] if dst == np.int64 else [info.max, info.min]
    tail = [2, -2, 0, 2**31 if dst == np.int64 else info.max]
    want = np.array(sat + fits + [info.max, info.min] + tail, dst)
    compare(run(lambda v: nnjit.cast(v, dst), x, backend=backend), want)


@pytest.mark.parametrize("dtype", INTS)
def test_integer_ops_stay_exact(dtype, backend):
    big = np.iinfo(dtype).max // 2
    a = np.array([big, -big, 7, -7, 0], dtype)
    b = np.array([1, -1, 2, 3, -5], dtype)
    got = run(lambda x, y: (x + y, x - y, x * y, nnjit.abs(x), nnjit.relu(x), -x), a, b,
              backend=backend)
    want = (a + b, a - b, a * b, np.where(a < 0, -a, a), np.where(a > 0, a, 0).astype(dtype), -a)
    compare(got, want)


# -- shape and dtype errors --------------------------------------------------------------------

def test_error_binary_shapes_do_not_broadcast(backend):
    a, b = np.ones((3, 4), np.float32), np.ones((5,), np.float32)
    line = here() + 1
    err = shape_error(lambda x, y: nnjit.add(x, y), a, b, backend=backend)
    assert_error_names(err, "add", [(3, 4), (5,)], line)


def test_error_where_shapes_do_not_broadcast(backend):
    c, a, b = np.ones((2, 1), bool), np.ones((1, 3), np.float64), np.ones((4, 1), np.float64)
    line = here() + 1
    err = shape_error(lambda k, x, y: nnjit.where(k, x, y), c, a, b, backend=backend)
    assert_error_names(err, "where", [(2, 1), (1, 3), (4, 1)], line)


def test_error_float_only_op_on_integers(backend):
    line = here() + 1
    err = shape_error(lambda x: nnjit.exp(x), np.ones((2, 3), np.int32), backend=backend)
    assert_error_names(err, "exp", [(2, 3)], line)
    assert "i32" in str(err)
