"""The op case table: every registered primitive, called through the nnjit DSL, next to an
independent numpy expression of what it should compute (never `OpDef.ref` or `ir.evaluate`).

    @pytest.mark.parametrize("case,dtype", case_params("reduce"))
    def test_forward(case, dtype, backend):          # x every backend in tests.helpers.BACKENDS
        check_case(case, case.make_inputs(np.random.default_rng(0), dtype), backend)

An `OpCase` is (name, op, fn, expected, args): `fn(*tensors)` is built with the DSL,
`expected(*arrays)` is plain numpy, and `args` says how to draw each operand. Gradient checks
reuse the table: `diff_inputs` are the operands a VJP check differentiates (draw them with
`make_inputs(rng, np.float64)`), `int_inputs` those that are integer indices. The generators draw
values away from kinks and ties (relu/abs away from 0, maximum/minimum operands >= 0.15 apart,
log/sqrt/pow bases positive, pooled and max-reduced values distinct), so finite differences hold.
"""
from __future__ import annotations

import inspect
import os
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import hypothesis.extra.numpy as hnp
import hypothesis.strategies as st
import math

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

import nnjit
from nnjit.ir import Op
from nnjit.ir import prims as P
from nnjit.ir.philox import philox4x32_10
from tests.helpers import assert_close, run

F32, F64, I32, I64, BOOL = (np.dtype(t) for t in (np.float32, np.float64, np.int32, np.int64,
                                                   np.bool_))
FLOATS, INTS = (F32, F64), (I32, I64)
NUMERIC = FLOATS + INTS
ALL = NUMERIC + (BOOL,)

# Ops no user program builds: graph inputs (no OpDef) and the kernel groups the fusion pass makes.
PLUMBING = frozenset({Op.INPUT, Op.FUSION})

# `@given` tests take the function-scoped `backend` fixture (a plain string, safe to share between
# examples); everything else (max_examples, derandomize) comes from the loaded profile ("ci").
HYPOTHESIS = settings(suppress_health_check=list(settings.default.suppress_health_check)
                      + [HealthCheck.function_scoped_fixture])

# -- value generators: gen(rng, shape, dtype) -> array ------------------------------------------

Gen = Callable[[np.random.Generator, tuple, np.dtype], np.ndarray]


def _bools(rng, shape):
    return rng.random(shape) < 0.5


def uniform(lo: float = -3.0, hi: float = 3.0) -> Gen:
    """Floats in [lo, hi); integers in [floor(lo), ceil(hi)]; random bools."""
    def gen(rng, shape, dtype):
        if dtype == BOOL:
            return _bools(rng, shape)
        if dtype.kind == "i":
            return rng.integers(int(np.floor(lo)), int(np.ceil(hi)) + 1, shape).astype(dtype)
        return rng.uniform(lo, hi, shape).astype(dtype)
    return gen


def signed(lo: float = 0.2, hi: float = 3.0) -> Gen:
    """Magnitudes in [lo, hi] with random signs: never near 0 (kinks of abs/relu, poles)."""
    def gen(rng, shape, dtype):
        sign = np.where(_bools(rng, shape), 1, -1)
        if dtype.kind == "i":
            return (sign * rng.integers(max(1, int(np.ceil(lo))), int(hi) + 1, shape)).astype(dtype)
        return (sign * rng.uniform(lo, hi, shape)).astype(dtype)
    return gen


def grid(offset: float = 0.0, step: float = 0.5, lo: int = -2, hi: int = 2) -> Gen:
    """offset + step*k for integers k in [lo/step, hi/step]: equal values are likely for one
    offset, and operands drawn with offsets 0.1 and 0.35 are never closer than 0.15."""
    def gen(rng, shape, dtype):
        if dtype == BOOL:
            return _bools(rng, shape)
        if dtype.kind == "i":
            return rng.integers(lo, hi + 1, shape).astype(dtype)
        k = rng.integers(int(lo / step), int(hi / step) + 1, shape)
        return (offset + step * k).astype(dtype)
    return gen


def distinct(scale: float = 0.25) -> Gen:
    """Pairwise distinct values (a shuffled ramp): no ties for max, argmax or max pooling."""
    def gen(rng, shape, dtype):
        n = int(np.prod(shape, dtype=np.int64))
        ramp = rng.permutation(n).reshape(shape) - n // 2
        if dtype == BOOL:
            return ramp > 0
        return (ramp if dtype.kind == "i" else ramp * scale).astype(dtype)
    return gen


def indices(lo: int, hi: int) -> Gen:
    """Integers in [lo, hi] (take/scatter indices: negatives wrap, out of range clamps)."""
    return lambda rng, shape, dtype: rng.integers(lo, hi + 1, shape).astype(dtype)


@dataclass(frozen=True)
class Arg:
    """One operand: its default shape, how to draw it, and a fixed dtype (None: the case's)."""

    shape: tuple[int, ...]
    gen: Gen = uniform()
    dtype: Any = None


@dataclass(frozen=True)
class OpCase:
    name: str
    op: Op                              # the primitive this case exercises
    fn: Callable[..., Any]              # fn(*tensors), written with the nnjit DSL
    expected: Callable[..., Any]        # expected(*arrays): independent numpy
    args: tuple[Arg, ...]
    family: str
    dtypes: tuple[np.dtype, ...] = FLOATS
    diff_inputs: tuple[int, ...] = ()   # operands a gradient check differentiates (float only)
    rtol: float | None = None
    atol: float | None = None
    shapes: Any = None                  # optional hypothesis strategy of operand-shape tuples

    @property
    def differentiable(self) -> bool:
        return bool(self.diff_inputs)

    @property
    def int_inputs(self) -> tuple[int, ...]:
        return tuple(i for i, a in enumerate(self.args)
                     if a.dtype is not None and np.dtype(a.dtype).kind == "i")

    def make_inputs(self, rng: np.random.Generator, dtype=F32, shapes=None) -> tuple:
        shapes = shapes if shapes is not None else [a.shape for a in self.args]
        return tuple(np.asarray(a.gen(rng, tuple(s), np.dtype(a.dtype if a.dtype is not None
                                                              else dtype)))
                     for a, s in zip(self.args, shapes))

    def __repr__(self) -> str:
        return f"OpCase({self.name}, {self.op!r})"


CASES: list[OpCase] = []


def case(name, op, fn, expected, args, family, **kw) -> OpCase:
    c = OpCase(name, op, fn, expected, tuple(a if isinstance(a, Arg) else Arg(a) for a in args),
               family, **kw)
    assert all(x.name != name for x in CASES), f"duplicate case {name}"
    CASES.append(c)
    return c


def cases(family: str | None = None, op: Op | None = None) -> list[OpCase]:
    return [c for c in CASES if (family is None or c.family == family)
            and (op is None or c.op == op)]


def case_params(family: str, **kw) -> list:
    """pytest params (case, dtype) with readable ids, for `parametrize("case,dtype", ...)`."""
    return [pytest.param(c, d, id=f"{c.name}-{d.name}") for c in cases(family, **kw)
            for d in c.dtypes]


def ids(cs: Sequence[OpCase]) -> list[str]:
    return [c.name for c in cs]


# -- checking ---------------------------------------------------------------------------------

def compare(got, want, rtol=None, atol=None) -> None:
    """Same structure, same dtype, values close (NaNs in the same places)."""
    if isinstance(want, tuple):
        assert isinstance(got, tuple) and len(got) == len(want), (got, want)
        for g, w in zip(got, want):
            compare(g, w, rtol, atol)
        return
    got, want = np.asarray(got), np.asarray(want)
    assert got.dtype == want.dtype, f"dtype {got.dtype} != expected {want.dtype}"
    assert_close(got, want, rtol=rtol, atol=atol)


def check_case(case: OpCase, args: Sequence[np.ndarray], backend: str) -> None:
    got = run(case.fn, *args, backend=backend)
    with np.errstate(all="ignore"):
        want = case.expected(*[np.array(a, copy=True) for a in args])
    compare(got, want, case.rtol, case.atol)


def shape_error(fn, *args, backend: str) -> nnjit.ShapeError:
    """The ShapeError that compiling fn(*args) raises."""
    with pytest.raises(nnjit.ShapeError) as ei:
        run(fn, *args, backend=backend)
    return ei.value


def _shape_texts(shape) -> tuple[str, ...]:
    """A shape as the error messages may spell it: `(3, 4)` or `[3,4]` (IR type text)."""
    shape = tuple(shape)
    return str(shape), "[" + ",".join(map(str, shape)) + "]"


def assert_error_names(err: Exception, op: str, shapes: Sequence[tuple], line: int,
                       file: str | None = None) -> None:
    """`err` names the op, every shape in `shapes`, and the user's `file:line`."""
    file = file or inspect.currentframe().f_back.f_code.co_filename
    msg = str(err)
    assert msg.startswith(f"{op}:"), f"message does not start with the op name {op!r}: {msg}"
    for s in shapes:
        assert any(t in msg for t in _shape_texts(s)), f"message lacks shape {s}: {msg}"
    where = f"{os.path.basename(file)}:{line}"
    assert where in msg, f"message lacks the user line {where}: {msg}"


def here() -> int:
    """The caller's current line number."""
    return inspect.currentframe().f_back.f_lineno


# -- hypothesis strategies ---------------------------------------------------------------------

def shapes_st(min_dims=0, max_dims=4, min_side=0, max_side=4):
    return hnp.array_shapes(min_dims=min_dims, max_dims=max_dims, min_side=min_side,
                            max_side=max_side)


def broadcast_st(n: int, min_dims=0, max_dims=4, max_side=4):
    """n mutually broadcastable shapes: a base shape, with dims set to 1 or leading dims dropped
    in each operand (size-0 and size-1 dims included)."""
    return hnp.mutually_broadcastable_shapes(num_shapes=n, min_dims=min_dims, max_dims=max_dims,
                                             min_side=0, max_side=max_side).map(
        lambda b: b.input_shapes)


def _f64(fn):
    """numpy `fn` evaluated in float64 (ints and bools as they are), cast to the first
    operand's dtype: the correctly rounded answer for float32 operands."""
    def expected(*xs):
        out = fn(*[x.astype(F64) if x.dtype.kind == "f" else x for x in xs])
        return np.asarray(out).astype(xs[0].dtype)
    return expected


# -- elementwise -------------------------------------------------------------------------------
EW = "elementwise"
_UNARY_SHAPES = shapes_st().map(lambda s: (s,))
_BINARY_SHAPES = broadcast_st(2)


def _unary(name, op, fn, expected, gen=uniform(), dtypes=FLOATS, diff=True):
    return case(name, op, fn, expected, [Arg((2, 3, 4), gen)], EW, dtypes=dtypes,
                diff_inputs=(0,) if diff else (), shapes=_UNARY_SHAPES)


_unary("neg", Op.NEG, nnjit.negative, lambda x: -x, dtypes=NUMERIC)
_unary("exp", Op.EXP, nnjit.exp, _f64(np.exp))
_unary("log", Op.LOG, nnjit.log, _f64(np.log), uniform(0.5, 3.0))
_unary("sqrt", Op.SQRT, nnjit.sqrt, _f64(np.sqrt), uniform(0.5, 3.0))
_unary("abs", Op.ABS, nnjit.abs, lambda x: np.where(x < 0, -x, x), signed(), NUMERIC)
_unary("tanh", Op.TANH, nnjit.tanh, _f64(np.tanh))
_unary("softplus", Op.SOFTPLUS, nnjit.softplus,
       _f64(lambda x: np.array([math.log1p(math.exp(-abs(v))) + max(v, 0.0)
                                for v in x.ravel().tolist()]).reshape(x.shape)),
       uniform(-30, 30), FLOATS)
