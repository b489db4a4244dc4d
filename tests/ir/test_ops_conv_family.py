"""The convolution family of issue 12: grouped and depthwise conv2d, conv1d, conv_transpose2d,
upsample (nearest, bilinear) and global/adaptive pooling. Forward values against numpy loops
run from tests/op_cases.py (contraction and window families); here: gradients of the
composites against float64 finite differences, the kernels a grouped convolution lowers to,
bad arguments, and torch.nn.functional.interpolate as an oracle."""
from __future__ import annotations

import hypothesis.strategies as st
import numpy as np
import pytest
from hypothesis import given

import nnjit
import nnjit.codegen.contraction as contraction
from nnjit.codegen import lower_graph
from nnjit.ir import evaluate
from nnjit.ir import prims as P
from nnjit.ir.kernel import GemmKernel, LoopKernel
from nnjit.ir.kernel_eval import run_program
from tests.gradcheck import check_grads
from tests.helpers import run
from tests.op_cases import (F32, F64, HYPOTHESIS, assert_error_names, compare, here,
                            naive_bilinear, naive_conv2d, naive_conv2d_grad_input,
                            naive_conv2d_grad_weight, naive_conv_transpose2d, naive_grouped,
                            naive_nearest, shape_error)


def randn(*shape, seed=0):
    return np.random.default_rng(seed + len(shape)).standard_normal(shape)


# -- gradients of the composites (float64 finite differences) ----------------------------------

GRAD_CASES = {
    "conv1d_groups_stride": (lambda x, w: nnjit.conv1d(x, w, stride=2, padding=1, groups=2),
                             ((1, 4, 7), (4, 2, 3))),
    "conv_transpose2d_outpad": (lambda x, w: nnjit.conv_transpose2d(
        x, w, stride=2, padding=1, output_padding=1), ((1, 2, 3, 3), (2, 3, 3, 3))),
    "conv_transpose2d_groups_dilated": (lambda x, w: nnjit.conv_transpose2d(
        x, w, stride=(1, 2), padding=(1, 0), output_padding=(1, 1), groups=2, dilation=(2, 1)),
        ((1, 4, 3, 2), (4, 1, 2, 2))),
    "upsample_nearest_x2": (lambda x: nnjit.upsample(x, scale_factor=2), ((1, 2, 2, 3),)),
    "upsample_nearest_size": (lambda x: nnjit.upsample(x, size=(5, 2)), ((1, 1, 3, 4),)),
    "upsample_bilinear": (lambda x: nnjit.upsample(x, size=(5, 7), mode="bilinear"),
                          ((1, 2, 3, 3),)),
    "upsample_bilinear_align": (lambda x: nnjit.upsample(x, scale_factor=2, mode="bilinear",
                                                         align_corners=True), ((1, 1, 2, 3),)),
    "global_avg_pool2d": (nnjit.global_avg_pool2d, ((2, 2, 3, 3),)),
    "adaptive_avg_pool2d": (lambda x: nnjit.adaptive_avg_pool2d(x, (1, 2)), ((1, 2, 2, 4),)),
}


@pytest.mark.parametrize("name", sorted(GRAD_CASES))
def test_composite_gradients_match_finite_differences(name, backend):
    fn, shapes = GRAD_CASES[name]
    args = tuple(randn(*s, seed=i) for i, s in enumerate(shapes))
    check_grads(fn, args, tuple(range(len(args))), backend=backend, max_elems=12)


def test_global_max_pool2d_gradient_goes_to_the_maximum(backend):
    x = np.arange(24, dtype=F64).reshape(2, 3, 2, 2)[:, :, ::-1] * 0.5
    g = run(nnjit.grad(lambda x: (nnjit.global_max_pool2d(x) * np.arange(1.0, 4.0).reshape(
        1, 3, 1, 1)).sum()), x, backend=backend)
    want = np.zeros_like(x)
    want[:, :, 0, 1] = np.arange(1.0, 4.0)          # the largest pixel of every flipped image
    compare(g, want)


# -- grouped convolutions: random configurations, and what they lower to ------------------------
# Small groups run as direct loops, large ones as GEMMs batched over (image, group): the
# `lowering` parameter forces one or the other for every drawn configuration.

LOWERINGS = {"direct": 10**9, "gemm": 0}


@pytest.fixture(params=sorted(LOWERINGS))
def lowering(request, monkeypatch):
    monkeypatch.setattr(contraction, "DIRECT_MAX_GROUP", LOWERINGS[request.param])
    return request.param


@st.composite
def grouped_params(draw):
    g = draw(st.integers(1, 3))
    cg, og = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    k = tuple(draw(st.integers(1, 3)) for _ in range(2))
    stride = tuple(draw(st.integers(1, 2)) for _ in range(2))
    dil = tuple(draw(st.integers(1, 2)) for _ in range(2))
    pads = tuple((draw(st.integers(0, 1)), draw(st.integers(0, 1))) for _ in range(2))
    hw = tuple(max(1, dil[i] * (k[i] - 1) + 1 - sum(pads[i])) + draw(st.integers(0, 2))
               for i in range(2))
    return (draw(st.integers(1, 2)), cg * g) + hw, (og * g, cg) + k, stride, pads, dil, g


