"""Contractions and windows with torch.nn.functional's conventions: `conv2d` (grouped and
depthwise), `conv1d`, `conv_transpose2d`, pooling (windowed, global, adaptive), `upsample` and
`linear`; exported as `nnjit.<name>` through `dsl`."""
from __future__ import annotations

import builtins

import numpy as np

from ..ir import ShapeError, Sym, user_loc
from ..ir import prims as P
from ..ir.prims import builder_of, located


# -- contractions and windows (torch.nn.functional conventions) --------------------------------

def _pair(v, name: str) -> tuple[int, int]:
    if isinstance(v, (int, np.integer)):
        return int(v), int(v)
    v = tuple(int(a) for a in v)
    if len(v) != 2:
        raise ShapeError(f"{name} must be an int or a pair, got {v}")
    return v


def _padding_pairs(padding, kernel=None, dilation=(1, 1)) -> tuple[tuple[int, int], ...]:
    if isinstance(padding, str):
        if padding == "valid":
            return ((0, 0), (0, 0))
        if padding == "same" and kernel is not None:
            pads = []
            for k, d in zip(kernel, dilation):
                total = d * (k - 1)
                pads.append((total // 2, total - total // 2))
            return tuple(pads)
        raise ShapeError(f"padding must be an int, a pair, 'valid' or 'same', got {padding!r}")
    if isinstance(padding, (tuple, list)) and len(padding) == 2 and builtins.all(
            isinstance(p, (tuple, list)) for p in padding):
        return tuple((int(a), int(b)) for a, b in padding)
    ph, pw = _pair(padding, "padding")
    return ((ph, ph), (pw, pw))


def conv2d(x: Sym, weight, bias=None, stride=1, padding=0, dilation=1, groups: int = 1
           ) -> Sym:
    """2-d convolution of NCHW `x` with OIHW `weight` (torch.nn.functional.conv2d).
    `padding` is an int, a pair, ((top, bottom), (left, right)), 'valid' or 'same'. With
    `groups`, weight is [O, C / groups, kh, kw]; groups == C is a depthwise convolution."""
    b = builder_of(x, weight)
    x, weight = P.lift(b, x, weight)
    try:
        dil, st = _pair(dilation, "dilation"), _pair(stride, "stride")
        pads = _padding_pairs(padding, weight.shape[2:] if weight.ndim == 4 else None, dil)
    except ShapeError as e:
        raise located(e, "conv2d", x, weight) from None
    y = P.conv2d(x, weight, st, pads, dil, groups)
    if bias is not None:
        y = y + P.reshape(P.lift(b, bias)[0], (1, -1, 1, 1))
    return y


def max_pool2d(x: Sym, kernel_size, stride=None, padding=0) -> Sym:
    try:
        k = _pair(kernel_size, "kernel_size")
        s = k if stride is None else _pair(stride, "stride")
        pads = _padding_pairs(padding)
    except ShapeError as e:
        raise located(e, "max_pool2d", x) from None
    return P.max_pool2d(x, k, s, pads)


def avg_pool2d(x: Sym, kernel_size, stride=None, padding=0, count_include_pad: bool = True
               ) -> Sym:
    try:
        k = _pair(kernel_size, "kernel_size")
        s = k if stride is None else _pair(stride, "stride")
        pads = _padding_pairs(padding)
    except ShapeError as e:
        raise located(e, "avg_pool2d", x) from None
    return P.avg_pool2d(x, k, s, pads, count_include_pad)


def linear(x: Sym, weight, bias=None) -> Sym:
    """x @ weight.T + bias, with torch's (out_features, in_features) weight layout."""
    w_shape = np.shape(weight) if not isinstance(weight, Sym) else weight.shape
    if len(w_shape) != 2 or not x.shape or x.shape[-1] != w_shape[1]:
        raise ShapeError(f"x {x.shape} has {x.shape[-1] if x.shape else 0} features, weight "
                         f"{w_shape} must be (out_features, {x.shape[-1] if x.shape else '?'}) "
                         "(torch layout)", "linear", user_loc())
    y = P.matmul(x, P.transpose(weight, (1, 0)) if isinstance(weight, Sym) else np.asarray(
        weight).T)
    return y if bias is None else y + bias


# -- convolution family (issue 12) --

def _single(v, name: str) -> int:
    """An int or a 1-tuple (torch's 1-d conv arguments)."""
    if isinstance(v, (tuple, list)):
        if len(v) != 1:
            raise ShapeError(f"{name} must be an int or a 1-tuple, got {tuple(v)}")
        v = v[0]
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)):
        raise ShapeError(f"{name} must be an int or a 1-tuple, got {v!r}")
    return int(v)


