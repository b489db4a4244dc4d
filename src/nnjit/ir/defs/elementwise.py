"""Elementwise primitives: unary math, binary arithmetic with numpy broadcasting, comparisons,
logic, `where` and `cast`. Each is a scalar function applied at every index of the broadcast
output, which is what lets the fusion pass merge chains of them into one loop nest."""
from __future__ import annotations

import math

import numpy as np

from .. import prims as P
from ..kernel import Call, Const, KOp
from ..opdef import AttrSpec, OpDef, register
from ..ops import Kind, Op
from ..types import DType, TensorType
from .common import broadcast_shapes, require, require_float, require_numeric, same_dtype

# -- shape rules --------------------------------------------------------------------------------


def _float_unary_shape(ts, attrs):
    require_float(ts[0])
    return ts[0]


def _numeric_unary_shape(ts, attrs):
    require_numeric(ts[0])
    return ts[0]


def _bool_unary_shape(ts, attrs):
    require(ts[0].dtype == DType.BOOL, f"operand must be bool, got {ts[0]}")
    return ts[0]


def _binary_shape(check=None, out_dtype=None):
    def rule(ts, attrs):
        dt = same_dtype(ts)
        if check:
            check(ts[0])
        return TensorType(broadcast_shapes(*(t.shape for t in ts)), out_dtype or dt)
    return rule


def _bool_operands(t):
    require(t.dtype == DType.BOOL, f"operands must be bool, got {t}")


def _where_shape(ts, attrs):
    c, x, y = ts
    require(c.dtype == DType.BOOL, f"condition must be bool, got {c}")
    same_dtype([x, y])
    return TensorType(broadcast_shapes(c.shape, x.shape, y.shape), x.dtype)


def _cast_shape(ts, attrs):
    return ts[0].with_dtype(attrs["dtype"])


# -- numpy references -----------------------------------------------------------------------------

def _np(fn):
    """A reference that applies `fn` with numpy warnings silenced and keeps the input dtype."""
    def ref(xs, attrs):
        with np.errstate(all="ignore"):
            out = fn(*xs)
        return np.asarray(out).astype(xs[0].dtype, copy=False)
    return ref


def _pow_ref(xs, attrs):
    """C pow, whatever the exponent's shape: numpy takes a shortcut for a one-element exponent
    of 0.5 (sqrt: (-0.0)**0.5 == -0.0, (-inf)**0.5 == nan), so the exponent is expanded."""
    x, y = xs
    shape = np.broadcast_shapes(x.shape, y.shape)
    with np.errstate(all="ignore"):
        return np.power(x, np.array(np.broadcast_to(y, shape))).astype(x.dtype, copy=False)


def _cmp(fn):
    def ref(xs, attrs):
        with np.errstate(all="ignore"):
            return np.asarray(fn(*xs))
    return ref


def _sigmoid_ref(xs, attrs):
    (x,) = xs
    with np.errstate(all="ignore"):
        return np.exp(-np.logaddexp(0, -x)).astype(x.dtype)


def _cast_ref(xs, attrs):
    """Float -> int truncates toward zero, saturates out-of-range values and maps NaN to 0 (the
    semantics of LLVM's fptosi.sat, so no backend has undefined behaviour)."""
    (x,) = xs
    dst = attrs["dtype"].np
    if x.dtype.kind == "f" and dst.kind == "i":
        info = np.iinfo(dst)
        t = np.trunc(np.where(np.isnan(x), 0.0, x)).astype(np.float64)
        hi, lo = t >= float(info.max), t <= float(info.min)
        out = np.where(hi | lo, 0.0, t).astype(dst)
        out[hi], out[lo] = info.max, info.min
        return out
    return x.astype(dst)


# -- VJP rules ---------------------------------------------------------------------------------------

def _ew(rule):
    """Wrap an elementwise VJP: `rule(xs, out, g)` gives per-input gradients at the broadcast
    shape; they are summed back to each input's shape."""
    def vjp(xs, outs, cts, attrs):
        g = cts[0]
        grads = rule(xs, outs[0], g)
        return [None if gr is None else P.sum_to(gr, x.shape) for gr, x in zip(grads, xs)]
    return vjp


