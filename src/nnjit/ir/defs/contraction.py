"""Contractions: batched `matmul` and 2-d convolution (NCHW x OIHW) with its two gradients.

The convolution gradients are primitives of their own (as in cuDNN and XLA's conv with
lhs/rhs dilation) so each lowers to one implicit-GEMM kernel instead of a chain of pads, slices
and transposes. All three are linear in each operand, so their VJPs are each other. All three
take `groups` (torch's grouped convolution: channels split into `groups` independent blocks,
`groups == C` is depthwise), lowered as a GEMM batched over the groups, or as direct loops
when each group has only a few channels (see `codegen.contraction`)."""
from __future__ import annotations

import numpy as np

from .. import prims as P
from ..opdef import AttrSpec, OpDef, register
from ..ops import Kind, Op
from ..types import TensorType
from .common import (
    broadcast_shapes,
    check_dims,
    check_len,
    require,
    require_float,
    same_dtype,
    window_out,
)

# -- matmul ------------------------------------------------------------------------------------


def _matmul_shape(ts, attrs):
    a, b = ts
    same_dtype(ts)
    require_float(a)
    require(a.ndim >= 2 and b.ndim >= 2, f"operands must be at least 2-d, got {a} @ {b}")
    require(a.shape[-1] == b.shape[-2], f"inner dims differ, {a.shape} @ {b.shape}")
    batch = broadcast_shapes(a.shape[:-2], b.shape[:-2])
    return TensorType(batch + (a.shape[-2], b.shape[-1]), a.dtype)


def _swap_last(x):
    return P.transpose(x, tuple(range(x.ndim - 2)) + (x.ndim - 1, x.ndim - 2))


def _matmul_vjp(xs, outs, cts, attrs):
    a, b = xs
    g = cts[0]
    return [P.sum_to(P.matmul(g, _swap_last(b)), a.shape),
            P.sum_to(P.matmul(_swap_last(a), g), b.shape)]


# -- convolution ---------------------------------------------------------------------------------

CONV_ATTRS = (AttrSpec("stride", "ints", (1, 1)), AttrSpec("padding", "pairs", ((0, 0), (0, 0))),
              AttrSpec("dilation", "ints", (1, 1)), AttrSpec("groups", "int", 1))


def _check_conv_attrs(attrs):
    for name in ("stride", "padding", "dilation"):
        check_len(name, attrs[name], 2)
    require(attrs["groups"] >= 1, f"groups must be >= 1, got {attrs['groups']}")


def conv_out_hw(x_shape, w_shape, attrs) -> tuple[int, int]:
    """(Ho, Wo) of a convolution of an input of `x_shape` with a weight of `w_shape`."""
    return tuple(window_out(x_shape[2 + i], *attrs["padding"][i], w_shape[2 + i],
                            attrs["stride"][i], attrs["dilation"][i])
                 for i in range(2))


def _conv2d_shape(ts, attrs):
    x, w = ts
    _check_conv_attrs(attrs)
    same_dtype(ts)
    require_float(x)
    require(x.ndim == 4 and w.ndim == 4, f"expects NCHW input and OIHW weight, got {x} and {w}")
    g = attrs["groups"]
    require(x.shape[1] == w.shape[1] * g,
            f"input channels {x.shape[1]} differ from weight in-channels {w.shape[1]}"
            + (f" x groups {g}" if g > 1 else "") + f": {x.shape} conv {w.shape}")
    require(w.shape[0] % g == 0,
            f"weight out-channels {w.shape[0]} are not divisible by groups {g}: {w.shape}")
    return TensorType((x.shape[0], w.shape[0]) + conv_out_hw(x.shape, w.shape, attrs), x.dtype)


def _conv2d_grad_input_shape(ts, attrs):
    dy, w = ts
    shape = attrs["input_shape"]
    check_len("input_shape", shape, 4)
    check_dims("input_shape", shape)
    expect = _conv2d_shape([TensorType(shape, dy.dtype), w], attrs)
    require(expect.shape == dy.shape, f"dy {dy.shape} does not match conv2d{shape} -> "
            f"{expect.shape}")
    return TensorType(shape, dy.dtype)


def _conv2d_grad_weight_shape(ts, attrs):
    x, dy = ts
    shape = attrs["weight_shape"]
    check_len("weight_shape", shape, 4)
    check_dims("weight_shape", shape)
    expect = _conv2d_shape([x, TensorType(shape, x.dtype)], attrs)
    require(expect.shape == dy.shape, f"dy {dy.shape} does not match conv2d of {x.shape} with "
            f"weight {shape} -> {expect.shape}")
    return TensorType(shape, x.dtype)


def _windows(xp, kh, kw, ho, wo, attrs):
    """The (N, C, Ho, Wo) view of padded input `xp` under kernel tap (kh, kw)."""
    (sh, sw), (dh, dw) = attrs["stride"], attrs["dilation"]
    return xp[:, :, kh * dh: kh * dh + sh * (ho - 1) + 1: sh,
              kw * dw: kw * dw + sw * (wo - 1) + 1: sw]


def _pad_hw(x, padding, value=0.0):
    return np.pad(x, ((0, 0), (0, 0)) + tuple(padding), constant_values=value)


def _conv2d_ref_dense(xs, attrs):
    x, w = xs
    ho, wo = conv_out_hw(x.shape, w.shape, attrs)
    xp = _pad_hw(x, attrs["padding"])
    out = np.zeros((x.shape[0], w.shape[0], ho, wo), x.dtype)
    for kh in range(w.shape[2]):
        for kw in range(w.shape[3]):
            patch = _windows(xp, kh, kw, ho, wo, attrs)
            out += np.einsum("nchw,oc->nohw", patch, w[:, :, kh, kw])
    return out


