"""Converters for data movement and shape plumbing: Reshape, Transpose, Concat, Split, Slice,
Squeeze, Unsqueeze, Expand, Gather, GatherElements, Flatten, Pad, and the ops that compute
shapes (Shape, Size, Constant, ConstantOfShape, Range), which yield values known at import."""
from __future__ import annotations

import builtins

import numpy as np

from .. import dsl
from ...ir import Sym
from ...ir import prims as P
from .context import NodeContext, converter
from .tensors import checked_dims


def _shape(v) -> tuple[int, ...]:
    return tuple(v.shape)


def _norm(axis: int, ndim: int, ctx: NodeContext) -> int:
    if not -ndim <= axis < max(ndim, 1):
        raise ctx.error(f"axis {axis} is out of range for rank {ndim}")
    return axis % max(ndim, 1)


@converter("Reshape")
def _reshape(ctx: NodeContext):
    x = ctx.tensor(0)
    shape = ctx.const_ints(1, "shape") if ctx.opset >= 5 else ctx.ints("shape")
    if not ctx.int("allowzero", 0):
        shape = [x.shape[i] if d == 0 and i < x.ndim else d for i, d in enumerate(shape)]
    return dsl.reshape(x, tuple(shape))


@converter("Flatten")
def _flatten(ctx: NodeContext):
    x = ctx.tensor(0)
    axis = ctx.int("axis", 1)
    axis = axis + x.ndim if axis < 0 else axis
    if not 0 <= axis <= x.ndim:
        raise ctx.error(f"axis {ctx.int('axis')} is out of range for rank {x.ndim}")
    return dsl.reshape(x, (int(np.prod(x.shape[:axis], dtype=np.int64)),
                           int(np.prod(x.shape[axis:], dtype=np.int64))))


@converter("Transpose")
def _transpose(ctx: NodeContext):
    x = ctx.tensor(0)
    perm = ctx.ints("perm")
    if perm is not None and sorted(perm) != list(range(x.ndim)):
        raise ctx.error(f"perm {perm} is not a permutation of {x.ndim} axes")
    return dsl.transpose(x, perm)


@converter("Concat")
def _concat(ctx: NodeContext):
    xs = [ctx.tensor(i) for i in range(len(ctx.inputs)) if ctx.has(i)]
    return dsl.concat(xs, ctx.int("axis", 0))


