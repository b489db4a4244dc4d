"""Reductions (sum, max, argmax, and the composites mean/min/logsumexp built on them) against
numpy loops: any axes (negative, tuples, none), keepdims, empty reductions, NaN/inf semantics."""
import hypothesis.strategies as st
import numpy as np
import pytest
from hypothesis import given

import nnjit
from tests.helpers import run
from tests.op_cases import (F32, FLOATS, HYPOTHESIS, INTS, NUMERIC, RED, assert_error_names,
                            case_params, cases, check_case, compare, expect_argmax, expect_max,
                            expect_sum, grid, here, ids, loop_reduce, shape_error, shapes_st)

NAN, INF = np.nan, np.inf
SHAPED = [c for c in cases(RED) if c.shapes is not None]


@pytest.mark.parametrize("case,dtype", case_params(RED))
def test_forward(case, dtype, backend):
    check_case(case, case.make_inputs(np.random.default_rng(0), dtype), backend)


@pytest.mark.parametrize("case", SHAPED, ids=ids(SHAPED))
@HYPOTHESIS
@given(data=st.data())
def test_forward_shapes(case, backend, data):
    shapes = data.draw(case.shapes.map(lambda s: (s,)), label="shapes")
    dtype = data.draw(st.sampled_from(case.dtypes), label="dtype")
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1), label="seed"))
    check_case(case, case.make_inputs(rng, dtype, shapes), backend)


@st.composite
def shape_and_axes(draw, min_side=0):
    """A shape (0-4 dims, sides 0-4) and an `axis` argument: None, an int or a tuple, each axis
    randomly written as its negative alias."""
    shape = draw(shapes_st(min_side=min_side))
    nd = len(shape)
    alias = lambda a: a - nd if draw(st.booleans()) else a  # noqa: E731
    if nd == 0:
        return shape, draw(st.sampled_from([None, ()]))
    kind = draw(st.sampled_from(["none", "int", "tuple"]))
    if kind == "none":
        return shape, None
    if kind == "int":
        return shape, alias(draw(st.integers(0, nd - 1)))
    axes = draw(st.lists(st.integers(0, nd - 1), unique=True, max_size=nd))
    return shape, tuple(alias(a) for a in axes)


@pytest.mark.parametrize("op", ["sum", "max"])
@HYPOTHESIS
@given(sa=shape_and_axes(), keepdims=st.booleans(), dtype=st.sampled_from(NUMERIC),
       seed=st.integers(0, 2**32 - 1))
def test_sum_max_any_axes(op, backend, sa, keepdims, dtype, seed):
    shape, axis = sa
    x = grid()(np.random.default_rng(seed), shape, dtype)
    fn, expect = {"sum": (nnjit.sum, expect_sum), "max": (nnjit.max, expect_max)}[op]
    got = run(lambda v: fn(v, axis, keepdims), x, backend=backend)
    compare(got, expect(axis, keepdims)(x))


@HYPOTHESIS
@given(shape=shapes_st(min_dims=1, min_side=1), data=st.data(), keepdims=st.booleans(),
       dtype=st.sampled_from(NUMERIC), seed=st.integers(0, 2**32 - 1))
def test_argmax_any_axis(backend, shape, data, keepdims, dtype, seed):
    axis = data.draw(st.integers(-len(shape), len(shape) - 1), label="axis")
    x = grid()(np.random.default_rng(seed), shape, dtype)    # grid values: many ties
    got = run(lambda v: nnjit.argmax(v, axis, keepdims), x, backend=backend)
    compare(got, expect_argmax(axis, keepdims)(x))


# -- NaN, inf, ties, empty reductions ----------------------------------------------------------

@pytest.mark.parametrize("dtype", FLOATS)
def test_max_and_argmax_propagate_nan(dtype, backend):
    x = np.array([[1.0, NAN, 3.0, NAN], [2.0, 5.0, 5.0, 1.0], [-INF, -INF, -INF, -INF],
                  [NAN, 1.0, 2.0, 3.0], [-INF, INF, 1.0, INF]], dtype)
    got = run(lambda v: (nnjit.max(v, -1), nnjit.argmax(v, -1), nnjit.max(v, 0),
                         nnjit.min(v, 1)), x, backend=backend)
    want = (np.array([NAN, 5.0, -INF, NAN, INF], dtype), np.array([1, 1, 0, 0, 1]),
            np.array([NAN, NAN, 5.0, NAN], dtype), np.array([NAN, 1.0, -INF, NAN, -INF], dtype))
    compare(got, want)