@HYPOTHESIS
@given(params=grouped_params(), seed=st.integers(0, 2**32 - 1))
def test_grouped_conv2d_and_grads_vs_per_group_loops(backend, lowering, params, seed):
    xs, ws, stride, pads, dil, g = params
    rng = np.random.default_rng(seed)
    x, w = rng.uniform(-1, 1, xs).astype(F32), rng.uniform(-1, 1, ws).astype(F32)
    a = dict(stride=stride, padding=pads, dilation=dil)
    y = naive_grouped(naive_conv2d, x, w, g, 0, **a)
    dy = rng.uniform(-1, 1, y.shape).astype(F32)
    got = run(lambda x, w, dy: (nnjit.conv2d(x, w, groups=g, **a),
                                P.conv2d_grad_input(dy, w, xs, stride, pads, dil, groups=g),
                                P.conv2d_grad_weight(x, dy, ws, stride, pads, dil, groups=g)),
              x, w, dy, backend=backend)
    sub_x, sub_w = (xs[0], xs[1] // g) + xs[2:], (ws[0] // g,) + ws[1:]
    compare(got, (y, naive_grouped(naive_conv2d_grad_input, dy, w, g, 0, x_shape=sub_x, **a),
                  naive_grouped(naive_conv2d_grad_weight, x, dy, g, 1, w_shape=sub_w, **a)))


def _kernels(f, *args):
    g = nnjit.trace(f, *args)
    low = lower_graph(g)
    got = run_program(low.program, list(args))
    for a, b in zip(got, evaluate(g, list(args))):
        np.testing.assert_allclose(a.reshape(b.shape), b, rtol=1e-9, atol=1e-9)
    return low.program.kernels


def _gemms(f, *args):
    return [k for k in _kernels(f, *args) if isinstance(k, GemmKernel)]


def _grouped_loss(groups):
    return lambda x, w: (nnjit.relu(nnjit.conv2d(x, w, padding=1, groups=groups)) ** 2).sum()


def test_large_groups_are_one_gemm_each_batched_over_groups():
    x, w = randn(2, 18, 3, 2), randn(16, 9, 3, 3)      # 2 groups of 9 -> 8 channels
    (fwd,) = _gemms(lambda x, w: nnjit.conv2d(x, w, padding=1, groups=2), x, w)
    assert (fwd.batch, fwd.m, fwd.n, fwd.k) == ((2, 2), 8, 6, 81)
    grads = _gemms(nnjit.grad(_grouped_loss(2), argnums=(0, 1)), x, w)
    assert sorted(k.batch for k in grads) == [(2,), (2, 2), (2, 2)]  # dW, fwd, dx
    (dw,) = [k for k in grads if k.batch == (2,)]
    assert (dw.m, dw.n, dw.k) == (8, 81, 2 * 6)      # images folded into k: no batch sum


def test_depthwise_conv_and_its_gradients_are_direct_loops():
    x, w = randn(2, 4, 5, 5), randn(8, 1, 3, 3)        # depthwise, 2 filters per channel
    ks = _kernels(nnjit.grad(_grouped_loss(4), argnums=(0, 1)), x, w)
    assert not [k for k in ks if isinstance(k, GemmKernel)]
    direct = [k.name for k in ks if isinstance(k, LoopKernel) and k.name.endswith("_direct")]
    assert len(direct) == 3, [k.name for k in ks]      # forward, dx, dW: no column buffers
    assert not [k for k in ks if "im2col" in k.name or "col2im" in k.name]


def test_ungrouped_conv_folds_small_images_into_one_gemm():
    """Small per-image GEMMs (4 x 27 @ 27 x 16 here) become one over every image's columns;
    large ones (32 x 144 @ 144 x 256) keep the image batch."""
    (fwd,) = _gemms(lambda x, w: nnjit.conv2d(x, w, padding=1), randn(2, 3, 4, 4),
                    randn(4, 3, 3, 3))
    assert fwd.batch == () and (fwd.m, fwd.n, fwd.k) == (4, 2 * 16, 27)
    (fwd,) = _gemms(lambda x, w: nnjit.conv2d(x, w, padding=1), randn(2, 16, 16, 16),
                    randn(32, 16, 3, 3))
    assert fwd.batch == (2,) and not fwd.accumulate_batches



def test_conv1d_costs_what_a_unit_height_conv2d_costs():
    """The reshapes to and from 4-d are views: the same kernels, no copies."""
    x, w, b = randn(2, 3, 9), randn(4, 3, 3), randn(4)
    k1 = _kernels(lambda x, w, b: nnjit.relu(nnjit.conv1d(x, w, b, padding=1)), x, w, b)
    k2 = _kernels(lambda x, w, b: nnjit.relu(nnjit.conv2d(x, w, b, padding=((0, 0), (1, 1)))),
                  x[:, :, None], w[:, :, None], b)
    assert [(type(k), k.name) for k in k1] == [(type(k), k.name) for k in k2]

# -- bad arguments: named op, shapes and user line ------------------------------------------------

def test_error_groups_do_not_divide_channels(backend):
    x, w = np.ones((1, 4, 5, 5), F32), np.ones((3, 2, 3, 3), F32)
    line = here() + 1
    err = shape_error(lambda x, w: nnjit.conv2d(x, w, groups=2), x, w, backend=backend)
    assert_error_names(err, "conv2d", [(3, 2, 3, 3)], line)
    assert "not divisible by groups 2" in str(err)
    line = here() + 1
    err = shape_error(lambda x, w: nnjit.conv2d(x, w, groups=3), x, w, backend=backend)
    assert_error_names(err, "conv2d", [(1, 4, 5, 5), (3, 2, 3, 3)], line)
    assert "x groups 3" in str(err)


def test_error_conv1d_needs_3d_operands(backend):
    x, w = np.ones((1, 2, 5, 5), F32), np.ones((3, 2, 3), F32)
    line = here() + 1
    err = shape_error(lambda x, w: nnjit.conv1d(x, w), x, w, backend=backend)
    assert_error_names(err, "conv1d", [(1, 2, 5, 5), (3, 2, 3)], line)


def test_error_conv_transpose2d_output_padding(backend):
    x, w = np.ones((1, 2, 3, 3), F32), np.ones((2, 1, 3, 3), F32)
    line = here() + 1
    err = shape_error(lambda x, w: nnjit.conv_transpose2d(x, w, stride=2, output_padding=2),
                      x, w, backend=backend)
    assert_error_names(err, "conv_transpose2d", [(1, 2, 3, 3), (2, 1, 3, 3)], line)
    assert "output_padding (2, 2) must be smaller than stride (2, 2) or dilation" in str(err)
    line = here() + 1
    err = shape_error(lambda x, w: nnjit.conv_transpose2d(x, w[:1]), x, w, backend=backend)
    assert_error_names(err, "conv_transpose2d", [(1, 2, 3, 3)], line)


@pytest.mark.parametrize("kwargs,message", [
    (dict(scale_factor=2, mode="bicubic"), "mode must be one of nearest, bilinear"),
    (dict(), "exactly one of size and scale_factor"),
    (dict(size=4, scale_factor=2), "exactly one of size and scale_factor"),
    (dict(scale_factor=2, align_corners=True), "align_corners only applies"),
    (dict(scale_factor=0.1), "empty output"),
])
def test_error_upsample_arguments(kwargs, message):
    x = np.ones((1, 1, 3, 3), F32)
    line = here() + 1
    err = shape_error(lambda x: nnjit.upsample(x, **kwargs), x, backend="interp")
    assert_error_names(err, "upsample", [(1, 1, 3, 3)], line)
    assert message in str(err)


def test_error_adaptive_pool_uneven_output():
    x = np.ones((1, 1, 5, 4), F32)
    line = here() + 1
    err = shape_error(lambda x: nnjit.adaptive_avg_pool2d(x, 2), x, backend="interp")
    assert_error_names(err, "adaptive_avg_pool2d", [(1, 1, 5, 4)], line)
    assert "must be 1 or divide the input size" in str(err)


# -- torch as an oracle ---------------------------------------------------------------------------

@pytest.mark.oracle
@pytest.mark.parametrize("mode,align", [("nearest", None), ("bilinear", False),
                                        ("bilinear", True)])
@pytest.mark.parametrize("kwargs", [dict(scale_factor=2), dict(scale_factor=(1.5, 0.6)),
                                    dict(size=(7, 3)), dict(size=(2, 9))],
                         ids=["x2", "scale_uneven", "size_7x3", "size_2x9"])
def test_upsample_matches_torch_interpolate(mode, align, kwargs):
    torch = pytest.importorskip("torch")
    x = randn(2, 3, 4, 5)
    got = run(lambda x: nnjit.upsample(x, mode=mode, align_corners=align, **kwargs), x,
              backend="llvm")
    want = torch.nn.functional.interpolate(torch.tensor(x), mode=mode, align_corners=align,
                                           **kwargs).numpy()
    compare(got, want)
    size = kwargs.get("size")
    scale = None if size else kwargs["scale_factor"]
    scale = (scale, scale) if np.isscalar(scale) else scale
    mine = naive_nearest(x, size, scale) if mode == "nearest" else naive_bilinear(x, size, align,
                                                                                 scale)
    compare(mine, want)          # the numpy references of op_cases agree with torch too


@pytest.mark.oracle
def test_conv_transpose2d_matches_torch():
    torch = pytest.importorskip("torch")
    x, w = randn(2, 4, 3, 4), randn(4, 3, 3, 2)
    kw = dict(stride=(2, 3), padding=(1, 0), output_padding=(1, 2), groups=2, dilation=(1, 2))
    got = run(lambda x, w: nnjit.conv_transpose2d(x, w, **kw), x, w, backend="llvm")
    want = torch.nn.functional.conv_transpose2d(torch.tensor(x), torch.tensor(w), **kw).numpy()
    compare(got, want)
    compare(naive_conv_transpose2d(x, w, kw["stride"], kw["padding"], kw["output_padding"],
                                   kw["dilation"], kw["groups"]), want)
