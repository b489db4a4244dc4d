"""Composite movement and indexing ops with numpy/JAX semantics, built from the primitives in
`prims` (so they need no VJP or lowering of their own): squeeze, expand_dims, split, flip,
tile, repeat, take_along_axis.

Several of them gather through one flat `take`: a tensor's element at coordinates c lives at
position sum(c[d] * stride[d]) of its row-major flattening, so any gather is a `take` from the
flattened tensor at positions computed elementwise (iota times strides plus the wrapped,
checked indices), and its VJP is the `scatter_add` that `take` already has.
"""
from __future__ import annotations

import math
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
    lead = (slice(None),) * ax
    return [P.getitem(x, lead + (slice(a, b),)) for a, b in zip(bounds, bounds[1:])]


def flip(x: Sym, axis=None) -> Sym:
    """numpy.flip: the elements in reverse order along `axis` (None: every axis)."""
    axes = _axes("flip", x, axis)
    return P.getitem(x, tuple(slice(None, None, -1) if d in axes else
                              slice(None) for d in range(x.ndim)))


def tile(x: Sym, reps) -> Sym:
    """numpy.tile: `x` repeated `reps` times along each axis (an int or a tuple; the shorter of
    x.shape and reps is padded with leading 1s)."""
    reps = [int(reps)] if isinstance(reps, (int, np.integer)) else _static_ints(
        "tile", "reps", reps)
    if any(r < 0 for r in reps):
        raise ShapeError(f"reps must be non-negative, got {tuple(reps)}", "tile", user_loc())
    nd = max(len(reps), x.ndim)
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


# numpy indexing: basic (ints, slices, None, ...) and advanced (integer arrays, constant boolean
# masks). Ints and slices apply first as one strided slice; one integer array is then a `take`
# along its axis, several a flat gather of their broadcast positions.

TRACED_MASK_HINT = ("indexing with a traced boolean mask gives a result whose shape depends on "
                    "the mask's values, which a compiled function cannot have; use "
                    "nnjit.where(mask, x, 0) to zero the unselected elements instead (or index "
                    "with a concrete numpy bool array)")


def getitem(x: Sym, idx) -> Sym:
    """x[idx] with numpy's rules, including several integer arrays (x[np.arange(B), labels],
    x[i, :, j]) that broadcast together and whose dims go where the first one is when they are
    adjacent in `idx` and first otherwise. An array index outside [-n, n) raises
    IndexOutOfRange at run time; negative indices count from the end."""
    try:
        return _getitem(x, idx)
    except ShapeError as e:
        raise P.located(e, "getitem", x) from None


def _is_array(i) -> bool:
    return isinstance(i, (Sym, np.ndarray))


def _is_int(i) -> bool:
    return isinstance(i, (int, np.integer)) and not isinstance(i, (bool, np.bool_))


def _as_index(b, i):
    """One index entry with lists as numpy arrays, and arrays as integer constants or boolean
    masks; everything else is returned as it is (ints, slices, None, ...)."""
    if isinstance(i, Sym):
        if i.dtype == DType.BOOL:
            raise ShapeError(TRACED_MASK_HINT)
        if not i.dtype.is_int:
            raise ShapeError(f"arrays used as indices must be integers or booleans, got "
                             f"{i.type}")
        return i
    if isinstance(i, (list, np.ndarray)):
        arr = np.asarray(i)
        if arr.dtype == np.bool_:
            if arr.ndim == 0:
                raise ShapeError("a 0-d boolean index is not supported")
            return arr
        if arr.size and arr.dtype.kind not in "iu":
            raise ShapeError(f"arrays used as indices must be integers or booleans, got "
                             f"{arr.dtype}")
        return b.const(arr.astype(np.int64))
    return i


