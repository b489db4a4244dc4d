"""2-d pooling over NCHW tensors (max and average) and their gradients, as window primitives."""
from __future__ import annotations

import numpy as np

from .. import prims as P
from ..opdef import AttrSpec, OpDef, register
from ..ops import Kind, Op
from ..types import TensorType
from .common import check_dims, check_len, require, require_float, window_out

POOL_ATTRS = (AttrSpec("kernel", "ints"), AttrSpec("stride", "ints"),
              AttrSpec("padding", "pairs", ((0, 0), (0, 0))))
AVG_ATTRS = POOL_ATTRS + (AttrSpec("count_include_pad", "bool", True),)


def pool_out_hw(shape, attrs) -> tuple[int, int]:
    for name in ("kernel", "stride", "padding"):
        check_len(name, attrs[name], 2)
    for (lo, hi), k in zip(attrs["padding"], attrs["kernel"]):
        require(max(lo, hi) <= k // 2, f"padding {attrs['padding']} must be at most half the "
                f"kernel {attrs['kernel']}")
    return tuple(window_out(shape[2 + i], *attrs["padding"][i], attrs["kernel"][i],
                            attrs["stride"][i], 1) for i in range(2))


def _pool_shape(ts, attrs):
    (x,) = ts
    require_float(x)
    require(x.ndim == 4, f"expects an NCHW input, got {x}")
    return x.with_shape(x.shape[:2] + pool_out_hw(x.shape, attrs))


def _max_pool_grad_shape(ts, attrs):
    x, dy = ts
    y = _pool_shape([x], attrs)
    require(dy == y, f"dy {dy} does not match the pooled shape {y}")
    return x


def _avg_pool_grad_shape(ts, attrs):
    (dy,) = ts
    shape = attrs["input_shape"]
    check_len("input_shape", shape, 4)
    check_dims("input_shape", shape)
    y = _pool_shape([TensorType(shape, dy.dtype)], attrs)
    require(dy == y, f"dy {dy} does not match the pooled shape {y} of input {shape}")
    return TensorType(shape, dy.dtype)


def _taps(attrs, ho, wo):
    """Yield (kh, kw, window view function) for every kernel tap."""
    (sh, sw) = attrs["stride"]
    for kh in range(attrs["kernel"][0]):
        for kw in range(attrs["kernel"][1]):
            yield lambda a, kh=kh, kw=kw: a[:, :, kh: kh + sh * (ho - 1) + 1: sh,
                                            kw: kw + sw * (wo - 1) + 1: sw]


def _padded(x, attrs, value):
    return np.pad(x, ((0, 0), (0, 0)) + tuple(attrs["padding"]), constant_values=value)


def _crop(xp, shape, attrs):
    (pt, _), (pl, _) = attrs["padding"]
    return np.ascontiguousarray(xp[:, :, pt: pt + shape[2], pl: pl + shape[3]])


def _max_pool_ref(xs, attrs):
    (x,) = xs
    ho, wo = pool_out_hw(x.shape, attrs)
    xp = _padded(x, attrs, -np.inf)
    out = np.full(x.shape[:2] + (ho, wo), -np.inf, x.dtype)
    for win in _taps(attrs, ho, wo):
        out = np.maximum(out, win(xp))
    return out


def _counts(shape, attrs, ho, wo):
    """How many elements each window averages over."""
    if attrs["count_include_pad"]:
        return np.full((ho, wo), attrs["kernel"][0] * attrs["kernel"][1], np.float64)
    ones = _padded(np.ones((1, 1) + tuple(shape[2:])), attrs, 0.0)
    return sum(win(ones) for win in _taps(attrs, ho, wo))[0, 0]


def _avg_pool_ref(xs, attrs):
    (x,) = xs
    ho, wo = pool_out_hw(x.shape, attrs)
    xp = _padded(x, attrs, 0.0)
    total = sum(win(xp) for win in _taps(attrs, ho, wo))
    return (total / _counts(x.shape, attrs, ho, wo)).astype(x.dtype)


def _max_pool_grad_ref(xs, attrs):
    """dy is routed to the first maximum of each window (row-major tap order), as in torch;
    overlapping windows accumulate. Padding never takes dy: a window of padding and real -inf
    routes it to its first real element."""
    x, dy = xs
    ho, wo = dy.shape[2:]
    xp = _padded(x, attrs, -np.inf)
    real = _padded(np.ones(x.shape, bool), attrs, False)
    y = _max_pool_ref([x], attrs)
    dxp = np.zeros(xp.shape, x.dtype)
    taken = np.zeros(dy.shape, bool)
    for win in _taps(attrs, ho, wo):
        xw = win(xp)
        hit = ~taken & win(real) & ((xw == y) | (np.isnan(xw) & np.isnan(y)))
        win(dxp)[...] += np.where(hit, dy, 0)
        taken |= hit
    return _crop(dxp, x.shape, attrs)


def _avg_pool_grad_ref(xs, attrs):
    (dy,) = xs
    shape = attrs["input_shape"]
    ho, wo = dy.shape[2:]
    dxp = np.zeros(shape[:2] + tuple(s + lo + hi for s, (lo, hi) in zip(shape[2:],
                                                                       attrs["padding"])),
                   dy.dtype)
    share = (dy / _counts(shape, attrs, ho, wo)).astype(dy.dtype)
    for win in _taps(attrs, ho, wo):
        win(dxp)[...] += share
    return _crop(dxp, shape, attrs)


def _pool_attrs(attrs):
    return attrs["kernel"], attrs["stride"], attrs["padding"]


def _max_pool_vjp(xs, outs, cts, attrs):
    return [P.max_pool2d_grad(xs[0], cts[0], *_pool_attrs(attrs))]


def _avg_pool_vjp(xs, outs, cts, attrs):
    return [P.avg_pool2d_grad(cts[0], xs[0].shape, *_pool_attrs(attrs),
                              attrs["count_include_pad"])]


def _avg_pool_grad_vjp(xs, outs, cts, attrs):
    return [P.avg_pool2d(cts[0], *_pool_attrs(attrs), attrs["count_include_pad"])]


register(
    OpDef(Op.MAX_POOL2D, Kind.WINDOW, 1, _pool_shape, _max_pool_ref, attrs=POOL_ATTRS,
          vjp=_max_pool_vjp, doc="max over kernel windows; padding counts as -inf"),
    OpDef(Op.AVG_POOL2D, Kind.WINDOW, 1, _pool_shape, _avg_pool_ref, attrs=AVG_ATTRS,
          vjp=_avg_pool_vjp),
    OpDef(Op.MAX_POOL2D_GRAD, Kind.WINDOW, 2, _max_pool_grad_shape, _max_pool_grad_ref,
          attrs=POOL_ATTRS, doc="routes dy to each window's first maximum (not differentiable "
          "again: second derivatives through max pooling are not supported)"),
    OpDef(Op.AVG_POOL2D_GRAD, Kind.WINDOW, 1, _avg_pool_grad_shape, _avg_pool_grad_ref,
          attrs=(AttrSpec("input_shape", "ints"),) + AVG_ATTRS, vjp=_avg_pool_grad_vjp),
)