def _crop_hw(xp, x_shape, padding):
    (pt, _), (pl, _) = padding
    return xp[:, :, pt: pt + x_shape[2], pl: pl + x_shape[3]]


def _conv2d_grad_input_ref_dense(xs, attrs):
    dy, w = xs
    shape = attrs["input_shape"]
    (pt, pb), (pl, pr) = attrs["padding"]
    dxp = np.zeros((shape[0], shape[1], shape[2] + pt + pb, shape[3] + pl + pr), dy.dtype)
    ho, wo = dy.shape[2:]
    for kh in range(w.shape[2]):
        for kw in range(w.shape[3]):
            _windows(dxp, kh, kw, ho, wo, attrs)[...] += np.einsum(
                "nohw,oc->nchw", dy, w[:, :, kh, kw])
    return np.ascontiguousarray(_crop_hw(dxp, shape, attrs["padding"]))


def _conv2d_grad_weight_ref_dense(xs, attrs):
    x, dy = xs
    shape = attrs["weight_shape"]
    xp = _pad_hw(x, attrs["padding"])
    ho, wo = dy.shape[2:]
    dw = np.zeros(shape, x.dtype)
    for kh in range(shape[2]):
        for kw in range(shape[3]):
            dw[:, :, kh, kw] = np.einsum("nchw,nohw->oc", _windows(xp, kh, kw, ho, wo, attrs), dy)
    return dw


def _group_blocks(a: np.ndarray, axis: int, groups: int) -> list[np.ndarray]:
    return np.split(a, groups, axis=axis) if groups > 1 else [a]


def _conv2d_ref(xs, attrs):
    """Grouped: group k convolves input channels block k with out-channel block k."""
    x, w = xs
    g = attrs["groups"]
    return np.concatenate([_conv2d_ref_dense([xk, wk], attrs) for xk, wk in
                           zip(_group_blocks(x, 1, g), _group_blocks(w, 0, g))], axis=1)


def _conv2d_grad_input_ref(xs, attrs):
    dy, w = xs
    g = attrs["groups"]
    shape = attrs["input_shape"]
    sub = dict(attrs, input_shape=(shape[0], shape[1] // g) + tuple(shape[2:]))
    return np.concatenate([_conv2d_grad_input_ref_dense([dk, wk], sub) for dk, wk in
                           zip(_group_blocks(dy, 1, g), _group_blocks(w, 0, g))], axis=1)


def _conv2d_grad_weight_ref(xs, attrs):
    x, dy = xs
    g = attrs["groups"]
    shape = attrs["weight_shape"]
    sub = dict(attrs, weight_shape=(shape[0] // g,) + tuple(shape[1:]))
    return np.concatenate([_conv2d_grad_weight_ref_dense([xk, dk], sub) for xk, dk in
                           zip(_group_blocks(x, 1, g), _group_blocks(dy, 1, g))], axis=0)


def _conv_attrs(attrs):
    return attrs["stride"], attrs["padding"], attrs["dilation"], attrs["groups"]


def _conv2d_vjp(xs, outs, cts, attrs):
    x, w = xs
    g = cts[0]
    return [P.conv2d_grad_input(g, w, x.shape, *_conv_attrs(attrs)),
            P.conv2d_grad_weight(x, g, w.shape, *_conv_attrs(attrs))]


def _conv2d_grad_input_vjp(xs, outs, cts, attrs):
    dy, w = xs
    g = cts[0]  # shaped like the conv input
    return [P.conv2d(g, w, *_conv_attrs(attrs)),
            P.conv2d_grad_weight(g, dy, w.shape, *_conv_attrs(attrs))]


def _conv2d_grad_weight_vjp(xs, outs, cts, attrs):
    x, dy = xs
    g = cts[0]  # shaped like the weight
    return [P.conv2d_grad_input(dy, g, x.shape, *_conv_attrs(attrs)),
            P.conv2d(x, g, *_conv_attrs(attrs))]


register(
    OpDef(Op.MATMUL, Kind.CONTRACTION, 2, _matmul_shape,
          lambda xs, a: np.matmul(*xs).astype(xs[0].dtype, copy=False), vjp=_matmul_vjp,
          doc="batched matrix product; leading dims broadcast as in numpy"),
    OpDef(Op.CONV2D, Kind.CONTRACTION, 2, _conv2d_shape, _conv2d_ref, attrs=CONV_ATTRS,
          vjp=_conv2d_vjp, doc="NCHW x OIHW cross-correlation, explicit (lo, hi) padding"),
    OpDef(Op.CONV2D_GRAD_INPUT, Kind.CONTRACTION, 2, _conv2d_grad_input_shape,
          _conv2d_grad_input_ref, attrs=(AttrSpec("input_shape", "ints"),) + CONV_ATTRS,
          vjp=_conv2d_grad_input_vjp, doc="gradient of conv2d w.r.t. its input, from (dy, w)"),
    OpDef(Op.CONV2D_GRAD_WEIGHT, Kind.CONTRACTION, 2, _conv2d_grad_weight_shape,
          _conv2d_grad_weight_ref, attrs=(AttrSpec("weight_shape", "ints"),) + CONV_ATTRS,
          vjp=_conv2d_grad_weight_vjp, doc="gradient of conv2d w.r.t. its weight, from (x, dy)"),
)
