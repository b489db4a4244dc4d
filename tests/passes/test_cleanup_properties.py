"""Properties of the cleanup passes together (simplify, fold_constants, cse, dce, in pipeline
order) on random graphs built with Builder + prims (hypothesis) and on real traced training
steps (an MLP, an LSTM through scan, a ConvNet): the same bits on inputs with NaN, infinities
and signed zeros, never more nodes (nested bodies counted), and a result that verifies and
round-trips through its text form. Also: the default pipeline starts with these stages."""
from __future__ import annotations

import numpy as np
from hypothesis import given, strategies as st

import nnjit
from nnjit.frontend.pytree import flatten
from nnjit.ir import Builder, DType, Graph, Op, ShapeError, TensorType, evaluate, parse, prims
from nnjit.ir import verify
from nnjit.passes.cse import eliminate_common_subexpressions
from nnjit.passes.dce import eliminate_dead_code
from nnjit.passes.fold import fold_constants
from nnjit.passes.pipeline import default_pipeline
from nnjit.passes.simplify import simplify
from tests.passes.test_rewrite import assert_same_bits, special_args

CLEANUP = [simplify, fold_constants, eliminate_common_subexpressions, eliminate_dead_code]


def node_count(g: Graph) -> int:
    return sum(1 for _ in g.walk())


def check_cleanup(g: Graph, argsets) -> Graph:
    h = g
    for p in CLEANUP:
        h = p(h)
        verify(h)
    assert parse(str(h)) == h
    assert node_count(h) <= node_count(g) and len(h.nodes) <= len(g.nodes)
    assert h.input_types == g.input_types and h.output_types == g.output_types
    for args in argsets:
        with np.errstate(all="ignore"):
            assert_same_bits(evaluate(h, args), evaluate(g, args))
    return h


# -- random graphs ---------------------------------------------------------------------------------

SHAPES = [(), (3,), (2, 3), (1, 3)]
CONSTS = [0, -0.0, 1, 2, -1.5, float("nan"), float("inf")]


def _const(draw, b: Builder, like):
    v = draw(st.sampled_from(CONSTS))
    if not like.dtype.is_float and v != v or v in (float("inf"), -1.5):
        v = 3
    shape = draw(st.sampled_from([(), like.shape]))
    return b.const(np.full(shape, v, like.dtype.np))


def _identity_maker(draw, b: Builder, x):
    """Something a simplify rule should see through (or, for floats, must not)."""
    kind = draw(st.sampled_from(["add0", "sub0", "mul1", "mul0", "div1", "reshape", "transpose",
                                 "broadcast", "slice", "pad", "sum", "max", "concat", "where",
                                 "cast", "stop", "negneg"]))
    z = lambda v: b.const(np.asarray(v, x.dtype.np))  # noqa: E731
    if kind in ("add0", "sub0", "mul0"):
        zero = z(draw(st.sampled_from([0.0, -0.0])))
        return zero + x if kind == "add0" else x - zero if kind == "sub0" else x * zero
    if kind == "mul1":
        return z(1) * x
    if kind == "div1":
        return x / z(1) if x.dtype.is_float else x * z(1)
    if kind in ("reshape", "broadcast", "pad", "concat", "cast", "stop"):
        op, attrs = {"reshape": (Op.RESHAPE, {"shape": x.shape}),
                     "broadcast": (Op.BROADCAST_TO, {"shape": x.shape}),
                     "pad": (Op.PAD, {"pads": [(0, 0)] * x.ndim}),
                     "concat": (Op.CONCAT, {"axis": 0}),
                     "cast": (Op.CAST, {"dtype": x.dtype}),
                     "stop": (Op.STOP_GRADIENT, {})}[kind]
        if kind == "concat" and x.ndim == 0:
            return x
        return b.emit(op, [x], attrs)
    if kind == "transpose":
        return b.emit(Op.TRANSPOSE, [x], {"perm": tuple(range(x.ndim))})
    if kind == "slice":
        return b.emit(Op.SLICE, [x], {"starts": (0,) * x.ndim, "stops": x.shape,
                                      "steps": (1,) * x.ndim})
    if kind in ("sum", "max"):
        return b.emit(Op.SUM if kind == "sum" else Op.MAX, [x], {"axes": ()})
    if kind == "where":
        c = b.const(np.asarray(draw(st.booleans())))
        return prims.where(c, x, x * z(2))
    return -(-x)