def _expand(x: Sym, idx) -> list:
    """`idx` as one entry per result-producing position: the ellipsis filled with full slices,
    missing trailing dims too, and each k-d constant boolean mask replaced by the k integer
    arrays of its True positions (numpy's x[mask] == x[mask.nonzero()])."""
    b = P.builder_of(x)
    entries = [_as_index(b, i) for i in (idx if isinstance(idx, tuple) else (idx,))]
    if sum(1 for i in entries if i is Ellipsis) > 1:
        raise ShapeError("an index can only have a single ellipsis ('...')")
    width = [i.ndim if isinstance(i, np.ndarray) else 0 if i is None or i is Ellipsis else 1
             for i in entries]
    if sum(width) > x.ndim:
        raise ShapeError(f"too many indices for a tensor of shape {x.shape}: {len(entries)}")
    fill = [slice(None)] * (x.ndim - sum(width))
    k = next((k for k, i in enumerate(entries) if i is Ellipsis), len(entries))
    entries = entries[:k] + fill + entries[k + 1:]
    out, dim = [], 0
    for i in entries:
        if isinstance(i, np.ndarray):    # a boolean mask over dims dim .. dim + i.ndim
            want = x.shape[dim:dim + i.ndim]
            if i.shape != want:
                raise ShapeError(f"a boolean index of shape {i.shape} must match the dims "
                                 f"{want} it indexes")
            out += [b.const(nz.astype(np.int64)) for nz in np.nonzero(i)]
            dim += i.ndim
            continue
        out.append(i)
        dim += i is not None
    return out


def _getitem(x: Sym, idx) -> Sym:
    entries = _expand(x, idx)
    arrays = [k for k, i in enumerate(entries) if _is_array(i)]
    advanced = arrays + ([k for k, i in enumerate(entries) if _is_int(i)] if arrays else [])
    starts, stops, steps, shape, array_dims = [], [], [], [], {}
    dim = 0
    for k, i in enumerate(entries):
        if i is None:
            shape.append(1)
            continue
        n = x.shape[dim]
        if isinstance(i, slice):
            start, stop, step = i.indices(n)
            starts.append(start), stops.append(stop), steps.append(step)
            shape.append(len(range(start, stop, step)))
        elif _is_int(i):
            j = int(i)
            if not -n <= j < n:
                raise ShapeError(f"index {j} is out of bounds for axis {dim} with size {n}")
            j %= n
            starts.append(j), stops.append(j + 1), steps.append(1)
        elif _is_array(i):
            starts.append(0), stops.append(n), steps.append(1)
            array_dims[k] = (len(shape), dim)
            shape.append(n)
        else:
            raise ShapeError(f"unsupported index {i!r} (use ints, slices, None, ..., integer "
                             "arrays or constant boolean masks)")
        dim += 1
    full = all(s == 0 and e == n and st == 1 for s, e, st, n in zip(starts, stops, steps, x.shape))
    y = P.reshape(x if full else P.slice(x, starts, stops, steps), shape)
    if not arrays:
        return y
    # numpy puts the broadcast index dims where the advanced indices are when they are
    # adjacent in the index, and first otherwise (x[0, :, [1, 2]] has shape (2, 4) for a
    # (3, 4, 5) x).
    adjacent = max(advanced) - min(advanced) + 1 == len(advanced)
    first = array_dims[arrays[0]][0] if adjacent else 0
    what = {k: f"getitem: axis {d} of {x.type}" for k, (_, d) in array_dims.items()}
    if len(arrays) == 1:
        (k,) = arrays
        axis = array_dims[k][0]
        ind = entries[k]
        y = P.take(y, P.check_index(ind, y.shape[axis], what[k]), axis,
                   mode="promise_in_bounds")
        if first != axis:
            moved = tuple(range(axis, axis + ind.ndim))
            y = P.transpose(y, moved + tuple(d for d in range(y.ndim) if d not in moved))
        return y
    return _gather(y, [(array_dims[k][0], entries[k], what[k]) for k in arrays], first)