_unary("sigmoid", Op.SIGMOID, nnjit.sigmoid, _f64(lambda x: 1 / (1 + np.exp(-x))),
       uniform(-6, 6))
_unary("relu", Op.RELU, nnjit.relu, lambda x: np.where(x > 0, x, np.zeros_like(x)), signed(),
       NUMERIC)
_unary("logical_not", Op.NOT, nnjit.logical_not, lambda x: ~x, dtypes=(BOOL,), diff=False)
_unary("stop_gradient", Op.STOP_GRADIENT, nnjit.stop_gradient, lambda x: x.copy(),
       dtypes=ALL, diff=False)


def _trunc_to_int(x, dt):
    """float -> int: toward zero, saturating, NaN -> 0, spelled out element by element."""
    info = np.iinfo(dt)
    flat = [0 if v != v else info.max if v >= info.max else info.min if v <= info.min
            else int(v) for v in x.astype(F64).ravel().tolist()]
    return np.array(flat, dtype=dt).reshape(x.shape)


def _cast_expected(dt):
    dt = np.dtype(dt)

    def expected(x):
        if x.dtype.kind == "f" and dt.kind == "i":
            return _trunc_to_int(x, dt)
        if dt == BOOL:
            return x != 0
        return np.array([v for v in x.ravel().tolist()], dtype=dt).reshape(x.shape)
    return expected


for _dt, _from in [(F32, (F64,) + INTS + (BOOL,)), (F64, (F32,) + INTS + (BOOL,)),
                   (I32, FLOATS + (I64, BOOL)), (I64, FLOATS + (I32, BOOL)),
                   (BOOL, NUMERIC)]:
    # Only the cast to f64 is flagged for gradient checks: an f32 result hides a float64 finite
    # difference (eps ~1e-6) below its resolution.
    _unary(f"cast_to_{_dt.name}", Op.CAST, lambda x, _dt=_dt: nnjit.cast(x, _dt),
           _cast_expected(_dt), uniform(-4, 4), _from, diff=_dt == F64)


def _binary(name, op, fn, expected, gens=(uniform(), uniform()), dtypes=NUMERIC, diff=(0, 1)):
    return case(name, op, fn, expected, [Arg((2, 3, 4), gens[0]), Arg((3, 1), gens[1])], EW,
                dtypes=dtypes, diff_inputs=diff, shapes=_BINARY_SHAPES)


_binary("add", Op.ADD, nnjit.add, _f64(lambda a, b: a + b))
_binary("sub", Op.SUB, nnjit.subtract, _f64(lambda a, b: a - b))
_binary("mul", Op.MUL, nnjit.multiply, _f64(lambda a, b: a * b))
_binary("div", Op.DIV, nnjit.divide, _f64(lambda a, b: a / b), (uniform(), signed(0.5)),
        FLOATS)
_binary("pow", Op.POW, nnjit.power, _f64(lambda a, b: a ** b), (uniform(0.5, 2), uniform(-2, 2)),
        FLOATS)
def _remainder_expected(a, b):
    """Floor modulo, computed in f64 for floats and exactly (Python ints) otherwise; numpy
    makes x % 0 zero for ints."""
    if a.dtype.kind == "f":
        with np.errstate(all="ignore"):
            return np.remainder(a.astype(np.float64), b.astype(np.float64)).astype(a.dtype)
    pairs = zip(*(v.ravel().tolist() for v in np.broadcast_arrays(a, b)))
    return np.array([x % y if y else 0 for x, y in pairs], a.dtype).reshape(
        np.broadcast_shapes(a.shape, b.shape))


_binary("remainder", Op.REMAINDER, nnjit.remainder, _remainder_expected,
        (uniform(-4, 4), signed(0.5)), NUMERIC)
_APART = (grid(0.1), grid(0.35))
_binary("maximum", Op.MAXIMUM, nnjit.maximum, lambda a, b: np.where(a >= b, a, b), _APART)
_binary("minimum", Op.MINIMUM, nnjit.minimum, lambda a, b: np.where(a <= b, a, b), _APART)
_binary("logical_and", Op.AND, nnjit.logical_and, lambda a, b: a & b, dtypes=(BOOL,), diff=())
_binary("logical_or", Op.OR, nnjit.logical_or, lambda a, b: a | b, dtypes=(BOOL,), diff=())
_TIES = (grid(), grid())
for _name, _op, _fn, _exp in [
        ("equal", Op.EQ, nnjit.equal, lambda a, b: a == b),
        ("not_equal", Op.NE, nnjit.not_equal, lambda a, b: a != b),
        ("less", Op.LT, nnjit.less, lambda a, b: a < b),
        ("less_equal", Op.LE, nnjit.less_equal, lambda a, b: a <= b),
        ("greater", Op.GT, nnjit.greater, lambda a, b: a > b),
        ("greater_equal", Op.GE, nnjit.greater_equal, lambda a, b: a >= b)]:
    _binary(_name, _op, _fn, _exp, _TIES, ALL, diff=())

def _where_expected(c, x, y):
    shape = np.broadcast_shapes(c.shape, x.shape, y.shape)
    c, x, y = (np.broadcast_to(a, shape) for a in (c, x, y))
    out = np.empty(shape, x.dtype)
    for idx in np.ndindex(*shape):
        out[idx] = x[idx] if c[idx] else y[idx]
    return out


case("where", Op.WHERE, nnjit.where, _where_expected,
     [Arg((3, 1), uniform(), BOOL), Arg((1, 4)), Arg((2, 3, 4))], EW, dtypes=ALL,
     diff_inputs=(1, 2), shapes=broadcast_st(3))

# -- math ops (issue 12): each against Python's math (or a spelled-out rule), element by element


def _each(fn, out=F64):
    """`fn` applied to every element as a Python float, cast to the operand's dtype."""
    def expected(x):
        vals = [fn(v) for v in x.astype(out).ravel().tolist()]
        return np.array(vals, out).reshape(x.shape).astype(x.dtype)
    return expected


def half_steps(offset: float = 0.0) -> Gen:
    """offset + k/2 for k in [-8, 8], plus noise below 0.1 where offset != 0: exact ties of
    round (x.5), integers for floor/ceil, and with offset 0.25 values away from both."""
    def gen(rng, shape, dtype):
        k = rng.integers(-8, 9, shape) * 0.5 + offset
        noise = rng.uniform(-0.1, 0.1, shape) if offset else 0.0
        return (k + noise).astype(dtype)
    return gen


def _round_half_even(v: float) -> float:
    return float(round(v)) if math.isfinite(v) else v


_unary("sin", Op.SIN, nnjit.sin, _each(math.sin), uniform(-20, 20))
_unary("cos", Op.COS, nnjit.cos, _each(math.cos), uniform(-20, 20))
_unary("erf", Op.ERF, nnjit.erf, _each(math.erf), uniform(-4, 4))
_unary("expm1", Op.EXPM1, nnjit.expm1, _each(math.expm1), uniform(-3, 3))
_unary("log1p", Op.LOG1P, nnjit.log1p, _each(math.log1p), uniform(-0.9, 3))
_unary("floor", Op.FLOOR, nnjit.floor, _each(math.floor), half_steps(), diff=False)
_unary("ceil", Op.CEIL, nnjit.ceil, _each(math.ceil), half_steps(), diff=False)
_unary("round", Op.ROUND, nnjit.round, _each(_round_half_even), half_steps(), diff=False)
_unary("round_decimals", Op.ROUND, lambda x: nnjit.round(x, 1),
       lambda x: np.round(x.astype(F64) * 10.0).astype(x.dtype) / x.dtype.type(10.0),
       uniform(), diff=False)


def _floor_divide_expected(a, b):
    """Floats: the q with a == b*q + a % b, from Python's divmod (numpy's algorithm too);
    ints: floor division exactly, and numpy's x // 0 == 0."""
    pairs = zip(*(v.ravel().tolist() for v in np.broadcast_arrays(a, b)))
    shape = np.broadcast_shapes(a.shape, b.shape)
    if a.dtype.kind == "f":
        return np.array([divmod(x, y)[0] for x, y in pairs], F64).astype(a.dtype).reshape(shape)
    return np.array([x // y if y else 0 for x, y in pairs], a.dtype).reshape(shape)


_binary("floor_divide", Op.FLOOR_DIVIDE, lambda a, b: a // b, _floor_divide_expected,
        (uniform(-9, 9), signed(0.5)), NUMERIC, diff=())
_unary("sign", Op.WHERE, nnjit.sign, lambda x: np.array(
    [(v > 0) - (v < 0) for v in x.ravel().tolist()], x.dtype).reshape(x.shape), grid(), NUMERIC,
       diff=False)
case("clip", Op.MAXIMUM, lambda x: x.clip(-0.6, 0.8),
     lambda x: np.array([min(max(v, -0.6), 0.8) for v in x.astype(F64).ravel().tolist()])
     .astype(x.dtype).reshape(x.shape), [Arg((2, 3, 4), grid(0.1, 0.5))], EW,
     diff_inputs=(0,))
case("clip_upper_only", Op.MINIMUM, lambda x, hi: nnjit.clip(x, None, hi),
     lambda x, hi: np.where(x > hi, hi, x), [Arg((2, 3), grid(0.1)), Arg((3,), grid(0.35))], EW,
     dtypes=NUMERIC, diff_inputs=(0, 1))


def _erf_np(x):
    return np.vectorize(math.erf, otypes=[F64])(x)


for _name, _fn, _exp, _op in [
        ("gelu", nnjit.gelu, lambda x: 0.5 * x * (1 + _erf_np(x / math.sqrt(2))), Op.ERF),
        ("gelu_tanh", lambda x: nnjit.gelu(x, approximate=True),
         lambda x: 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3))),
         Op.TANH),
        ("leaky_relu", lambda x: nnjit.leaky_relu(x, 0.2), lambda x: np.where(x > 0, x, 0.2 * x),
         Op.WHERE),
        ("elu", lambda x: nnjit.elu(x, 1.5), lambda x: np.where(x > 0, x, 1.5 * np.expm1(x)),
         Op.EXPM1),
        ("selu", nnjit.selu, lambda x: 1.0507009873554805 * np.where(
            x > 0, x, 1.6732632423543772 * np.expm1(x)), Op.EXPM1),
        ("hard_sigmoid", nnjit.hard_sigmoid, lambda x: np.where(
            x <= -3, 0.0, np.where(x >= 3, 1.0, x / 6 + 0.5)), Op.WHERE)]:
    _unary(_name, _op, _fn, _f64(_exp), signed(0.1, 4.5) if _name != "hard_sigmoid"
           else half_steps(0.25))

# -- reductions --------------------------------------------------------------------------------
RED = "reduce"
_RED_SHAPE = (2, 3, 4)


def _axes(axis, ndim):
    if axis is None:
        return tuple(range(ndim))
    axis = (axis,) if isinstance(axis, int) else axis
    return tuple(sorted(a % ndim for a in axis))


def loop_reduce(x, axis, keepdims, fold, init):
    """Reduce by folding `fold` over the reduced axes one index at a time (starting at `init`)."""
    axes = _axes(axis, x.ndim)
    moved = np.moveaxis(x, axes, tuple(range(len(axes))))
    out = np.full(moved.shape[len(axes):], init, dtype=x.dtype)
    for idx in np.ndindex(*moved.shape[:len(axes)]):
        out = fold(out, moved[idx])
    if keepdims:
        out = out.reshape(tuple(1 if i in axes else d for i, d in enumerate(x.shape)))
    return out