@converter("Split")
def _split(ctx: NodeContext):
    x = ctx.tensor(0)
    axis = _norm(ctx.int("axis", 0), x.ndim, ctx)
    n = x.shape[axis]
    if ctx.opset >= 13:
        sizes = ctx.const_ints(1, "split") if ctx.has(1) else None
    else:
        sizes = ctx.ints("split")
    if sizes is None:
        parts = ctx.int("num_outputs", ctx.num_outputs())
        if parts < 1:
            raise ctx.error(f"num_outputs must be >= 1, got {parts}")
        chunk = -(-n // parts)      # ceil: the last part is the smaller one (opset 18)
        sizes = [builtins.min(chunk, builtins.max(n - k * chunk, 0)) for k in range(parts)]
        if ctx.opset < 18 and n % parts:
            raise ctx.error(f"axis size {n} does not split into {parts} equal parts")
    if builtins.sum(sizes) != n or builtins.min(sizes, default=0) < 0:
        raise ctx.error(f"split sizes {sizes} do not add up to the axis size {n}")
    outs, start = [], 0
    for s in sizes:
        idx = [builtins.slice(None)] * x.ndim
        idx[axis] = builtins.slice(start, start + s)
        outs.append(x[tuple(idx)])
        start += s
    return tuple(outs)


@converter("Slice")
def _slice(ctx: NodeContext):
    x = ctx.tensor(0)
    if ctx.opset >= 10:
        starts, ends = ctx.const_ints(1, "starts"), ctx.const_ints(2, "ends")
        axes = ctx.const_ints(3, "axes") if ctx.has(3) else list(range(len(starts)))
        steps = ctx.const_ints(4, "steps") if ctx.has(4) else [1] * len(starts)
    else:
        starts, ends = ctx.ints("starts"), ctx.ints("ends")
        axes = ctx.ints("axes", list(range(len(starts))))
        steps = [1] * len(starts)
    if not len(starts) == len(ends) == len(axes) == len(steps):
        raise ctx.error("starts, ends, axes and steps differ in length")
    idx = [builtins.slice(None)] * x.ndim
    for s, e, a, st in zip(starts, ends, axes, steps):
        if st == 0:
            raise ctx.error("a slice step is 0")
        idx[_norm(a, x.ndim, ctx)] = builtins.slice(s, e, st)
    return x[tuple(idx)] if x.ndim else x


def _axes(ctx: NodeContext, since_input: int = 13) -> list[int] | None:
    if ctx.opset >= since_input:
        return ctx.const_ints(1, "axes") if ctx.has(1) else None
    return ctx.ints("axes")


@converter("Squeeze")
def _squeeze(ctx: NodeContext):
    x = ctx.tensor(0)
    axes = _axes(ctx)
    if axes is None:
        axes = [i for i, d in enumerate(x.shape) if d == 1]
    axes = {_norm(a, x.ndim, ctx) for a in axes}
    for a in axes:
        if x.shape[a] != 1:
            raise ctx.error(f"cannot squeeze axis {a} of size {x.shape[a]}")
    return dsl.reshape(x, tuple(d for i, d in enumerate(x.shape) if i not in axes))


@converter("Unsqueeze")
def _unsqueeze(ctx: NodeContext):
    x = ctx.tensor(0)
    axes = _axes(ctx)
    if axes is None:
        raise ctx.error("axes are required")
    rank = x.ndim + len(axes)
    axes = sorted({_norm(a, rank, ctx) for a in axes})
    if len(axes) != len(_axes(ctx) or []):
        raise ctx.error("axes has duplicates")
    dims = iter(x.shape)
    return dsl.reshape(x, tuple(1 if i in axes else next(dims) for i in range(rank)))


@converter("Expand")
def _expand(ctx: NodeContext):
    x = ctx.tensor(0)
    shape = tuple(ctx.const_ints(1, "shape"))
    try:
        out = np.broadcast_shapes(x.shape, shape)
    except ValueError:
        raise ctx.error(f"cannot broadcast {x.shape} to {shape}") from None
    return dsl.broadcast_to(x, out)


@converter("Gather")
def _gather(ctx: NodeContext):
    x = ctx.tensor(0)
    return dsl.take(x, ctx.input(1), axis=_norm(ctx.int("axis", 0), x.ndim, ctx))


@converter("GatherElements")
def _gather_elements(ctx: NodeContext):
    """out[..i..] = x[..idx[..i..]..] along `axis`, as a masked sum over that axis (an index
    outside [-n, n) raises at run time)."""
    x, idx = ctx.tensor(0), ctx.tensor(1)
    axis = _norm(ctx.int("axis", 0), x.ndim, ctx)
    n = x.shape[axis]
    idx = P.check_index(idx, n, f"GatherElements: axis {axis} of {x.type}")
    idx = dsl.where(idx < 0, idx + n, idx)
    # Move the gathered axis last: x -> (..., n) broadcast against idx (..., m, 1).
    perm = [d for d in range(x.ndim) if d != axis] + [axis]
    xt = dsl.transpose(x, perm)
    it = dsl.transpose(idx, perm)
    lead_x, lead_i = xt.shape[:-1], it.shape[:-1]
    if any(a < b for a, b in zip(lead_x, lead_i)):
        raise ctx.error(f"indices {idx.shape} exceed data {x.shape} off the gather axis")
    xt = xt[tuple(builtins.slice(0, d) for d in lead_i)]
    mask = dsl.class_mask(it, n)                                  # (..., m, n)
    picked = dsl.where(mask, dsl.reshape(xt, xt.shape[:-1] + (1, n)), 0)
    out = dsl.sum(picked, axis=-1)                                # (..., m)
    inv = [perm.index(d) for d in range(x.ndim)]
    return dsl.transpose(out, inv)


@converter("Pad")
def _pad(ctx: NodeContext):
    x = ctx.tensor(0)
    mode = ctx.str("mode", "constant")
    if mode != "constant":
        raise ctx.error(f"mode {mode!r} is not supported (only 'constant')")
    if ctx.opset >= 11:
        pads = ctx.const_ints(1, "pads")
        value = ctx.const(2, "constant_value") if ctx.has(2) else np.zeros(())
        axes = ctx.const_ints(3, "axes") if ctx.has(3) else list(range(x.ndim))
    else:
        pads, value, axes = ctx.ints("pads"), np.asarray(ctx.float("value", 0.0)), None
        axes = list(range(x.ndim))
    if len(pads) != 2 * len(axes):
        raise ctx.error(f"pads has {len(pads)} values for {len(axes)} axes")
    pairs = [[0, 0] for _ in range(x.ndim)]
    for k, a in enumerate(axes):
        pairs[_norm(a, x.ndim, ctx)] = [pads[k], pads[k + len(axes)]]
    crop = tuple(builtins.slice(builtins.max(-b, 0), d - builtins.max(-e, 0))
                 for (b, e), d in zip(pairs, x.shape))
    if any(b < 0 or e < 0 for b, e in pairs):
        x = x[crop]
    grow = [(builtins.max(b, 0), builtins.max(e, 0)) for b, e in pairs]
    return dsl.pad(x, grow, float(np.asarray(value).reshape(-1)[0]) if np.size(value) else 0.0)


# -- values known at import time -----------------------------------------------------------------

@converter("Shape")
def _shape_op(ctx: NodeContext):
    shape = _shape(ctx.input(0))
    start, end = ctx.int("start", 0), ctx.int("end", None)
    return np.asarray(shape[builtins.slice(start, end)], dtype=np.int64)


@converter("Size")
def _size(ctx: NodeContext):
    return np.asarray(int(np.prod(_shape(ctx.input(0)), dtype=np.int64)), dtype=np.int64)


@converter("Constant")
def _constant(ctx: NodeContext):
    t = ctx.tensor_attr("value")
    if t is not None:
        return t
    for name, get, dt in (("value_float", ctx.float, np.float32),
                          ("value_floats", ctx.floats, np.float32),
                          ("value_int", ctx.int, np.int64), ("value_ints", ctx.ints, np.int64)):
        v = get(name)
        if v is not None:
            return np.asarray(v, dtype=dt)
    have = ", ".join(ctx.attrs) or "none"
    raise ctx.error(f"only tensor and numeric values are supported (attributes: {have})")


@converter("ConstantOfShape")
def _constant_of_shape(ctx: NodeContext):
    shape = checked_dims(ctx.const_ints(0, "shape"), f"node {ctx.label}")
    value = ctx.tensor_attr("value")
    value = np.zeros((1,), np.float32) if value is None else value.reshape(-1)
    if value.size != 1:
        raise ctx.error(f"value must hold one element, got {value.size}")
    return np.full(shape, value[0], dtype=value.dtype)


@converter("Range")
def _range(ctx: NodeContext):
    start, limit, delta = (ctx.const(i, n) for i, n in enumerate(("start", "limit", "delta")))
    if np.asarray(delta) == 0:
        raise ctx.error("delta is 0")
    n = int(builtins.max(np.ceil((limit - start) / delta), 0))
    checked_dims([n], f"node {ctx.label}")
    return (start + np.arange(n) * delta).astype(np.asarray(start).dtype)


@converter("Tile")
def _tile(ctx: NodeContext):
    x = ctx.tensor(0)
    reps = ctx.const_ints(1, "repeats")
    if len(reps) != x.ndim or builtins.min(reps, default=0) < 0:
        raise ctx.error(f"repeats {reps} must be one count >= 0 per axis of {x.shape}")
    # (d0, d1) -> (1, d0, 1, d1) broadcast to (r0, d0, r1, d1) -> (r0*d0, r1*d1)
    inter = tuple(v for d in x.shape for v in (1, d))
    big = tuple(v for r, d in zip(reps, x.shape) for v in (r, d))
    y = dsl.broadcast_to(dsl.reshape(x, inter), big)
    return dsl.reshape(y, tuple(r * d for r, d in zip(reps, x.shape)))


def is_known(v) -> bool:
    return not isinstance(v, Sym)
