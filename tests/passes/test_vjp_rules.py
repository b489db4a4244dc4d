"""Every VJP rule against central finite differences in float64 (JAX `lax_autodiff_test.py`,
TVM `test_op_gradient_numeric.py`).

Each case below draws small shapes and attributes with hypothesis, builds a function that applies
one primitive (through `nnjit.ir.prims`, so the op is emitted exactly as named), and checks its
gradient with `tests.gradcheck.check_grads` through the backend. Inputs are chosen away from kinks
(relu and abs at 0, ties of max/maximum/pooling) so finite differences are valid there.

`test_every_float_op_has_a_vjp_and_a_case` walks the op registry: a new op whose results are
float must get a VJP rule and a case here, or an entry (with the reason) in NOT_DIFFERENTIABLE.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import hypothesis.extra.numpy as hnp
import hypothesis.strategies as st
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings

import nnjit
from nnjit.ir import OPDEFS, DType, Graph, Op, subgraphs
from nnjit.ir import prims as P
from tests.gradcheck import check_grads

# The backend fixture is a plain string, safe to share between hypothesis examples.
HYP = settings(suppress_health_check=list(settings.default.suppress_health_check)
               + [HealthCheck.function_scoped_fixture])
MAX_ELEMS = 12   # finite differences per argument leaf and example (a random sample beyond)

# Ops (by name) that have or need no VJP rule, and why. Everything else with float results must
# have a VJP and a case below.
NOT_DIFFERENTIABLE = {
    "input": "graph plumbing, not an operation",
    "const": "a constant has no operands",
    "iota": "index coordinates: no operands",
    "random_uniform": "its only operand is the integer seed",
    "logical_not": "bool result", "logical_and": "bool result", "logical_or": "bool result",
    "eq": "bool result", "ne": "bool result", "lt": "bool result", "le": "bool result",
    "gt": "bool result", "ge": "bool result",
    "argmax": "integer result",
    "check_index": "integer indices in and out",
    "stop_gradient": "zero gradient by definition (its rule returns no cotangent); "
                     "tested in test_autodiff.py",
    "max_pool2d_grad": "second derivatives through max pooling are not supported (its "
                       "gradient is piecewise constant in x anyway)",
    "fusion": "made by the fusion pass, which runs after autodiff: graphs are differentiated "
              "before they are fused",
    "axis_index": "integer rank, no operands",
}
# Differentiated by the autodiff pass itself rather than by an OpDef.vjp rule.
PASS_DIFFERENTIATED = {Op.SCAN: "backpropagation through time as a reverse scan"}


@dataclass
class Case:
    fn: Callable
    args: tuple
    argnums: tuple
    tol: dict = field(default_factory=dict)   # check_grads overrides (eps, rtol, atol)


CASES: dict[str, tuple[frozenset, Callable]] = {}


def case(name: str, *ops: Op):
    """Register `gen(draw) -> Case` as the gradient case `name`, covering `ops`."""
    def deco(gen):
        assert name not in CASES, name
        CASES[name] = (frozenset(ops), gen)
        return gen
    return deco


# -- input generators (float64, away from kinks) ------------------------------------------------

def rng_of(draw) -> np.random.Generator:
    return np.random.default_rng(draw(st.integers(0, 2**32 - 1), label="seed"))


def shape_st(min_dims=0, max_dims=3, max_side=4, min_side=1):
    return hnp.array_shapes(min_dims=min_dims, max_dims=max_dims, min_side=min_side,
                            max_side=max_side)


def normal(rng, shape):
    return np.asarray(rng.standard_normal(shape))


def positive(rng, shape):
    return np.asarray(rng.uniform(0.5, 2.0, shape))


def away_from_zero(rng, shape):
    return np.asarray(rng.choice([-1.0, 1.0], shape) * rng.uniform(0.2, 2.0, shape))


def distinct(rng, shape):
    """All values distinct, pairwise at least ~0.1 apart (no ties for max and pooling)."""
    n = int(np.prod(shape))
    v = (rng.permutation(n) - n / 2) * 0.25 + rng.uniform(-0.05, 0.05, n)
    return v.reshape(shape)


def apart(rng, shape, offset):
    """Values near integers + offset: two such arrays with offsets 0.25 and 0.75 are everywhere
    at least 0.3 apart, so maximum/minimum never tie."""
    return np.asarray(rng.integers(-2, 3, shape) + offset + rng.uniform(-0.1, 0.1, shape))


def axis_arg(draw, ndim):
    """None, an int (maybe negative) or a tuple of distinct axes (maybe negative)."""
    if ndim == 0:
        return draw(st.sampled_from([None, ()]))
    kind = draw(st.sampled_from(["none", "int", "tuple"]))
    if kind == "none":
        return None
    if kind == "int":
        return draw(st.integers(-ndim, ndim - 1))
    axes = draw(st.lists(st.integers(0, ndim - 1), unique=True, max_size=ndim))
    return tuple(a - ndim if draw(st.booleans()) else a for a in axes)


# -- elementwise ----------------------------------------------------------------------------------

UNARY = {
    Op.NEG: (P.neg, normal), Op.EXP: (P.exp, normal), Op.LOG: (P.log, positive),
    Op.SQRT: (P.sqrt, positive), Op.ABS: (P.abs, away_from_zero), Op.TANH: (P.tanh, normal),
    Op.SIGMOID: (P.sigmoid, normal), Op.RELU: (P.relu, away_from_zero),
    Op.SOFTPLUS: (P.softplus, normal),
    # -- math ops (issue 12) --
    Op.SIN: (P.sin, normal), Op.COS: (P.cos, normal), Op.ERF: (P.erf, normal),
    Op.EXPM1: (P.expm1, normal), Op.LOG1P: (P.log1p, positive),
    # piecewise constant: values at least 0.15 from integers and half-integers (gradient 0)
    Op.FLOOR: (P.floor, lambda r, s: apart(r, s, 0.25)),
    Op.CEIL: (P.ceil, lambda r, s: apart(r, s, 0.25)),
    Op.ROUND: (P.round, lambda r, s: apart(r, s, 0.25)),
}


def _unary_case(op, f, gen):
    @case(op.value, op)
    def make(draw):
        x = gen(rng_of(draw), draw(shape_st()))
        return Case(f, (x,), (0,))


for _op, (_f, _gen) in UNARY.items():
    _unary_case(_op, _f, _gen)


def _binary_inputs(draw, gen_x, gen_y):
    shapes = draw(hnp.mutually_broadcastable_shapes(num_shapes=2, max_dims=3, max_side=3))
    rng = rng_of(draw)
    sx, sy = shapes.input_shapes
    return gen_x(rng, sx), gen_y(rng, sy)


BINARY = {
    Op.ADD: (P.add, normal, normal), Op.SUB: (P.sub, normal, normal),
    Op.MUL: (P.mul, normal, normal), Op.DIV: (P.div, normal, away_from_zero),
    Op.POW: (P.pow, positive, normal),
    Op.REMAINDER: (P.remainder, normal, away_from_zero),
    Op.MAXIMUM: (P.maximum, lambda r, s: apart(r, s, 0.25), lambda r, s: apart(r, s, 0.75)),
    Op.MINIMUM: (P.minimum, lambda r, s: apart(r, s, 0.75), lambda r, s: apart(r, s, 0.25)),
}


def _binary_case(op, f, gx, gy):
    @case(op.value, op)
    def make(draw):
        return Case(f, _binary_inputs(draw, gx, gy), (0, 1))


for _op, (_f, _gx, _gy) in BINARY.items():
    _binary_case(_op, _f, _gx, _gy)


@case("where", Op.WHERE)
def _where(draw):
    shapes = draw(hnp.mutually_broadcastable_shapes(num_shapes=3, max_dims=3, max_side=3))
    rng = rng_of(draw)
    sc, sx, sy = shapes.input_shapes
    cond = rng.random(sc) < 0.5
    # the bool condition is an argument too: it is not differentiable and must not get in the way
    return Case(lambda c, x, y: P.where(c, x, y),
                (cond, normal(rng, sx), normal(rng, sy)), (1, 2))


def _cast(x, dtype):
    """A cast node even when the dtype does not change (prims.cast elides those)."""
    return P.builder_of(x).emit(Op.CAST, (x,), {"dtype": dtype})


@case("cast_f64_f64", Op.CAST)
def _cast_same(draw):
    x = normal(rng_of(draw), draw(shape_st()))
    return Case(lambda x: _cast(x, DType.F64) * 2.0, (x,), (0,))


@case("cast_f64_f32_f64", Op.CAST)
def _cast_round_trip(draw):
    # f32 rounding makes the function piecewise constant at the 1e-7 scale: take a wide step
    x = normal(rng_of(draw), draw(shape_st()))
    return Case(lambda x: _cast(_cast(x, DType.F32) * 3.0, DType.F64), (x,), (0,),
                dict(eps=1e-2, rtol=1e-4, atol=1e-4))


@case("floor_divide", Op.FLOOR_DIVIDE)
def _floor_divide(draw):
    """x / y at least 0.15 from an integer (zero gradient there, as for floor)."""
    shapes = draw(hnp.mutually_broadcastable_shapes(num_shapes=2, max_dims=3, max_side=3))
    rng = rng_of(draw)
    sx, sy = shapes.input_shapes
    y = rng.uniform(0.5, 2.0, sy) * rng.choice([-1.0, 1.0], sy)
    q = np.asarray(apart(rng, np.broadcast_shapes(sx, sy), 0.5))
    x = np.array(np.broadcast_to(q * y, np.broadcast_shapes(sx, sy)))
    return Case(lambda a, b: P.floor_divide(a, b), (x, y), (0, 1))


# -- reductions ---------------------------------------------------------------------------------

@case("sum", Op.SUM)
def _sum(draw):
    shape = draw(shape_st(min_side=0))       # empty reductions too
    axis, keep = axis_arg(draw, len(shape)), draw(st.booleans())
    return Case(lambda x: nnjit.sum(x, axis, keep), (normal(rng_of(draw), shape),), (0,))


@case("max", Op.MAX)
def _max(draw):
    shape = draw(shape_st())
    axis, keep = axis_arg(draw, len(shape)), draw(st.booleans())
    return Case(lambda x: nnjit.max(x, axis, keep), (distinct(rng_of(draw), shape),), (0,))


# -- reductions (issue 12) ------------------------------------------------------------------------

@case("prod", Op.PROD)
def _prod(draw):
    """Slices without zeros, with one zero (the product of the others) and with two (0)."""
    shape = draw(shape_st(min_side=0))
    axis, keep = axis_arg(draw, len(shape)), draw(st.booleans())
    rng = rng_of(draw)
    x = rng.uniform(0.5, 1.5, shape) * rng.choice([-1.0, 1.0], shape)
    x = np.where(rng.random(shape) < 0.3, 0.0, x)
    return Case(lambda x: nnjit.prod(x, axis, keep), (x,), (0,))


@case("cumsum", Op.MATMUL)
def _cumsum(draw):
    """Long enough for two levels of blocks (the VJP is the reversed cumsum); weighted so
    every output's cotangent differs."""
    n = draw(st.sampled_from([1, 5, 64, 65, 130]))
    axis = draw(st.sampled_from([0, 1, -1]))
    shape = (n, draw(st.integers(1, 2))) if axis == 0 else (draw(st.integers(1, 2)), n)
    w = np.arange(1.0, n * shape[1 - (axis != 0)] + 1).reshape(shape)
    return Case(lambda x: nnjit.cumsum(x, axis) * w, (normal(rng_of(draw), shape),), (0,))


