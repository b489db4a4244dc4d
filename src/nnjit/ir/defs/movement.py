"""Data movement: reshape, transpose, broadcast_to, concat, strided slice, constant pad, and the
gather/scatter pair `take` / `scatter_add` (embedding lookup and its gradient).

Indices of take/scatter_add wrap once when negative and are then clamped into range: out-of-range
indices can never make generated code read or write out of bounds (JAX's gather does the same)."""
from __future__ import annotations

import builtins

import numpy as np

from .. import prims as P
from ..errors import IndexOutOfRange
from ..kernel import IndexSite
from ..opdef import AttrSpec, OpDef, register
from ..ops import Kind, Op
from ..types import DType, TensorType
from .common import check_dims, check_len, require, same_dtype

# -- shape rules ------------------------------------------------------------------------------

def _reshape_shape(ts, attrs):
    (t,) = ts
    new = attrs["shape"]
    require(all(d >= 0 for d in new), f"cannot reshape to {new}: negative dims")
    require(TensorType(new, t.dtype).size == t.size, f"cannot reshape {t.shape} into {new}")
    return t.with_shape(new)


def _transpose_shape(ts, attrs):
    (t,) = ts
    perm = attrs["perm"]
    require(sorted(perm) == list(range(t.ndim)), f"perm {perm} is not a permutation of the "
            f"{t.ndim} axes of {t.shape}")
    return t.with_shape(tuple(t.shape[p] for p in perm))


def _broadcast_to_shape(ts, attrs):
    (t,) = ts
    shape = attrs["shape"]
    check_dims("shape", shape)
    lead = len(shape) - t.ndim
    require(lead >= 0 and all(d in (1, s) for d, s in zip(t.shape, shape[lead:])),
            f"cannot broadcast {t.shape} to {shape}")
    return t.with_shape(shape)


def _concat_shape(ts, attrs):
    ax = attrs["axis"]
    require(len(ts) >= 1, "needs at least one operand")
    same_dtype(ts)
    t0 = ts[0]
    require(0 <= ax < t0.ndim, f"axis {ax} out of range for {t0}")
    for t in ts[1:]:
        require(t.ndim == t0.ndim and all(a == b for i, (a, b) in enumerate(zip(t.shape, t0.shape))
                                          if i != ax),
                "shapes differ off the concat axis: " + ", ".join(str(t.shape) for t in ts))
    return t0.with_shape(t0.shape[:ax] + (sum(t.shape[ax] for t in ts),) + t0.shape[ax + 1:])


def slice_len(start: int, stop: int, step: int) -> int:
    return len(range(start, stop, step))


def _slice_shape(ts, attrs):
    (t,) = ts
    starts, stops, steps = attrs["starts"], attrs["stops"], attrs["steps"]
    for name in ("starts", "stops", "steps"):
        check_len(name, attrs[name], t.ndim)
    out = []
    for d, (n, a, b, s) in enumerate(zip(t.shape, starts, stops, steps)):
        require(s != 0, f"slice step is zero in dim {d}")
        lo, hi = (0, n) if s > 0 else (-1, n - 1)
        require(lo <= a <= hi and lo <= b <= hi,
                f"slice {a}:{b}:{s} is not normalized for dim {d} of size {n}")
        out.append(slice_len(a, b, s))
    return t.with_shape(out)


def _pad_shape(ts, attrs):
    (t,) = ts
    pads = attrs["pads"]
    check_len("pads", pads, t.ndim)
    require(all(lo >= 0 and hi >= 0 for lo, hi in pads), f"pads {pads} must be non-negative")
    return t.with_shape(tuple(n + lo + hi for n, (lo, hi) in zip(t.shape, pads)))


def _take_shape(ts, attrs):
    x, idx = ts
    ax = attrs["axis"]
    require(idx.dtype.is_int, f"indices must be i32 or i64, got {idx}")
    require(0 <= ax < x.ndim, f"axis {ax} out of range for {x}")
    require(x.shape[ax] > 0 or idx.size == 0, f"cannot take from the empty axis {ax} of {x}")
    return x.with_shape(x.shape[:ax] + idx.shape + x.shape[ax + 1:])


def _check_index_shape(ts, attrs):
    (idx,) = ts
    require(idx.dtype.is_int, f"indices must be i32 or i64, got {idx}")
    require(attrs["size"] >= 0, f"size must be non-negative, got {attrs['size']}")
    return idx


def _scatter_add_shape(ts, attrs):
    idx, upd = ts
    shape, ax = attrs["shape"], attrs["axis"]
    require(idx.dtype.is_int, f"indices must be i32 or i64, got {idx}")
    check_dims("shape", shape)
    require(0 <= ax < len(shape), f"axis {ax} out of range for shape {shape}")
    want = shape[:ax] + idx.shape + shape[ax + 1:]
    require(upd.shape == want, f"updates {upd.shape} must have shape {want} for indices "
            f"{idx.shape} into {shape} along axis {ax}")
    require(shape[ax] > 0 or idx.size == 0, f"cannot scatter into the empty axis {ax}")
    return upd.with_shape(shape)