def conv1d(x: Sym, weight, bias=None, stride=1, padding=0, dilation=1, groups: int = 1
           ) -> Sym:
    """1-d convolution of NCL `x` with OCK `weight` [O, C / groups, K]
    (torch.nn.functional.conv1d). `padding` is an int, a 1-tuple, a ((lo, hi),) pair, 'valid'
    or 'same'. Runs as a conv2d of unit height: the reshapes are views, so it costs nothing."""
    b = builder_of(x, weight)
    x, weight = P.lift(b, x, weight)
    try:
        if x.ndim != 3 or weight.ndim != 3:
            raise ShapeError(f"expects NCL input and OCK weight, got {x.type} and {weight.type}")
        st, dil = _single(stride, "stride"), _single(dilation, "dilation")
        if isinstance(padding, str):
            pad = _padding_pairs(padding, (1, weight.shape[2]), (1, dil))[1]
        elif isinstance(padding, (tuple, list)) and padding and isinstance(padding[0],
                                                                          (tuple, list)):
            if len(padding) != 1 or len(padding[0]) != 2:
                raise ShapeError(f"padding must be ((lo, hi),), got {padding!r}")
            pad = (int(padding[0][0]), int(padding[0][1]))
        else:
            pad = (_single(padding, "padding"),) * 2
    except ShapeError as e:
        raise located(e, "conv1d", x, weight) from None
    n, c, length = x.shape
    x4 = P.reshape(x, (n, c, 1, length))
    w4 = P.reshape(weight, weight.shape[:2] + (1, weight.shape[2]))
    try:
        y = P.conv2d(x4, w4, (1, st), ((0, 0), pad), (1, dil), groups)
    except ShapeError as e:
        raise ShapeError(e.reason.replace("NCHW", "NCL"), "conv1d", e.loc) from None
    y = P.reshape(y, y.shape[:2] + (y.shape[3],))
    if bias is not None:
        y = y + P.reshape(P.lift(b, bias)[0], (1, -1, 1))
    return y


