"""Composite movement and indexing ops with numpy/JAX semantics, built from the primitives in
`prims` (so they need no VJP or lowering of their own): squeeze, expand_dims, split, flip,
tile, repeat, take_along_axis.

Several of them gather through one flat `take`: a tensor's element at coordinates c lives at
position sum(c[d] * stride[d]) of its row-major flattening, so any gather is a `take` from the
flattened tensor at positions computed elementwise (iota times strides plus the wrapped,
checked indices), and its VJP is the `scatter_add` that `take` already has.
"""
from __future__ import annotations

import builtins
from typing import Sequence

import numpy as np

from . import prims as P
from .builder import Sym, user_loc
from .errors import ShapeError
from .types import DType


# -- movement/indexing ops (issue 12) --

def _strides(shape: Sequence[int]) -> list[int]:
    """Row-major element strides of `shape`."""
    out, s = [], 1
    for d in reversed(shape):
        out.append(s)
        s *= d
    return out[::-1]


def _axes(op: str, x: Sym, axis, ndim: int | None = None) -> tuple[int, ...]:
    try:
        return P.norm_axes(axis, x.ndim if ndim is None else ndim)
    except ShapeError as e:
        raise P.located(e, op, x) from None


def squeeze(x: Sym, axis=None) -> Sym:
    """numpy.squeeze: drop the size-1 axes (all of them, or those in `axis`, an int or tuple;
    an axis named there whose size is not 1 is an error)."""
    axes = tuple(d for d, n in enumerate(x.shape) if n == 1) if axis is None else \
        _axes("squeeze", x, axis)
    for a in axes:
        if x.shape[a] != 1:
            raise ShapeError(f"cannot squeeze axis {a} of size {x.shape[a]} (only size-1 axes "
                             f"can be squeezed) in {x.type}", "squeeze", user_loc())
    return P.reshape(x, tuple(n for d, n in enumerate(x.shape) if d not in axes))


def expand_dims(x: Sym, axis) -> Sym:
    """numpy.expand_dims: size-1 axes inserted so that they sit at `axis` (an int or tuple,
    counted in the result's dims) of the result."""
    n_new = 1 if isinstance(axis, (int, np.integer)) else len(tuple(axis))
    axes = _axes("expand_dims", x, axis, x.ndim + n_new)
    dims = iter(x.shape)
    return P.reshape(x, tuple(1 if d in axes else next(dims) for d in range(x.ndim + n_new)))


def _static_ints(op: str, what: str, v) -> list[int]:
    """`v` (an int sequence or a numpy integer array) as Python ints; a traced tensor is an
    error, since the result's shape would depend on its values."""
    if isinstance(v, Sym):
        raise ShapeError(f"{what} must be static (Python ints or a numpy array), not a traced "
                         "tensor: the result's shape would depend on its values", op, user_loc())
    arr = np.asarray(v)
    if arr.size and arr.dtype.kind not in "iu":
        raise ShapeError(f"{what} must be integers, got {arr.dtype}", op, user_loc())
    return [int(i) for i in arr.reshape(-1)]


