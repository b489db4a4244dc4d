"""Converters for the layers: Conv, ConvTranspose, pooling, BatchNormalization (inference and
training statistics), LayerNormalization, Dropout (inference), Softmax/LogSoftmax and the two
losses. 1-d convolutions and pools run as 2-d ones over a height of 1."""
from __future__ import annotations

import numpy as np

from .. import dsl
from ...ir import DType, Sym
from ...ir import prims as P
from .context import NodeContext, converter


# -- geometry -------------------------------------------------------------------------------------

def _spatial(ctx: NodeContext, x: Sym) -> int:
    nd = x.ndim - 2
    if nd not in (1, 2):
        raise ctx.error(f"only 1-d and 2-d {ctx.node.op_type} are supported, got a {nd}-d input "
                        f"{x.shape}")
    return nd


def _to_2d(x: Sym) -> Sym:
    """(N, C, W) -> (N, C, 1, W)."""
    return dsl.reshape(x, x.shape[:2] + (1,) + x.shape[2:]) if x.ndim == 3 else x


def _from_2d(y: Sym, nd: int) -> Sym:
    return dsl.reshape(y, y.shape[:2] + y.shape[3:]) if nd == 1 else y


def _attr2(ctx: NodeContext, name: str, nd: int, default: int) -> tuple[int, int]:
    v = ctx.ints(name, [default] * nd)
    if len(v) != nd:
        raise ctx.error(f"{name} {v} must have {nd} values")
    return (default, v[0]) if nd == 1 else (v[0], v[1])