# -- contractions --------------------------------------------------------------------------------

@case("matmul", Op.MATMUL)
def _matmul(draw):
    batch = draw(hnp.mutually_broadcastable_shapes(num_shapes=2, max_dims=2, max_side=3))
    ba, bb = batch.input_shapes
    m, k, n = draw(st.integers(1, 4)), draw(st.integers(0, 4)), draw(st.integers(1, 4))
    rng = rng_of(draw)
    # 1-d operands (numpy's vector promotion) where there are no batch dims to carry
    sa = (k,) if not ba and draw(st.booleans()) else ba + (m, k)
    sb = (k,) if not bb and draw(st.booleans()) else bb + (k, n)
    return Case(P.matmul, (normal(rng, sa), normal(rng, sb)), (0, 1))


def conv_attrs(draw):
    kh, kw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    stride = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    dilation = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    padding = tuple((draw(st.integers(0, 2)), draw(st.integers(0, 2))) for _ in range(2))
    spans = [d * (k - 1) + 1 for d, k in zip(dilation, (kh, kw))]
    hw = tuple(max(1, s - lo - hi) + draw(st.integers(0, 3))
               for s, (lo, hi) in zip(spans, padding))
    n, c, o = draw(st.integers(1, 2)), draw(st.integers(1, 3)), draw(st.integers(1, 3))
    return (n, c) + hw, (o, c, kh, kw), dict(stride=stride, padding=padding, dilation=dilation)