def conv_transpose2d(x: Sym, weight, bias=None, stride=1, padding=0, output_padding=0,
                     groups: int = 1, dilation=1) -> Sym:
    """Transposed 2-d convolution (torch.nn.functional.conv_transpose2d, same argument order):
    NCHW `x` with `weight` [C_in, C_out / groups, kh, kw], output side
    (H - 1) * stride - 2 * padding + dilation * (k - 1) + output_padding + 1.

    It is the input-gradient of the conv2d that maps the output back to `x`, so it runs as one
    `conv2d_grad_input` (a GEMM and a col2im gather). Output padding of a stride or more is
    reached by feeding that conv2d zero rows past the end of `x` (torch allows up to
    max(stride, dilation) - 1), which add nothing to the result."""
    b = builder_of(x, weight)
    x, weight = P.lift(b, x, weight)
    try:
        st, dil = _pair(stride, "stride"), _pair(dilation, "dilation")
        pad, out_pad = _pair(padding, "padding"), _pair(output_padding, "output_padding")
        if x.ndim != 4 or weight.ndim != 4:
            raise ShapeError(f"expects NCHW input and [C_in, C_out/groups, kh, kw] weight, got "
                             f"{x.type} and {weight.type}")
        if isinstance(groups, (bool, np.bool_)) or not isinstance(groups, (int, np.integer)) \
                or groups < 1:
            raise ShapeError(f"groups must be an int >= 1, got {groups!r}")
        if x.shape[1] != weight.shape[0]:
            raise ShapeError(f"input channels {x.shape[1]} differ from weight in-channels "
                             f"{weight.shape[0]} (dim 0 of the weight)")
        if weight.shape[0] % groups:
            raise ShapeError(f"weight in-channels {weight.shape[0]} are not divisible by "
                             f"groups {groups}")
        for i, name in enumerate(("height", "width")):
            if builtins.min(st[i], dil[i]) < 1 or pad[i] < 0 or out_pad[i] < 0:
                raise ShapeError(f"stride and dilation must be >= 1, padding and output_padding "
                                 f">= 0, got stride={st} padding={pad} dilation={dil} "
                                 f"output_padding={out_pad}")
            if out_pad[i] >= builtins.max(st[i], dil[i]):
                raise ShapeError(f"output_padding {out_pad} must be smaller than stride {st} "
                                 f"or dilation {dil}")
        out_hw = tuple((x.shape[2 + i] - 1) * st[i] - 2 * pad[i]
                       + dil[i] * (weight.shape[2 + i] - 1) + out_pad[i] + 1 for i in range(2))
        if builtins.min(out_hw) < 1:
            raise ShapeError(f"output size {out_hw} is not positive (padding {pad} too large)")
    except ShapeError as e:
        raise located(e, "conv_transpose2d", x, weight) from None
    extra = tuple(p // s for p, s in zip(out_pad, st))
    if builtins.max(extra) > 0:
        x = P.pad(x, ((0, 0), (0, 0), (0, extra[0]), (0, extra[1])))
    out_shape = (x.shape[0], weight.shape[1] * groups) + out_hw
    y = P.conv2d_grad_input(x, weight, out_shape, st, tuple((p, p) for p in pad), dil, groups)
    if bias is not None:
        y = y + P.reshape(P.lift(b, bias)[0], (1, -1, 1, 1))
    return y


_UPSAMPLE_MODES = ("nearest", "bilinear")


def _upsample_size(x: Sym, size, scale_factor) -> tuple[tuple[int, int], tuple | None]:
    """(output (H, W), the scale factors torch's index formulas use, or None with `size`)."""
    if (size is None) == (scale_factor is None):
        raise ShapeError("give exactly one of size and scale_factor")
    if size is not None:
        out = _pair(size, "size")
        if builtins.min(out) < 1:
            raise ShapeError(f"size must be positive, got {out}")
        return out, None
    sf = tuple(float(v) for v in (scale_factor if isinstance(scale_factor, (tuple, list))
                                  else (scale_factor, scale_factor)))
    if len(sf) != 2 or builtins.min(sf) <= 0:
        raise ShapeError(f"scale_factor must be a positive number or pair, got {scale_factor!r}")
    out = tuple(int(np.floor(x.shape[2 + i] * sf[i])) for i in range(2))
    if builtins.min(out) < 1:
        raise ShapeError(f"scale_factor {sf} gives an empty output {out} for {x.type}")
    return out, sf


def _nearest_indices(n_in: int, n_out: int, scale: float | None) -> np.ndarray:
    """torch's 'nearest' source index of each output index: floor(dst * s) in float32, with
    s = 1 / scale_factor when one is given, else n_in / n_out; clamped to n_in - 1."""
    s = np.float32(1.0 / scale) if scale is not None else np.float32(n_in) / np.float32(n_out)
    idx = np.floor(np.arange(n_out, dtype=np.float32) * s).astype(np.int64)
    return np.minimum(idx, n_in - 1)


def _linear_taps(n_in: int, n_out: int, scale: float | None, align_corners: bool
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(i0, i1, w1) of torch's bilinear interpolation along one axis: output j is
    x[i0] * (1 - w1) + x[i1] * w1."""
    j = np.arange(n_out, dtype=np.float64)
    if align_corners:
        src = j * ((n_in - 1) / (n_out - 1) if n_out > 1 else 0.0)
    else:
        s = 1.0 / scale if scale is not None else n_in / n_out
        src = np.maximum(s * (j + 0.5) - 0.5, 0.0)
    i0 = np.minimum(np.floor(src).astype(np.int64), n_in - 1)
    i1 = np.minimum(i0 + 1, n_in - 1)
    return i0, i1, src - i0


def _repeat_axis(x: Sym, axis: int, k: int) -> Sym:
    """x repeated k times along `axis` element by element (views only: its VJP sums blocks)."""
    s = x.shape
    y = P.reshape(x, s[:axis + 1] + (1,) + s[axis + 1:])
    y = P.broadcast_to(y, s[:axis + 1] + (k,) + s[axis + 1:])
    return P.reshape(y, s[:axis] + (s[axis] * k,) + s[axis + 1:])


def _nearest_axis(x: Sym, axis: int, idx: np.ndarray) -> Sym:
    n = x.shape[axis]
    if len(idx) == n and (idx == np.arange(n)).all():
        return x
    if len(idx) % n == 0 and (idx == np.arange(len(idx)) // (len(idx) // n)).all():
        return _repeat_axis(x, axis, len(idx) // n)
    return P.take(x, idx, axis, mode="promise_in_bounds")   # in range by construction


def _linear_axis(x: Sym, axis: int, taps) -> Sym:
    i0, i1, w1 = taps
    if (i0 == i1).all() or not w1.any():
        return _nearest_axis(x, axis, i0)
    shape = (-1,) + (1,) * (x.ndim - axis - 1)
    w1 = P.reshape(P.lift(builder_of(x), w1.astype(x.dtype.np))[0], shape)
    a = P.take(x, i0, axis, mode="promise_in_bounds")
    b = P.take(x, i1, axis, mode="promise_in_bounds")
    return a + (b - a) * w1


def upsample(x: Sym, size=None, scale_factor=None, mode: str = "nearest",
             align_corners: bool | None = None) -> Sym:
    """Resize NCHW `x` to `size` (an int or (H, W)) or by `scale_factor`, as
    torch.nn.functional.interpolate: 'nearest' takes x[floor(dst * in / out)] (with a
    scale_factor, torch's dst / scale_factor); 'bilinear' blends the two nearest rows and
    columns (align_corners: corner pixels line up, else pixel centres do). Integer nearest
    factors are views (repeat: the VJP sums each block); other sizes gather constant indices."""
    try:
        if not isinstance(x, Sym) or x.ndim != 4:
            raise ShapeError(f"expects an NCHW input, got {getattr(x, 'type', type(x))}")
        if mode not in _UPSAMPLE_MODES:
            raise ShapeError(f"mode must be one of {', '.join(_UPSAMPLE_MODES)}, got {mode!r}")
        if mode == "nearest" and align_corners is not None:
            raise ShapeError("align_corners only applies to mode='bilinear'")
        if mode == "bilinear" and not x.dtype.is_float:
            raise ShapeError(f"bilinear needs a float input, got {x.type}")
        out, sf = _upsample_size(x, size, scale_factor)
    except ShapeError as e:
        raise located(e, "upsample", x) from None
    for i in range(2):
        n_in, scale = x.shape[2 + i], None if sf is None else sf[i]
        if mode == "nearest":
            x = _nearest_axis(x, 2 + i, _nearest_indices(n_in, out[i], scale))
        else:
            x = _linear_axis(x, 2 + i, _linear_taps(n_in, out[i], scale, bool(align_corners)))
    return x


interpolate = upsample


def global_avg_pool2d(x: Sym) -> Sym:
    """Mean over H and W of NCHW `x`, kept as [N, C, 1, 1]."""
    return _global_pool("global_avg_pool2d", x, P.mean)


def global_max_pool2d(x: Sym) -> Sym:
    """Max over H and W of NCHW `x`, kept as [N, C, 1, 1]."""
    return _global_pool("global_max_pool2d", x, P.reduce_max)


def _global_pool(op: str, x: Sym, reduce) -> Sym:
    if not isinstance(x, Sym) or x.ndim != 4:
        raise ShapeError(f"expects an NCHW input, got {getattr(x, 'type', type(x))}", op,
                         user_loc())
    return reduce(x, (2, 3), True)


def _adaptive_window(op: str, x: Sym, output_size) -> tuple[int, int] | None:
    """The pooling window of an adaptive pool whose output size divides the input (exactly
    torch's adaptive windows then), or None for global pooling (output size 1)."""
    try:
        if not isinstance(x, Sym) or x.ndim != 4:
            raise ShapeError(f"expects an NCHW input, got {getattr(x, 'type', type(x))}")
        out = _pair(output_size, "output_size")
        if out == (1, 1):
            return None
        if builtins.min(out) < 1 or builtins.any(x.shape[2 + i] % out[i] for i in range(2)):
            raise ShapeError(f"output_size {out} must be 1 or divide the input size "
                             f"{x.shape[2:]} (uneven adaptive windows are not supported)")
    except ShapeError as e:
        raise located(e, op, x) from None
    return tuple(x.shape[2 + i] // out[i] for i in range(2))


def adaptive_avg_pool2d(x: Sym, output_size) -> Sym:
    """torch.nn.functional.adaptive_avg_pool2d for an output size of 1 or one dividing H, W."""
    k = _adaptive_window("adaptive_avg_pool2d", x, output_size)
    return global_avg_pool2d(x) if k is None else P.avg_pool2d(x, k, k)


def adaptive_max_pool2d(x: Sym, output_size) -> Sym:
    """torch.nn.functional.adaptive_max_pool2d (no indices) for an output size of 1 or one
    dividing H, W."""
    k = _adaptive_window("adaptive_max_pool2d", x, output_size)
    return global_max_pool2d(x) if k is None else P.max_pool2d(x, k, k)
