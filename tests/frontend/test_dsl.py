"""The DSL as numpy users write it: operators (and their reflections with Python scalars and
numpy arrays), dtype promotion, comparisons and logic, indexing, tensor methods, the stable
softmax family, stack, linear, and scan (the "control" cases of the op table)."""
import hypothesis.strategies as st
import numpy as np
import pytest
from hypothesis import given

import nnjit
from tests.helpers import run
from tests.op_cases import (
    ALL,
    BOOL,
    CTL,
    F32,
    F64,
    FLOATS,
    HYPOTHESIS,
    I32,
    I64,
    INTS,
    NUMERIC,
    assert_error_names,
    case_params,
    check_case,
    compare,
    here,
    permuted,
    shape_error,
    shapes_st,
    uniform,
)

NAN, INF = np.nan, np.inf
RANK = {BOOL: 0, I32: 1, I64: 2, F32: 3, F64: 4}


def _rand(shape, dtype, seed=0, lo=-3.0, hi=3.0):
    return uniform(lo, hi)(np.random.default_rng(seed), shape, np.dtype(dtype))


@pytest.mark.parametrize("case,dtype", case_params(CTL))
def test_forward_control(case, dtype, backend):
    check_case(case, case.make_inputs(np.random.default_rng(0), dtype), backend)


# -- operators ---------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", FLOATS)
def test_arithmetic_operators(dtype, backend):
    a, b = _rand((2, 3), dtype, 1), _rand((3,), dtype, 2, 0.5, 2.0)
    m = _rand((3, 4), dtype, 3)
    got = run(lambda x, y, w: (x + y, x - y, x * y, x / y, y ** x, x @ w, -x, +x, abs(x)),
              a, b, m, backend=backend)
    with np.errstate(all="ignore"):
        want = (a + b, a - b, a * b, a / b, (b.astype(F64) ** a).astype(dtype),
                np.einsum("ij,jk->ik", a.astype(F64), m).astype(dtype), -a, a,
                np.where(a < 0, -a, a))
    compare(got, want)


@pytest.mark.parametrize("dtype", INTS)
def test_integer_operators(dtype, backend):
    a, b = _rand((2, 3), dtype, 1), _rand((3,), dtype, 2, 1, 3)
    got = run(lambda x, y: (x + y, x - y, x * y, -x, abs(x), x * 3 - 1), a, b, backend=backend)
    compare(got, (a + b, a - b, a * b, -a, np.where(a < 0, -a, a), a * dtype.type(3) - 1))


@pytest.mark.parametrize("dtype", INTS + (BOOL,))
def test_true_division_and_power_of_integers_give_float32(dtype, backend):
    """`/` and `**` on integer or bool tensors behave like nnjit.divide / nnjit.power: the
    operands are converted to f32 (numpy's true division, in the DSL's default float)."""
    a = np.array([[1, 2, 3], [4, -5, 6]]).astype(dtype)
    b = np.array([2, 4, 1]).astype(dtype) if dtype != BOOL else np.array([1, 1, 1], bool)
    got = run(lambda x, y: (x / y, x / 2, 2 / y, y ** 2, nnjit.divide(x, y)), a, b,
              backend=backend)
    af, bf = a.astype(F64), b.astype(F64)
    compare(got, tuple(v.astype(F32) for v in (af / bf, af / 2, 2 / bf, bf ** 2, af / bf)))


@pytest.mark.parametrize("dtype", FLOATS)
def test_reflected_operators_with_python_scalars(dtype, backend):
    a = _rand((2, 3), dtype, 4, 0.5, 2.0)
    got = run(lambda x: (2 + x, 2 - x, 2 * x, 2 / x, 2 ** x, x - 2, x / 2, x ** 2, 1.5 * x + 0.5),
              a, backend=backend)
    t = dtype.type
    with np.errstate(all="ignore"):
        want = (t(2) + a, t(2) - a, t(2) * a, t(2) / a, (2.0 ** a.astype(F64)).astype(dtype),
                a - t(2), a / t(2), a * a, t(1.5) * a + t(0.5))
    compare(got, want)


@pytest.mark.parametrize("dtype", FLOATS)
def test_reflected_operators_with_numpy_arrays(dtype, backend):
    a = _rand((2, 3), dtype, 5, 0.5, 2.0)
    n = _rand((3,), dtype, 6, 0.5, 2.0)
    m = _rand((4, 2), dtype, 7)
    got = run(lambda x: (n + x, n - x, n * x, n / x, n ** x, m @ x, n < x, n == x, n >= x), a,
              backend=backend)
    with np.errstate(all="ignore"):
        want = (n + a, n - a, n * a, n / a, (n.astype(F64) ** a).astype(dtype),
                np.einsum("ij,jk->ik", m.astype(F64), a).astype(dtype), n < a, n == a, n >= a)
    compare(got, want)


