"""Composites of issue 12 that Tensor methods need (so they live in `ir`, next to `prims`):
`sign`, `clip`, `var`, `std`, `argmin`, `any`, `all` and `cumsum`. Each is built from
primitives, so it needs no VJP and no lowering of its own.

    >>> x.clip(0.0, 1.0)          # minimum(maximum(x, 0), 1): NaN propagates, as np.clip
    >>> nnjit.cumsum(x, axis=1)   # blocked: a 64x64 triangular matmul per block, then offsets
"""
from __future__ import annotations

import numpy as np

from . import prims as P
from .builder import Sym, user_loc
from .errors import ShapeError
from .types import DType

# -- elementwise ---------------------------------------------------------------------------------


def sign(x: Sym) -> Sym:
    """numpy.sign: -1, 0 or 1 in x's dtype; sign(+-0.0) = +0.0 and sign(nan) = nan (numpy 2).
    Its gradient is 0 (every branch is a constant)."""
    if x.dtype == DType.BOOL:
        raise ShapeError("sign of a bool tensor (numpy refuses it too)", "sign", user_loc())
    one, zero = (x.builder.const(np.asarray(v, x.dtype.np)) for v in (1, 0))
    zero_or_nan = P.where(P.eq(x, x), zero, x) if x.dtype.is_float else zero
    return P.where(P.gt(x, 0), one, P.where(P.lt(x, 0), -one, zero_or_nan))


def clip(x: Sym, a_min=None, a_max=None) -> Sym:
    """numpy.clip: minimum(maximum(x, a_min), a_max); either bound may be None (not both),
    a NaN in x or in a bound propagates, and a_min > a_max gives a_max (numpy). The gradient
    reaches x inside [a_min, a_max], boundaries included (torch.clamp)."""
    if a_min is None and a_max is None:
        raise ShapeError("one of a_min or a_max must be given", "clip", user_loc())
    y = x if a_min is None else P.maximum(x, a_min)
    return y if a_max is None else P.minimum(y, a_max)


# -- reductions ----------------------------------------------------------------------------------

def _count(x: Sym, axis) -> int:
    n = 1
    for a in P.norm_axes(axis, x.ndim):
        n *= x.shape[a]
    return n


def var(x: Sym, axis=None, ddof: int = 0, keepdims: bool = False) -> Sym:
    """numpy.var: mean((x - mean(x))**2) * n / (n - ddof), two passes (no cancellation of
    E[x^2] - E[x]^2). n - ddof <= 0 gives inf or nan, as numpy. Integers compute in f32."""
    try:
        n = _count(x, axis)
    except ShapeError as e:
        raise P.located(e, "var", x) from None
    if not x.dtype.is_float:
        x = P.cast(x, DType.F32)
    d = x - P.mean(x, axis, keepdims=True)
    total = P.reduce_sum(d * d, axis, keepdims)
    return P.div(total, float(n - ddof)) if n - ddof > 0 else total * np.inf


def std(x: Sym, axis=None, ddof: int = 0, keepdims: bool = False) -> Sym:
    """numpy.std: sqrt(var(x, axis, ddof, keepdims))."""
    return P.sqrt(var(x, axis, ddof, keepdims))


def argmin(x: Sym, axis=None, keepdims: bool = False) -> Sym:
    """numpy.argmin (i64): the first minimum; a NaN counts as the minimum; axis=None indexes
    the flattened tensor. argmax of an order-reversing map: -x for floats, ~x = -x - 1 for
    integers (exact: -x would wrap at the minimum), not x (as 0/1) for bools."""
    if axis is None:
        flat = argmin(P.reshape(x, (-1,)), 0)
        return P.reshape(flat, (1,) * x.ndim) if keepdims else flat
    if x.dtype.is_float:
        flipped = P.neg(x)
    elif x.dtype == DType.BOOL:
        flipped = P.cast(P.logical_not(x), DType.I32)     # argmax takes no bools
    else:
        flipped = P.sub(P.neg(x), 1)
    try:
        return P.argmax(flipped, axis, keepdims)
    except ShapeError as e:
        raise ShapeError(e.reason, "argmin", e.loc) from None