def _gather(y: Sym, arrays, first: int) -> Sym:
    """y indexed by several integer arrays [(dim of y, indices, what)] that broadcast together;
    their dims go at `first` among y's remaining dims: one flat gather of the positions."""
    try:
        block = tuple(np.broadcast_shapes(*(ind.shape for _, ind, _ in arrays)))
    except ValueError:
        raise ShapeError("shape mismatch: indexing arrays could not be broadcast together with "
                         "shapes " + " ".join(str(ind.shape) for _, ind, _ in arrays)) from None
    indexed = {d for d, _, _ in arrays}
    rest = [d for d in range(y.ndim) if d not in indexed]
    out_dims = rest[:first] + [None] * len(block) + rest[first:]   # None: a block dim
    rest_shape = tuple(y.shape[d] for d in rest)
    out_shape = rest_shape[:first] + block + rest_shape[first:]
    if any(y.shape[d] == 0 for d in indexed) and math.prod(out_shape):
        raise ShapeError(f"cannot index the empty dims of {y.shape} with non-empty arrays")
    strides = _strides(y.shape)
    place = (1,) * first + block + (1,) * (len(out_shape) - first - len(block))
    pos = coordinate_offset(P.builder_of(y), out_shape, {
        k: strides[d] for k, d in enumerate(out_dims) if d is not None and y.shape[d] != 1})
    for d, ind, what in arrays:
        term = checked_positions(P.broadcast_to(ind, block), y.shape[d], what)
        term = P.reshape(P.mul(term, strides[d]) if strides[d] != 1 else term, place)
        pos = term if pos is None else P.add(pos, term)
    return flat_gather(y, P.broadcast_to(pos, out_shape))



# Functional updates, JAX's x.at[idx].set/add/multiply/min/max(v) and .get(): the
# positions idx selects (x's flat positions, indexed like x itself) take the scattered updates
# (scatter_add for add, the scatter primitive for the rest); x itself is unchanged.

class IndexUpdateRef:
    """`x.at`: `x.at[idx]` names the elements of x that `idx` selects (numpy indexing)."""

    __slots__ = ("x",)

    def __init__(self, x: Sym):
        self.x = x

    def __getitem__(self, idx) -> "IndexUpdate":
        return IndexUpdate(self.x, idx)


class IndexUpdate:
    """x.at[idx]: `.set(v)`, `.add(v)`, `.multiply(v)`, `.min(v)`, `.max(v)` and `.get()` return
    new tensors (x is not changed). `v` broadcasts to the shape of x[idx] and is cast to x's
    dtype. With duplicate indices `add`/`multiply` combine every update, `min`/`max` keep the
    extreme of all of them,
    and `set` writes the last one in row-major order of x[idx] (JAX leaves this unspecified;
    numpy's assignment also keeps the last)."""

    __slots__ = ("x", "idx")

    def __init__(self, x: Sym, idx):
        self.x, self.idx = x, idx

    def get(self) -> Sym:
        return getitem(self.x, self.idx)

    def add(self, values) -> Sym:
        x = self.x
        if x.dtype == DType.BOOL:
            raise ShapeError(f"cannot add into a bool tensor {x.type} (use .set)", "at.add",
                             user_loc())
        pos, upd = self._scatter_operands("at.add", values)
        return P.add(x, P.reshape(P.scatter_add(pos, upd, (x.size,), 0), x.shape))

    def set(self, values) -> Sym:
        return self._scatter("set", values)

    def min(self, values) -> Sym:  # noqa: A003  (JAX's name)
        return self._scatter("min", values)

    def max(self, values) -> Sym:  # noqa: A003  (JAX's name)
        return self._scatter("max", values)

    def multiply(self, values) -> Sym:
        return self._scatter("multiply", values)

    def _scatter(self, mode: str, values) -> Sym:
        x = self.x
        if x.dtype == DType.BOOL and mode != "set":
            raise ShapeError(f"cannot {mode} into a bool tensor {x.type} (use .set)",
                             f"at.{mode}", user_loc())
        pos, upd = self._scatter_operands(f"at.{mode}", values)
        return P.reshape(P.scatter(P.reshape(x, (-1,)), pos, upd, 0, mode), x.shape)

    def _scatter_operands(self, op: str, values) -> tuple[Sym, Sym]:
        """The flat positions of x[idx] (checked at run time like x[idx]) and the updates
        broadcast to them, both flattened."""
        x = self.x
        b = P.builder_of(x, values)
        flat = P.reshape(P.iota(b, (x.size,), 0, DType.I64), x.shape)
        pos = getitem(flat, self.idx)
        (v,) = P.lift(b, values)
        v = P.cast(v, x.dtype)
        try:
            fits = np.broadcast_shapes(v.shape, pos.shape) == pos.shape
        except ValueError:
            fits = False
        if not fits:
            raise ShapeError(f"values of shape {v.shape} do not broadcast to the shape "
                             f"{pos.shape} of x[idx] for x {x.type}", op, user_loc())
        return P.reshape(pos, (-1,)), P.reshape(P.broadcast_to(v, pos.shape), (-1,))