DTYPE_PAIRS = [(a, b) for a in ALL for b in ALL if not (a == BOOL and b == BOOL)]


@pytest.mark.parametrize("da,db", DTYPE_PAIRS, ids=[f"{a.name}-{b.name}" for a, b in DTYPE_PAIRS])
def test_tensor_dtype_promotion(da, db, backend):
    """Mixed tensor dtypes promote along bool < i32 < i64 < f32 < f64 (the IR never does)."""
    a, b = np.array([[1, 0, 2]]).astype(da), np.array([[3], [1]]).astype(db)
    out = da if RANK[da] >= RANK[db] else db
    got = run(lambda x, y: (x + y, x * y, y - x, x < y, nnjit.maximum(x, y)), a, b,
              backend=backend)
    a2, b2 = a.astype(out), b.astype(out)
    compare(got, (a2 + b2, a2 * b2, b2 - a2, a2 < b2, np.where(a2 >= b2, a2, b2)))


@pytest.mark.parametrize("dtype,scalar,out", [
    (F32, 2, F32), (F64, 2.5, F64), (I32, 2, I32), (I64, 3, I64), (I32, 2.5, F32),
    (I64, -1.5, F32), (BOOL, 2, I64), (BOOL, 0.5, F32), (I32, True, I32), (F32, True, F32)])
def test_python_scalars_are_weakly_typed(dtype, scalar, out, backend):
    """A Python scalar takes the tensor's dtype; a float meeting an integer tensor gives f32, an
    int meeting a bool tensor gives i64."""
    a = np.array([0, 1, 2]).astype(dtype)
    got = run(lambda x: (x + scalar, scalar * x, x > scalar), a, backend=backend)
    a2, s = a.astype(out), np.array(scalar).astype(out)
    compare(got, (a2 + s, s * a2, a2 > s))


def test_comparisons_and_logical_operators(backend):
    a, b = np.array([1.0, 2.0, 3.0, NAN], F32), np.array([2.0, 2.0, 1.0, 0.0], F32)
    p, q = np.array([True, True, False, False]), np.array([True, False, True, False])
    got = run(lambda x, y, p, q: (x < y, x <= y, x > y, x >= y, x == y, x != y, p & q, p | q,
                                  ~p, (x > 1) & ~q, nnjit.logical_and(x, y),
                                  nnjit.logical_or(p, 0), nnjit.logical_not(y)),
              a, b, p, q, backend=backend)
    with np.errstate(invalid="ignore"):
        want = (a < b, a <= b, a > b, a >= b, a == b, a != b, p & q, p | q, ~p, (a > 1) & ~q,
                (a != 0) & (b != 0), p | False, b == 0)
    compare(got, want)


# -- indexing ----------------------------------------------------------------------------------

X345 = np.arange(60, dtype=F32).reshape(3, 4, 5)


@pytest.mark.parametrize("idx", [
    np.s_[1], np.s_[-1], np.s_[-3, 2], np.s_[1, -1, -5], np.s_[::2], np.s_[::-1, 1::2, :-1],
    np.s_[:, ::-2], np.s_[None], np.s_[:, None, 2], np.s_[..., 1], np.s_[1, ...],
    np.s_[..., None], np.s_[None, ..., None, 0], np.s_[2:0:-1, ..., ::-3], np.s_[1:1],
    np.s_[[2, 0, 0]], np.s_[:, [3, -1]], np.s_[..., [[0, 1], [4, 4]]], np.s_[1:, None, [0, 2]],
    np.s_[0, [1, 2]], np.s_[[1, 2], 0], np.s_[-1, [0, 3], ::2], np.s_[0, :, [1, 2]],
    np.s_[:, 1, [0, 4]], np.s_[[]], np.s_[np.array([2, -3])]],
    ids=lambda i: repr(i).replace(" ", ""))
def test_getitem_matches_numpy(idx, backend):
    compare(run(lambda v: v[idx], X345, backend=backend), np.array(X345[idx]))


@pytest.mark.parametrize("idx_dtype", INTS)
def test_getitem_with_a_traced_integer_index(idx_dtype, backend):
    i = np.array([[2, 0], [-1, 1]], idx_dtype)
    got = run(lambda v, i: (v[i], v[:, i], v[1, ..., i]), X345, i, backend=backend)
    compare(got, (X345[i], X345[:, i], X345[1, ..., i]))


