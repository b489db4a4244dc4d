"""matmul (batch broadcasting, 1-d operands, empty dims) and conv2d with its two gradients
(stride, asymmetric padding, 'same', dilation) against numpy loops and the adjoint identity."""
import hypothesis.strategies as st
import numpy as np
import pytest
from hypothesis import given

import nnjit
from nnjit.ir import prims as P
from tests.helpers import run
from tests.op_cases import (CON, F32, F64, FLOATS, HYPOTHESIS, assert_error_names, broadcast_st,
                            case_params, check_case, compare, conv_params_st, here, naive_conv2d,
                            naive_conv2d_grad_input, naive_conv2d_grad_weight, shape_error)


@pytest.mark.parametrize("case,dtype", case_params(CON))
def test_forward(case, dtype, backend):
    check_case(case, case.make_inputs(np.random.default_rng(0), dtype), backend)


# -- matmul ------------------------------------------------------------------------------------

def naive_matmul(a, b):
    """numpy's matmul spelled out: 1-d operands become a row / a column (removed afterwards),
    batch dims broadcast, and each matrix product is a sum over k of outer columns x rows."""
    a2 = a[None, :] if a.ndim == 1 else a
    b2 = b[:, None] if b.ndim == 1 else b
    batch = np.broadcast_shapes(a2.shape[:-2], b2.shape[:-2])
    a2 = np.broadcast_to(a2, batch + a2.shape[-2:]).astype(F64)
    b2 = np.broadcast_to(b2, batch + b2.shape[-2:]).astype(F64)
    out = np.zeros(batch + (a2.shape[-2], b2.shape[-1]))
    for k in range(a2.shape[-1]):
        out += a2[..., :, k, None] * b2[..., None, k, :]
    if a.ndim == 1:
        out = out[..., 0, :]
    if b.ndim == 1:
        out = out[..., 0]
    return out.astype(a.dtype)


@st.composite
def matmul_shapes(draw):
    """Operand shapes: broadcast batch dims (0-2 of them, sides 0-3), m, k, n in 0..4, and
    either operand possibly 1-d."""
    ba, bb = draw(broadcast_st(2, max_dims=2, max_side=3))
    m, k, n = (draw(st.integers(0, 4)) for _ in range(3))
    a = (k,) if draw(st.booleans()) else ba + (m, k)
    b = (k,) if draw(st.booleans()) else bb + (k, n)
    return a, b


@HYPOTHESIS
@given(shapes=matmul_shapes(), dtype=st.sampled_from(FLOATS), seed=st.integers(0, 2**32 - 1))
def test_matmul_broadcasting(backend, shapes, dtype, seed):
    rng = np.random.default_rng(seed)
    a, b = (rng.uniform(-2, 2, s).astype(dtype) for s in shapes)
    compare(run(nnjit.matmul, a, b, backend=backend), naive_matmul(a, b))


def test_matmul_operator_and_1d_operands(backend):
    rng = np.random.default_rng(1)
    v, m, t = (rng.standard_normal(s).astype(F32) for s in [(3,), (3, 4), (2, 4, 3)])
    got = run(lambda v, m, t: (v @ m, t @ v, v @ v, t @ m, nnjit.matmul(m.T, v)), v, m, t,
              backend=backend)
    want = (naive_matmul(v, m), naive_matmul(t, v), naive_matmul(v, v), naive_matmul(t, m),
            naive_matmul(m.T.copy(), v))
    compare(got, want)
    assert got[2].shape == ()


def test_a_stack_times_one_matrix_is_one_gemm_over_all_rows(backend):
    """(T, B, K) @ (K, N) is traced as a 2-d matmul of the (T*B, K) rows (one GEMM, not T
    small ones), and so is each operand's gradient: the weight's is one (K, T*B) @ (T*B, N)
    GEMM, with no batched product summed over T. Values against numpy loops, 1-d right
    operand included."""
    rng = np.random.default_rng(2)
    x, w, v = (rng.standard_normal(s) for s in [(4, 3, 5), (5, 2), (5,)])
    g = nnjit.trace(nnjit.grad(lambda x, w: ((x @ w) ** 2).sum(), (0, 1)), x, w)
    shapes = sorted(tuple(s.type.shape for s in n.srcs) for n in g.nodes
                    if n.op == nnjit.ir.Op.MATMUL)
    assert shapes == [((5, 12), (12, 2)), ((12, 2), (2, 5)), ((12, 5), (5, 2))]
    assert not any(t.shape == (4, 5, 2) for n in g.nodes for t in n.types)   # per-T products
    got = run(lambda x, w, v: (x @ w, x @ v), x, w, v, backend=backend)
    compare(got, (naive_matmul(x, w), naive_matmul(x, v)))
    assert got[1].shape == (4, 3)


# -- conv2d and its gradients ------------------------------------------------------------------

@HYPOTHESIS
@given(params=conv_params_st(), dtype=st.sampled_from(FLOATS), seed=st.integers(0, 2**32 - 1))
def test_conv2d_and_grads_vs_loops(backend, params, dtype, seed):
    xs, ws, stride, pads, dil = params
    rng = np.random.default_rng(seed)
    x, w = (rng.uniform(-1, 1, s).astype(dtype) for s in (xs, ws))
    y = naive_conv2d(x, w, stride, pads, dil)
    dy = rng.uniform(-1, 1, y.shape).astype(dtype)
    got = run(lambda x, w, dy: (nnjit.conv2d(x, w, stride=stride, padding=pads, dilation=dil),
                                P.conv2d_grad_input(dy, w, xs, stride, pads, dil),
                                P.conv2d_grad_weight(x, dy, ws, stride, pads, dil)),
              x, w, dy, backend=backend)
    compare(got, (y, naive_conv2d_grad_input(dy, w, xs, stride, pads, dil),
                  naive_conv2d_grad_weight(x, dy, ws, stride, pads, dil)))


