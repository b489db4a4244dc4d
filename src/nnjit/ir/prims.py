"""One emitter per primitive, plus the few composites the IR itself needs (mean, sum_to, getitem).

These are the `jax.lax` of nnjit: canonical arguments (normalized axes, explicit padding pairs),
used by the DSL front end, by VJP rules and by passes. Binary functions accept Python scalars and
numpy arrays; Python scalars take the tensor's dtype, and mixed dtypes are promoted with casts.
"""
from __future__ import annotations

import builtins
import math
from typing import Any, Sequence

import numpy as np

from .builder import Builder, Sym, user_loc
from .errors import ShapeError
from .ops import Op
from .types import DType, canonical_dtype, promote

# -- helpers ---------------------------------------------------------------------------------


def builder_of(*xs: Any) -> Builder:
    """The innermost builder among the traced operands (scan bodies nest inside outer traces)."""
    best: Builder | None = None
    for x in xs:
        if isinstance(x, Sym) and (best is None or x.builder._is_ancestor(best)):
            best = x.builder
    if best is None:
        raise TypeError("at least one operand must be a traced tensor")
    return best


def _is_scalar(x) -> bool:
    return isinstance(x, (bool, int, float, np.bool_, np.integer, np.floating)) or (
        isinstance(x, np.ndarray) and x.ndim == 0 and not isinstance(x, Sym))


def lift(b: Builder, *xs: Any) -> list[Sym]:
    """Operands as Syms of one dtype: Python scalars are weakly typed (they take the tensors'
    dtype, or f32 when a float meets an int tensor); arrays and tensors promote."""
    syms = [x for x in xs if isinstance(x, Sym)]
    arrays = [np.asarray(x) for x in xs if not isinstance(x, Sym) and not _is_scalar(x)]
    dts = [s.dtype for s in syms] + [DType.from_numpy(canonical_dtype(a.dtype)) for a in arrays]
    if dts:
        dt = dts[0]
        for d in dts[1:]:
            dt = promote(dt, d)
    else:
        dt = DType.F32
    scalars = [x for x in xs if not isinstance(x, Sym) and _is_scalar(x)]
    if any(isinstance(s, (float, np.floating)) for s in scalars) and not dt.is_float:
        dt = DType.F32
    if any(isinstance(s, (int, np.integer)) and not isinstance(s, (bool, np.bool_))
           for s in scalars) and dt == DType.BOOL:
        dt = DType.I64
    out = []
    for x in xs:
        if isinstance(x, Sym):
            out.append(x if x.dtype == dt else cast(x, dt))
        else:
            out.append(b.const(np.asarray(x).astype(dt.np)))
    return out


def norm_axis(axis: int, ndim: int) -> int:
    if not -ndim <= axis < max(ndim, 1):
        raise ShapeError(f"axis {axis} is out of range for a {ndim}-d tensor")
    return axis % max(ndim, 1)


def norm_axes(axis, ndim: int) -> tuple[int, ...]:
    """`axis` (None, an int or a sequence) as sorted non-negative axes; errors name the axis."""
    if axis is None:
        return tuple(range(ndim))
    if isinstance(axis, (int, np.integer)):
        axis = (int(axis),)
    axes = tuple(norm_axis(int(a), ndim) for a in axis)
    if len(set(axes)) != len(axes):
        raise ShapeError(f"repeated axis in {tuple(axis)}")
    return tuple(sorted(axes))


def located(e: ShapeError, op: str, *operands: Any) -> ShapeError:
    """`e`, raised by an argument check before `emit`, attributed to `op` at the user's line and
    naming the operand types. Use as `except ShapeError as e: raise located(e, "sum", x)`."""
    if e.loc is not None:
        return e
    types = ", ".join(str(o.type) for o in operands if isinstance(o, Sym))
    return ShapeError(f"{e.reason} (operands: {types})" if types else e.reason, op, user_loc())


def _emit(op: Op, srcs, **attrs):
    return builder_of(*srcs).emit(op, srcs, attrs)


# -- elementwise -------------------------------------------------------------------------------

def _unary(op: Op):
    def f(x: Sym) -> Sym:
        return _emit(op, (x,))
    f.__name__ = op.value
    f.__doc__ = f"Elementwise {op.value}(x)."
    return f