def _step(draw, b: Builder, pool: list, depth: int):
    x = draw(st.sampled_from(pool))
    y = draw(st.sampled_from(pool))
    kind = draw(st.sampled_from(["ident", "ident", "unary", "binary", "const", "movement",
                                 "select", "dup", "iota", "random", "scan"]))
    if kind == "ident":
        return _identity_maker(draw, b, x)
    if kind == "unary":
        fns = [prims.neg, prims.abs, prims.relu, prims.stop_gradient]
        if x.dtype.is_float:
            fns += [prims.exp, prims.tanh]
        return draw(st.sampled_from(fns))(x)
    if kind == "binary":
        fns = [prims.add, prims.sub, prims.mul, prims.maximum, prims.minimum]
        if x.dtype.is_float:
            fns.append(prims.div)
        return draw(st.sampled_from(fns))(x, y)
    if kind == "const":
        return _const(draw, b, x)
    if kind == "movement":
        if x.ndim == 0:
            return prims.broadcast_to(x, (2, 3))
        move = draw(st.sampled_from(["flat", "rev", "bcast", "sum", "slice"]))
        if move == "flat":
            return prims.reshape(prims.reshape(x, (x.size,)), x.shape)
        if move == "rev":
            return x.transpose().transpose()
        if move == "bcast":
            return prims.broadcast_to(x, (2,) + x.shape) * y
        if move == "sum":
            return prims.reduce_sum(x, draw(st.integers(0, x.ndim - 1)), draw(st.booleans()))
        return x[..., ::-1]
    if kind == "select":
        return prims.where(x > y, x, y)
    if kind == "dup":
        nodes = [n for n in b.nodes if len(n.types) == 1]
        if not nodes:
            return x
        return b.wrap(b.add_node(draw(st.sampled_from(nodes)).replace()).out)
    if kind == "iota":
        return prims.iota(b, (2, 3), 1, x.dtype) + y
    if kind == "random":
        seed = b.const(np.int64(draw(st.integers(0, 3))))
        return prims.random_uniform(seed, (2, 3), draw(st.integers(0, 1)))
    if depth > 0:       # no scans inside scans
        return x
    return _scan(draw, b, x, pool)


def _scan(draw, b: Builder, x, outer_pool: list):
    bb = Builder("body", parent=b)
    c = bb.input(x.type, "c")
    xt = bb.input(x.type, "xt")
    # outer values used in the body become captured consts
    pool = [c, xt] + draw(st.lists(st.sampled_from(outer_pool), max_size=2))
    for _ in range(draw(st.integers(1, 4))):
        try:
            pool.append(_step(draw, bb, pool, depth=1))
        except ShapeError:
            pass
    same = [v for v in pool if v.type == x.type]
    ys = draw(st.lists(st.sampled_from(pool), max_size=2))
    body = bb.build([draw(st.sampled_from(same))] + ys)
    xs = prims.broadcast_to(x, (2,) + x.shape)
    outs = prims.scan(body, [x], [xs], [outer for outer, _ in bb.captures], 2,
                      draw(st.booleans()))
    return draw(st.sampled_from(outs))


@st.composite
def random_graphs(draw):
    b = Builder("g")
    dt = draw(st.sampled_from([DType.F32, DType.F64, DType.I32, DType.I64]))
    pool = [b.input(TensorType(draw(st.sampled_from(SHAPES)), dt), f"x{i}")
            for i in range(draw(st.integers(1, 3)))]
    n_inputs = len(pool)
    for _ in range(draw(st.integers(1, 14))):
        try:
            pool.append(_step(draw, b, pool, depth=0))
        except ShapeError:
            pass
    outs = draw(st.lists(st.sampled_from(pool[n_inputs:] or pool), min_size=1, max_size=3))
    return b.build(outs)


@given(random_graphs())
def test_cleanup_on_random_graphs(g):
    verify(g)
    check_cleanup(g, [special_args(g, seed) for seed in range(2)])


# -- traced training steps -------------------------------------------------------------------------

def _traced(loss, args, argnums):
    g = nnjit.trace(nnjit.value_and_grad(loss, argnums), *args)
    leaves = [np.asarray(x) for x in flatten(tuple(args))[0]]
    return g, leaves


def test_cleanup_on_an_mlp_training_step():
    from tests.passes.test_autodiff import mlp_args, mlp_loss
    g, leaves = _traced(mlp_loss, mlp_args(), 0)
    h = check_cleanup(g, [leaves])
    assert len(h.nodes) <= len(g.nodes) - 15        # measured 69 -> 48
    assert not any(n.op == Op.STOP_GRADIENT for n in h.nodes)


def test_cleanup_on_an_lstm_training_step_through_scan():
    from tests.passes.test_autodiff import lstm, lstm_args
    loss = lambda p, xs, h0, c0: (lstm(p, xs, h0, c0)[0] ** 2.0).sum()   # noqa: E731
    g, leaves = _traced(loss, lstm_args(), (0, 2, 3))
    h = check_cleanup(g, [leaves])
    assert node_count(h) <= node_count(g) - 15       # measured 119 -> 96 (32 -> 18 top level)


def test_cleanup_on_a_convnet_training_step():
    from tests.passes.test_autodiff import convnet_args, convnet_loss
    g, leaves = _traced(convnet_loss, convnet_args(), 0)
    check_cleanup(g, [leaves])


def test_the_default_pipeline_starts_with_the_cleanup_stages():
    names = [name for name, _ in default_pipeline(fuse=False)]
    assert names[:4] == ["simplify", "fold_constants", "cse", "dce"]
    assert [fn for _, fn in default_pipeline(fuse=False)][:4] == CLEANUP