def conv_out_shape(x_shape, w_shape, attrs):
    hw = [(x_shape[2 + i] + sum(attrs["padding"][i])
           - attrs["dilation"][i] * (w_shape[2 + i] - 1) - 1) // attrs["stride"][i] + 1
          for i in range(2)]
    return (x_shape[0], w_shape[0], *hw)


@case("conv2d", Op.CONV2D)
def _conv2d(draw):
    xs, ws, a = conv_attrs(draw)
    rng = rng_of(draw)
    return Case(lambda x, w: P.conv2d(x, w, **a), (normal(rng, xs), normal(rng, ws)), (0, 1))


@case("conv2d_grad_input", Op.CONV2D_GRAD_INPUT)
def _conv2d_grad_input(draw):
    xs, ws, a = conv_attrs(draw)
    rng = rng_of(draw)
    dy = normal(rng, conv_out_shape(xs, ws, a))
    return Case(lambda dy, w: P.conv2d_grad_input(dy, w, xs, **a), (dy, normal(rng, ws)),
                (0, 1))


@case("conv2d_grad_weight", Op.CONV2D_GRAD_WEIGHT)
def _conv2d_grad_weight(draw):
    xs, ws, a = conv_attrs(draw)
    rng = rng_of(draw)
    dy = normal(rng, conv_out_shape(xs, ws, a))
    return Case(lambda x, dy: P.conv2d_grad_weight(x, dy, ws, **a), (normal(rng, xs), dy),
                (0, 1))