def split(x: Sym, indices_or_sections, axis: int = 0) -> list[Sym]:
    """numpy.split: an int N cuts `axis` into N equal parts (an error unless N divides it); a
    sequence of indices cuts before each one (Python slice bounds: x[:i0], x[i0:i1], ...,
    x[ik:], so an index past the end or a decreasing one gives an empty part)."""
    (ax,) = _axes("split", x, axis)
    n = x.shape[ax]
    if isinstance(indices_or_sections, (int, np.integer)):
        k = int(indices_or_sections)
        if k <= 0 or n % k:
            raise ShapeError(f"{k} sections do not divide axis {ax} of size {n} into equal "
                             f"parts (numpy.split; pass the cut indices instead)", "split",
                             user_loc())
        cuts = [n // k * i for i in range(1, k)]
    else:
        cuts = _static_ints("split", "indices_or_sections", indices_or_sections)
    bounds = [0] + cuts + [None]
    lead = (builtins.slice(None),) * ax
    return [P.getitem(x, lead + (builtins.slice(a, b),)) for a, b in zip(bounds, bounds[1:])]


def flip(x: Sym, axis=None) -> Sym:
    """numpy.flip: the elements in reverse order along `axis` (None: every axis)."""
    axes = _axes("flip", x, axis)
    return P.getitem(x, tuple(builtins.slice(None, None, -1) if d in axes else
                              builtins.slice(None) for d in range(x.ndim)))


def tile(x: Sym, reps) -> Sym:
    """numpy.tile: `x` repeated `reps` times along each axis (an int or a tuple; the shorter of
    x.shape and reps is padded with leading 1s)."""
    reps = [int(reps)] if isinstance(reps, (int, np.integer)) else _static_ints(
        "tile", "reps", reps)
    if any(r < 0 for r in reps):
        raise ShapeError(f"reps must be non-negative, got {tuple(reps)}", "tile", user_loc())
    nd = builtins.max(len(reps), x.ndim)
    shape = (1,) * (nd - x.ndim) + x.shape
    reps = [1] * (nd - len(reps)) + reps
    # (s0, s1) -> (1, s0, 1, s1) -> broadcast (r0, s0, r1, s1) -> (r0*s0, r1*s1)
    spread = P.reshape(x, tuple(v for s in shape for v in (1, s)))
    wide = P.broadcast_to(spread, tuple(v for r, s in zip(reps, shape) for v in (r, s)))
    return P.reshape(wide, tuple(r * s for r, s in zip(reps, shape)))


def repeat(x: Sym, repeats, axis: int | None = None) -> Sym:
    """numpy.repeat: each element repeated `repeats` times along `axis` (None: of the
    flattened tensor). `repeats` is an int, or one static count per element along the axis
    (a list or numpy array; one count is used for every element)."""
    if axis is None:
        x, axis = P.reshape(x, (-1,)), 0
    (ax,) = _axes("repeat", x, axis)
    n = x.shape[ax]
    counts = [int(repeats)] if isinstance(repeats, (int, np.integer)) else _static_ints(
        "repeat", "repeats", repeats)
    if any(c < 0 for c in counts):
        raise ShapeError(f"repeats must be non-negative, got {counts}", "repeat", user_loc())
    if len(counts) == 1:
        # Every element r times: insert an axis after `ax`, broadcast it to r, merge the two.
        r = counts[0]
        spread = P.reshape(x, x.shape[:ax + 1] + (1,) + x.shape[ax + 1:])
        wide = P.broadcast_to(spread, x.shape[:ax + 1] + (r,) + x.shape[ax + 1:])
        return P.reshape(wide, x.shape[:ax] + (n * r,) + x.shape[ax + 1:])
    if len(counts) != n:
        raise ShapeError(f"repeats has {len(counts)} counts for axis {ax} of size {n} (one "
                         "per element, or a single count)", "repeat", user_loc())
    # Different counts per element: a constant gather of the source positions.
    src = np.repeat(np.arange(n, dtype=np.int64), counts)
    return P.take(x, P.builder_of(x).const(src), ax, mode="promise_in_bounds")


def checked_positions(index: Sym, size: int, what: str) -> Sym:
    """`index` (integers) as i64 positions in [0, size): checked at run time to lie in
    [-size, size) (IndexOutOfRange naming `what` otherwise), negatives wrapped once."""
    index = P.cast(P.check_index(index, size, what), DType.I64)
    return P.where(P.lt(index, 0), P.add(index, size), index)


def flat_gather(x: Sym, positions: Sym) -> Sym:
    """x.ravel()[positions]: `positions` are in range already (see `checked_positions`)."""
    return P.take(P.reshape(x, (-1,)), positions, 0, mode="promise_in_bounds")


def coordinate_offset(b, shape: Sequence[int], dims: dict[int, int]) -> Sym | None:
    """sum(coordinate[d] * stride) over `dims` ({dim of `shape`: stride}) as an i64 tensor
    of `shape`, or None when `dims` is empty."""
    out = None
    for d, stride in dims.items():
        term = P.mul(P.iota(b, shape, d, DType.I64), stride)
        out = term if out is None else P.add(out, term)
    return out


def take_along_axis(x: Sym, indices, axis: int | None) -> Sym:
    """numpy.take_along_axis: out[..., j, ...] = x[..., indices[..., j, ...], ...] along
    `axis` (None: of the flattened x, with 1-d indices). The other axes broadcast between x
    and indices. An index outside [-n, n) raises IndexOutOfRange at run time; negative
    indices count from the end."""
    b = P.builder_of(x, indices)
    if not isinstance(x, Sym):
        (x,) = P.lift(b, x)
    if not isinstance(indices, Sym):
        arr = np.asarray(indices)
        if arr.size and arr.dtype.kind not in "iu":
            raise ShapeError(f"indices must be integers, got {arr.dtype}", "take_along_axis",
                             user_loc())
        indices = b.const(arr.astype(np.int64))
    if not indices.dtype.is_int:
        raise P.located(ShapeError(f"indices must be integers, got {indices.type}"),
                        "take_along_axis", x, indices)
    if axis is None:
        x, axis = P.reshape(x, (-1,)), 0
    (ax,) = _axes("take_along_axis", x, axis)
    if indices.ndim != x.ndim:
        raise P.located(ShapeError(f"indices must have the same number of dims as x "
                                   f"({x.ndim}), got {indices.ndim}"), "take_along_axis",
                        x, indices)
    others = [d for d in range(x.ndim) if d != ax]
    try:
        lead = np.broadcast_shapes(tuple(x.shape[d] for d in others),
                                   tuple(indices.shape[d] for d in others))
    except ValueError:
        raise P.located(ShapeError(f"x {x.shape} and indices {indices.shape} do not broadcast "
                                   f"off axis {ax}"), "take_along_axis", x, indices) from None
    lead = list(lead)
    out_shape = tuple(lead[:ax] + [indices.shape[ax]] + lead[ax:])
    if x.shape[ax] == 0 and indices.size:
        raise P.located(ShapeError(f"cannot take from the empty axis {ax}"), "take_along_axis",
                        x, indices)
    pos = checked_positions(P.broadcast_to(indices, out_shape), x.shape[ax],
                            f"take_along_axis: axis {ax} of {x.type}")
    strides = _strides(x.shape)
    pos = P.mul(pos, strides[ax]) if strides[ax] != 1 else pos
    # Dims where x has size 1 broadcast: their coordinate does not move in x.
    rest = coordinate_offset(b, out_shape, {d: strides[d] for d in others if x.shape[d] != 1})
    return flat_gather(x, pos if rest is None else P.add(pos, rest))