neg = _unary(Op.NEG)
exp = _unary(Op.EXP)
log = _unary(Op.LOG)
sqrt = _unary(Op.SQRT)
abs = _unary(Op.ABS)  # noqa: A001  (mirrors numpy's name)
tanh = _unary(Op.TANH)
sigmoid = _unary(Op.SIGMOID)
relu = _unary(Op.RELU)
softplus = _unary(Op.SOFTPLUS)


def stop_gradient(x: Sym) -> Sym:
    """`x`, but autodiff treats it as a constant."""
    return _emit(Op.STOP_GRADIENT, (x,))


def logical_not(x: Sym) -> Sym:
    return _emit(Op.NOT, (cast(x, DType.BOOL),))


def cast(x: Sym, dtype) -> Sym:
    dtype = dtype if isinstance(dtype, DType) else DType.from_numpy(dtype)
    return x if x.dtype == dtype else _emit(Op.CAST, (x,), dtype=dtype)


def _binary(op: Op, bool_operands: bool = False, float_operands: bool = False):
    def f(x, y) -> Sym:
        b = builder_of(x, y)
        x, y = lift(b, x, y)
        if bool_operands:
            x, y = cast(x, DType.BOOL), cast(y, DType.BOOL)
        if float_operands and not x.dtype.is_float:
            x, y = cast(x, DType.F32), cast(y, DType.F32)
        return b.emit(op, (x, y))
    f.__name__ = op.value
    f.__doc__ = f"Elementwise {op.value}(x, y) with numpy broadcasting."
    return f


add = _binary(Op.ADD)
sub = _binary(Op.SUB)
mul = _binary(Op.MUL)
# True division and power of integer (or bool) operands compute in f32, so `x / 2` and `x ** 2`
# work on integer tensors as `nnjit.divide` / `nnjit.power` do (numpy's true division).
div = _binary(Op.DIV, float_operands=True)
pow = _binary(Op.POW, float_operands=True)  # noqa: A001
remainder = _binary(Op.REMAINDER)
maximum = _binary(Op.MAXIMUM)
minimum = _binary(Op.MINIMUM)
logical_and = _binary(Op.AND, bool_operands=True)
logical_or = _binary(Op.OR, bool_operands=True)
eq = _binary(Op.EQ)
ne = _binary(Op.NE)
lt = _binary(Op.LT)
le = _binary(Op.LE)
gt = _binary(Op.GT)
ge = _binary(Op.GE)


# -- math ops (issue 12) --
def _float_unary(op: Op):
    """A float op; integer and bool operands are converted to f32 first (as `div` does)."""
    def f(x: Sym) -> Sym:
        return _emit(op, (x if x.dtype.is_float else cast(x, DType.F32),))
    f.__name__ = op.value
    f.__doc__ = f"Elementwise {op.value}(x) (integer operands are computed in f32)."
    return f


def _rounding(op: Op):
    """floor, ceil: integers (and bools) are already whole, and stay as they are (numpy 2)."""
    def f(x: Sym) -> Sym:
        return _emit(op, (x,)) if x.dtype.is_float else x
    f.__name__ = op.value
    f.__doc__ = f"Elementwise {op.value}(x); integer tensors are returned unchanged."
    return f


sin = _float_unary(Op.SIN)
cos = _float_unary(Op.COS)
erf = _float_unary(Op.ERF)
expm1 = _float_unary(Op.EXPM1)
log1p = _float_unary(Op.LOG1P)
floor = _rounding(Op.FLOOR)
ceil = _rounding(Op.CEIL)
floor_divide = _binary(Op.FLOOR_DIVIDE)


def round(x: Sym, decimals: int = 0) -> Sym:  # noqa: A001  (numpy's name)
    """numpy.round: to nearest, ties to even, at `decimals` digits (x * 10**d rounded, / 10**d,
    as numpy computes it). Integer tensors are returned unchanged for decimals >= 0."""
    if not x.dtype.is_float:
        if decimals < 0:
            raise ShapeError(f"decimals={decimals} on an integer tensor is not supported",
                             "round", user_loc())
        return x
    if decimals == 0:
        return _emit(Op.ROUND, (x,))
    scale = 10.0 ** builtins.abs(decimals)
    if decimals > 0:
        return div(_emit(Op.ROUND, (mul(x, scale),)), scale)
    return mul(_emit(Op.ROUND, (div(x, scale),)), scale)