_add_vjp = _ew(lambda xs, y, g: [g, g])
_sub_vjp = _ew(lambda xs, y, g: [g, -g])
_mul_vjp = _ew(lambda xs, y, g: [g * xs[1], g * xs[0]])
_div_vjp = _ew(lambda xs, y, g: [g / xs[1], -g * y / xs[1]])
_neg_vjp = _ew(lambda xs, y, g: [-g])
_exp_vjp = _ew(lambda xs, y, g: [g * y])
_log_vjp = _ew(lambda xs, y, g: [g / xs[0]])
_sqrt_vjp = _ew(lambda xs, y, g: [g / (y * 2.0)])
_tanh_vjp = _ew(lambda xs, y, g: [g * (1.0 - y * y)])
_sigmoid_vjp = _ew(lambda xs, y, g: [g * y * (1.0 - y)])
# Masking by the output (relu(x) > 0 iff x > 0) lets the backward pass keep only the
# activation, not the pre-activation too.
_relu_vjp = _ew(lambda xs, y, g: [P.where(y > 0.0, g, 0.0)])
_softplus_vjp = _ew(lambda xs, y, g: [g * P.sigmoid(xs[0])])
_abs_vjp = _ew(lambda xs, y, g: [g * P.where(xs[0] >= 0.0, 1.0, -1.0)])
# Ties go to the first operand, as in numpy's and torch's maximum/minimum gradients (split
# would also be valid; this keeps gradients sparse like relu's).
_maximum_vjp = _ew(lambda xs, y, g: [P.where(xs[0] >= xs[1], g, 0.0),
                                     P.where(xs[0] >= xs[1], 0.0, g)])
_minimum_vjp = _ew(lambda xs, y, g: [P.where(xs[0] <= xs[1], g, 0.0),
                                     P.where(xs[0] <= xs[1], 0.0, g)])
_where_vjp = _ew(lambda xs, y, g: [None, P.where(xs[0], g, 0.0), P.where(xs[0], 0.0, g)])


def _pow_rule(xs, y, g):
    x, p = xs
    # d/dx x**p = p * x**(p-1); d/dp = log(x) * x**p, taken as 0 where x == 0 (as torch does).
    dx = g * p * P.pow(x, p - 1.0)
    dp = g * P.where(x > 0.0, P.log(P.where(x > 0.0, x, 1.0)) * y, 0.0)
    return [dx, dp]


_pow_vjp = _ew(_pow_rule)
# x = y * floor(x / y) + r: dr/dx = 1, dr/dy = -floor(x / y) = -(x - r) / y.
_remainder_vjp = _ew(lambda xs, y, g: [g, -g * (xs[0] - y) / xs[1]])


def _cast_vjp(xs, outs, cts, attrs):
    (x,), g = xs, cts[0]
    if not (x.dtype.is_float and attrs["dtype"].is_float):
        return [None]
    return [P.cast(g, x.dtype)]


# -- scalar rules: each op's value from its operands' scalars, in kernel-IR calls -------------------

def _call(kop: KOp):
    """The op is one kernel-IR call of its operands."""
    return lambda args, dt, attrs: Call(kop, tuple(args), dt)


def _identity_scalar(args, dt, attrs):
    return args[0]


def _softplus_scalar(args, dt, attrs):
    """max(x, 0) + log1p(exp(-|x|)), with log1p(y) = log(u) * y / (u - 1) for u = 1 + y
    (Goldberg's trick: a few ulp, where log(1 + y) loses every digit once y < eps)."""
    (x,) = args
    k = lambda v: Const(v, dt)  # noqa: E731
    y = Call(KOp.EXP, (Call(KOp.NEG, (Call(KOp.ABS, (x,), dt),), dt),), dt)
    u = Call(KOp.ADD, (k(1.0), y), dt)
    ratio = Call(KOp.DIV, (y, Call(KOp.SUB, (u, k(1.0)), dt)), dt)
    log1p = Call(KOp.WHERE, (Call(KOp.EQ, (u, k(1.0)), DType.BOOL), y,
                             Call(KOp.MUL, (Call(KOp.LOG, (u,), dt), ratio), dt)), dt)
    return Call(KOp.ADD, (Call(KOp.MAX, (x, k(0.0)), dt), log1p), dt)


# -- declarations ------------------------------------------------------------------------------------

def _unary(op, shape, ref, vjp=None, doc="", scalar=None):
    return OpDef(op, Kind.ELEMENTWISE, 1, shape, ref, vjp=vjp, doc=doc,
                 scalar=scalar or _call(KOp[op.name]))