# -- convolution family (issue 12) --

def grouped_conv_attrs(draw):
    """conv_attrs with groups in 2..3 (channel counts multiplied up to fit): depthwise, small
    groups (direct loops) and 9 x 8 channels per group (batched GEMMs)."""
    xs, ws, a = conv_attrs(draw)
    g = draw(st.integers(2, 3), label="groups")
    cg, og = draw(st.sampled_from([(1, 1), (1, 2), (2, 2), (9, 8)]), label="group channels")
    return (xs[0], cg * g) + xs[2:], (og * g, cg) + ws[2:], dict(a, groups=g)


@case("conv2d_grouped", Op.CONV2D)
def _conv2d_grouped(draw):
    xs, ws, a = grouped_conv_attrs(draw)
    rng = rng_of(draw)
    return Case(lambda x, w: P.conv2d(x, w, **a), (normal(rng, xs), normal(rng, ws)), (0, 1))


@case("conv2d_grad_input_grouped", Op.CONV2D_GRAD_INPUT)
def _conv2d_grad_input_grouped(draw):
    xs, ws, a = grouped_conv_attrs(draw)
    rng = rng_of(draw)
    dy = normal(rng, conv_out_shape(xs, ws, a))
    return Case(lambda dy, w: P.conv2d_grad_input(dy, w, xs, **a), (dy, normal(rng, ws)),
                (0, 1))


@case("conv2d_grad_weight_grouped", Op.CONV2D_GRAD_WEIGHT)
def _conv2d_grad_weight_grouped(draw):
    xs, ws, a = grouped_conv_attrs(draw)
    rng = rng_of(draw)
    dy = normal(rng, conv_out_shape(xs, ws, a))
    return Case(lambda x, dy: P.conv2d_grad_weight(x, dy, ws, **a), (normal(rng, xs), dy),
                (0, 1))