def where(cond, x, y) -> Sym:
    """`x` where `cond` else `y`, broadcasting all three."""
    b = builder_of(cond, x, y)
    cond = cond if isinstance(cond, Sym) else b.const(np.asarray(cond, dtype=bool))
    x, y = lift(b, x, y)
    return b.emit(Op.WHERE, (cast(cond, DType.BOOL), x, y))


# -- sources --------------------------------------------------------------------------------------

def iota(b: Builder, shape: Sequence[int], axis: int, dtype=DType.I64) -> Sym:
    """A tensor whose value at each index is that index's coordinate along `axis`."""
    return b.emit(Op.IOTA, (), {"shape": tuple(shape), "axis": axis, "dtype": dtype})


def random_uniform(seed: Sym, shape: Sequence[int], salt: int = 0, dtype=DType.F32) -> Sym:
    """Uniform [0, 1) numbers from Philox-4x32-10 keyed by `seed`, counter = (index, salt)."""
    return _emit(Op.RANDOM_UNIFORM, (cast(seed, DType.I64),), shape=tuple(shape), salt=salt,
                 dtype=dtype)


# -- reductions ------------------------------------------------------------------------------------

def reduce_sum(x: Sym, axis=None, keepdims: bool = False) -> Sym:
    try:
        axes = norm_axes(axis, x.ndim)
    except ShapeError as e:
        raise located(e, "sum", x) from None
    return _emit(Op.SUM, (x,), axes=axes, keepdims=keepdims)


def reduce_max(x: Sym, axis=None, keepdims: bool = False) -> Sym:
    try:
        axes = norm_axes(axis, x.ndim)
    except ShapeError as e:
        raise located(e, "max", x) from None
    return _emit(Op.MAX, (x,), axes=axes, keepdims=keepdims)


def argmax(x: Sym, axis: int = -1, keepdims: bool = False) -> Sym:
    try:
        axis = norm_axis(axis, x.ndim)
    except ShapeError as e:
        raise located(e, "argmax", x) from None
    return _emit(Op.ARGMAX, (x,), axis=axis, keepdims=keepdims)


# -- reductions (issue 12) --
def reduce_prod(x: Sym, axis=None, keepdims: bool = False) -> Sym:
    """numpy.prod over `axis`. Native code multiplies in blocks (reassociated, as XLA does), so
    where partial products overflow or underflow the result may differ from numpy's
    left-to-right one: a zero met after an overflowed partial gives NaN, not 0."""
    try:
        axes = norm_axes(axis, x.ndim)
    except ShapeError as e:
        raise located(e, "prod", x) from None
    return _emit(Op.PROD, (x,), axes=axes, keepdims=keepdims)


def mean(x: Sym, axis=None, keepdims: bool = False) -> Sym:
    """Composite: sum / count."""
    try:
        axes = norm_axes(axis, x.ndim)
    except ShapeError as e:
        raise located(e, "mean", x) from None
    n = 1
    for a in axes:
        n *= x.shape[a]
    if not x.dtype.is_float:
        x = cast(x, DType.F32)
    return div(reduce_sum(x, axes, keepdims), float(max(n, 1)) if n else float("nan"))


def sum_to(x: Sym, shape: Sequence[int]) -> Sym:
    """Composite: sum `x` down to `shape` (undoes numpy broadcasting; used by VJP rules)."""
    shape = tuple(shape)
    if x.shape == shape:
        return x
    lead = x.ndim - len(shape)
    axes = tuple(range(lead)) + tuple(
        lead + i for i, d in enumerate(shape) if d == 1 and x.shape[lead + i] != 1)
    y = reduce_sum(x, axes, keepdims=True) if axes else x
    return reshape(y, shape) if y.shape != shape else y


# -- contractions and windows --------------------------------------------------------------------