@HYPOTHESIS
@given(params=conv_params_st(), seed=st.integers(0, 2**32 - 1))
def test_conv2d_adjoint_identity(backend, params, seed):
    """<conv(x, w), dy> == <x, grad_input(dy, w)> == <w, grad_weight(x, dy)>: the gradients are
    the adjoints of the convolution in each operand (no loops needed to state it)."""
    xs, ws, stride, pads, dil = params
    rng = np.random.default_rng(seed)
    x, w = rng.standard_normal(xs), rng.standard_normal(ws)
    y_shape = naive_conv2d(np.zeros(xs), np.zeros(ws), stride, pads, dil).shape
    dy = rng.standard_normal(y_shape)
    y, gi, gw = run(lambda x, w, dy: (P.conv2d(x, w, stride, pads, dil),
                                      P.conv2d_grad_input(dy, w, xs, stride, pads, dil),
                                      P.conv2d_grad_weight(x, dy, ws, stride, pads, dil)),
                    x, w, dy, backend=backend)
    lhs = float(np.sum(y * dy))
    scale = 1.0 + np.abs(y).sum() * np.abs(dy).max()
    assert abs(lhs - float(np.sum(x * gi))) <= 1e-12 * scale
    assert abs(lhs - float(np.sum(w * gw))) <= 1e-12 * scale


@pytest.mark.parametrize("k,d", [((1, 1), 1), ((2, 2), 1), ((3, 4), 1), ((3, 2), 2), ((5, 3), 1)])
def test_conv2d_same_keeps_the_spatial_size(k, d, backend):
    rng = np.random.default_rng(2)
    x, w = rng.standard_normal((1, 2, 5, 6)), rng.standard_normal((3, 2) + k)
    got = run(lambda x, w: nnjit.conv2d(x, w, padding="same", dilation=d), x, w, backend=backend)
    assert got.shape == (1, 3, 5, 6)
    # 'same' pads d*(k-1) in total per dim, the odd one out at the end (as torch and XLA do).
    pads = tuple((d * (kk - 1) // 2, d * (kk - 1) - d * (kk - 1) // 2) for kk in k)
    compare(got, naive_conv2d(x, w, (1, 1), pads, (d, d)))


@pytest.mark.parametrize("dtype", FLOATS)
def test_conv2d_bias_and_numpy_weight(dtype, backend):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 3, 4, 4)).astype(dtype)
    w = rng.standard_normal((2, 3, 3, 3)).astype(dtype)
    b = rng.standard_normal(2).astype(dtype)
    got = run(lambda x: nnjit.conv2d(x, w, b, stride=(2, 1), padding=(1, 0)), x, backend=backend)
    want = naive_conv2d(x, w, (2, 1), ((1, 1), (0, 0))) + b.reshape(1, 2, 1, 1)
    compare(got, want.astype(dtype))


# -- shape and dtype errors --------------------------------------------------------------------

def test_error_matmul_inner_dims(backend):
    a, b = np.ones((3, 4), F32), np.ones((5, 6), F32)
    line = here() + 1
    err = shape_error(lambda a, b: a @ b, a, b, backend=backend)
    assert_error_names(err, "matmul", [(3, 4), (5, 6)], line)


def test_error_matmul_batch_dims_do_not_broadcast(backend):
    a, b = np.ones((2, 3, 4), F64), np.ones((3, 4, 5), F64)
    line = here() + 1
    err = shape_error(lambda a, b: nnjit.matmul(a, b), a, b, backend=backend)
    assert_error_names(err, "matmul", [(2,), (3,)], line)


def test_error_conv2d_channels(backend):
    x, w = np.ones((1, 3, 5, 5), F32), np.ones((2, 4, 3, 3), F32)
    line = here() + 1
    err = shape_error(lambda x, w: nnjit.conv2d(x, w), x, w, backend=backend)
    assert_error_names(err, "conv2d", [(1, 3, 5, 5), (2, 4, 3, 3)], line)


def test_error_conv2d_kernel_larger_than_input(backend):
    x, w = np.ones((1, 1, 2, 5), F32), np.ones((1, 1, 3, 3), F32)
    line = here() + 1
    err = shape_error(lambda x, w: nnjit.conv2d(x, w), x, w, backend=backend)
    assert_error_names(err, "conv2d", [], line)
    assert "kernel extent 3" in str(err) and "padded input size 2" in str(err)


def test_error_conv2d_grad_input_dy_mismatch(backend):
    dy, w = np.ones((1, 2, 4, 4), F32), np.ones((2, 1, 3, 3), F32)
    line = here() + 1
    err = shape_error(lambda dy, w: P.conv2d_grad_input(dy, w, (1, 1, 5, 5), (1, 1),
                                                        ((0, 0), (0, 0)), (1, 1)), dy, w,
                      backend=backend)
    assert_error_names(err, "conv2d_grad_input", [(1, 2, 4, 4), (1, 2, 3, 3)], line)