# -- windows ---------------------------------------------------------------------------------------

def pool_attrs(draw):
    """kernel, stride (< kernel gives overlapping windows), padding <= kernel // 2, a fitting
    NCHW input shape."""
    kernel = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    stride = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    padding = tuple((draw(st.integers(0, k // 2)), draw(st.integers(0, k // 2))) for k in kernel)
    hw = tuple(max(1, k - lo - hi) + draw(st.integers(0, 3))
               for k, (lo, hi) in zip(kernel, padding))
    shape = (draw(st.integers(1, 2)), draw(st.integers(1, 2))) + hw
    return shape, dict(kernel=kernel, stride=stride, padding=padding)


@case("max_pool2d", Op.MAX_POOL2D)
def _max_pool2d(draw):
    shape, a = pool_attrs(draw)
    return Case(lambda x: P.max_pool2d(x, **a), (distinct(rng_of(draw), shape),), (0,))


@case("avg_pool2d", Op.AVG_POOL2D)
def _avg_pool2d(draw):
    shape, a = pool_attrs(draw)
    inc = draw(st.booleans(), label="count_include_pad")
    return Case(lambda x: P.avg_pool2d(x, **a, count_include_pad=inc),
                (normal(rng_of(draw), shape),), (0,))


@case("avg_pool2d_grad", Op.AVG_POOL2D_GRAD)
def _avg_pool2d_grad(draw):
    shape, a = pool_attrs(draw)
    inc = draw(st.booleans(), label="count_include_pad")
    ho, wo = ((shape[2 + i] + sum(a["padding"][i]) - a["kernel"][i]) // a["stride"][i] + 1
              for i in range(2))
    dy = normal(rng_of(draw), shape[:2] + (ho, wo))
    return Case(lambda dy: P.avg_pool2d_grad(dy, shape, **a, count_include_pad=inc), (dy,),
                (0,))


# -- data movement ------------------------------------------------------------------------------

@case("reshape", Op.RESHAPE)
def _reshape(draw):
    shape = draw(shape_st(min_side=0))
    size = int(np.prod(shape))
    target = draw(st.sampled_from([(size,), (1, size), tuple(reversed(shape)) + (1,), (-1, 1)]))
    if np.empty(shape).reshape(target).shape == shape:   # a no-op reshape emits nothing
        target = (1,) + target
    return Case(lambda x: P.reshape(x, target), (normal(rng_of(draw), shape),), (0,))


@case("transpose", Op.TRANSPOSE)
def _transpose(draw):
    shape = draw(shape_st(min_dims=2, max_dims=4, max_side=3))
    perm = tuple(draw(st.permutations(range(len(shape)))))
    if perm == tuple(range(len(shape))):
        perm = perm[::-1]
    return Case(lambda x: P.transpose(x, perm), (normal(rng_of(draw), shape),), (0,))


@case("broadcast_to", Op.BROADCAST_TO)
def _broadcast_to(draw):
    xs = draw(shape_st(max_dims=2, max_side=3))
    lead = draw(st.lists(st.integers(1, 3), max_size=2))
    target = tuple(lead) + tuple(draw(st.integers(1, 3)) if d == 1 else d for d in xs)
    if target == xs:
        target = (2,) + target
    return Case(lambda x: P.broadcast_to(x, target), (normal(rng_of(draw), xs),), (0,))


@case("concat", Op.CONCAT)
def _concat(draw):
    shape = draw(shape_st(min_dims=1, max_side=3))
    axis = draw(st.integers(-len(shape), len(shape) - 1))
    sizes = draw(st.lists(st.integers(0, 3), min_size=2, max_size=3))
    rng = rng_of(draw)
    ax = axis % len(shape)
    parts = tuple(normal(rng, shape[:ax] + (s,) + shape[ax + 1:]) for s in sizes)
    return Case(lambda *xs: nnjit.concat(xs, axis), parts, tuple(range(len(parts))))


@case("slice", Op.SLICE)
def _slice(draw):
    shape = draw(shape_st(min_dims=1, max_side=5))
    bounds = st.one_of(st.none(), st.integers(-6, 6))
    starts, stops, steps = [], [], []
    for n in shape:
        sl = slice(draw(bounds), draw(bounds), draw(st.sampled_from([-3, -2, -1, 1, 2, 3])))
        a, b, s = sl.indices(n)
        starts.append(a), stops.append(b), steps.append(s)
    return Case(lambda x: P.slice(x, starts, stops, steps), (normal(rng_of(draw), shape),), (0,))


@case("pad", Op.PAD)
def _pad(draw):
    shape = draw(shape_st(min_dims=1, max_side=3))
    pads = [(draw(st.integers(0, 2)), draw(st.integers(0, 2))) for _ in shape]
    value = draw(st.sampled_from([0.0, 1.5, -2.0]))
    return Case(lambda x: P.pad(x, pads, value), (normal(rng_of(draw), shape),), (0,))


@case("take", Op.TAKE)
def _take(draw):
    shape = draw(shape_st(min_dims=1, max_side=4))
    axis = draw(st.integers(0, len(shape) - 1))
    n = shape[axis]
    rng = rng_of(draw)
    # small tables and many indices: repeated indices (scatter-add in the VJP), negative ones
    # (wrap) and, with an opt-out mode, out-of-range ones
    ishape = draw(shape_st(max_dims=2, max_side=4))
    mode = draw(st.sampled_from(["raise", "clip", "wrap", "fill", "promise_in_bounds"]))
    wide = 0 if mode == "raise" else 2
    idx = rng.integers(-n - wide, n + wide, ishape).astype(draw(st.sampled_from([np.int32,
                                                                                 np.int64])))
    return Case(lambda x, i: P.take(x, i, axis, mode=mode, fill_value=0.5),
                (normal(rng, shape), idx), (0,))


@case("scatter_add", Op.SCATTER_ADD)
def _scatter_add(draw):
    shape = draw(shape_st(min_dims=1, max_side=4))
    axis = draw(st.integers(0, len(shape) - 1))
    n = shape[axis]
    rng = rng_of(draw)
    ishape = draw(shape_st(max_dims=2, max_side=4))
    idx = rng.integers(-n, n, ishape)
    upd = normal(rng, shape[:axis] + ishape + shape[axis + 1:])
    return Case(lambda i, u: P.scatter_add(i, u, shape, axis), (idx, upd), (1,))



# -- movement/indexing ops (issue 12) --
@case("scatter", Op.SCATTER)
def _scatter(draw):
    shape = draw(shape_st(min_dims=1, max_side=4))
    axis = draw(st.integers(0, len(shape) - 1))
    n = shape[axis]
    mode = draw(st.sampled_from(["set", "min", "max", "multiply"]))
    rng = rng_of(draw)
    ishape = draw(shape_st(max_dims=2, max_side=4))
    idx = rng.integers(-n, n, ishape)     # duplicates: only the last `set` gets a gradient
    ushape = shape[:axis] + ishape + shape[axis + 1:]
    # min/max: all values pairwise distinct (no ties, where the gradient has a kink)
    vals = distinct(rng, (int(np.prod(shape)) + int(np.prod(ushape)),))
    x, upd = vals[:int(np.prod(shape))].reshape(shape), vals[int(np.prod(shape)):].reshape(ushape)
    if mode == "multiply":    # factors near +-1: a product of many duplicates stays tame
        upd = away_from_zero(rng, ushape) * 0.4 + np.sign(upd)
    return Case(lambda x, i, u: P.scatter(x, i, u, axis, mode), (x, idx, upd), (0, 2))

# -- control flow --------------------------------------------------------------------------------

@case("scan", Op.SCAN)
def _scan(draw):
    length, d = draw(st.integers(1, 4)), draw(st.integers(1, 3))
    reverse = draw(st.booleans())
    rng = rng_of(draw)
    h0, xs, w = normal(rng, (d,)), normal(rng, (length, d)), normal(rng, (d, d)) * 0.5

    def f(h0, xs, w):
        def body(h, x):
            h = nnjit.tanh(h @ w + x)     # w is closed over: a const of the scan
            return h, h * x
        return nnjit.scan(body, h0, xs, reverse=reverse)

    return Case(f, (h0, xs, w), (0, 1, 2))


# -- collectives (issue 15): in one process each is the identity, and so is its transpose; the
# transposes across ranks are checked against numpy in tests/distributed. ------------------------

def _collective_case(name, op, f):
    @case(name, op)
    def make(draw):
        return Case(f, (normal(rng_of(draw), (2, 4)),), (0,))


for _name, _op, _f in [
        ("all_reduce_sum", Op.ALL_REDUCE, lambda x: P.all_reduce(x, "sum", "batch", 1) * x),
        ("all_reduce_mean", Op.ALL_REDUCE, lambda x: P.all_reduce(x * x, "mean", "batch", 1)),
        ("all_reduce_max", Op.ALL_REDUCE, lambda x: P.exp(P.all_reduce(x, "max", "batch", 1))),
        ("all_gather", Op.ALL_GATHER, lambda x: P.all_gather(x, 1, "batch", 1) * x),
        ("reduce_scatter", Op.REDUCE_SCATTER, lambda x: P.reduce_scatter(x * x, 0, "batch", 1)),
        ("broadcast", Op.BROADCAST, lambda x: P.tanh(P.broadcast(x, 0, "batch", 1)))]:
    _collective_case(_name, _op, _f)

# -- rematerialization (issue 12) ----------------------------------------------------------------

@case("optimization_barrier", Op.OPTIMIZATION_BARRIER)
def _optimization_barrier(draw):
    rng = rng_of(draw)
    x, after = normal(rng, draw(shape_st())), normal(rng, ())
    return Case(lambda x, a: nnjit.exp(P.optimization_barrier(x, a)), (x, after), (0,))


# -- tests --------------------------------------------------------------------------------------

def ops_in(g: Graph) -> set[Op]:
    """The ops of `g` and of the graphs nested in its attributes (scan bodies)."""
    out = {n.op for n in g.nodes}
    for n in g.nodes:
        for sub in subgraphs(n):
            out |= ops_in(sub)
    return out


@pytest.mark.parametrize("name", sorted(CASES))
@HYP
@given(data=st.data())
def test_vjp_matches_finite_differences(name, backend, data):
    ops, gen = CASES[name]
    c = gen(data.draw)
    missing = ops - ops_in(nnjit.trace(c.fn, *c.args))
    assert not missing, f"case {name} does not emit {sorted(o.value for o in missing)}"
    check_grads(c.fn, c.args, c.argnums, backend=backend, max_elems=MAX_ELEMS, **c.tol)


def test_every_float_op_has_a_vjp_and_a_case():
    covered = set().union(*(ops for ops, _ in CASES.values()))
    for op in Op:
        if op.value in NOT_DIFFERENTIABLE:
            d = OPDEFS.get(op)
            assert d is None or d.vjp is None or op == Op.STOP_GRADIENT, (
                f"{op.value} has a VJP rule now: remove it from NOT_DIFFERENTIABLE and add a "
                "gradient case")
            continue
        assert op in PASS_DIFFERENTIATED or OPDEFS[op].vjp is not None, (
            f"{op.value} has float results but no VJP rule (add one next to its OpDef, or list "
            "it in NOT_DIFFERENTIABLE with the reason)")
        assert op in covered, f"{op.value} has a VJP rule but no gradient case in this file"


def test_not_differentiable_ops_really_have_no_float_path():
    """The exclusions are honest: comparisons and logic give bool, argmax gives ints, and
    random_uniform's only operand is its integer seed."""
    b = nnjit.ir.Builder("t")
    x = b.input(nnjit.TensorType((3,), DType.F64), "x")
    for f in (P.eq, P.ne, P.lt, P.le, P.gt, P.ge):
        assert f(x, x).dtype == DType.BOOL
    assert P.logical_not(P.gt(x, 0.0)).dtype == DType.BOOL
    assert P.argmax(x).dtype == DType.I64
    u = P.random_uniform(b.const(np.int64(3)), (2,), dtype=DType.F64)
    assert u.value.node.srcs[0].type.dtype == DType.I64
    assert OPDEFS[Op.RANDOM_UNIFORM].nondiff_inputs == frozenset({0})