def _binary(op, ref, vjp=None, check=None, out_dtype=None, doc="", kop=None):
    return OpDef(op, Kind.ELEMENTWISE, 2, _binary_shape(check, out_dtype), ref, vjp=vjp, doc=doc,
                 scalar=_call(kop or KOp[op.name]))


register(
    _unary(Op.NEG, _numeric_unary_shape, _np(np.negative), _neg_vjp),
    _unary(Op.EXP, _float_unary_shape, _np(np.exp), _exp_vjp),
    _unary(Op.LOG, _float_unary_shape, _np(np.log), _log_vjp),
    _unary(Op.SQRT, _float_unary_shape, _np(np.sqrt), _sqrt_vjp),
    _unary(Op.ABS, _numeric_unary_shape, _np(np.abs), _abs_vjp),
    _unary(Op.TANH, _float_unary_shape, _np(np.tanh), _tanh_vjp),
    _unary(Op.SIGMOID, _float_unary_shape, _sigmoid_ref, _sigmoid_vjp, doc="1 / (1 + exp(-x))"),
    _unary(Op.RELU, _numeric_unary_shape, _np(lambda x: np.maximum(x, 0)), _relu_vjp),
    _unary(Op.SOFTPLUS, _float_unary_shape, _np(lambda x: np.logaddexp(0, x)), _softplus_vjp,
           doc="log(1 + exp(x)), stable for every x", scalar=_softplus_scalar),
    _unary(Op.NOT, _bool_unary_shape, _np(np.logical_not)),
    OpDef(Op.STOP_GRADIENT, Kind.ELEMENTWISE, 1, lambda ts, a: ts[0], lambda xs, a: xs[0],
          vjp=lambda xs, outs, cts, a: [None], scalar=_identity_scalar,
          doc="identity whose gradient is zero (removed by simplification after autodiff)"),
    OpDef(Op.CAST, Kind.ELEMENTWISE, 1, _cast_shape, _cast_ref,
          attrs=(AttrSpec("dtype", "dtype"),), vjp=_cast_vjp, scalar=_call(KOp.CAST),
          doc="dtype conversion; float->int truncates, saturates, and maps NaN to 0"),
    _binary(Op.ADD, _np(np.add), _add_vjp, require_numeric),
    _binary(Op.SUB, _np(np.subtract), _sub_vjp, require_numeric),
    _binary(Op.MUL, _np(np.multiply), _mul_vjp, require_numeric),
    _binary(Op.DIV, _np(np.divide), _div_vjp, require_float, doc="true division (floats only)"),
    _binary(Op.POW, _pow_ref, _pow_vjp, require_float,
            doc="C pow for every exponent shape (numpy's x ** 0.5 shortcut is not taken)"),
    _binary(Op.REMAINDER, _np(np.remainder), _remainder_vjp, require_numeric, kop=KOp.MOD,
            doc="numpy remainder: the result takes the divisor's sign; x % 0 is 0 for ints"),
    _binary(Op.MAXIMUM, _np(np.maximum), _maximum_vjp, require_numeric, kop=KOp.MAX,
            doc="NaN-propagating maximum (numpy semantics)"),
    _binary(Op.MINIMUM, _np(np.minimum), _minimum_vjp, require_numeric, kop=KOp.MIN),
    _binary(Op.AND, _np(np.logical_and), check=_bool_operands),
    _binary(Op.OR, _np(np.logical_or), check=_bool_operands),
    _binary(Op.EQ, _cmp(np.equal), out_dtype=DType.BOOL),
    _binary(Op.NE, _cmp(np.not_equal), out_dtype=DType.BOOL),
    _binary(Op.LT, _cmp(np.less), out_dtype=DType.BOOL),
    _binary(Op.LE, _cmp(np.less_equal), out_dtype=DType.BOOL),
    _binary(Op.GT, _cmp(np.greater), out_dtype=DType.BOOL),
    _binary(Op.GE, _cmp(np.greater_equal), out_dtype=DType.BOOL),
    OpDef(Op.WHERE, Kind.ELEMENTWISE, 3, _where_shape,
          lambda xs, a: np.where(*xs).astype(xs[1].dtype, copy=False), vjp=_where_vjp,
          nondiff_inputs=frozenset({0}), scalar=_call(KOp.WHERE)),
)


# -- math ops (issue 12): sin, cos, erf, expm1, log1p, floor, ceil, round, floor_divide --------