@pytest.mark.parametrize("dtype", NUMERIC)
def test_argmax_returns_the_first_maximum(dtype, backend):
    x = np.array([[3, 1, 3, 3], [0, 0, 0, 0], [1, 2, 2, 0]], dtype)
    got = run(lambda v: (nnjit.argmax(v, 1), nnjit.argmax(v, 0, keepdims=True)), x,
              backend=backend)
    compare(got, (np.array([0, 0, 1]), np.array([[0, 2, 0, 0]])))


@pytest.mark.parametrize("dtype", FLOATS)
def test_empty_float_reductions(dtype, backend):
    x = np.zeros((0, 3), dtype)
    got = run(lambda v: (nnjit.sum(v, 0), nnjit.max(v, 0), nnjit.min(v, 0), nnjit.sum(v),
                         nnjit.max(v, 1), nnjit.mean(v, 0)), x, backend=backend)
    want = (np.zeros(3, dtype), np.full(3, -INF, dtype), np.full(3, INF, dtype), dtype.type(0),
            np.zeros(0, dtype), np.full(3, NAN, dtype))
    compare(got, want)


@pytest.mark.parametrize("dtype", INTS)
def test_integer_extremes_and_empty_reductions(dtype, backend):
    info = np.iinfo(dtype)
    x = np.array([[info.min, 0, 5], [info.max, info.min, info.max]], dtype)
    got = run(lambda v: (nnjit.min(v, 1), nnjit.max(v, 1), nnjit.min(v), v.min(0, keepdims=True)),
              x, backend=backend)
    compare(got, (np.array([info.min, info.min], dtype), np.array([5, info.max], dtype),
                  dtype.type(info.min), np.array([[info.min, info.min, 5]], dtype)))
    # Empty: max gives the smallest integer and min the largest (the identities).
    e = np.zeros((2, 0), dtype)
    got = run(lambda v: (nnjit.max(v, 1), nnjit.min(v, 1), nnjit.sum(v, 1)), e, backend=backend)
    compare(got, (np.full(2, info.min, dtype), np.full(2, info.max, dtype), np.zeros(2, dtype)))


def test_sum_keeps_small_float_accuracy(backend):
    """A float32 sum of 1 + many tiny values: within a few ulps of the exact answer."""
    x = np.concatenate([[1.0], np.full(255, 1e-4)]).astype(F32).reshape(4, 64)
    got = run(lambda v: nnjit.sum(v), x, backend=backend)
    want = loop_reduce(x.astype(np.float64), None, False, lambda a, b: a + b, 0)
    np.testing.assert_allclose(got, want, rtol=1e-6)


# -- shape and dtype errors --------------------------------------------------------------------

def test_error_axis_out_of_range(backend):
    line = here() + 1
    err = shape_error(lambda v: nnjit.sum(v, 2), np.ones((3, 4), np.float32), backend=backend)
    assert_error_names(err, "sum", [(3, 4)], line)
    assert "axis 2" in str(err)


def test_error_repeated_axis(backend):
    line = here() + 1
    err = shape_error(lambda v: v.max(axis=(1, -1)), np.ones((3, 4), np.float32), backend=backend)
    assert_error_names(err, "max", [(3, 4)], line)


def test_error_argmax_of_empty_axis(backend):
    line = here() + 1
    err = shape_error(lambda v: nnjit.argmax(v, 0), np.ones((0, 3), np.float64), backend=backend)
    assert_error_names(err, "argmax", [(0, 3)], line)


def test_error_reduce_bool(backend):
    line = here() + 1
    err = shape_error(lambda v: nnjit.max(v, 0), np.ones((2, 2), bool), backend=backend)
    assert_error_names(err, "max", [(2, 2)], line)


@pytest.mark.parametrize("backend", ["interp", "llvm"])
def test_argmax_and_argmin_default_to_the_flattened_tensor_as_numpy(backend):
    x = np.random.default_rng(3).standard_normal((3, 4, 5)).astype(np.float32)
    for fn, ref in [(nnjit.argmax, np.argmax), (nnjit.argmin, np.argmin)]:
        got = nnjit.jit(lambda v: (fn(v), fn(v, keepdims=True), fn(v, axis=1)),
                        backend=backend)(x)
        want = (ref(x), ref(x, keepdims=True), ref(x, axis=1))
        for g, w in zip(got, want):
            assert g.shape == w.shape
            np.testing.assert_array_equal(g, w)