def expect_sum(axis, keepdims):
    return lambda x: loop_reduce(x.astype(F64) if x.dtype.kind == "f" else x, axis, keepdims,
                                  lambda a, b: a + b, 0).astype(x.dtype)


def expect_max(axis, keepdims):
    """max with NaN propagation; an empty reduction gives -inf (ints: their minimum)."""
    def fold(a, b):
        bigger = np.where(a >= b, a, b)
        return np.where(np.isnan(a) | np.isnan(b), np.nan, bigger) if a.dtype.kind == "f" \
            else bigger

    def expected(x):
        low = -np.inf if x.dtype.kind == "f" else np.iinfo(x.dtype).min
        return loop_reduce(x, axis, keepdims, fold, low).astype(x.dtype)
    return expected


def expect_argmax(axis, keepdims):
    """Index of the first maximum; the first NaN counts as the maximum."""
    def expected(x):
        ax = axis % x.ndim
        moved = np.moveaxis(x, ax, -1)
        out = np.zeros(moved.shape[:-1], np.int64)
        for idx in np.ndindex(*moved.shape[:-1]):
            row = moved[idx].tolist()
            best = 0
            for k, v in enumerate(row):
                if row[best] != row[best]:
                    break
                if v != v or v > row[best]:
                    best = k
            out[idx] = best
        return np.expand_dims(out, ax) if keepdims else out
    return expected


for _axis, _kd in [(None, False), (1, False), (-1, True), ((0, -1), False), ((-3, 1), True)]:
    _tag = "all" if _axis is None else str(_axis).replace(" ", "").replace("-", "m").strip("()")
    _tag = _tag.replace(",", "_") + ("_keep" if _kd else "")
    case(f"sum_{_tag}", Op.SUM, lambda x, a=_axis, k=_kd: nnjit.sum(x, a, k),
         expect_sum(_axis, _kd),
         [Arg(_RED_SHAPE)], RED, dtypes=NUMERIC, diff_inputs=(0,),
         shapes=shapes_st(min_dims=3, max_dims=3))
    case(f"max_{_tag}", Op.MAX, lambda x, a=_axis, k=_kd: nnjit.max(x, a, k),
         expect_max(_axis, _kd),
         [Arg(_RED_SHAPE, distinct())], RED, dtypes=NUMERIC, diff_inputs=(0,),
         shapes=shapes_st(min_dims=3, max_dims=3))
for _axis, _kd in [(-1, False), (0, True), (1, False)]:
    case(f"argmax_{_axis}{'_keep' if _kd else ''}".replace("-", "m"), Op.ARGMAX,
         lambda x, a=_axis, k=_kd: nnjit.argmax(x, a, k), expect_argmax(_axis, _kd),
         [Arg(_RED_SHAPE, grid())], RED, dtypes=NUMERIC,
         shapes=shapes_st(min_dims=2, min_side=1))
case("mean_m1", Op.SUM, lambda x: nnjit.mean(x, -1),
     lambda x: (loop_reduce(x.astype(F64), -1, False, lambda a, b: a + b, 0) / x.shape[-1])
     .astype(x.dtype if x.dtype.kind == "f" else F32), [Arg(_RED_SHAPE)], RED,
     dtypes=NUMERIC, diff_inputs=(0,), shapes=shapes_st(min_dims=1, min_side=1))
case("min_0_2", Op.MAX, lambda x: nnjit.min(x, (0, 2)),
     lambda x: loop_reduce(x, (0, 2), False, lambda a, b: np.where(a <= b, a, b),
                            np.inf if x.dtype.kind == "f" else np.iinfo(x.dtype).max
                            ).astype(x.dtype),
     [Arg(_RED_SHAPE, distinct())], RED, dtypes=NUMERIC, diff_inputs=(0,),
     shapes=shapes_st(min_dims=3, max_dims=3))
case("logsumexp_m1", Op.MAX, lambda x: nnjit.logsumexp(x, -1),
     _f64(lambda x: np.log(np.exp(x).sum(-1))), [Arg(_RED_SHAPE)], RED, diff_inputs=(0,),
     shapes=shapes_st(min_dims=1, min_side=1))

# -- reductions (issue 12) ------------------------------------------------------------------------


def with_zeros(gen: Gen = uniform(0.5, 1.5)) -> Gen:
    """`gen`'s values with about a quarter set to 0 (prod's gradient at zeros)."""
    def make(rng, shape, dtype):
        x = gen(rng, shape, dtype)
        return np.where(rng.random(shape) < 0.25, 0, x).astype(dtype)
    return make


def expect_prod(axis, keepdims):
    return lambda x: loop_reduce(x.astype(F64) if x.dtype.kind == "f" else x, axis, keepdims,
                                  lambda a, b: a * b, 1).astype(x.dtype)


for _axis, _kd, _gen in [(None, False, uniform(0.5, 1.5)), (1, True, with_zeros()),
                         ((0, -1), False, with_zeros()), (-1, False, uniform(-2, 2))]:
    _tag = "all" if _axis is None else str(_axis).replace(" ", "").replace("-", "m").strip("()")
    case(f"prod_{_tag.replace(',', '_')}{'_keep' if _kd else ''}", Op.PROD,
         lambda x, a=_axis, k=_kd: nnjit.prod(x, a, k), expect_prod(_axis, _kd),
         [Arg(_RED_SHAPE, _gen)], RED, dtypes=NUMERIC, diff_inputs=(0,),
         shapes=shapes_st(min_dims=3, max_dims=3))


def expect_var(axis, ddof, keepdims):
    def expected(x):
        x64 = x.astype(F64)
        axes = _axes(axis, x.ndim)
        n = int(np.prod([x.shape[a] for a in axes]))
        m = loop_reduce(x64, axis, True, lambda a, b: a + b, 0) / n
        d = loop_reduce((x64 - m) ** 2, axis, keepdims, lambda a, b: a + b, 0)
        return (d / (n - ddof)).astype(x.dtype if x.dtype.kind == "f" else F32)
    return expected


case("var_1", Op.SUM, lambda x: nnjit.var(x, 1), expect_var(1, 0, False), [Arg(_RED_SHAPE)],
     RED, dtypes=NUMERIC, diff_inputs=(0,))
case("var_all_ddof1_keep", Op.SUM, lambda x: x.var(ddof=1, keepdims=True),
     expect_var(None, 1, True), [Arg(_RED_SHAPE)], RED, diff_inputs=(0,))
case("std_0_2", Op.SQRT, lambda x: x.std((0, 2)),
     lambda x: np.sqrt(expect_var((0, 2), 0, False)(x).astype(F64)).astype(x.dtype),
     [Arg(_RED_SHAPE)], RED, diff_inputs=(0,))


def expect_argmin(axis, keepdims):
    """Index of the first minimum; the first NaN counts as the minimum; None: flattened."""
    def expected(x):
        if axis is None:
            return expect_argmax(0, False)(-x.ravel() if x.dtype.kind == "f" else
                                           -x.ravel().astype(np.int64))
        return expect_argmax(axis, keepdims)(-x if x.dtype.kind == "f" else
                                             -x.astype(np.int64))
    return expected


for _axis, _kd in [(None, False), (1, True), (-1, False)]:
    case(f"argmin_{'all' if _axis is None else _axis}{'_keep' if _kd else ''}".replace("-", "m"),
         Op.ARGMAX, lambda x, a=_axis, k=_kd: nnjit.argmin(x, a, k), expect_argmin(_axis, _kd),
         [Arg(_RED_SHAPE, grid())], RED, dtypes=NUMERIC,
         shapes=shapes_st(min_dims=2, min_side=1))
for _name, _fn, _fold, _init in [("any", nnjit.any, lambda a, b: a | b, False),
                                 ("all", nnjit.all, lambda a, b: a & b, True)]:
    for _axis in (None, 1, (0, 2)):
        case(f"{_name}_{'x' if _axis is None else str(_axis).strip('()').replace(', ', '_')}",
             Op.MAX, lambda x, f=_fn, a=_axis: f(x, a),
             lambda x, a=_axis, f=_fold, i=_init: loop_reduce(x != 0, a, False, f, i),
             [Arg(_RED_SHAPE, grid(0.0, 1.0, -1, 1))], RED, dtypes=ALL,
             shapes=shapes_st(min_dims=3, max_dims=3))


def expect_cumsum(axis):
    """Running sums along `axis` in float64 (ints exactly; bools count as i64)."""
    def expected(x):
        out_dt = np.dtype(np.int64) if x.dtype == BOOL else x.dtype
        v = x.astype(F64 if x.dtype.kind == "f" else np.int64)
        v = v.ravel() if axis is None else np.moveaxis(v, axis, -1)
        out = np.zeros(v.shape, v.dtype)
        run = np.zeros(v.shape[:-1], v.dtype)
        for i in range(v.shape[-1]):
            run = run + v[..., i]
            out[..., i] = run
        return (out if axis is None else np.moveaxis(out, -1, axis)).astype(out_dt)
    return expected


for _axis, _shape in [(1, _RED_SHAPE), (None, _RED_SHAPE), (0, (150, 2)), (-1, (2, 4100))]:
    _tag = f"cumsum_{'flat' if _axis is None else str(_axis).replace('-', 'm')}_{_shape[-1]}"
    case(_tag, Op.MATMUL, lambda x, a=_axis: nnjit.cumsum(x, a), expect_cumsum(_axis),
         [Arg(_shape)], RED, diff_inputs=(0,) if _shape[-1] < 1000 else ())
    case(_tag + "_int", Op.SUM, lambda x, a=_axis: x.cumsum(a), expect_cumsum(_axis),
         [Arg(_shape)], RED, dtypes=INTS + (BOOL,))

# -- contractions ------------------------------------------------------------------------------
CON = "contraction"


def _mm(spec):
    return _f64(lambda a, b: np.einsum(spec, a, b))


for _name, _sa, _sb, _spec in [
        ("matmul_2d", (3, 4), (4, 5), "ij,jk->ik"),
        ("matmul_batch_bcast", (2, 1, 3, 4), (3, 4, 2), "...ij,...jk->...ik"),
        ("matmul_k0", (2, 0), (0, 3), "ij,jk->ik"),
        ("matmul_vec_mat", (4,), (2, 4, 3), "j,...jk->...k"),
        ("matmul_mat_vec", (2, 3, 4), (4,), "...ij,j->...i"),
        ("matmul_vec_vec", (4,), (4,), "j,j->")]:
    case(_name, Op.MATMUL, nnjit.matmul, _mm(_spec), [_sa, _sb], CON, diff_inputs=(0, 1))


def conv_out(size, lo, hi, k, s, d):
    return (size + lo + hi - d * (k - 1) - 1) // s + 1


def _taps(x_hw, dy_hw, k_hw, stride, padding, dilation):
    """Yield (i, j, a, b, r, c): output (i, j) reads input (r, c) through tap (a, b), for every
    in-bounds input position (padding reads nothing)."""
    (ho, wo), (kh, kw), (h, w) = dy_hw, k_hw, x_hw
    for i in range(ho):
        for j in range(wo):
            for a in range(kh):
                for b in range(kw):
                    r = i * stride[0] + a * dilation[0] - padding[0][0]
                    c = j * stride[1] + b * dilation[1] - padding[1][0]
                    if 0 <= r < h and 0 <= c < w:
                        yield i, j, a, b, r, c