_sin_vjp = _ew(lambda xs, y, g: [g * P.cos(xs[0])])
_cos_vjp = _ew(lambda xs, y, g: [-g * P.sin(xs[0])])
_erf_vjp = _ew(lambda xs, y, g: [g * (2.0 / np.sqrt(np.pi)) * P.exp(-(xs[0] * xs[0]))])
_expm1_vjp = _ew(lambda xs, y, g: [g * (y + 1.0)])
_log1p_vjp = _ew(lambda xs, y, g: [g / (xs[0] + 1.0)])
# Piecewise constant: the derivative is 0 wherever it exists (as JAX defines it).
_rounding_vjp = _ew(lambda xs, y, g: [None] * len(xs))


def _erf_ref(xs, attrs):
    (x,) = xs
    return np.vectorize(math.erf, otypes=[np.float64])(x.astype(np.float64)).astype(x.dtype)


def _floor_divide_ref(xs, attrs):
    x, y = xs
    with np.errstate(all="ignore"):
        out = np.floor_divide(x, y)
    if x.dtype.kind == "i":      # numpy: x // 0 == 0 (with a warning); MIN // -1 wraps
        out = np.where(np.broadcast_to(y, out.shape) == 0, 0, out)
    return np.asarray(out).astype(x.dtype, copy=False)


def _floor_divide_scalar(args, dt, attrs):
    """Integers: KOp.DIV (floored; x // 0 == 0). Floats as numpy computes them, so that
    x == y * (x // y) + x % y: q = (x - x % y) / y is an integer up to rounding and is rounded
    to it; q == 0 takes the sign of x / y; y == 0 gives x / y; a finite x over an infinite y
    gives -1 or +-0 by the signs (numpy's fmod-based branch, where x - x % y would be nan)."""
    x, y = args
    if not dt.is_float:
        return Call(KOp.DIV, (x, y), dt)
    k = lambda v: Const(v, dt)  # noqa: E731
    c = lambda op, *a: Call(op, a, dt)  # noqa: E731
    test = lambda op, a, b: Call(op, (a, b), DType.BOOL)  # noqa: E731
    ratio = c(KOp.DIV, x, y)
    div = c(KOp.DIV, c(KOp.SUB, x, c(KOp.MOD, x, y)), y)
    q = c(KOp.FLOOR, div)
    q = c(KOp.WHERE, test(KOp.GT, c(KOp.SUB, div, q), k(0.5)), c(KOp.ADD, q, k(1.0)), q)
    signed_zero = c(KOp.MUL, ratio, k(0.0))
    q = c(KOp.WHERE, test(KOp.EQ, div, k(0.0)), signed_zero, q)
    finite_x = test(KOp.EQ, c(KOp.SUB, x, x), k(0.0))
    inf_y = Call(KOp.AND, (test(KOp.EQ, c(KOp.ABS, y), k(np.inf)), finite_x), DType.BOOL)
    by_inf = c(KOp.WHERE, test(KOp.LT, c(KOp.MUL, x, y), k(0.0)), k(-1.0), signed_zero)
    q = c(KOp.WHERE, inf_y, by_inf, q)
    return c(KOp.WHERE, test(KOp.EQ, y, k(0.0)), ratio, q)


register(
    _unary(Op.SIN, _float_unary_shape, _np(np.sin), _sin_vjp),
    _unary(Op.COS, _float_unary_shape, _np(np.cos), _cos_vjp),
    _unary(Op.ERF, _float_unary_shape, _erf_ref, _erf_vjp, doc="the error function"),
    _unary(Op.EXPM1, _float_unary_shape, _np(np.expm1), _expm1_vjp,
           doc="exp(x) - 1, accurate near 0"),
    _unary(Op.LOG1P, _float_unary_shape, _np(np.log1p), _log1p_vjp,
           doc="log(1 + x), accurate near 0"),
    _unary(Op.FLOOR, _float_unary_shape, _np(np.floor), _rounding_vjp),
    _unary(Op.CEIL, _float_unary_shape, _np(np.ceil), _rounding_vjp),
    _unary(Op.ROUND, _float_unary_shape, _np(np.rint), _rounding_vjp,
           doc="to the nearest integer, ties to even (numpy's round with decimals=0)"),
    OpDef(Op.FLOOR_DIVIDE, Kind.ELEMENTWISE, 2, _binary_shape(require_numeric),
          _floor_divide_ref, vjp=_rounding_vjp, scalar=_floor_divide_scalar,
          doc="numpy floor_divide: floor(x / y) as numpy rounds it; x // 0 is 0 for ints"),
)