# -- references ------------------------------------------------------------------------------------

def clamp_indices(idx: np.ndarray, n: int) -> np.ndarray:
    """Negative indices wrap once, then everything is clamped into [0, n)."""
    idx = idx.astype(np.int64)
    idx = np.where(idx < 0, idx + n, idx)
    return np.clip(idx, 0, max(n - 1, 0))


def index_site(attrs, loc: str = ""):
    """The `IndexSite` a check_index node with `attrs` describes."""
    size = attrs["size"]
    return IndexSite(attrs["what"], size, -size if attrs["negative"] else 0, attrs["ignore"],
                     loc)


def _check_index_ref(xs, attrs):
    (idx,) = xs
    site = index_site(attrs)
    bad = ((idx < site.lo) | (idx >= site.size)) & ~np.isin(idx, site.ignore)
    if bad.any():
        raise IndexOutOfRange(site.message(int(idx[bad].reshape(-1)[0])))
    return idx


def _slice_ref(xs, attrs):
    (x,) = xs
    # Normalized bounds use -1 for "before index 0" (negative steps), which Python reads as the
    # last element: a start of -1 is an empty slice, a stop of -1 runs to the front.
    sl = tuple(builtins.slice(a, None if b < 0 else b, s) if a >= 0 else builtins.slice(0, 0)
               for a, b, s in zip(attrs["starts"], attrs["stops"], attrs["steps"]))
    return np.asarray(x[sl], order="C")   # NOTE: ascontiguousarray makes 0-d 1-d


def _pad_ref(xs, attrs):
    (x,) = xs
    if x.ndim == 0:  # a 0-d tensor has nothing to pad, and np.pad rejects it
        return x.copy()
    return np.pad(x, attrs["pads"], constant_values=attrs["value"])


def _take_ref(xs, attrs):
    x, idx = xs
    ax = attrs["axis"]
    return np.take(x, clamp_indices(idx, x.shape[ax]), axis=ax)


def _scatter_add_ref(xs, attrs):
    idx, upd = xs
    shape, ax = attrs["shape"], attrs["axis"]
    out = np.zeros(shape, upd.dtype)
    idx = clamp_indices(idx, shape[ax])
    # Move the scattered axis first so np.add.at indexes it directly.
    moved = np.moveaxis(out, ax, 0)
    upd_moved = np.moveaxis(upd.reshape(shape[:ax] + (idx.size,) + shape[ax + 1:]), ax, 0)
    np.add.at(moved, idx.reshape(-1), upd_moved)
    return out


# -- VJP rules -------------------------------------------------------------------------------------

def _inverse(perm):
    inv = [0] * len(perm)
    for i, p in enumerate(perm):
        inv[p] = i
    return tuple(inv)


def _concat_vjp(xs, outs, cts, attrs):
    g, ax = cts[0], attrs["axis"]
    grads, offset = [], 0
    for x in xs:
        n = x.shape[ax]
        starts = [0] * g.ndim
        stops = list(g.shape)
        starts[ax], stops[ax] = offset, offset + n
        grads.append(P.slice(g, starts, stops, [1] * g.ndim))
        offset += n
    return grads


def _slice_vjp(xs, outs, cts, attrs):
    """Scatter the cotangent back into zeros: reverse negative-step dims, interleave zeros for
    steps > 1, then pad to the input's extent."""
    (x,), g = xs, cts[0]
    if g.size == 0:
        return [P.broadcast_to(P.builder_of(g).const(np.zeros((), x.dtype.np)), x.shape)]
    for d, (n, a, s) in enumerate(zip(x.shape, attrs["starts"], attrs["steps"])):
        m = g.shape[d]
        if s < 0:
            g = P.getitem(g, (builtins.slice(None),) * d + (builtins.slice(None, None, -1),))
            a, s = a + (m - 1) * s, -s
        if s > 1:
            spread = P.reshape(g, g.shape[:d + 1] + (1,) + g.shape[d + 1:])
            pads = [(0, 0)] * spread.ndim
            pads[d + 1] = (0, s - 1)
            spread = P.pad(spread, pads)
            g = P.reshape(spread, g.shape[:d] + (m * s,) + g.shape[d + 1:])
            g = P.getitem(g, (builtins.slice(None),) * d + (builtins.slice(0, (m - 1) * s + 1),))
        pads = [(0, 0)] * g.ndim
        pads[d] = (a, n - a - g.shape[d])
        g = P.pad(g, pads)
    return [g]