def test_getitem_bool_mask_is_numpy_mask_or_an_error(backend):
    """A constant boolean mask selects like numpy; masks are never read as 0/1 indices."""
    mask = np.array([True, False, True, True])
    got = run(lambda v: (v[:, mask], v[mask[:3]]), X345, backend=backend)
    compare(got, (X345[:, mask], X345[mask[:3]]))
    with pytest.raises(nnjit.ShapeError):
        run(lambda v: v[np.ones((4, 3), bool)], X345, backend=backend)
    with pytest.raises(nnjit.ShapeError):
        run(lambda v: v[np.array([0.0, 1.0])], X345, backend=backend)


# -- methods -----------------------------------------------------------------------------------

def test_shape_methods(backend):
    x = X345
    got = run(lambda v: (v.T, v.reshape(4, 15), v.reshape((-1, 5)), v.reshape(-1),
                         v.transpose(), v.transpose(1, 0, 2), v.transpose((-1, 0, -2)),
                         v.astype(np.int32), v[0].T), x, backend=backend)
    want = (permuted(x, (2, 1, 0)), x.reshape(4, 15), x.reshape(12, 5), x.ravel(),
            permuted(x, (2, 1, 0)), permuted(x, (1, 0, 2)), permuted(x, (2, 0, 1)),
            x.astype(np.int32), x[0].T.copy())
    compare(got, want)


@st.composite
def axis_args(draw):
    shape = draw(shapes_st(min_dims=1, min_side=1))
    nd = len(shape)
    axis = draw(st.one_of(st.none(), st.integers(-nd, nd - 1),
                          st.lists(st.integers(0, nd - 1), unique=True, min_size=1).map(
                              lambda axes: tuple(a - nd if a % 2 else a for a in axes))))
    return shape, axis


@HYPOTHESIS
@given(sa=axis_args(), keepdims=st.booleans(), dtype=st.sampled_from(NUMERIC),
       seed=st.integers(0, 2**32 - 1))
def test_reduction_methods(backend, sa, keepdims, dtype, seed):
    shape, axis = sa
    x = _rand(shape, dtype, seed, -5, 5)
    one = axis if axis is not None and not isinstance(axis, tuple) else -1
    got = run(lambda v: (v.sum(axis=axis, keepdims=keepdims), v.max(axis, keepdims),
                         v.min(axis=axis, keepdims=keepdims), v.mean(axis, keepdims=keepdims),
                         v.argmax(axis=one, keepdims=keepdims), nnjit.mean(v, axis)),
              x, backend=backend)
    mean_dt = dtype if dtype.kind == "f" else F32
    x64 = x.astype(F64)
    want = (x.sum(axis, keepdims=keepdims, dtype=dtype), x.max(axis, keepdims=keepdims),
            x.min(axis, keepdims=keepdims), x64.mean(axis, keepdims=keepdims).astype(mean_dt),
            np.argmax(x, one, keepdims=keepdims), x64.mean(axis).astype(mean_dt))
    compare(got, want)


# -- softmax family ----------------------------------------------------------------------------