def matmul(a, b) -> Sym:
    """Batched matrix product with numpy's broadcasting of leading (batch) dims; 1-d operands are
    promoted to matrices and the added dim removed, as in numpy."""
    bd = builder_of(a, b)
    a, b = lift(bd, a, b)
    squeeze_a, squeeze_b = a.ndim == 1, b.ndim == 1
    a0, b0 = a.shape, b.shape
    if squeeze_a:
        a = reshape(a, (1, a.shape[0]))
    if squeeze_b:
        b = reshape(b, (b.shape[0], 1))
    if a.ndim > 2 and b.ndim == 2:
        # A stack of matrices times one matrix is one GEMM over all the rows (a contiguous
        # reshape), not a batch of small ones; its VJP is then one GEMM per operand too (the
        # weight gradient contracts over every row instead of summing per-matrix products).
        lead = a.shape[:-1]
        out = matmul(reshape(a, (math.prod(lead), a.shape[-1])), b)
        out = reshape(out, lead + (b.shape[-1],))
        return reshape(out, out.shape[:-1]) if squeeze_b else out
    try:
        out = bd.emit(Op.MATMUL, (a, b))
    except ShapeError as e:
        if not (squeeze_a or squeeze_b):
            raise
        # Name the shapes the user passed, not the matrices the 1-d operands were promoted to.
        raise ShapeError(f"{e.reason} (1-d operands promoted to matrices: {a0} @ {b0})",
                         e.op, e.loc) from None
    if squeeze_a or squeeze_b:
        shape = out.shape[:-2] + (() if squeeze_a else out.shape[-2:-1]) + (
            () if squeeze_b else out.shape[-1:])
        out = reshape(out, shape)
    return out


def conv2d(x: Sym, w: Sym, stride=(1, 1), padding=((0, 0), (0, 0)), dilation=(1, 1),
           groups: int = 1) -> Sym:
    """NCHW x OIHW -> NOHW cross-correlation (as torch.nn.functional.conv2d); with `groups`,
    w is [O, C / groups, kh, kw] and each block of channels convolves on its own."""
    return _emit(Op.CONV2D, lift(builder_of(x, w), x, w), stride=stride, padding=padding,
                 dilation=dilation, groups=groups)


def conv2d_grad_input(dy: Sym, w: Sym, input_shape, stride, padding, dilation,
                      groups: int = 1) -> Sym:
    return _emit(Op.CONV2D_GRAD_INPUT, (dy, w), input_shape=tuple(input_shape), stride=stride,
                 padding=padding, dilation=dilation, groups=groups)


def conv2d_grad_weight(x: Sym, dy: Sym, weight_shape, stride, padding, dilation,
                       groups: int = 1) -> Sym:
    return _emit(Op.CONV2D_GRAD_WEIGHT, (x, dy), weight_shape=tuple(weight_shape), stride=stride,
                 padding=padding, dilation=dilation, groups=groups)


def max_pool2d(x: Sym, kernel, stride, padding=((0, 0), (0, 0))) -> Sym:
    return _emit(Op.MAX_POOL2D, (x,), kernel=kernel, stride=stride, padding=padding)


def avg_pool2d(x: Sym, kernel, stride, padding=((0, 0), (0, 0)),
               count_include_pad: bool = True) -> Sym:
    return _emit(Op.AVG_POOL2D, (x,), kernel=kernel, stride=stride, padding=padding,
                 count_include_pad=count_include_pad)


def max_pool2d_grad(x: Sym, dy: Sym, kernel, stride, padding) -> Sym:
    return _emit(Op.MAX_POOL2D_GRAD, (x, dy), kernel=kernel, stride=stride, padding=padding)


def avg_pool2d_grad(dy: Sym, input_shape, kernel, stride, padding, count_include_pad) -> Sym:
    return _emit(Op.AVG_POOL2D_GRAD, (dy,), input_shape=tuple(input_shape), kernel=kernel,
                 stride=stride, padding=padding, count_include_pad=count_include_pad)


# -- data movement ---------------------------------------------------------------------------------