def any(x: Sym, axis=None, keepdims: bool = False) -> Sym:  # noqa: A001  (numpy's name)
    """numpy.any: is some element nonzero (NaN is nonzero)? False over an empty axis."""
    hits = P.reduce_max(P.cast(P.ne(x, _zero(x)), DType.I32), axis, keepdims)
    return P.gt(hits, 0)


def all(x: Sym, axis=None, keepdims: bool = False) -> Sym:  # noqa: A001
    """numpy.all: is every element nonzero? True over an empty axis (the max of nothing is
    the smallest i32)."""
    misses = P.reduce_max(P.cast(P.eq(x, _zero(x)), DType.I32), axis, keepdims)
    return P.lt(misses, 1)


def _zero(x: Sym):
    return False if x.dtype == DType.BOOL else 0


# -- cumsum --------------------------------------------------------------------------------------
# NOTE: a composite, not a primitive: blocks of CUMSUM_BLOCK along the axis are scanned by one
# matmul with an upper-triangular ones matrix (every output is a dot product of <= 64 terms:
# vectorized, threaded and tiled by the GEMM kernels, accurate like a short pairwise sum), the
# block totals are scanned the same way (recursively: log_64(n) levels) and added back as
# offsets. Work is 64 multiply-adds per element per level, linear in n; the VJP is what
# autodiff derives from matmul's, the reversed cumsum. Integer tensors use the same blocks with
# a masked sum (exact) instead of a matmul.
CUMSUM_BLOCK = 64


def cumsum(x: Sym, axis=None) -> Sym:
    """numpy.cumsum along `axis` (None: over the flattened tensor). Bools count as i64."""
    if axis is None:
        x, axis = P.reshape(x, (-1,)), 0
    try:
        axis = P.norm_axis(axis, x.ndim)
    except ShapeError as e:
        raise P.located(e, "cumsum", x) from None
    if x.ndim == 0:
        return x
    if x.dtype == DType.BOOL:
        x = P.cast(x, DType.I64)
    perm = tuple(d for d in range(x.ndim) if d != axis) + (axis,)
    y = _cumsum_last(P.transpose(x, perm))
    return P.transpose(y, tuple(int(i) for i in np.argsort(perm)))


def _cumsum_last(x: Sym) -> Sym:
    n = x.shape[-1]
    if n <= CUMSUM_BLOCK:
        return _scan_block(x)
    lead = x.shape[:-1]
    m = -(-n // CUMSUM_BLOCK)
    padded = P.pad(x, [(0, 0)] * len(lead) + [(0, m * CUMSUM_BLOCK - n)])
    within = _scan_block(P.reshape(padded, lead + (m, CUMSUM_BLOCK)))
    totals = P.getitem(within, (Ellipsis, CUMSUM_BLOCK - 1))               # (..., m)
    # Exclusive scan of the totals: the inclusive scan of (0, totals[:-1]).
    shifted = P.pad(P.getitem(totals, (Ellipsis, slice(0, m - 1))), [(0, 0)] * len(lead)
                    + [(1, 0)])
    offsets = _cumsum_last(shifted)
    out = within + P.reshape(offsets, lead + (m, 1))
    return P.getitem(P.reshape(out, lead + (m * CUMSUM_BLOCK,)), (Ellipsis, slice(0, n)))


def _scan_block(x: Sym) -> Sym:
    """Inclusive cumsum along a short last axis k: x @ U with U[i, j] = (i <= j)."""
    k = x.shape[-1]
    upper = np.triu(np.ones((k, k), dtype=bool))
    if x.dtype.is_float:
        return P.matmul(x, upper.astype(x.dtype.np))
    cols = P.reshape(x, x.shape + (1,))                                    # (..., k, 1)
    return P.reduce_sum(P.where(upper, cols, 0), x.ndim - 1)