def _pads(ctx: NodeContext, nd: int, size, kernel, stride, dilation,
          ceil_mode: bool = False, flat: bool = False):
    """((top, bottom), (left, right)) from auto_pad / pads (ONNX [b1, b2, e1, e2] order), with
    ceil_mode's extra end padding added."""
    auto = ctx.str("auto_pad", "NOTSET")
    size = size[-nd:]
    if auto in ("SAME_UPPER", "SAME_LOWER"):
        pairs = []
        for n, k, s, d in zip(size, kernel[-nd:], stride[-nd:], dilation[-nd:]):
            out = -(-n // s)
            total = max((out - 1) * s + (k - 1) * d + 1 - n, 0)
            small, big = total // 2, total - total // 2
            pairs.append((small, big) if auto == "SAME_UPPER" else (big, small))
    elif auto == "VALID":
        pairs = [(0, 0)] * nd
    elif auto == "NOTSET":
        p = ctx.ints("pads", [0] * (2 * nd))
        if len(p) != 2 * nd or min(p) < 0:
            raise ctx.error(f"pads {p} must be {2 * nd} values >= 0")
        pairs = [(p[i], p[i + nd]) for i in range(nd)]
    else:
        raise ctx.error(f"auto_pad {auto!r} is not NOTSET, SAME_UPPER, SAME_LOWER or VALID")
    if ceil_mode:
        pairs = [_ceil_pad(n, k, s, d, b, e) for n, k, s, d, (b, e) in
                 zip(size, kernel[-nd:], stride[-nd:], dilation[-nd:], pairs)]
    if flat:           # one pair per spatial dim, any number of them
        return pairs
    pairs = [(0, 0)] * (2 - nd) + pairs
    return pairs[0], pairs[1]


def _ceil_pad(n, k, s, d, b, e) -> tuple[int, int]:
    span = (k - 1) * d + 1
    out = -(-(n + b + e - span) // s) + 1
    if (out - 1) * s >= n + b:      # the last window must start inside the input or left pad
        out -= 1
    return b, max(e, (out - 1) * s + span - n - b)


# -- convolution ----------------------------------------------------------------------------------

@converter("Conv")
def _conv(ctx: NodeContext):
    x, w = ctx.tensor(0), ctx.tensor(1)
    nd = _spatial(ctx, x)
    group = ctx.int("group", 1)
    kernel = w.shape[2:]
    stride, dil = _attr2(ctx, "strides", nd, 1), _attr2(ctx, "dilations", nd, 1)
    pads = _pads(ctx, nd, x.shape, (1,) * (2 - nd) + kernel, stride, dil)
    x2, w2 = _to_2d(x), _to_2d(w)
    if group < 1 or x.shape[1] % group or w.shape[0] % group or w.shape[1] * group != x.shape[1]:
        raise ctx.error(f"group {group} does not divide input {x.shape} and weight {w.shape}")
    y = dsl.conv2d(x2, w2, stride=stride, padding=pads, dilation=dil, groups=group)
    if ctx.has(2):
        y = y + dsl.reshape(ctx.tensor(2), (1, -1, 1, 1))
    return _from_2d(y, nd)


@converter("ConvTranspose")
def _conv_transpose(ctx: NodeContext):
    """The transpose of conv2d is its input gradient: conv2d_grad_input(x, w) with x in the
    place of dy, so ConvTranspose's (C_in, C_out, k) weight is conv2d's (O, I, k) one."""
    x, w = ctx.tensor(0), ctx.tensor(1)
    nd = _spatial(ctx, x)
    group = ctx.int("group", 1)
    stride, dil = _attr2(ctx, "strides", nd, 1), _attr2(ctx, "dilations", nd, 1)
    outpad = _attr2(ctx, "output_padding", nd, 0)
    x2, w2 = _to_2d(x), _to_2d(w)
    kernel = w2.shape[2:]
    ins = x2.shape[2:]
    full = [s * (n - 1) + op + (k - 1) * d + 1 for n, s, op, k, d in
            zip(ins, stride, outpad, kernel, dil)]
    shape_attr = ctx.ints("output_shape")
    auto = ctx.str("auto_pad", "NOTSET")
    if shape_attr is not None or auto in ("SAME_UPPER", "SAME_LOWER"):
        want = list(shape_attr[-nd:]) if shape_attr is not None else [n * s for n, s in
                                                                      zip(ins[-nd:], stride[-nd:])]
        want = [1] * (2 - nd) + want
        pads, extra = [], []
        for f, o in zip(full, want):
            total = f - o       # < 0: the output is longer than any input position reaches
            small, big = max(total, 0) // 2, max(total, 0) - max(total, 0) // 2
            pads.append((big, small) if auto == "SAME_LOWER" else (small, big))
            extra.append(max(-total, 0))
        pads = tuple(pads)
    else:
        pads, extra = _pads(ctx, nd, x.shape, (1,) * (2 - nd) + tuple(kernel), stride, dil), []
    out_hw = tuple(f - b - e for f, (b, e) in zip(full, pads))
    if group < 1 or x.shape[1] % group or w.shape[0] != x.shape[1]:
        raise ctx.error(f"group {group} does not match input {x.shape} and weight {w.shape}")
    y = P.conv2d_grad_input(x2, w2, (x.shape[0], w.shape[1] * group) + out_hw, stride, pads,
                            dil, groups=group)
    if any(extra):
        y = dsl.pad(y, [(0, 0), (0, 0)] + [(0, e) for e in extra])
    if ctx.has(2):
        y = y + dsl.reshape(ctx.tensor(2), (1, -1, 1, 1))
    return _from_2d(y, nd)


# -- pooling --------------------------------------------------------------------------------------

def _needs_slices(ctx: NodeContext, x: Sym) -> bool:
    """3-d pools and dilated windows have no pool op: they are computed from slices."""
    nd = x.ndim - 2
    return nd not in (1, 2) or any(d != 1 for d in ctx.ints("dilations", [1] * nd))


def _pool_by_slices(ctx: NodeContext, x: Sym, kind: str, indices: bool = False):
    """An N-d (dilated) max or average pool as the maximum or sum of one strided slice per
    window offset: out[o] = max_j x[o * s + j * d], exact for any rank."""
    nd = x.ndim - 2
    if nd < 1:
        raise ctx.error(f"pooling needs a spatial dim, got {x.shape}")
    kernel = ctx.ints("kernel_shape")
    if kernel is None or len(kernel) != nd:
        raise ctx.error(f"kernel_shape {kernel} must have {nd} values")
    stride, dil = ctx.ints("strides", [1] * nd), ctx.ints("dilations", [1] * nd)
    if len(stride) != nd or len(dil) != nd or min(stride + dil) < 1:
        raise ctx.error(f"strides {stride} / dilations {dil} must be {nd} values >= 1")
    size = x.shape[2:]
    declared = _pads(ctx, nd, size, kernel, stride, dil, flat=True)
    pads = _pads(ctx, nd, size, kernel, stride, dil, bool(ctx.int("ceil_mode", 0)), flat=True)
    fill = 0.0 if kind != "max" else -np.inf if x.dtype.is_float else int(
        np.iinfo(x.dtype.np).min)
    xp = dsl.pad(x, [(0, 0), (0, 0)] + [tuple(p) for p in pads], fill)
    spans = [(k - 1) * d + 1 for k, d in zip(kernel, dil)]
    out = [(n + b + e - sp) // s + 1 for n, (b, e), sp, s in zip(size, pads, spans, stride)]
    if min(out) < 1:
        raise ctx.error(f"the window {kernel} (dilations {dil}) does not fit {size} with "
                        f"pads {pads}")
    acc, arg = None, None
    for offset in np.ndindex(*kernel):
        idx = (slice(None), slice(None)) + tuple(
            slice(j * d, j * d + (o - 1) * s + 1, s) for j, d, o, s in
            zip(offset, dil, out, stride))
        part = xp[idx]
        if indices:
            # The flat (row-major) input index of this offset's element; the first maximum in
            # window order wins, as in the ONNX reference.
            where_ = _flat_positions(x.shape, out, stride, dil, pads, offset,
                                     "F" if ctx.int("storage_order", 0) else "C")
            arg = ctx.lift(where_) if acc is None else dsl.where(part > acc, where_, arg)
        acc = part if acc is None else (dsl.maximum(acc, part) if kind == "max" else acc + part)
    if kind == "max":
        return (acc, arg) if indices else acc
    include = bool(ctx.int("count_include_pad", 0))
    counts = None
    for n, k, s, d, (db, de), (pb, _), o in zip(size, kernel, stride, dil, declared, pads, out):
        lo, hi = (-db, n + de) if include else (0, n)
        cells = np.arange(o)[:, None] * s - pb + np.arange(k)[None, :] * d
        c = ((cells >= lo) & (cells < hi)).sum(1)
        counts = c if counts is None else np.multiply.outer(counts, c)
    return acc / np.maximum(counts, 1).astype(x.dtype.np)


def _flat_positions(shape, out, stride, dil, pads, offset, order: str = "C") -> np.ndarray:
    """For each output position of a pool, the flat index into `shape` of the input element at
    window `offset` (int64, shaped like the output); `order` "F" counts the spatial dims
    column-major (ONNX storage_order=1)."""
    coords = [np.arange(o) * s + j * d - b for o, s, d, (b, _), j in
              zip(out, stride, dil, pads, offset)]
    grids = np.meshgrid(*coords, indexing="ij")
    n, c = shape[:2]
    lead = (np.arange(n)[:, None] * c + np.arange(c)[None, :]).reshape(n, c, *[1] * len(out))
    flat = np.ravel_multi_index([np.clip(g, 0, m - 1) for g, m in zip(grids, shape[2:])],
                                shape[2:], order=order)
    return (lead * int(np.prod(shape[2:])) + flat).astype(np.int64)


def _pool_geometry(ctx: NodeContext, x: Sym):
    nd = _spatial(ctx, x)
    k = ctx.ints("kernel_shape")
    if k is None or len(k) != nd:
        raise ctx.error(f"kernel_shape {k} must have {nd} values")
    kernel = (1, k[0]) if nd == 1 else tuple(k)
    stride = _attr2(ctx, "strides", nd, 1)
    dil = _attr2(ctx, "dilations", nd, 1)
    if dil != (1, 1):
        raise ctx.error(f"dilations {list(dil[-nd:])} are not supported in pooling")
    declared = _pads(ctx, nd, x.shape, kernel, stride, dil)
    ceil = bool(ctx.int("ceil_mode", 0))
    pads = _pads(ctx, nd, x.shape, kernel, stride, dil, ceil) if ceil else declared
    return nd, kernel, stride, declared, pads


@converter("MaxPool")
def _max_pool(ctx: NodeContext):
    x = ctx.tensor(0)
    if ctx.wants(1):
        return _pool_by_slices(ctx, x, "max", indices=True)
    dt = x.dtype
    if _needs_slices(ctx, x):
        return _pool_by_slices(ctx, x, "max")
    nd, kernel, stride, _, pads = _pool_geometry(ctx, x)
    # NOTE: integers pool in f64, exact below 2**53 (every int32, and every uint8 image).
    x2 = _to_2d(x if dt.is_float else dsl.cast(x, DType.F64))
    if _too_wide(pads, kernel):   # the pool op pads at most half a window: pad explicitly
        x2 = dsl.pad(x2, [(0, 0), (0, 0)] + list(pads), -np.inf)
        pads = ((0, 0), (0, 0))
    y = dsl.max_pool2d(x2, kernel, stride, pads)
    return _from_2d(y if dt.is_float else dsl.cast(y, dt), nd)


def _too_wide(pads, kernel) -> bool:
    return any(max(p) > k // 2 for p, k in zip(pads, kernel))


@converter("AveragePool")
def _avg_pool(ctx: NodeContext):
    x = ctx.tensor(0)
    if _needs_slices(ctx, x):
        return _pool_by_slices(ctx, x, "avg")
    nd, kernel, stride, declared, pads = _pool_geometry(ctx, x)
    include = bool(ctx.int("count_include_pad", 0))
    x2 = _to_2d(x)
    if pads == declared and not _too_wide(pads, kernel):
        return _from_2d(dsl.avg_pool2d(x2, kernel, stride, pads, include), nd)
    # ceil_mode's extra end padding never counts, and the pool op pads at most half a
    # window: zero-pad explicitly, sum the windows, and divide by counts computed here.
    padded = dsl.pad(x2, [(0, 0), (0, 0)] + list(pads))
    total = dsl.avg_pool2d(padded, kernel, stride, ((0, 0), (0, 0)), True) * float(
        kernel[0] * kernel[1])
    div = _divisor(x2.shape[2:], kernel, stride, declared, pads, include, total.shape[2:])
    return _from_2d(total / div.astype(x.dtype.np), nd)


def _divisor(size, kernel, stride, declared, pads, include, out) -> np.ndarray:
    """Per output position, how many window cells count: those inside the input, or inside
    the declared padding with count_include_pad."""
    counts = []
    for n, k, s, (db, de), (pb, _), o in zip(size, kernel, stride, declared, pads, out):
        lo, hi = (-db, n + de) if include else (0, n)
        starts = np.arange(o) * s - pb
        counts.append(np.clip(np.minimum(starts + k, hi) - np.maximum(starts, lo), 0, None))
    return np.maximum(np.outer(counts[0], counts[1]), 1)


@converter("GlobalAveragePool", "GlobalMaxPool")
def _global_pool(ctx: NodeContext):
    x = ctx.tensor(0)
    axes = tuple(range(2, x.ndim))
    if ctx.node.op_type == "GlobalMaxPool":
        return dsl.max(x, axis=axes, keepdims=True)
    return dsl.mean(x, axis=axes, keepdims=True)


# -- normalization --------------------------------------------------------------------------------

def _channel(v: Sym, ndim: int) -> Sym:
    return dsl.reshape(v, (1, -1) + (1,) * (ndim - 2))


@converter("BatchNormalization")
def _batch_norm(ctx: NodeContext):
    x = ctx.tensor(0)
    eps = ctx.float("epsilon", 1e-5)
    training = ctx.int("training_mode", 0) if ctx.opset >= 14 else 0
    if ctx.opset < 9 and ctx.int("spatial", 1) != 1:
        raise ctx.error("spatial=0 is not supported")
    scale, bias, mean, var = (ctx.input(i) for i in range(1, 5))
    if training:
        return _batch_norm_training(ctx, x, eps)
    if all(not isinstance(v, Sym) for v in (scale, bias, mean, var)):
        # Inference with known statistics folds into one multiply-add per channel.
        a = np.asarray(scale, np.float64) / np.sqrt(np.asarray(var, np.float64) + eps)
        b = np.asarray(bias, np.float64) - np.asarray(mean, np.float64) * a
        dt = x.dtype.np
        return x * _channel(ctx.lift(a.astype(dt)), x.ndim) + _channel(ctx.lift(b.astype(dt)),
                                                                      x.ndim)
    scale, bias, mean, var = (ctx.lift(v) for v in (scale, bias, mean, var))
    a = scale / dsl.sqrt(var + eps)
    return x * _channel(a, x.ndim) + _channel(bias - mean * a, x.ndim)


def _batch_norm_training(ctx: NodeContext, x: Sym, eps: float):
    scale, bias, r_mean, r_var = (ctx.tensor(i) for i in range(1, 5))
    momentum = ctx.float("momentum", 0.9)
    axes = (0,) + tuple(range(2, x.ndim))
    mean = dsl.mean(x, axis=axes)
    var = dsl.mean(dsl.square(x - _channel(mean, x.ndim)), axis=axes)
    y = (x - _channel(mean, x.ndim)) / dsl.sqrt(_channel(var, x.ndim) + eps)
    y = y * _channel(scale, x.ndim) + _channel(bias, x.ndim)
    return y, r_mean * momentum + mean * (1 - momentum), r_var * momentum + var * (1 - momentum)


@converter("LayerNormalization")
def _layer_norm(ctx: NodeContext):
    x = ctx.tensor(0)
    axis = ctx.int("axis", -1)
    axis = axis + x.ndim if axis < 0 else axis
    if not 0 <= axis < max(x.ndim, 1):
        raise ctx.error(f"axis {ctx.int('axis')} is out of range for rank {x.ndim}")
    eps = ctx.float("epsilon", 1e-5)
    axes = tuple(range(axis, x.ndim))
    mean = dsl.mean(x, axis=axes, keepdims=True)
    d = x - mean
    inv_std = 1.0 / dsl.sqrt(dsl.mean(d * d, axis=axes, keepdims=True) + eps)
    y = d * inv_std * ctx.tensor(1)
    if ctx.has(2):
        y = y + ctx.tensor(2)
    return y, mean, inv_std


@converter("Dropout")
def _dropout(ctx: NodeContext):
    x = ctx.tensor(0)
    if ctx.opset >= 12:
        ratio = float(np.asarray(ctx.const(1, "ratio"))) if ctx.has(1) else 0.5
        training = bool(np.asarray(ctx.const(2, "training_mode"))) if ctx.has(2) else False
    else:
        ratio, training = ctx.float("ratio", 0.5), not ctx.int("is_test", 0)
        training = training and ctx.opset < 7
    if training and ratio > 0:
        raise ctx.error("training-mode Dropout draws random masks; only inference (or "
                        "ratio 0) is supported")
    mask = ctx.builder.const(np.ones(x.shape, np.bool_)) if ctx.wants(1) else None
    return (x, mask) if mask is not None else x


# -- softmax and losses ---------------------------------------------------------------------------

@converter("Softmax", "LogSoftmax")
def _softmax(ctx: NodeContext):
    x = ctx.tensor(0)
    fn = dsl.softmax if ctx.node.op_type == "Softmax" else dsl.log_softmax
    if ctx.opset >= 13:
        return fn(x, ctx.int("axis", -1))
    # Before opset 13 the input is coerced to 2-d at `axis` (default 1).
    axis = ctx.int("axis", 1)
    axis = axis + x.ndim if axis < 0 else axis
    rows = int(np.prod(x.shape[:axis], dtype=np.int64))
    y = fn(dsl.reshape(x, (rows, -1)), 1)
    return dsl.reshape(y, x.shape)


def nll_loss(ctx: NodeContext, logp: Sym, target: Sym, weight: Sym | None):
    """Negative log-likelihood over class axis 1 of `logp` (N, C, d...) at `target` (N, d...)."""
    if logp.ndim < 2 or target.shape != logp.shape[:1] + logp.shape[2:]:
        raise ctx.error(f"input {logp.shape} and target {target.shape} do not match")
    reduction = ctx.str("reduction", "mean")
    if reduction not in ("none", "sum", "mean"):
        raise ctx.error(f"reduction must be none, sum or mean, got {reduction!r}")
    ignore = ctx.int("ignore_index")
    c = logp.shape[1]
    lt = dsl.transpose(logp, (0,) + tuple(range(2, logp.ndim)) + (1,))     # (N, d..., C)
    target = dsl.cast(target, DType.I64)
    mask = dsl.class_mask(target, c, exclude=ignore)
    if ignore is not None and not 0 <= ignore < c:
        mask = dsl.logical_and(mask, dsl.reshape(target != ignore, target.shape + (1,)))
    picked = dsl.sum(dsl.where(mask, lt, 0.0), axis=-1)
    w = dsl.sum(dsl.where(mask, weight, 0.0) if weight is not None else dsl.cast(mask, lt.dtype),
                axis=-1)
    loss = -picked * w if weight is not None else -picked
    if reduction == "none":
        return loss
    if reduction == "sum":
        return dsl.sum(loss)
    return dsl.sum(loss) / dsl.sum(w)


@converter("NegativeLogLikelihoodLoss")
def _nll(ctx: NodeContext):
    return nll_loss(ctx, ctx.tensor(0), ctx.tensor(1), ctx.tensor(2) if ctx.has(2) else None)


@converter("SoftmaxCrossEntropyLoss")
def _softmax_xent(ctx: NodeContext):
    scores = ctx.tensor(0)
    logp = dsl.log_softmax(scores, axis=1)
    loss = nll_loss(ctx, logp, ctx.tensor(1), ctx.tensor(2) if ctx.has(2) else None)
    return (loss, logp) if ctx.wants(1) else loss