def naive_conv2d(x, w, stride=(1, 1), padding=((0, 0), (0, 0)), dilation=(1, 1)):
    ho = conv_out(x.shape[2], *padding[0], w.shape[2], stride[0], dilation[0])
    wo = conv_out(x.shape[3], *padding[1], w.shape[3], stride[1], dilation[1])
    out = np.zeros((x.shape[0], w.shape[0], ho, wo))
    for i, j, a, b, r, c in _taps(x.shape[2:], (ho, wo), w.shape[2:], stride, padding, dilation):
        out[:, :, i, j] += x[:, :, r, c].astype(F64) @ w[:, :, a, b].T.astype(F64)
    return out.astype(x.dtype)


def naive_conv2d_grad_input(dy, w, x_shape, stride, padding, dilation):
    dx = np.zeros(x_shape)
    for i, j, a, b, r, c in _taps(x_shape[2:], dy.shape[2:], w.shape[2:], stride, padding,
                                  dilation):
        dx[:, :, r, c] += dy[:, :, i, j].astype(F64) @ w[:, :, a, b].astype(F64)
    return dx.astype(dy.dtype)


def naive_conv2d_grad_weight(x, dy, w_shape, stride, padding, dilation):
    dw = np.zeros(w_shape)
    for i, j, a, b, r, c in _taps(x.shape[2:], dy.shape[2:], w_shape[2:], stride, padding,
                                  dilation):
        dw[:, :, a, b] += dy[:, :, i, j].T.astype(F64) @ x[:, :, r, c].astype(F64)
    return dw.astype(x.dtype)


# (name, x shape, w shape, DSL kwargs, explicit (stride, padding pairs, dilation))
CONV_CONFIGS = [
    ("basic", (2, 2, 5, 5), (3, 2, 3, 3), {}, ((1, 1), ((0, 0), (0, 0)), (1, 1))),
    ("stride2_pad1", (1, 3, 6, 5), (2, 3, 3, 3), dict(stride=2, padding=1),
     ((2, 2), ((1, 1), (1, 1)), (1, 1))),
    ("dilation2", (1, 2, 7, 6), (2, 2, 3, 2), dict(dilation=2, padding=(1, 0)),
     ((1, 1), ((1, 1), (0, 0)), (2, 2))),
    ("asym_pad", (2, 1, 4, 5), (2, 1, 2, 3), dict(padding=((1, 0), (0, 2)), stride=(1, 2)),
     ((1, 2), ((1, 0), (0, 2)), (1, 1))),
    ("same_even", (1, 2, 5, 4), (3, 2, 2, 4), dict(padding="same"),
     ((1, 1), ((0, 1), (1, 2)), (1, 1))),
    ("same_dilated", (1, 1, 5, 5), (1, 1, 3, 3), dict(padding="same", dilation=(2, 1)),
     ((1, 1), ((2, 2), (1, 1)), (2, 1))),
    ("valid_1x1", (2, 3, 3, 2), (4, 3, 1, 1), dict(padding="valid"),
     ((1, 1), ((0, 0), (0, 0)), (1, 1))),
]
for _name, _xs, _ws, _kw, _attrs in CONV_CONFIGS:
    case(f"conv2d_{_name}", Op.CONV2D, lambda x, w, kw=_kw: nnjit.conv2d(x, w, **kw),
         lambda x, w, a=_attrs: naive_conv2d(x, w, *a), [_xs, _ws], CON, diff_inputs=(0, 1))
    _dy = (_xs[0], _ws[0]) + tuple(conv_out(_xs[2 + i], *_attrs[1][i], _ws[2 + i], _attrs[0][i],
                                            _attrs[2][i]) for i in range(2))
    case(f"conv2d_grad_input_{_name}", Op.CONV2D_GRAD_INPUT,
         lambda dy, w, s=_xs, a=_attrs: P.conv2d_grad_input(dy, w, s, *a),
         lambda dy, w, s=_xs, a=_attrs: naive_conv2d_grad_input(dy, w, s, *a), [_dy, _ws], CON,
         diff_inputs=(0, 1))
    case(f"conv2d_grad_weight_{_name}", Op.CONV2D_GRAD_WEIGHT,
         lambda x, dy, s=_ws, a=_attrs: P.conv2d_grad_weight(x, dy, s, *a),
         lambda x, dy, s=_ws, a=_attrs: naive_conv2d_grad_weight(x, dy, s, *a), [_xs, _dy], CON,
         diff_inputs=(0, 1))
case("conv2d_bias", Op.CONV2D, lambda x, w, b: nnjit.conv2d(x, w, b, padding=1),
     lambda x, w, b: naive_conv2d(x, w, (1, 1), ((1, 1), (1, 1))) + b.reshape(1, -1, 1, 1),
     [(1, 2, 4, 4), (3, 2, 3, 3), (3,)], CON, diff_inputs=(0, 1, 2))

@st.composite
def conv_params_st(draw, max_hw=6):
    """(x shape, w shape, stride, padding pairs, dilation) of a valid conv2d: asymmetric
    padding, strides that skip input rows, dilations, 1x1 and rectangular kernels."""
    n, c, o = draw(st.integers(1, 2)), draw(st.integers(1, 3)), draw(st.integers(1, 3))
    k = [draw(st.integers(1, 3)) for _ in range(2)]
    stride = tuple(draw(st.integers(1, 3)) for _ in range(2))
    dil = tuple(draw(st.integers(1, 2)) for _ in range(2))
    pads = tuple((draw(st.integers(0, 2)), draw(st.integers(0, 2))) for _ in range(2))
    hw = []
    for i in range(2):
        need = max(1, dil[i] * (k[i] - 1) + 1 - sum(pads[i]))
        hw.append(draw(st.integers(need, max(need, max_hw))))
    return (n, c) + tuple(hw), (o, c) + tuple(k), stride, pads, dil


# -- windows -----------------------------------------------------------------------------------
WIN = "window"


def _windows(x_hw, kernel, stride, padding):
    """Yield (i, j, rows, cols): the in-bounds input ranges pooled into output (i, j)."""
    (h, w), (kh, kw), (sh, sw), ((pt, pb), (pl, pr)) = x_hw, kernel, stride, padding
    for i in range(conv_out(h, pt, pb, kh, sh, 1)):
        for j in range(conv_out(w, pl, pr, kw, sw, 1)):
            r0, c0 = i * sh - pt, j * sw - pl
            yield i, j, range(max(r0, 0), min(r0 + kh, h)), range(max(c0, 0), min(c0 + kw, w))


def _pool_out(x_shape, kernel, stride, padding):
    return x_shape[:2] + tuple(conv_out(x_shape[2 + i], *padding[i], kernel[i], stride[i], 1)
                               for i in range(2))


def naive_max_pool2d(x, kernel, stride, padding):
    out = np.zeros(_pool_out(x.shape, kernel, stride, padding), x.dtype)
    for i, j, rows, cols in _windows(x.shape[2:], kernel, stride, padding):
        win = x[:, :, rows.start:rows.stop, cols.start:cols.stop].reshape(x.shape[:2] + (-1,))
        out[:, :, i, j] = np.where(np.isnan(win).any(-1), np.nan, win.max(-1))
    return out


def naive_avg_pool2d(x, kernel, stride, padding, count_include_pad=True):
    out = np.zeros(_pool_out(x.shape, kernel, stride, padding))
    for i, j, rows, cols in _windows(x.shape[2:], kernel, stride, padding):
        total = x[:, :, rows.start:rows.stop, cols.start:cols.stop].astype(F64).sum((2, 3))
        count = kernel[0] * kernel[1] if count_include_pad else len(rows) * len(cols)
        out[:, :, i, j] = total / count
    return out.astype(x.dtype)


def naive_max_pool2d_grad(x, dy, kernel, stride, padding):
    """dy of each window goes to its first maximum in row-major order (a NaN is the maximum)."""
    dx = np.zeros(x.shape)
    for i, j, rows, cols in _windows(x.shape[2:], kernel, stride, padding):
        for n in range(x.shape[0]):
            for ch in range(x.shape[1]):
                pos = [(r, c) for r in rows for c in cols]
                vals = [x[n, ch, r, c] for r, c in pos]
                best = 0
                for k, v in enumerate(vals):
                    if vals[best] != vals[best]:
                        break
                    if v != v or v > vals[best]:
                        best = k
                dx[(n, ch) + pos[best]] += dy[n, ch, i, j]
    return dx.astype(x.dtype)


def naive_avg_pool2d_grad(dy, x_shape, kernel, stride, padding, count_include_pad=True):
    dx = np.zeros(x_shape)
    for i, j, rows, cols in _windows(x_shape[2:], kernel, stride, padding):
        count = kernel[0] * kernel[1] if count_include_pad else len(rows) * len(cols)
        dx[:, :, rows.start:rows.stop, cols.start:cols.stop] += (
            dy[:, :, i, j].astype(F64) / count)[:, :, None, None]
    return dx.astype(dy.dtype)


# (name, x shape, kernel, stride, padding pairs): overlapping windows, padding, rectangles.
POOL_CONFIGS = [
    ("k2s2", (2, 2, 4, 6), (2, 2), (2, 2), ((0, 0), (0, 0))),
    ("k2s2_ragged", (2, 1, 5, 7), (2, 2), (2, 2), ((0, 0), (0, 0))),   # a row and column left
    ("k2x1_s3x2_gaps", (1, 2, 8, 5), (2, 1), (3, 2), ((0, 0), (0, 0))),
    ("k3s1p1_overlap", (1, 2, 5, 4), (3, 3), (1, 1), ((1, 1), (1, 1))),
    ("k3s2_asym_pad", (1, 3, 6, 5), (3, 3), (2, 2), ((1, 0), (0, 1))),
    ("k2x3_s1x2", (2, 1, 4, 7), (2, 3), (1, 2), ((1, 0), (1, 1))),
    ("k1", (1, 2, 3, 3), (1, 1), (1, 1), ((0, 0), (0, 0))),
]
for _name, _xs, _k, _s, _p in POOL_CONFIGS:
    _ys = _pool_out(_xs, _k, _s, _p)
    case(f"max_pool2d_{_name}", Op.MAX_POOL2D,
         lambda x, k=_k, s=_s, p=_p: nnjit.max_pool2d(x, k, s, p),
         lambda x, k=_k, s=_s, p=_p: naive_max_pool2d(x, k, s, p), [Arg(_xs, distinct())], WIN,
         diff_inputs=(0,))
    for _cip in (True, False):
        case(f"avg_pool2d_{_name}{'' if _cip else '_nopad'}", Op.AVG_POOL2D,
             lambda x, k=_k, s=_s, p=_p, c=_cip: nnjit.avg_pool2d(x, k, s, p, c),
             lambda x, k=_k, s=_s, p=_p, c=_cip: naive_avg_pool2d(x, k, s, p, c), [_xs], WIN,
             diff_inputs=(0,))
        case(f"avg_pool2d_grad_{_name}{'' if _cip else '_nopad'}", Op.AVG_POOL2D_GRAD,
             lambda dy, xs=_xs, k=_k, s=_s, p=_p, c=_cip: P.avg_pool2d_grad(dy, xs, k, s, p, c),
             lambda dy, xs=_xs, k=_k, s=_s, p=_p, c=_cip: naive_avg_pool2d_grad(dy, xs, k, s, p,
                                                                                 c),
             [_ys], WIN, diff_inputs=(0,))
    # Grid values make ties inside windows: the first maximum (row-major) takes dy.
    case(f"max_pool2d_grad_{_name}", Op.MAX_POOL2D_GRAD,
         lambda x, dy, k=_k, s=_s, p=_p: P.max_pool2d_grad(x, dy, k, s, p),
         lambda x, dy, k=_k, s=_s, p=_p: naive_max_pool2d_grad(x, dy, k, s, p),
         [Arg(_xs, grid()), _ys], WIN)