def reshape(x: Sym, shape: Sequence[int]) -> Sym:
    """Reshape (C order); one dim may be -1."""
    shape = tuple(int(d) for d in shape)
    if shape.count(-1) > 1:
        raise ShapeError(f"at most one -1 in {shape}", "reshape", user_loc())
    if -1 in shape:
        known = 1
        for d in shape:
            if d != -1:
                known *= d
        if known == 0 or x.size % known:
            raise ShapeError(f"cannot reshape {x.shape} into {shape}", "reshape", user_loc())
        shape = tuple(x.size // known if d == -1 else d for d in shape)
    if shape == x.shape:
        return x
    return _emit(Op.RESHAPE, (x,), shape=shape)


def transpose(x: Sym, perm: Sequence[int]) -> Sym:
    try:
        perm = tuple(norm_axis(int(p), x.ndim) for p in perm)
    except ShapeError as e:
        raise located(e, "transpose", x) from None
    if perm == tuple(range(x.ndim)):
        return x
    return _emit(Op.TRANSPOSE, (x,), perm=perm)


def broadcast_to(x: Sym, shape: Sequence[int]) -> Sym:
    shape = tuple(shape)
    return x if x.shape == shape else _emit(Op.BROADCAST_TO, (x,), shape=shape)


def concat(xs: Sequence[Sym], axis: int = 0) -> Sym:
    xs = list(xs)
    if not xs:
        raise ShapeError("needs at least one tensor", "concat", user_loc())
    b = builder_of(*xs)
    xs = lift(b, *xs)
    try:
        axis = norm_axis(axis, xs[0].ndim)
    except ShapeError as e:
        raise located(e, "concat", *xs) from None
    if len(xs) == 1:
        return xs[0]
    return b.emit(Op.CONCAT, xs, {"axis": axis})


def slice(x: Sym, starts, stops, steps) -> Sym:  # noqa: A001
    """x[starts[i]:stops[i]:steps[i]] per dim, with bounds already normalized (`slice.indices`)."""
    return _emit(Op.SLICE, (x,), starts=tuple(starts), stops=tuple(stops), steps=tuple(steps))


def pad(x: Sym, pads, value: float = 0.0) -> Sym:
    """Constant padding: `pads` is one (before, after) pair per dim."""
    return _emit(Op.PAD, (x,), pads=tuple(pads), value=value)


TAKE_MODES = ("raise", "clip", "wrap", "fill", "promise_in_bounds")


def take(x: Sym, indices, axis: int = 0, mode: str = "raise", fill_value=None) -> Sym:
    """x gathered along `axis` at `indices` (numpy.take / jax.numpy.take). `mode` says what an
    index outside [-n, n) does (negative indices count from the end in every mode but clip):

        raise  IndexOutOfRange at run time, naming the index and this line (the default)
        clip   clamped into [0, n - 1] (numpy's clip: negative indices become 0)
        wrap   taken modulo n
        fill   gives `fill_value` (default NaN for floats, the minimum for ints, True for bool)
        promise_in_bounds   no check (the caller guarantees the range; a stray index is
                            clamped, so memory stays safe, but the value is unspecified)"""
    b = builder_of(x, indices)
    if not isinstance(x, Sym):      # a table given as an array (an embedding's constant)
        (x,) = lift(b, x)
    if not isinstance(indices, Sym):
        arr = np.asarray(indices)
        if arr.size and arr.dtype.kind not in "biu":   # numpy.take refuses to truncate floats
            raise ShapeError(f"indices must be integers, got {arr.dtype} {list(arr.shape)}",
                             "take", user_loc())
        indices = b.const(arr.astype(np.int64))
    if mode not in TAKE_MODES:
        raise ShapeError(f"mode must be one of {', '.join(TAKE_MODES)}, got {mode!r}", "take",
                         user_loc())
    if not indices.dtype.is_int:
        raise located(ShapeError(f"indices must be i32 or i64, got {indices.type}"), "take", x,
                      indices)
    try:
        axis = norm_axis(axis, x.ndim)
    except ShapeError as e:
        raise located(e, "take", x, indices) from None
    n = x.shape[axis]
    if mode == "raise":
        indices = check_index(indices, n, f"take: axis {axis} of {x.type}")
    elif mode == "clip":
        indices = minimum(maximum(indices, 0), max(n - 1, 0))
    elif mode == "wrap" and n:
        indices = remainder(indices, n)
    out = b.emit(Op.TAKE, (x, indices), {"axis": axis})
    if mode != "fill":
        return out
    ok = logical_and(ge(indices, -n), lt(indices, n))
    ok = reshape(ok, (1,) * axis + indices.shape + (1,) * (x.ndim - axis - 1))
    return where(ok, out, _fill_value(x.dtype) if fill_value is None else fill_value)


def _fill_value(dt: DType):
    if dt.is_float:
        return np.nan
    return True if dt == DType.BOOL else int(np.iinfo(dt.np).min)


def check_index(indices: Sym, size: int, what: str, negative: bool = True,
                ignore: Sequence[int] = ()) -> Sym:
    """`indices`, checked at run time to lie in [-size, size) (`negative=False`: [0, size))
    or in `ignore`; otherwise the call raises IndexOutOfRange naming `what`, the bad index and
    the user's line."""
    return _emit(Op.CHECK_INDEX, (indices,), size=size, what=what, negative=negative,
                 ignore=tuple(ignore))


def scatter_add(indices: Sym, updates: Sym, shape, axis: int = 0) -> Sym:
    """zeros(shape) with `updates` added at `indices` along `axis` (the transpose of take)."""
    return _emit(Op.SCATTER_ADD, (indices, updates), shape=tuple(shape), axis=axis)


# -- movement/indexing ops (issue 12) --
SCATTER_MODES = ("set", "min", "max", "multiply")


def scatter(operand: Sym, indices: Sym, updates: Sym, axis: int = 0, mode: str = "set") -> Sym:
    """`operand` with each update combined into it at its index along `axis`, in row-major
    order of the updates: `set` writes (the last duplicate wins), `min`/`max` keep the extreme,
    `multiply` multiplies them in.
    Indices wrap once when negative and are clamped, as scatter_add's are."""
    return _emit(Op.SCATTER, (operand, indices, updates), axis=axis, mode=mode)


def getitem(x: Sym, idx) -> Sym:
    """numpy indexing: ints, slices with steps, None, ..., integer arrays and constant boolean
    masks (see `nnjit.ir.indexing.getitem`)."""
    from . import indexing  # noqa: PLC0415  (indexing builds on this module)
    return indexing.getitem(x, idx)


# -- control flow ----------------------------------------------------------------------------------

def scan(body, carry: Sequence[Sym], xs: Sequence[Sym], consts: Sequence[Sym], length: int,
         reverse: bool = False) -> tuple[Sym, ...]:
    """Emit `scan`: body(carry..., x_t..., consts...) -> (carry'..., y_t...); returns the final
    carries followed by the stacked ys."""
    srcs = list(carry) + list(xs) + list(consts)
    if not srcs:
        raise ShapeError("scan: needs at least one carry or sequence")
    b = builder_of(*srcs)
    out = b.emit(Op.SCAN, srcs, {"body": body, "num_carry": len(carry),
                                 "num_consts": len(consts), "length": length, "reverse": reverse})
    return out if isinstance(out, tuple) else (out,)


# -- collectives over a process group (issue 15) --------------------------------------------------

def all_reduce(x: Sym, reduce: str, axis_name: str, group_size: int) -> Sym:
    """`reduce` ("sum", "mean" or "max") of `x` over the `group_size` processes of group
    `axis_name` (each process passes its own `x`; every one gets the result)."""
    return _emit(Op.ALL_REDUCE, (x,), reduce=reduce, axis_name=axis_name, group_size=group_size)


def all_gather(x: Sym, axis: int, axis_name: str, group_size: int) -> Sym:
    """The processes' `x` concatenated along `axis` in rank order."""
    return _emit(Op.ALL_GATHER, (x,), axis=axis, axis_name=axis_name, group_size=group_size)


def reduce_scatter(x: Sym, axis: int, axis_name: str, group_size: int) -> Sym:
    """Block `rank` (along `axis`) of the sum of the processes' `x`."""
    return _emit(Op.REDUCE_SCATTER, (x,), axis=axis, axis_name=axis_name,
                 group_size=group_size)


def broadcast(x: Sym, root: int, axis_name: str, group_size: int) -> Sym:
    """Process `root`'s `x`, on every process of the group."""
    return _emit(Op.BROADCAST, (x,), root=root, axis_name=axis_name, group_size=group_size)


def axis_index(b: Builder, axis_name: str, group_size: int) -> Sym:
    """This process's rank in group `axis_name`, an i32 scalar known when the program runs."""
    return b.emit(Op.AXIS_INDEX, (), {"axis_name": axis_name, "group_size": group_size})

# -- rematerialization (issue 12) -----------------------------------------------------------------

def optimization_barrier(x: Sym, after: Sym) -> Sym:
    """`x`, computed after the scalar `after` and never merged with another value (see
    `defs/control.py`)."""
    return _emit(Op.OPTIMIZATION_BARRIER, (x, after))
