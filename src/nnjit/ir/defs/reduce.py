"""Reductions: `sum`, `max` (over any set of axes, with keepdims) and `argmax` (one axis).
`mean`, `min` and `logsumexp` are composites built on these."""
from __future__ import annotations

import numpy as np

from .. import prims as P
from ..kernel import Accumulation, KOp
from ..opdef import AttrSpec, OpDef, register
from ..ops import Kind, Op
from ..types import DType, TensorType
from .common import require, require_numeric


def reduced_shape(shape, axes, keepdims):
    if keepdims:
        return tuple(1 if i in axes else d for i, d in enumerate(shape))
    return tuple(d for i, d in enumerate(shape) if i not in axes)


def _check_axes(t: TensorType, axes) -> None:
    require(all(0 <= a < max(t.ndim, 1) for a in axes) and len(set(axes)) == len(axes)
            and list(axes) == sorted(axes),
            f"axes {axes} must be sorted, distinct and within a {t.ndim}-d tensor")
    require(t.ndim > 0 or not axes, f"axes {axes} given for a 0-d tensor")


def _reduce_shape(ts, attrs):
    (t,) = ts
    require_numeric(t)
    _check_axes(t, attrs["axes"])
    return t.with_shape(reduced_shape(t.shape, attrs["axes"], attrs["keepdims"]))


def _argmax_shape(ts, attrs):
    (t,) = ts
    require_numeric(t)
    ax = attrs["axis"]
    require(t.ndim > 0 and 0 <= ax < t.ndim, f"axis {ax} out of range for {t}")
    require(t.shape[ax] > 0, f"argmax of an empty axis {ax} in {t}")
    return TensorType(reduced_shape(t.shape, (ax,), attrs["keepdims"]), DType.I64)


def _sum_ref(xs, attrs):
    (x,) = xs
    axes, keepdims = attrs["axes"], attrs["keepdims"]
    if x.dtype.kind != "f" or not axes:
        return np.sum(x, axis=axes, keepdims=keepdims, dtype=x.dtype)
    # numpy sums pairwise only along its innermost loop: a sum over a leading axis (a bias
    # gradient over the batch) would add row by row and drift like n * eps. With the reduced
    # axes moved last and made contiguous, every sum is pairwise.
    kept = [d for d in range(x.ndim) if d not in axes]
    moved = np.ascontiguousarray(np.transpose(x, kept + list(axes)))
    terms = int(np.prod([x.shape[a] for a in axes], dtype=np.int64))
    out = np.sum(moved.reshape(moved.shape[:len(kept)] + (terms,)), axis=-1, dtype=x.dtype)
    return out.reshape(reduced_shape(x.shape, axes, keepdims))


def _identity_min(dt: np.dtype):
    """The identity of max: -inf for floats, the smallest integer otherwise."""
    return -np.inf if dt.kind == "f" else np.iinfo(dt).min


def _max_ref(xs, attrs):
    (x,) = xs
    return np.max(x, axis=attrs["axes"], keepdims=attrs["keepdims"],
                  initial=_identity_min(x.dtype)).astype(x.dtype)


def _argmax_ref(xs, attrs):
    (x,) = xs
    return np.argmax(x, axis=attrs["axis"], keepdims=attrs["keepdims"]).astype(np.int64)


def _expand(g, x, attrs):
    """Cotangent `g` of a reduction, broadcast back to the input's shape."""
    keep = P.reshape(g, reduced_shape(x.shape, attrs["axes"], True))
    return P.broadcast_to(keep, x.shape)


def _sum_vjp(xs, outs, cts, attrs):
    return [_expand(cts[0], xs[0], attrs)]


def _max_vjp(xs, outs, cts, attrs):
    # The gradient is split evenly between tied maxima (as JAX does), so it stays a gradient
    # of a symmetric function and finite differences agree away from exact ties.
    x = xs[0]
    y = _expand(outs[0], x, attrs)
    mask = P.cast(P.eq(x, y), x.dtype)
    count = _expand(P.reduce_sum(mask, attrs["axes"], attrs["keepdims"]), x, attrs)
    return [_expand(cts[0], x, attrs) * mask / count]


register(
    OpDef(Op.SUM, Kind.REDUCE, 1, _reduce_shape, _sum_ref, vjp=_sum_vjp,
          attrs=(AttrSpec("axes", "ints"), AttrSpec("keepdims", "bool", False)),
          lower=Accumulation(KOp.ADD)),
    OpDef(Op.MAX, Kind.REDUCE, 1, _reduce_shape, _max_ref, vjp=_max_vjp,
          attrs=(AttrSpec("axes", "ints"), AttrSpec("keepdims", "bool", False)),
          lower=Accumulation(KOp.MAX),
          doc="NaN-propagating max; an empty reduction gives -inf (ints: the minimum)"),
    OpDef(Op.ARGMAX, Kind.REDUCE, 1, _argmax_shape, _argmax_ref,
          attrs=(AttrSpec("axis", "int"), AttrSpec("keepdims", "bool", False)),
          lower=Accumulation(KOp.MAX, index=True),
          doc="index (i64) of the first maximum; a NaN counts as the maximum"),
)


# -- reductions (issue 12): prod ----------------------------------------------------------------

def _prod_ref(xs, attrs):
    (x,) = xs
    return np.asarray(np.prod(x, axis=attrs["axes"], keepdims=attrs["keepdims"], dtype=x.dtype))


def _prod_vjp(xs, outs, cts, attrs):
    """d prod / d x_i = the product of the other terms, without dividing by a zero x_i (the
    usual y / x would give nan there): with no zero in the slice it is y / x_i; with exactly
    one, the product of the nonzero terms at the zero and 0 elsewhere; with more, 0."""
    x = xs[0]
    axes = attrs["axes"]
    zero = P.eq(x, 0.0)
    safe = P.where(zero, 1.0, x)
    zeros = _expand(P.reduce_sum(P.cast(zero, x.dtype), axes, True), x, attrs)
    nonzero_prod = _expand(P.reduce_prod(safe, axes, True), x, attrs)
    others = P.where(P.eq(zeros, 0.0), nonzero_prod / safe,
                     P.where(P.logical_and(zero, P.eq(zeros, 1.0)), nonzero_prod, 0.0))
    return [_expand(cts[0], x, attrs) * others]


register(
    OpDef(Op.PROD, Kind.REDUCE, 1, _reduce_shape, _prod_ref, vjp=_prod_vjp,
          attrs=(AttrSpec("axes", "ints"), AttrSpec("keepdims", "bool", False)),
          lower=Accumulation(KOp.MUL), doc="product; an empty reduction gives 1"),
)