def _pad_vjp(xs, outs, cts, attrs):
    (x,), g = xs, cts[0]
    starts = [lo for lo, _ in attrs["pads"]]
    stops = [lo + n for (lo, _), n in zip(attrs["pads"], x.shape)]
    return [P.slice(g, starts, stops, [1] * g.ndim)]


register(
    OpDef(Op.RESHAPE, Kind.VIEW, 1, _reshape_shape,
          lambda xs, a: xs[0].reshape(a["shape"]), attrs=(AttrSpec("shape", "ints"),),
          vjp=lambda xs, outs, cts, a: [P.reshape(cts[0], xs[0].shape)]),
    OpDef(Op.TRANSPOSE, Kind.VIEW, 1, _transpose_shape,
          lambda xs, a: np.asarray(np.transpose(xs[0], a["perm"]), order="C"),
          attrs=(AttrSpec("perm", "ints"),),
          vjp=lambda xs, outs, cts, a: [P.transpose(cts[0], _inverse(a["perm"]))]),
    OpDef(Op.BROADCAST_TO, Kind.VIEW, 1, _broadcast_to_shape,
          lambda xs, a: np.asarray(np.broadcast_to(xs[0], a["shape"]), order="C"),
          attrs=(AttrSpec("shape", "ints"),),
          vjp=lambda xs, outs, cts, a: [P.sum_to(cts[0], xs[0].shape)]),
    OpDef(Op.CONCAT, Kind.INJECTIVE, None, _concat_shape,
          lambda xs, a: np.concatenate(xs, axis=a["axis"]), attrs=(AttrSpec("axis", "int"),),
          vjp=_concat_vjp),
    OpDef(Op.SLICE, Kind.VIEW, 1, _slice_shape, _slice_ref,
          attrs=(AttrSpec("starts", "ints"), AttrSpec("stops", "ints"), AttrSpec("steps", "ints")),
          vjp=_slice_vjp, doc="x[start:stop:step] per dim; bounds as slice.indices() gives them"),
    OpDef(Op.PAD, Kind.INJECTIVE, 1, _pad_shape, _pad_ref,
          attrs=(AttrSpec("pads", "pairs"), AttrSpec("value", "float", 0.0)), vjp=_pad_vjp),
    OpDef(Op.TAKE, Kind.INJECTIVE, 2, _take_shape, _take_ref, attrs=(AttrSpec("axis", "int"),),
          vjp=lambda xs, outs, cts, a: [P.scatter_add(xs[1], cts[0], xs[0].shape, a["axis"]),
                                        None],
          nondiff_inputs=frozenset({1}), doc="numpy.take with clamped indices"),
    OpDef(Op.CHECK_INDEX, Kind.OPAQUE, 1, _check_index_shape, _check_index_ref,
          attrs=(AttrSpec("size", "int"), AttrSpec("what", "str"),
                 AttrSpec("negative", "bool", True), AttrSpec("ignore", "ints", ())),
          nondiff_inputs=frozenset({0}),
          doc="the indices, checked at run time to lie in [-size, size) (negative=false: "
              "[0, size)) or in `ignore`; else IndexOutOfRange naming `what` and the value"),
    OpDef(Op.SCATTER_ADD, Kind.OPAQUE, 2, _scatter_add_shape, _scatter_add_ref,
          attrs=(AttrSpec("shape", "ints"), AttrSpec("axis", "int")),
          vjp=lambda xs, outs, cts, a: [None, P.take(cts[0], xs[0], a["axis"],
                                                     mode="promise_in_bounds")],
          nondiff_inputs=frozenset({0}), doc="zeros(shape) with updates added at indices"),
)


# -- movement/indexing ops (issue 12) --

def _scatter_shape(ts, attrs):
    x, idx, upd = ts
    ax, mode = attrs["axis"], attrs["mode"]
    require(mode in P.SCATTER_MODES, f"mode must be one of {P.SCATTER_MODES}, got {mode!r}")
    require(idx.dtype.is_int, f"indices must be i32 or i64, got {idx}")
    require(upd.dtype == x.dtype, f"updates {upd} must have the operand's dtype {x.dtype}")
    require(mode == "set" or x.dtype != DType.BOOL, f"mode {mode} needs numbers, got {x}")
    require(0 <= ax < x.ndim, f"axis {ax} out of range for {x}")
    want = x.shape[:ax] + idx.shape + x.shape[ax + 1:]
    require(upd.shape == want, f"updates {upd.shape} must have shape {want} for indices "
            f"{idx.shape} into {x.shape} along axis {ax}")
    require(x.shape[ax] > 0 or idx.size == 0, f"cannot scatter into the empty axis {ax}")
    return x


