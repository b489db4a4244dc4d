"""max/avg pooling and their gradients against numpy loops over the windows: padding (each side
on its own), count_include_pad, overlapping and skipping strides, ties and NaN in windows."""
import hypothesis.strategies as st
import numpy as np
import pytest
from hypothesis import given

import nnjit
from nnjit.ir import prims as P
from tests.helpers import run
from tests.op_cases import (F32, F64, FLOATS, HYPOTHESIS, WIN, assert_error_names, case_params,
                            check_case, compare, grid, here, naive_avg_pool2d,
                            naive_avg_pool2d_grad, naive_max_pool2d, naive_max_pool2d_grad,
                            pool_params_st, shape_error)

NAN, INF = np.nan, np.inf


@pytest.mark.parametrize("case,dtype", case_params(WIN))
def test_forward(case, dtype, backend):
    check_case(case, case.make_inputs(np.random.default_rng(0), dtype), backend)


@HYPOTHESIS
@given(params=pool_params_st(), dtype=st.sampled_from(FLOATS), seed=st.integers(0, 2**32 - 1))
def test_pools_and_grads_vs_loops(backend, params, dtype, seed):
    xs, k, s, p = params
    rng = np.random.default_rng(seed)
    x = grid(step=0.5, lo=-1, hi=1)(rng, xs, np.dtype(dtype))   # few values: ties in windows
    y = naive_max_pool2d(x, k, s, p)
    dy = rng.uniform(-1, 1, y.shape).astype(dtype)

    def f(x, dy):
        return (nnjit.max_pool2d(x, k, s, p), nnjit.avg_pool2d(x, k, s, p),
                nnjit.avg_pool2d(x, k, s, p, count_include_pad=False),
                P.max_pool2d_grad(x, dy, k, s, p),
                P.avg_pool2d_grad(dy, xs, k, s, p, True), P.avg_pool2d_grad(dy, xs, k, s, p, False))
    want = (y, naive_avg_pool2d(x, k, s, p), naive_avg_pool2d(x, k, s, p, False),
            naive_max_pool2d_grad(x, dy, k, s, p), naive_avg_pool2d_grad(dy, xs, k, s, p, True),
            naive_avg_pool2d_grad(dy, xs, k, s, p, False))
    compare(run(f, x, dy, backend=backend), want)


def test_dsl_defaults_stride_is_kernel_and_int_padding(backend):
    x = np.arange(2 * 7 * 7, dtype=F32).reshape(1, 2, 7, 7) % 11
    got = run(lambda v: (nnjit.max_pool2d(v, 3), nnjit.avg_pool2d(v, 2, padding=1),
                         nnjit.max_pool2d(v, (3, 2), stride=(1, 3), padding=(1, 0))), x,
              backend=backend)
    want = (naive_max_pool2d(x, (3, 3), (3, 3), ((0, 0), (0, 0))),
            naive_avg_pool2d(x, (2, 2), (2, 2), ((1, 1), (1, 1))),
            naive_max_pool2d(x, (3, 2), (1, 3), ((1, 1), (0, 0))))
    compare(got, want)


@pytest.mark.parametrize("dtype", FLOATS)
def test_count_include_pad_at_the_borders(dtype, backend):
    """A 3x3 window with padding 1 over ones: the corner averages 4/9 with the padding counted
    and exactly 1 without it."""
    x = np.ones((1, 1, 3, 3), dtype)
    inc, exc = run(lambda v: (nnjit.avg_pool2d(v, 3, 1, 1),
                              nnjit.avg_pool2d(v, 3, 1, 1, count_include_pad=False)), x,
                   backend=backend)
    compare(inc, (np.array([[4, 6, 4], [6, 9, 6], [4, 6, 4]], dtype) / 9)[None, None])
    compare(exc, np.ones((1, 1, 3, 3), dtype))


@pytest.mark.parametrize("dtype", FLOATS)
def test_max_pool_nan_inf_and_padding(dtype, backend):
    """A NaN in a window wins (np.maximum semantics) and takes dy; a window of real -inf and
    padding gives -inf and routes dy to its first real element, never to the padding."""
    x = np.array([[-INF, -INF, 2.0, 3.0], [NAN, 1.0, 5.0, INF], [0.0, -1.0, 5.0, 4.0],
                  [-INF, -INF, 1.0, NAN]], dtype)[None, None]
    pads = ((1, 1), (0, 0))     # windows: rows {-1, 0}, {1, 2}, {3, 4}; cols {0, 1}, {2, 3}
    y, g = run(lambda v, d: (nnjit.max_pool2d(v, 2, 2, pads),
                             P.max_pool2d_grad(v, d, (2, 2), (2, 2), pads)),
               x, np.arange(1.0, 7.0).reshape(1, 1, 3, 2).astype(dtype), backend=backend)
    compare(y, np.array([[-INF, 3.0], [NAN, INF], [-INF, NAN]], dtype)[None, None])
    want_g = np.zeros((4, 4), dtype)
    want_g[0, 0], want_g[0, 3], want_g[1, 0], want_g[1, 3] = 1.0, 2.0, 3.0, 4.0
    want_g[3, 0], want_g[3, 3] = 5.0, 6.0
    compare(g, want_g[None, None])


def test_max_pool_grad_ties_and_overlap_accumulate(backend):
    """All-equal input: every window routes dy to its first (top-left) element, and overlapping
    windows that share it accumulate."""
    x = np.zeros((1, 1, 3, 3), F64)
    dy = np.arange(1.0, 5.0).reshape(1, 1, 2, 2)
    got = run(lambda v, d: P.max_pool2d_grad(v, d, (2, 2), (1, 1), ((0, 0), (0, 0))), x, dy,
              backend=backend)
    want = np.zeros((3, 3))
    want[0, 0], want[0, 1], want[1, 0], want[1, 1] = 1.0, 2.0, 3.0, 4.0
    compare(got, want[None, None])


# -- shape and dtype errors --------------------------------------------------------------------

def test_error_pool_needs_nchw(backend):
    line = here() + 1
    err = shape_error(lambda v: nnjit.max_pool2d(v, 2), np.ones((1, 4, 4), F32), backend=backend)
    assert_error_names(err, "max_pool2d", [(1, 4, 4)], line)


def test_error_pool_padding_larger_than_half_the_kernel(backend):
    line = here() + 1
    err = shape_error(lambda v: nnjit.avg_pool2d(v, 3, 1, 2), np.ones((1, 1, 4, 4), F32),
                      backend=backend)
    assert_error_names(err, "avg_pool2d", [], line)
    assert "padding ((2, 2), (2, 2))" in str(err) and "(3, 3)" in str(err)


def test_error_pool_kernel_larger_than_input(backend):
    line = here() + 1
    err = shape_error(lambda v: nnjit.max_pool2d(v, (2, 5)), np.ones((1, 1, 4, 4), F32),
                      backend=backend)
    assert_error_names(err, "max_pool2d", [], line)
    assert "kernel extent 5" in str(err)


def test_error_max_pool_grad_dy_mismatch(backend):
    x, dy = np.ones((1, 1, 4, 4), F32), np.ones((1, 1, 3, 3), F32)
    line = here() + 1
    err = shape_error(lambda v, d: P.max_pool2d_grad(v, d, (2, 2), (2, 2), ((0, 0), (0, 0))),
                      x, dy, backend=backend)
    assert_error_names(err, "max_pool2d_grad", [(1, 1, 3, 3), (1, 1, 2, 2)], line)