def _lse(x, axis, keepdims=False):
    """logsumexp in float64, shifted by the finite row max (the textbook stable formula)."""
    x = x.astype(F64)
    m = np.max(x, axis=axis, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    with np.errstate(divide="ignore"):
        out = np.log(np.sum(np.exp(x - m), axis=axis, keepdims=True)) + m
    return out if keepdims else np.squeeze(out, axis=axis)


ROWS = np.array([[1000.0, 1000.0, 999.0, -1000.0], [-INF, 0.0, 1.0, -INF],
                 [-1000.0, -1000.0, -1001.0, -1000.0], [1.0, 2.0, 3.0, 4.0],
                 [-INF, -INF, -INF, -INF], [3e38, 3e38, -3e38, 0.0]])


@pytest.mark.parametrize("dtype", FLOATS)
def test_softmax_family_is_stable(dtype, backend):
    x = ROWS.astype(dtype)
    got = run(lambda v: (nnjit.logsumexp(v), nnjit.logsumexp(v, axis=0, keepdims=True),
                         nnjit.log_softmax(v[:4]), nnjit.softmax(v[:4]),
                         nnjit.softmax(v[:4], axis=0)), x, backend=backend)
    lse = _lse(x, -1)
    want = (lse.astype(dtype), _lse(x, 0, True).astype(dtype),
            (x[:4] - lse[:4, None]).astype(dtype),
            np.exp(x[:4].astype(F64) - lse[:4, None]).astype(dtype),
            np.exp(x[:4] - _lse(x[:4], 0, True)).astype(dtype))
    compare(got, want)
    assert np.isfinite(got[0][:4]).all() and got[0][4] == -INF
    assert not np.isnan(got[3]).any()
    np.testing.assert_allclose(got[3].sum(-1), 1.0, rtol=1e-6)


@pytest.mark.parametrize("dtype", FLOATS)
def test_logsumexp_of_inf_and_nan(dtype, backend):
    x = np.array([[INF, 1.0], [NAN, 1.0], [INF, -INF], [-INF, -INF]], dtype)
    got = run(lambda v: nnjit.logsumexp(v, axis=1), x, backend=backend)
    compare(got, np.array([INF, NAN, INF, -INF], dtype))


@pytest.mark.parametrize("dtype", FLOATS)
def test_logsumexp_axes(dtype, backend):
    x = _rand((2, 3, 4), dtype, 8, -50, 50)
    got = run(lambda v: (nnjit.logsumexp(v, axis=(0, -1)), nnjit.logsumexp(v, axis=None),
                         nnjit.logsumexp(v, axis=-2, keepdims=True)), x, backend=backend)
    compare(got, (_lse(x, (0, 2)).astype(dtype), _lse(x, None).astype(dtype),
                  _lse(x, 1, True).astype(dtype)))


# -- stack and linear --------------------------------------------------------------------------

@pytest.mark.parametrize("axis", [0, 1, 2, -1, -3])
def test_stack(axis, backend):
    a, b = _rand((2, 3), F32, 1), _rand((2, 3), F32, 2)
    c = np.arange(6, dtype=np.int32).reshape(2, 3)
    got = run(lambda x, y: (nnjit.stack([x, y, c], axis), nnjit.stack([x], axis)), a, b,
              backend=backend)
    want = np.empty((3, 2, 3), F32)
    want[0], want[1], want[2] = a, b, c
    compare(got, (np.moveaxis(want, 0, axis % 3).copy(), np.moveaxis(a[None], 0, axis % 3)
                  .copy()))


def test_stack_promotes_dtypes(backend):
    got = run(lambda x, y: nnjit.stack([x, y, np.full(2, 2)]), np.zeros(2, I32), np.ones(2, F64),
              backend=backend)
    compare(got, np.array([[0, 0], [1, 1], [2, 2]], F64))


@pytest.mark.parametrize("xshape", [(3,), (2, 3), (2, 2, 3)])
def test_linear_torch_layout(xshape, backend):
    x, w, b = _rand(xshape, F64, 1), _rand((4, 3), F64, 2), _rand((4,), F64, 3)
    got = run(lambda x, w, b: (nnjit.linear(x, w, b), nnjit.linear(x, w)), x, w, b,
              backend=backend)
    y = np.einsum("...i,oi->...o", x, w)
    compare(got, (y + b, y))
    got = run(lambda x: nnjit.linear(x, w.astype(F32), b.astype(F32)), x.astype(F32),
              backend=backend)
    compare(got, (y + b).astype(F32))


def test_scalar_and_tensor_mixes_in_functions(backend):
    x = np.array([-2.0, 0.5, 3.0], F32)
    got = run(lambda v: (nnjit.where(v > 0, v, 0.0), nnjit.maximum(v, 1), nnjit.minimum(0, v),
                         nnjit.where(v > 1, 1.0, -1.0), nnjit.power(v, 2),
                         nnjit.cast(v, np.int32)), x, backend=backend)
    compare(got, (np.where(x > 0, x, 0).astype(F32), np.where(x >= 1, x, 1).astype(F32),
                  np.where(x <= 0, x, 0).astype(F32), np.where(x > 1, 1, -1).astype(F32),
                  x * x, np.array([-2, 0, 3], np.int32)))


# -- errors ------------------------------------------------------------------------------------

def test_error_linear_weight_layout(backend):
    x, w = np.ones((2, 3), F32), np.ones((3, 4), F32)
    line = here() + 1
    err = shape_error(lambda x, w: nnjit.linear(x, w), x, w, backend=backend)
    assert_error_names(err, "linear", [(2, 3), (3, 4)], line)


def test_error_stack_shapes_differ(backend):
    line = here() + 1
    err = shape_error(lambda x, y: nnjit.stack([x, y], axis=-1), np.ones((2, 3), F32),
                      np.ones((3, 3), F32), backend=backend)
    assert str(err).startswith(("stack:", "concat:"))
    assert_error_names(err, str(err).split(":")[0], [(2, 3, 1), (3, 3, 1)], line)


def test_error_operator_reports_the_users_line(backend):
    line = here() + 1
    err = shape_error(lambda x, y: x * y + 1, np.ones((2, 3), F32), np.ones((4,), F32),
                      backend=backend)
    assert_error_names(err, "mul", [(2, 3), (4,)], line)


def test_error_scan_carry_changes_type(backend):
    c0, xs = np.zeros(3, F32), np.ones((4, 3), F32)
    line = here() + 1
    err = shape_error(lambda c, x: nnjit.scan(lambda c, x: (c[None] + x, x), c, x), c0, xs,
                      backend=backend)
    assert_error_names(err, "scan", [(3,), (1, 3)], line)