def _scatter_ref(xs, attrs):
    x, idx, upd = xs
    ax, mode = attrs["axis"], attrs["mode"]
    out = np.moveaxis(x.copy(), ax, 0)
    rows = np.moveaxis(upd.reshape(x.shape[:ax] + (idx.size,) + x.shape[ax + 1:]), ax, 0)
    if mode == "set":
        for k, i in enumerate(clamp_indices(idx, x.shape[ax]).reshape(-1)):   # in order
            out[i] = rows[k]
    else:
        ufunc = {"min": np.minimum, "max": np.maximum, "multiply": np.multiply}[mode]
        ufunc.at(out, clamp_indices(idx, x.shape[ax]).reshape(-1), rows)
    return np.ascontiguousarray(np.moveaxis(out, 0, ax))


def _spread(v, idx, x, ax):
    """`v` of idx's shape reshaped to broadcast against updates (idx's dims at `ax`)."""
    return P.reshape(v, (1,) * ax + idx.shape + (1,) * (x.ndim - ax - 1))


def _scatter_set_vjp(x, idx, upd, g, ax):
    """The operand's elements that some update overwrote get no gradient; an update gets the
    gradient at its target only if it is the one written there (the last of its duplicates)."""
    b = P.builder_of(g)
    zeros = P.broadcast_to(b.const(np.zeros((), x.dtype.np)), upd.shape)
    dx = P.scatter(g, idx, zeros, ax, "set")
    flat = P.reshape(idx, (idx.size,))
    ids = P.iota(b, (idx.size,), 0, DType.I64)
    unset = P.broadcast_to(b.const(np.int64(-1)), (x.shape[ax],))
    writer = P.scatter(unset, flat, ids, 0, "set")
    won = P.reshape(P.eq(P.take(writer, flat, 0, mode="promise_in_bounds"), ids), idx.shape)
    picked = P.take(g, idx, ax, mode="promise_in_bounds")
    return [dx, None, P.where(_spread(won, idx, x, ax), picked, 0.0)]


def _scatter_extremal_vjp(x, idx, upd, out, g, ax):
    """min/max: the gradient at an element goes to the values equal to the result there (the
    operand's and the updates'), shared equally among ties, as jax.numpy's max shares it."""
    picked_out = P.take(out, idx, ax, mode="promise_in_bounds")
    upd_hit = P.cast(P.eq(upd, picked_out), x.dtype)
    x_hit = P.cast(P.eq(x, out), x.dtype)
    count = P.add(x_hit, P.scatter_add(idx, upd_hit, x.shape, ax))
    share = P.div(g, P.maximum(count, 1.0))
    return [P.mul(share, x_hit), None,
            P.mul(P.take(share, idx, ax, mode="promise_in_bounds"), upd_hit)]


def _scatter_multiply_vjp(x, idx, upd, g, ax):
    """out = x * (product of the updates at each element). An update's gradient needs the
    product of the *other* updates there: the product of the nonzero ones, divided by it when
    it is nonzero itself, and counted zeros decide (two zeros leave every gradient 0)."""
    b = P.builder_of(g)
    one = b.const(np.ones((), x.dtype.np))
    is_zero = P.eq(upd, 0.0)
    safe = P.where(is_zero, one, upd)
    nonzero_prod = P.scatter(P.broadcast_to(one, x.shape), idx, safe, ax, "multiply")
    zeros = P.scatter_add(idx, P.cast(is_zero, x.dtype), x.shape, ax)
    dx = P.mul(g, P.where(P.eq(zeros, 0.0), nonzero_prod, 0.0))
    share = P.take(P.mul(P.mul(g, x), nonzero_prod), idx, ax, mode="promise_in_bounds")
    zeros_there = P.take(zeros, idx, ax, mode="promise_in_bounds")
    du = P.where(is_zero, P.where(P.eq(zeros_there, 1.0), share, 0.0),
                 P.where(P.eq(zeros_there, 0.0), P.div(share, safe), 0.0))
    return [dx, None, du]


def _scatter_vjp(xs, outs, cts, attrs):
    (x, idx, upd), g, ax = xs, cts[0], attrs["axis"]
    if attrs["mode"] == "set":
        return _scatter_set_vjp(x, idx, upd, g, ax)
    if attrs["mode"] == "multiply":
        return _scatter_multiply_vjp(x, idx, upd, g, ax)
    return _scatter_extremal_vjp(x, idx, upd, outs[0], g, ax)


register(
    OpDef(Op.SCATTER, Kind.OPAQUE, 3, _scatter_shape, _scatter_ref,
          attrs=(AttrSpec("axis", "int"), AttrSpec("mode", "str", "set")), vjp=_scatter_vjp,
          nondiff_inputs=frozenset({1}),
          doc="the operand with each update (in row-major order) written at its index along "
              "axis (mode set: the last duplicate wins) or combined by min/max/multiply"),
)