@st.composite
def pool_params_st(draw, max_hw=6):
    """(x shape, kernel, stride, padding pairs) of a valid pooling: padding up to kernel // 2 on
    each side independently, strides smaller than the kernel (overlapping windows) or larger."""
    k = tuple(draw(st.integers(1, 3)) for _ in range(2))
    stride = tuple(draw(st.integers(1, 3)) for _ in range(2))
    pads = tuple((draw(st.integers(0, kk // 2)), draw(st.integers(0, kk // 2))) for kk in k)
    hw = tuple(draw(st.integers(max(1, kk - sum(p)), max_hw)) for kk, p in zip(k, pads))
    return (draw(st.integers(1, 2)), draw(st.integers(1, 2))) + hw, k, stride, pads

# -- convolution family (issue 12) --
# Grouped convolutions, conv1d, conv_transpose2d, upsample and global pooling, each against a
# numpy loop of its own (torch's formulas written out, never the OpDef references).


def naive_grouped(fn, a, b, groups: int, axis_b: int, **kw):
    """fn applied to channel block k of `a` (dim 1) and block k of `b` (dim `axis_b`),
    concatenated along the result's channels (or its out-channels for a weight gradient)."""
    parts = [fn(ak, bk, **kw) for ak, bk in zip(np.split(a, groups, 1),
                                                 np.split(b, groups, axis_b))]
    return np.concatenate(parts, axis=0 if fn is naive_conv2d_grad_weight else 1)


def naive_conv_transpose2d(x, w, stride, padding, output_padding, dilation, groups):
    """Every input pixel scattered through every tap: out[n, co, i*s - p + a*d, j*s - p + b*d]
    += x[n, ci, i, j] * w[ci, co, a, b], for ci and co in the same group."""
    n, cin, h, wd = x.shape
    cog, kh, kw = w.shape[1:]
    (sh, sw), (ph, pw), (oh, ow), (dh, dw) = stride, padding, output_padding, dilation
    ho = (h - 1) * sh - 2 * ph + dh * (kh - 1) + oh + 1
    wo = (wd - 1) * sw - 2 * pw + dw * (kw - 1) + ow + 1
    out = np.zeros((n, cog * groups, ho, wo))
    cig = cin // groups
    for g in range(groups):
        xg = x[:, g * cig:(g + 1) * cig].astype(F64)
        wg = w[g * cig:(g + 1) * cig].astype(F64)
        for i in range(h):
            for j in range(wd):
                for a in range(kh):
                    for b in range(kw):
                        r, c = i * sh - ph + a * dh, j * sw - pw + b * dw
                        if 0 <= r < ho and 0 <= c < wo:
                            out[:, g * cog:(g + 1) * cog, r, c] += xg[:, :, i, j] @ wg[:, :, a, b]
    return out.astype(x.dtype)


def naive_conv1d(x, w, stride, padding, dilation, groups):
    """out[n, o, t] = sum over the group's channels and taps of x[n, c, t*s - lo + k*d] * w."""
    n, c, length = x.shape
    o, cg, k = w.shape
    lo, hi = padding
    lout = (length + lo + hi - dilation * (k - 1) - 1) // stride + 1
    og = o // groups
    out = np.zeros((n, o, lout))
    for oc in range(o):
        g = oc // og
        for t in range(lout):
            for kk in range(k):
                src = t * stride - lo + kk * dilation
                if 0 <= src < length:
                    out[:, oc, t] += x[:, g * cg:(g + 1) * cg, src].astype(F64) @ w[oc, :, kk]
    return out.astype(x.dtype)


def naive_nearest(x, size=None, scale=None):
    """torch 'nearest': source index floor(dst * in / out), or floor(dst / scale_factor)."""
    out = x
    for ax in (2, 3):
        n_in = x.shape[ax]
        if size is not None:
            idx = [min(d * n_in // size[ax - 2], n_in - 1) for d in range(size[ax - 2])]
        else:
            n_out = int(math.floor(n_in * scale[ax - 2]))
            idx = [min(int(math.floor(d / scale[ax - 2])), n_in - 1) for d in range(n_out)]
        out = np.take(out, idx, axis=ax)
    return out


def naive_bilinear(x, size, align_corners, scale=None):
    """torch 'bilinear' written per output pixel: source coordinate, its two neighbours along
    each axis, and the four weights."""
    n, c, h, w = x.shape
    ho, wo = size if size is not None else (int(math.floor(h * scale[0])),
                                            int(math.floor(w * scale[1])))

    def src(d, n_in, n_out, axis):
        if align_corners:
            return d * (n_in - 1) / (n_out - 1) if n_out > 1 else 0.0
        ratio = n_in / n_out if scale is None else 1.0 / scale[axis]
        return max((d + 0.5) * ratio - 0.5, 0.0)

    out = np.zeros((n, c, ho, wo))
    for i in range(ho):
        y = src(i, h, ho, 0)
        y0 = min(int(math.floor(y)), h - 1)
        y1, ly = min(y0 + 1, h - 1), y - y0
        for j in range(wo):
            xx = src(j, w, wo, 1)
            x0 = min(int(math.floor(xx)), w - 1)
            x1, lx = min(x0 + 1, w - 1), xx - x0
            out[:, :, i, j] = ((1 - ly) * ((1 - lx) * x[:, :, y0, x0] + lx * x[:, :, y0, x1])
                               + ly * ((1 - lx) * x[:, :, y1, x0] + lx * x[:, :, y1, x1]))
    return out.astype(x.dtype)


# (name, x shape, w shape, groups, explicit (stride, padding pairs, dilation))
GROUPED_CONV_CONFIGS = [
    ("groups2", (2, 4, 5, 5), (6, 2, 3, 3), 2, ((1, 1), ((1, 1), (1, 1)), (1, 1))),
    ("depthwise_stride2", (1, 3, 6, 5), (3, 1, 3, 3), 3, ((2, 2), ((1, 0), (0, 1)), (1, 1))),
    ("depthwise_mult2_dilated", (2, 2, 5, 6), (4, 1, 2, 2), 2, ((1, 1), ((0, 0), (1, 1)),
                                                                (2, 1))),
    # 8 x 9 channels per group: past DIRECT_MAX_GROUP, so these run as batched GEMMs
    ("groups2_gemm", (1, 16, 4, 5), (18, 8, 2, 3), 2, ((2, 1), ((1, 0), (1, 1)), (1, 1))),
    ("groups2_1x1_gemm", (2, 16, 3, 3), (18, 8, 1, 1), 2, ((1, 1), ((0, 0), (0, 0)), (1, 1))),
]
for _name, _xs, _ws, _g, _attrs in GROUPED_CONV_CONFIGS:
    _a = dict(stride=_attrs[0], padding=_attrs[1], dilation=_attrs[2])
    case(f"conv2d_{_name}", Op.CONV2D, lambda x, w, a=_a, g=_g: nnjit.conv2d(x, w, groups=g, **a),
         lambda x, w, a=_a, g=_g: naive_grouped(naive_conv2d, x, w, g, 0, **a), [_xs, _ws], CON,
         diff_inputs=(0, 1))
    _dy = (_xs[0], _ws[0]) + tuple(conv_out(_xs[2 + i], *_attrs[1][i], _ws[2 + i], _attrs[0][i],
                                            _attrs[2][i]) for i in range(2))
    _gxs = (_xs[0], _xs[1] // _g) + _xs[2:]
    _gws = (_ws[0] // _g,) + _ws[1:]
    case(f"conv2d_grad_input_{_name}", Op.CONV2D_GRAD_INPUT,
         lambda dy, w, s=_xs, a=_attrs, g=_g: P.conv2d_grad_input(dy, w, s, *a, groups=g),
         lambda dy, w, s=_gxs, a=_a, g=_g: naive_grouped(naive_conv2d_grad_input, dy, w, g, 0,
                                                         x_shape=s, **a),
         [_dy, _ws], CON, diff_inputs=(0, 1))
    case(f"conv2d_grad_weight_{_name}", Op.CONV2D_GRAD_WEIGHT,
         lambda x, dy, s=_ws, a=_attrs, g=_g: P.conv2d_grad_weight(x, dy, s, *a, groups=g),
         lambda x, dy, s=_gws, a=_a, g=_g: naive_grouped(naive_conv2d_grad_weight, x, dy, g, 1,
                                                         w_shape=s, **a),
         [_xs, _dy], CON, diff_inputs=(0, 1))
case("conv2d_depthwise_bias_relu", Op.CONV2D,
     lambda x, w, b: nnjit.relu(nnjit.conv2d(x, w, b, padding=1, groups=2)),
     lambda x, w, b: np.maximum(naive_grouped(naive_conv2d, x, w, 2, 0, stride=(1, 1),
                                              padding=((1, 1), (1, 1)), dilation=(1, 1))
                                + b.reshape(1, -1, 1, 1), 0),
     [(1, 2, 4, 4), Arg((2, 1, 3, 3), signed()), (2,)], CON)

# (name, x shape, w shape, DSL kwargs, explicit (stride, (lo, hi), dilation, groups))
CONV1D_CONFIGS = [
    ("basic", (2, 3, 7), (4, 3, 3), {}, (1, (0, 0), 1, 1)),
    ("stride2_pad1_dil2_groups", (1, 4, 9), (6, 2, 3), dict(stride=2, padding=1, dilation=2,
                                                            groups=2), (2, (1, 1), 2, 2)),
    ("same_depthwise", (2, 3, 6), (3, 1, 4), dict(padding="same", groups=3), (1, (1, 2), 1, 3)),
]
for _name, _xs, _ws, _kw, _attrs in CONV1D_CONFIGS:
    case(f"conv1d_{_name}", Op.CONV2D, lambda x, w, kw=_kw: nnjit.conv1d(x, w, **kw),
         lambda x, w, a=_attrs: naive_conv1d(x, w, *a), [_xs, _ws], CON, diff_inputs=(0, 1))
case("conv1d_bias", Op.CONV2D, lambda x, w, b: nnjit.conv1d(x, w, b, padding=((2, 0),)),
     lambda x, w, b: naive_conv1d(x, w, 1, (2, 0), 1, 1) + b.reshape(1, -1, 1),
     [(1, 2, 5), (3, 2, 2), (3,)], CON, diff_inputs=(0, 1, 2))

# (name, x shape, w shape [Cin, Cout/g, kh, kw], stride, padding, output_padding, dilation, g)
CONV_TRANSPOSE_CONFIGS = [
    ("basic", (2, 3, 3, 4), (3, 2, 3, 3), (1, 1), (0, 0), (0, 0), (1, 1), 1),
    ("stride2_pad1_outpad1", (1, 2, 3, 3), (2, 3, 3, 3), (2, 2), (1, 1), (1, 1), (1, 1), 1),
    ("groups2_rect", (2, 4, 3, 2), (4, 1, 2, 3), (2, 1), (0, 1), (1, 0), (1, 1), 2),
    ("outpad_past_stride", (1, 2, 3, 3), (2, 2, 3, 2), (1, 2), (1, 0), (1, 1), (2, 1), 1),
    ("depthwise_stride3", (1, 3, 2, 3), (3, 1, 2, 2), (3, 3), (0, 1), (2, 0), (1, 1), 3),
]
for _name, _xs, _ws, _s, _p, _op, _d, _g in CONV_TRANSPOSE_CONFIGS:
    case(f"conv_transpose2d_{_name}", Op.CONV2D_GRAD_INPUT,
         lambda x, w, s=_s, p=_p, op=_op, d=_d, g=_g: nnjit.conv_transpose2d(
             x, w, stride=s, padding=p, output_padding=op, groups=g, dilation=d),
         lambda x, w, s=_s, p=_p, op=_op, d=_d, g=_g: naive_conv_transpose2d(x, w, s, p, op, d,
                                                                              g),
         [_xs, _ws], CON, diff_inputs=(0, 1))
case("conv_transpose2d_bias", Op.CONV2D_GRAD_INPUT,
     lambda x, w, b: nnjit.conv_transpose2d(x, w, b, stride=2),
     lambda x, w, b: naive_conv_transpose2d(x, w, (2, 2), (0, 0), (0, 0), (1, 1), 1)
     + b.reshape(1, -1, 1, 1), [(1, 2, 3, 3), (2, 3, 2, 2), (3,)], CON, diff_inputs=(0, 1, 2))

# (name, x shape, upsample kwargs, the primitive it runs as)
NEAREST_CONFIGS = [
    ("x2", (2, 2, 3, 4), dict(scale_factor=2), Op.BROADCAST_TO),
    ("x3_by_x1", (1, 2, 2, 3), dict(scale_factor=(3, 1)), Op.BROADCAST_TO),
    ("size_uneven", (1, 2, 3, 5), dict(size=(7, 3)), Op.TAKE),
    ("scale_1_5", (2, 1, 4, 3), dict(scale_factor=1.5), Op.TAKE),
]
for _name, _xs, _kw, _op in NEAREST_CONFIGS:
    case(f"upsample_nearest_{_name}", _op, lambda x, kw=_kw: nnjit.upsample(x, **kw),
         lambda x, kw=_kw: naive_nearest(x, kw.get("size"), None if "size" in kw else (
             (kw["scale_factor"],) * 2 if np.isscalar(kw["scale_factor"])
             else kw["scale_factor"])),
         [_xs], WIN, dtypes=NUMERIC, diff_inputs=(0,))
for _name, _xs, _size, _scale in [("x2", (2, 2, 3, 4), (6, 8), None),
                                  ("down_uneven", (1, 2, 5, 7), (3, 4), None),
                                  ("scale_2_5", (1, 1, 2, 3), None, (2.5, 2.5))]:
    for _ac in (False, True):
        case(f"upsample_bilinear_{_name}{'_align' if _ac else ''}", Op.TAKE,
             lambda x, s=_size, f=_scale, ac=_ac: nnjit.upsample(
                 x, s, None if f is None else f[0], mode="bilinear", align_corners=ac),
             lambda x, s=_size, f=_scale, ac=_ac: naive_bilinear(x, s, ac, f), [_xs], WIN,
             diff_inputs=(0,))

case("global_avg_pool2d", Op.SUM, nnjit.global_avg_pool2d,
     lambda x: x.astype(F64).mean((2, 3), keepdims=True).astype(x.dtype), [(2, 3, 4, 5)], WIN,
     diff_inputs=(0,))
case("global_max_pool2d", Op.MAX, nnjit.global_max_pool2d,
     lambda x: x.max((2, 3), keepdims=True), [Arg((2, 3, 3, 4), distinct())], WIN,
     dtypes=NUMERIC, diff_inputs=(0,))
case("adaptive_avg_pool2d_2x3", Op.AVG_POOL2D, lambda x: nnjit.adaptive_avg_pool2d(x, (2, 3)),
     lambda x: x.astype(F64).reshape(1, 2, 2, 2, 3, 2).mean((3, 5)).astype(x.dtype),
     [(1, 2, 4, 6)], WIN, diff_inputs=(0,))
case("adaptive_max_pool2d_1", Op.MAX, lambda x: nnjit.adaptive_max_pool2d(x, 1),
     lambda x: x.max((2, 3), keepdims=True), [Arg((2, 2, 3, 3), distinct())], WIN,
     diff_inputs=(0,))


# -- data movement -----------------------------------------------------------------------------
MOV = "movement"


def _mov(name, op, fn, expected, args, dtypes=ALL, diff=(0,), **kw):
    return case(name, op, fn, expected, args, MOV, dtypes=dtypes,
                diff_inputs=diff, **kw)


_mov("reshape_m1", Op.RESHAPE, lambda x: nnjit.reshape(x, (4, -1)),
     lambda x: np.array(x.ravel().tolist(), x.dtype).reshape(4, 6), [(2, 3, 4)])
_mov("reshape_flat", Op.RESHAPE, lambda x: x.reshape(-1), lambda x: x.ravel(), [(2, 3, 4)])
_mov("reshape_to_scalar", Op.RESHAPE, lambda x: x.reshape(()), lambda x: x.ravel()[0],
     [(1, 1, 1)])
_mov("reshape_size0", Op.RESHAPE, lambda x: x.reshape(3, 0, 2), lambda x: np.zeros((3, 0, 2),
                                                                                   x.dtype),
     [(0, 6)])


def permuted(x, perm):
    """x transposed by `perm`, element by element."""
    perm = [p % x.ndim for p in perm]
    out = np.empty(tuple(x.shape[p] for p in perm), x.dtype)
    for idx in np.ndindex(*x.shape):
        out[tuple(idx[p] for p in perm)] = x[idx]
    return out


_mov("transpose_201", Op.TRANSPOSE, lambda x: nnjit.transpose(x, (2, 0, 1)),
     lambda x: permuted(x, (2, 0, 1)), [(2, 3, 4)])
_mov("transpose_neg_axes", Op.TRANSPOSE, lambda x: x.transpose(-1, 0, -2),
     lambda x: permuted(x, (-1, 0, -2)), [(2, 3, 4)])
_mov("transpose_T", Op.TRANSPOSE, lambda x: x.T, lambda x: permuted(x, (2, 1, 0)),
     [(2, 1, 3)])
_mov("broadcast_to", Op.BROADCAST_TO, lambda x: nnjit.broadcast_to(x, (2, 3, 4)),
     lambda x: x + np.zeros((2, 3, 4), x.dtype), [(3, 1)])
_mov("broadcast_scalar", Op.BROADCAST_TO, lambda x: nnjit.broadcast_to(x, (2, 0, 3)),
     lambda x: np.full((2, 0, 3), x, x.dtype), [()])
_mov("concat_m1", Op.CONCAT, lambda a, b, c: nnjit.concat([a, b, c], axis=-1),
     lambda a, b, c: np.hstack([a, b, c]),
     [(2, 3), (2, 0), (2, 2)], diff=(0, 1, 2))
_mov("concat_0", Op.CONCAT, lambda a, b: nnjit.concat([a, b]),
     lambda a, b: np.array(a.tolist() + b.tolist(), a.dtype), [(1, 3), (3, 3)], diff=(0, 1))
for _name, _idx in [("steps", (slice(1, None), slice(None, None, 2))),
                    ("neg_steps", (slice(None, None, -1), slice(3, 0, -2))),
                    ("empty", (slice(3, 1), slice(None))),
                    ("neg_step_empty", (slice(-10, None, -1),)),
                    ("int_ellipsis", (Ellipsis, -1)),
                    ("none_int", (None, 1, slice(-3, None)))]:
    _mov(f"slice_{_name}", Op.SLICE, lambda x, i=_idx: x[i], lambda x, i=_idx: x[i].copy(),
         [(4, 5)])
_mov("pad", Op.PAD, lambda x: nnjit.pad(x, ((1, 0), (2, 1)), constant_values=1),
     lambda x: np.block([[np.ones((1, 2), x.dtype), np.ones((1, 3), x.dtype),
                          np.ones((1, 1), x.dtype)],
                         [np.ones((2, 2), x.dtype), x, np.ones((2, 1), x.dtype)]]),
     [(2, 3)])
_mov("pad_int_width", Op.PAD, lambda x: nnjit.pad(x, 1),
     lambda x: np.concatenate([[0], x, [0]]).astype(x.dtype), [(3,)])
_mov("pad_size0", Op.PAD, lambda x: nnjit.pad(x, ((0, 1), (2, 0))),
     lambda x: np.zeros((1, 2), x.dtype), [(0, 0)])


def clamped(idx, n):
    """take's indices: a negative index wraps once, then everything is clamped into [0, n)."""
    return np.array([min(max(i + n if i < 0 else i, 0), n - 1) for i in idx.ravel().tolist()],
                    np.int64).reshape(idx.shape)


def expect_take(axis):
    def expected(x, idx):
        ax = axis % x.ndim
        j = clamped(idx, x.shape[ax])
        moved = np.moveaxis(x, ax, 0)
        out = np.stack([moved[k] for k in j.ravel()]) if j.size else np.zeros(
            (0,) + moved.shape[1:], x.dtype)
        out = out.reshape(j.shape + moved.shape[1:])
        return np.moveaxis(out, tuple(range(j.ndim)), tuple(range(ax, ax + j.ndim)))
    return expected


_mov("take_0", Op.TAKE, lambda x, i: nnjit.take(x, i, axis=0), expect_take(0),
     [(4, 3), Arg((5,), indices(-4, 3), I64)])
_mov("take_m1", Op.TAKE, lambda x, i: nnjit.take(x, i, axis=-1), expect_take(-1),
     [(2, 4), Arg((2, 3), indices(-4, 3), I32)])
_mov("take_flat", Op.TAKE, lambda x, i: nnjit.take(x, i), lambda x, i: expect_take(0)(
    x.ravel(), i), [(2, 3), Arg((4,), indices(-6, 5), I64)])
_mov("take_empty_idx", Op.TAKE, lambda x, i: nnjit.take(x, i, axis=1), expect_take(1),
     [(2, 3), Arg((0,), indices(0, 2), I64)])
# The opt-outs of the run-time check, with indices out of range (numpy.take's clip and wrap;
# jax's fill; the primitive's own clamp, which only keeps memory safe).
_mov("take_clip", Op.TAKE, lambda x, i: nnjit.take(x, i, axis=1, mode="clip"),
     lambda x, i: np.take(x, i, axis=1, mode="clip"), [(2, 4), Arg((2, 3), indices(-7, 7), I32)])
_mov("take_wrap", Op.TAKE, lambda x, i: nnjit.take(x, i, axis=0, mode="wrap"),
     lambda x, i: np.take(x, i, axis=0, mode="wrap"), [(3, 2), Arg((5,), indices(-9, 9), I64)])
_mov("take_fill", Op.TAKE, lambda x, i: nnjit.take(x, i, axis=0, mode="fill", fill_value=7),
     lambda x, i: np.where(((i >= -3) & (i < 3))[:, None], np.take(x, np.clip(i, -3, 2), axis=0),
                           np.array(7).astype(x.dtype)),
     [(3, 2), Arg((6,), indices(-6, 6), I64)], dtypes=NUMERIC)
_mov("take_clamped", Op.TAKE, lambda x, i: nnjit.take(x, i, axis=-1, mode="promise_in_bounds"),
     expect_take(-1), [(2, 4), Arg((2, 3), indices(-7, 7), I32)])
_mov("check_index", Op.CHECK_INDEX, lambda i: P.check_index(i, 4, "test: 4 rows") * 1,
     lambda i: i, [Arg((2, 3), indices(-4, 3))], dtypes=INTS, diff=())


def expect_scatter_add(shape, axis):
    def expected(idx, upd):
        out = np.zeros(shape, upd.dtype)
        j = clamped(idx, shape[axis])
        for pos in np.ndindex(*upd.shape):
            ipos = pos[axis: axis + idx.ndim]
            target = pos[:axis] + (j[ipos],) + pos[axis + idx.ndim:]
            out[target] += upd[pos]
        return out
    return expected


for _name, _shape, _axis, _ishape, _lo, _hi in [("repeated", (4, 3), 0, (6,), 0, 3),
                                                 ("axis1_clamped", (2, 4), 1, (2, 3), -6, 6)]:
    _ushape = _shape[:_axis] + _ishape + _shape[_axis + 1:]
    _mov(f"scatter_add_{_name}", Op.SCATTER_ADD,
         lambda i, u, s=_shape, a=_axis: P.scatter_add(i, u, s, a), expect_scatter_add(_shape,
                                                                                       _axis),
         [Arg(_ishape, indices(_lo, _hi), I64), _ushape], dtypes=NUMERIC, diff=(1,))

# -- movement/indexing ops (issue 12) --
# Composites of the movement primitives (run by tests/ir/test_ops_indexing.py, which also
# checks the gradient of every case with diff_inputs against finite differences in float64).
IDX = "indexing"


def _idx(name, op, fn, expected, args, dtypes=ALL, diff=(0,), **kw):
    return case(name, op, fn, expected, args, IDX, dtypes=dtypes, diff_inputs=diff, **kw)


_idx("squeeze_all", Op.RESHAPE, lambda x: nnjit.squeeze(x), lambda x: np.squeeze(x),
     [(2, 1, 3, 1)])
_idx("squeeze_axes", Op.RESHAPE, lambda x: x.squeeze((0, -1)),
     lambda x: x.reshape(2, 1, 3), [(1, 2, 1, 3, 1)])
_idx("expand_dims_tuple", Op.RESHAPE, lambda x: nnjit.expand_dims(x, (0, -1, 2)),
     lambda x: x.reshape(1, 2, 1, 3, 1), [(2, 3)])
_idx("expand_dims_method", Op.RESHAPE, lambda x: x.expand_dims(-2),
     lambda x: x[:, None, :], [(2, 3)])
_idx("split_sections", Op.SLICE, lambda x: tuple(nnjit.split(x, 3, axis=1)),
     lambda x: (x[:, 0:2], x[:, 2:4], x[:, 4:6]), [(2, 6)])
_idx("split_indices", Op.SLICE, lambda x: tuple(nnjit.split(x, [1, 3, 2, 9], axis=-1)),
     lambda x: (x[..., :1], x[..., 1:3], x[..., 3:2], x[..., 2:9], x[..., 9:]), [(2, 5)])
_idx("flip_all", Op.SLICE, lambda x: nnjit.flip(x), lambda x: x[::-1, ::-1, ::-1].copy(),
     [(2, 3, 4)])
_idx("flip_axes", Op.SLICE, lambda x: nnjit.flip(x, (0, -1)),
     lambda x: x[::-1, :, ::-1].copy(), [(2, 3, 4)])
_idx("tile_more_reps", Op.BROADCAST_TO, lambda x: nnjit.tile(x, (2, 1, 3)),
     lambda x: np.concatenate([np.concatenate([x] * 3, axis=1)[None]] * 2), [(2, 2)])
_idx("tile_int", Op.BROADCAST_TO, lambda x: nnjit.tile(x, 2),
     lambda x: np.concatenate([x, x], axis=-1), [(3, 2)])
_idx("repeat_int", Op.BROADCAST_TO, lambda x: nnjit.repeat(x, 2, axis=1),
     lambda x: np.stack([x, x], axis=2).reshape(2, 6), [(2, 3)])
_idx("repeat_flat", Op.BROADCAST_TO, lambda x: x.repeat(3),
     lambda x: np.array([v for v in x.ravel().tolist() for _ in range(3)], x.dtype), [(2, 2)])
_idx("repeat_counts", Op.TAKE, lambda x: nnjit.repeat(x, [2, 0, 1], axis=0),
     lambda x: np.stack([x[0], x[0], x[2]]), [(3, 2)])
_idx("take_along_axis_last", Op.TAKE,
     lambda x, i: nnjit.take_along_axis(x, i, axis=-1),
     lambda x, i: np.array([[x[r, j % 4] for j in row] for r, row in enumerate(i.tolist())],
                           x.dtype).reshape(3, 5), [(3, 4), Arg((3, 5), indices(-4, 3), I64)])
_idx("take_along_axis_broadcast", Op.TAKE,
     lambda x, i: nnjit.take_along_axis(x, i, axis=0),
     lambda x, i: np.stack([x[i[k, 0] % 3] for k in range(2)]),
     [(3, 4), Arg((2, 1), indices(-3, 2), I32)])
_idx("take_along_axis_flat", Op.TAKE, lambda x, i: nnjit.take_along_axis(x, i, None),
     lambda x, i: x.ravel()[i % 6], [(2, 3), Arg((4,), indices(-6, 5), I64)])
# einsum against np.einsum in float64: contractions (one matmul per operand pair), diagonals,
# traces, '...' broadcast dims, size-1 dims that broadcast, implicit and explicit outputs.
for _spec, _shapes, _op in [
        ("ij,jk->ik", [(2, 3), (3, 4)], Op.MATMUL), ("bij,bkj", [(2, 2, 3), (2, 4, 3)], Op.MATMUL),
        ("ii", [(3, 3)], Op.SLICE), ("iij->ji", [(2, 2, 3)], Op.SLICE),
        ("...i,i->...", [(2, 3, 4), (4,)], Op.MATMUL),
        ("...ij,...jk", [(2, 1, 2, 3), (3, 3, 4)], Op.MATMUL),
        ("ab,bc,cd->da", [(2, 3), (3, 4), (4, 2)], Op.MATMUL), ("i,j", [(2,), (3,)], Op.MATMUL),
        ("ij,j->i", [(2, 1), (3,)], Op.MATMUL), ("ijk->kj", [(2, 3, 4)], Op.SUM)]:
    _idx(f"einsum_{_spec.replace(',', '_').replace('->', '_to_').replace('...', 'E')}", _op,
         lambda *xs, s=_spec: nnjit.einsum(s, *xs),
         _f64(lambda *xs, s=_spec: np.einsum(s, *xs)), _shapes, dtypes=FLOATS,
         diff=tuple(range(len(_shapes))))
_idx("einsum_ints", Op.SUM, lambda a, b: nnjit.einsum("bij,bjk->bik", a, b),
     lambda a, b: np.einsum("bij,bjk->bik", a, b), [(2, 2, 3), (2, 3, 4)], dtypes=INTS, diff=())


def gathered(x, *index_arrays, dims, first):
    """x indexed by integer arrays along `dims` (other dims kept whole, in order), the
    broadcast index dims placed at `first` among the kept dims: numpy's advanced indexing,
    element by element."""
    arrays = np.broadcast_arrays(*index_arrays)
    block = arrays[0].shape
    kept = [d for d in range(x.ndim) if d not in dims]
    kept_shape = [x.shape[d] for d in kept]
    out = np.empty(tuple(kept_shape[:first]) + block + tuple(kept_shape[first:]), x.dtype)
    for pos in np.ndindex(*out.shape):
        b = pos[first:first + len(block)]
        k = pos[:first] + pos[first + len(block):]
        src = [0] * x.ndim
        for d, c in zip(kept, k):
            src[d] = c
        for d, a in zip(dims, arrays):
            src[d] = int(a[b]) % x.shape[d]
        out[pos] = x[tuple(src)]
    return out


_MASK = np.array([[True, False, False, True], [False, False, True, False],
                  [True, True, False, False]])
_idx("getitem_two_arrays", Op.TAKE, lambda x, i, j: x[i, j],
     lambda x, i, j: gathered(x, i, j, dims=(0, 1), first=0),
     [(3, 4, 2), Arg((2, 3), indices(-3, 2), I64), Arg((3,), indices(-4, 3), I32)])
_idx("getitem_arange_labels", Op.TAKE, lambda x, lab: x[np.arange(3), lab],
     lambda x, lab: gathered(x, np.arange(3), lab, dims=(0, 1), first=0),
     [(3, 5), Arg((3,), indices(-5, 4), I64)])
_idx("getitem_arrays_around_slice", Op.TAKE, lambda x, i, j: x[i, :, j],
     lambda x, i, j: gathered(x, i, j, dims=(0, 2), first=0),
     [(3, 2, 4), Arg((2, 1), indices(-3, 2), I64), Arg((3,), indices(-4, 3), I64)])
_idx("getitem_arrays_after_slice", Op.TAKE, lambda x, i, j: x[:, i, j],
     lambda x, i, j: gathered(x, i, j, dims=(1, 2), first=1),
     [(2, 3, 4), Arg((2,), indices(-3, 2), I64), Arg((2,), indices(-4, 3), I64)])
_idx("getitem_int_between_arrays", Op.TAKE, lambda x, i, j: x[i, 1, j],
     lambda x, i, j: gathered(x[:, 1], i, j, dims=(0, 1), first=0),
     [(3, 2, 4), Arg((2,), indices(-3, 2), I64), Arg((2,), indices(-4, 3), I64)])
_idx("getitem_bool_mask_2d", Op.TAKE, lambda x: x[_MASK],
     lambda x: np.stack([x[r, c] for r, c in zip(*np.nonzero(_MASK))]), [(3, 4, 2)])



def updated(x, idx, v, combine=None):
    """x with v (broadcast to x[idx]) written at idx in row-major order (a later duplicate
    overwrites), or combined in with `combine(old, new)`, by loops."""
    out = x.copy()
    pos = np.arange(x.size).reshape(x.shape)[idx]
    v = np.broadcast_to(v, pos.shape)
    flat = out.reshape(-1)
    for p, u in zip(pos.ravel().tolist(), v.ravel().tolist()):
        flat[p] = u if combine is None else combine(flat[p], u)
    return out


def _shifted(rng, shape, dtype):
    """Pairwise distinct values 0.1 off the quarter grid `distinct()` draws: never tied with
    those nor with each other (min/max gradients are defined away from ties)."""
    return (distinct()(rng, shape, dtype) + 0.1).astype(dtype)


_ADD = lambda a, b: a + b   # noqa: E731
_idx("at_add_duplicates", Op.SCATTER_ADD, lambda x, v: x.at[[0, 2, 0]].add(v),
     lambda x, v: updated(x, np.s_[[0, 2, 0]], v, _ADD), [(3, 2), (3, 2)],
     dtypes=NUMERIC, diff=(0, 1))
_idx("at_add_traced_index", Op.SCATTER_ADD, lambda x, i, v: x.at[:, i].add(v),
     lambda x, i, v: updated(x, np.s_[:, i], v, _ADD),
     [(2, 4), Arg((3,), indices(-4, 3), I64), (3,)], dtypes=NUMERIC, diff=(0, 2))
_idx("at_set_slice_scalar", Op.SCATTER, lambda x: x.at[1:, ::2].set(7),
     lambda x: updated(x, np.s_[1:, ::2], np.array(7).astype(x.dtype)), [(3, 4)])
_idx("at_set_arrays", Op.SCATTER, lambda x, v: x.at[np.arange(3), [1, 0, 1]].set(v),
     lambda x, v: updated(x, np.s_[np.arange(3), [1, 0, 1]], v), [(3, 2), (3,)],
     diff=(0, 1))
_idx("at_set_duplicates_last_wins", Op.SCATTER, lambda x, i, v: x.at[i].set(v),
     lambda x, i, v: updated(x, np.s_[i], v), [(4, 2), Arg((5,), indices(-4, 3), I64),
                                              (5, 2)], diff=(0, 2))
_idx("at_max_duplicates", Op.SCATTER, lambda x, v: x.at[[1, 0, 1, 1]].max(v),
     lambda x, v: updated(x, np.s_[[1, 0, 1, 1]], v, max), [Arg((3, 2), distinct()),
                                                          Arg((4, 2), _shifted)],
     dtypes=FLOATS, diff=(0, 1))
_idx("at_min_traced_index", Op.SCATTER, lambda x, i, v: x.at[:, i].min(v),
     lambda x, i, v: updated(x, np.s_[:, i], v, min),
     [Arg((2, 3), distinct()), Arg((4,), indices(-3, 2), I32), Arg((2, 4), _shifted)],
     dtypes=FLOATS, diff=(0, 2))
_idx("at_min_ints", Op.SCATTER, lambda x, v: x.at[[2, 2, 0]].min(v),
     lambda x, v: updated(x, np.s_[[2, 2, 0]], v, min), [(3,), (3,)], dtypes=NUMERIC, diff=())
_MUL = lambda a, b: a * b   # noqa: E731
_idx("at_multiply_duplicates", Op.SCATTER, lambda x, v: x.at[[1, 0, 1, 1]].multiply(v),
     lambda x, v: updated(x, np.s_[[1, 0, 1, 1]], v, _MUL), [(3, 2), (4, 2)], dtypes=NUMERIC,
     diff=(0, 1))
# A zero update among duplicates: the others' gradients vanish, its own is the others' product.
_idx("at_multiply_with_zeros", Op.SCATTER,
     lambda x, v: x.at[[2, 0, 2]].multiply(v * np.array([1, 0, 1], v.dtype.np)),
     lambda x, v: updated(x, np.s_[[2, 0, 2]], v * np.array([1, 0, 1], v.dtype), _MUL),
     [(3,), (3,)], dtypes=NUMERIC, diff=(0, 1))
for _mode, _fn in (("set", None), ("max", max)):
    _idx(f"scatter_{_mode}_axis1_clamped", Op.SCATTER,
         lambda x, i, u, m=_mode: P.scatter(x, i, u, 1, m),
         lambda x, i, u, f=_fn: np.moveaxis(np.stack([updated(
             r, np.s_[clamped(i, 4).ravel()], u[k].reshape(-1), f) for k, r in enumerate(x)]),
             0, 0), [Arg((2, 4), distinct()), Arg((3,), indices(-6, 6), I64),
                     Arg((2, 3), _shifted)], dtypes=FLOATS, diff=(0, 2))
_idx("at_get", Op.TAKE, lambda x, i: x.at[i, 1].get(), lambda x, i: x[i % 3, 1],
     [(3, 2), Arg((2, 2), indices(-3, 2), I32)])


# -- sources -----------------------------------------------------------------------------------
SRC = "source"


def _iota_expected(shape, axis, dtype):
    out = np.empty(shape, dtype)
    for idx in np.ndindex(*shape):
        out[idx] = idx[axis]
    return out


for _shape, _axis in [((3, 4), 1), ((2, 3, 2), 0), ((0, 3), 1)]:
    case(f"iota_{'x'.join(map(str, _shape))}_{_axis}", Op.IOTA,
         lambda x, s=_shape, a=_axis: P.iota(P.builder_of(x), s, a, x.dtype),
         lambda x, s=_shape, a=_axis: _iota_expected(s, a, x.dtype), [()], SRC, dtypes=NUMERIC)
case("const", Op.CONST, lambda x: x * np.array([[2], [-1]]).astype(x.dtype.np) + 1,
     lambda x: (x * np.array([[2], [-1]]).astype(x.dtype) + 1).astype(x.dtype),
     [(2, 3)], SRC, dtypes=NUMERIC, diff_inputs=(0,))
case("const_bool", Op.CONST, lambda x: nnjit.logical_and(x, np.array([True, False, True])),
     lambda x: x & np.array([True, False, True]), [(2, 3)], SRC, dtypes=(BOOL,))


def philox_uniform(seed: int, shape, salt: int, dtype) -> np.ndarray:
    """The documented random_uniform layout, spelled out on the Philox-4x32-10 block function:
    element i uses counter (i lo, i hi, salt, 0) and key (seed lo, seed hi); f32 takes the top 24
    bits of word 0, f64 53 bits of words 0 and 1."""
    n = int(np.prod(shape, dtype=np.int64))
    i = np.arange(n, dtype=np.uint64)
    s = int(seed) & (2**64 - 1)
    w0, w1, _, _ = philox4x32_10(i & 0xFFFFFFFF, i >> np.uint64(32), salt & 0xFFFFFFFF, 0,
                                 s & 0xFFFFFFFF, s >> 32)
    if np.dtype(dtype) == F32:
        out = (w0 >> 8).astype(F32) * np.float32(2.0**-24)
    else:
        bits = (w0.astype(np.uint64) << np.uint64(21)) | (w1.astype(np.uint64) >> np.uint64(11))
        out = bits.astype(F64) * 2.0**-53
    return out.reshape(shape)


for _shape, _salt in [((3, 5), 0), ((2, 0), 1), ((40,), 7)]:
    case(f"random_uniform_{'x'.join(map(str, _shape))}_salt{_salt}", Op.RANDOM_UNIFORM,
         lambda seed, x, s=_shape, k=_salt: P.random_uniform(seed, s, k, x.dtype),
         lambda seed, x, s=_shape, k=_salt: philox_uniform(int(seed), s, k, x.dtype),
         [Arg((), indices(-2**40, 2**40), I64), ()], SRC)
case("one_hot", Op.IOTA, lambda i: nnjit.one_hot(i, 4),
     lambda i: np.array([[1.0 if v == k else 0.0 for k in range(4)] for v in i.ravel().tolist()],
                        F32).reshape(i.shape + (4,)),
     [Arg((2, 3), indices(0, 3))], SRC, dtypes=INTS)

# -- creation and random.normal (issue 12) ------------------------------------------------------
case("zeros_ones_full", Op.CONST,
     lambda x: x + nnjit.zeros((2, 3), x.dtype.np) + nnjit.ones(3, x.dtype.np)
     + nnjit.full((2, 1), 2, x.dtype.np),
     lambda x: x + np.array([[3, 3, 3], [3, 3, 3]], x.dtype), [(2, 3)], SRC, dtypes=NUMERIC,
     diff_inputs=(0,))
case("arange_eye", Op.CONST, lambda x: x * nnjit.arange(1, 4, dtype=x.dtype.np) + nnjit.eye(
    2, 3, k=1, dtype=x.dtype.np), lambda x: x * np.array([1, 2, 3], x.dtype) + np.array(
    [[0, 1, 0], [0, 0, 1]], x.dtype), [(2, 3)], SRC, dtypes=NUMERIC, diff_inputs=(0,))


def philox_normal(seed: int, shape, salt: int, dtype) -> np.ndarray:
    """Box-Muller on two documented uniform streams (salts `salt` and `salt + 1`), in f64."""
    u1 = philox_uniform(seed, shape, salt, dtype).astype(F64)
    u2 = philox_uniform(seed, shape, salt + 1, dtype).astype(F64)
    return (np.sqrt(-2 * np.log1p(-u1)) * np.cos(2 * np.pi * u2)).astype(dtype)


for _shape, _salt in [((3, 5), 0), ((64,), 4)]:
    case(f"random_normal_{'x'.join(map(str, _shape))}_salt{_salt}", Op.RANDOM_UNIFORM,
         lambda seed, x, s=_shape, k=_salt: nnjit.random.normal(seed, s, x.dtype.np, salt=k),
         lambda seed, x, s=_shape, k=_salt: philox_normal(int(seed), s, k, x.dtype),
         [Arg((), indices(-2**40, 2**40), I64), ()], SRC, rtol=2e-5, atol=1e-5)

# -- control flow ------------------------------------------------------------------------------
CTL = "control"


def _scan_expected(c0, xs):
    carry, ys = c0.astype(F64), []
    for x in xs.astype(F64):
        ys.append(carry * x)
        carry = carry + x
    ys = np.stack(ys) if ys else np.zeros((0,) + c0.shape)
    return carry.astype(c0.dtype), ys.astype(c0.dtype)


case("scan_cumsum", Op.SCAN,
     lambda c0, xs: nnjit.scan(lambda c, x: (c + x, c * x), c0, xs), _scan_expected,
     [(3,), (4, 3)], CTL, diff_inputs=(0, 1))
case("scan_reverse", Op.SCAN,
     lambda c0, xs: nnjit.scan(lambda c, x: (c + x, c * x), c0, xs, reverse=True),
     lambda c0, xs: (lambda r: (r[0], r[1][::-1]))(_scan_expected(c0, xs[::-1])),
     [(2,), (3, 2)], CTL, diff_inputs=(0, 1))

# -- collectives over a process group (issue 15) ------------------------------------------------
# One process is a group of one: every collective is the identity (its rank is 0). Two ranks
# are tested by launching them: tests/distributed.
COL = "collective"
import nnjit.distributed as dist  # noqa: E402

case("psum", Op.ALL_REDUCE, lambda x: dist.psum(x), lambda x: x.copy(), [(3, 4)], COL,
     dtypes=NUMERIC, diff_inputs=(0,))
case("pmean", Op.ALL_REDUCE, lambda x: dist.pmean(x) * 2.0, lambda x: x * 2, [(5,)], COL,
     diff_inputs=(0,))
case("pmax", Op.ALL_REDUCE, lambda x: dist.pmax(x), lambda x: x.copy(), [(2, 3)], COL,
     dtypes=NUMERIC, diff_inputs=(0,))
case("all_gather", Op.ALL_GATHER, lambda x: dist.all_gather(x, axis=-1),
     lambda x: x.copy(), [(2, 3)], COL, dtypes=ALL, diff_inputs=(0,))
case("psum_scatter", Op.REDUCE_SCATTER, lambda x: dist.psum_scatter(x, axis=1),
     lambda x: x.copy(), [(2, 4)], COL, dtypes=NUMERIC, diff_inputs=(0,))
case("broadcast", Op.BROADCAST, lambda x: dist.broadcast(x, root=0) + 1,
     lambda x: x + np.ones((), x.dtype), [(4,)], COL, dtypes=NUMERIC, diff_inputs=(0,))
case("axis_index", Op.AXIS_INDEX,
     lambda x: x + P.cast(P.axis_index(P.builder_of(x), "batch", 1), x.dtype),
     lambda x: x.copy(), [(3,)], COL, dtypes=NUMERIC)

# -- rematerialization (issue 12) ------------------------------------------------------------
case("optimization_barrier", Op.OPTIMIZATION_BARRIER,
     lambda x, a: P.optimization_barrier(x, a) * 2.0, lambda x, a: x * 2, [(2, 3), ()], CTL,
     dtypes=FLOATS, diff_inputs=(0,))

COVERED_OPS = frozenset(c.op for c in CASES)
FAMILIES = tuple(dict.fromkeys(c.family for c in CASES))
