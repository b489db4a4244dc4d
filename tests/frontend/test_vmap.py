"""`nnjit.vmap`: a graph transform with a batching rule per primitive. Every case is checked
against a Python loop over the examples (each example run through jit on its own), including
per-example gradients `vmap(grad(loss), in_axes=(None, 0, 0))`, scans, convolutions, gathers
and scatters; and unmapped values stay unbatched in the graph."""
from __future__ import annotations

import numpy as np
import pytest

import nnjit
import nnjit.distributed as dist
from nnjit import ShapeError, nn
from nnjit.frontend.vmap import BatchingError, _rule
from nnjit.ir import Op
from tests.helpers import assert_close

B = 3
RNG = np.random.default_rng(0)


def f32(*shape):
    return RNG.standard_normal(shape).astype(np.float32)


def _loop(fn, args, in_axes, backend):
    """fn applied example by example (jit on each), stacked on axis 0."""
    jf = nnjit.jit(fn, backend=backend)
    outs = []
    for i in range(B):
        sl = [a if ax is None else nnjit.tree_map(lambda x: np.take(x, i, axis=ax), a)
              for a, ax in zip(args, in_axes)]
        outs.append(jf(*sl))
    leaves0, _ = nnjit.tree_leaves(outs[0]), None
    stacked = [np.stack([nnjit.tree_leaves(o)[k] for o in outs]) for k in range(len(leaves0))]
    return stacked


def _check(fn, args, in_axes, backend, **tol):
    got = nnjit.jit(nnjit.vmap(fn, in_axes=in_axes), backend=backend)(*args)
    want = _loop(fn, args, in_axes, backend)
    for g, w in zip(nnjit.tree_leaves(got), want):
        assert_close(g, w, **tol)


CASES = {
    "unary_binary_broadcast": (lambda x, y: nnjit.exp(x) * y + nnjit.tanh(y), (f32(B, 4, 2), f32(2)),
                               (0, None)),
    "where_compare": (lambda x, y: nnjit.where(x > y, x, y * 2.0), (f32(B, 3), f32(B, 1)), (0, 0)),
    "reductions": (lambda x: (nnjit.sum(x, axis=0), nnjit.max(x, axis=-1, keepdims=True),
                              nnjit.argmax(x, axis=1), nnjit.mean(x)), (f32(B, 4, 5),), (0,)),
    "softmax_logsumexp": (lambda x: (nnjit.softmax(x), nnjit.logsumexp(x)), (f32(B, 2, 6),), (0,)),
    "movement": (lambda x: (x.T.reshape(6, 2)[1:5:2], nnjit.broadcast_to(x[:, :1], (4, 3, 1)),
                            nnjit.pad(x, ((1, 0), (0, 2))), nnjit.concat([x, x * 2.0], axis=1)),
                 (f32(B, 3, 4),), (0,)),
    "matmul_batched_left": (lambda x, w: x @ w, (f32(B, 2, 4), f32(4, 3)), (0, None)),
    "matmul_batched_right": (lambda x, w: x @ w, (f32(2, 4), f32(B, 4, 3)), (None, 0)),
    "matmul_both_3d": (lambda x, w: x @ w, (f32(B, 5, 2, 4), f32(B, 4, 3)), (0, 0)),
    "in_axis_1": (lambda x, w: nnjit.relu(x @ w), (f32(2, B, 4), f32(4, 3)), (1, None)),
    "take_batched_table": (lambda t, i: nnjit.take(t, i, axis=1), (f32(B, 3, 5), np.array([4, 0, -1])),
                           (0, None)),
    "take_batched_indices": (lambda t, i: nnjit.take(t, i, axis=0),
                             (f32(5, 2), RNG.integers(-5, 5, (B, 2, 2))), (None, 0)),
    "take_both": (lambda t, i: nnjit.take(t, i, axis=1),
                  (f32(B, 2, 5, 3), RNG.integers(-5, 5, (B, 4))), (0, 0)),
    "getitem_both": (lambda lg, y: lg[:, y], (f32(B, 4, 6), RNG.integers(-6, 6, (B, 2))),
                       (0, 0)),
    "conv_pool": (lambda x, w: nnjit.max_pool2d(nnjit.conv2d(x, w, padding=1), 2) +
                  nnjit.avg_pool2d(nnjit.conv2d(x, w, padding=1), 2),
                  (f32(B, 2, 3, 6, 6), f32(4, 3, 3, 3)), (0, None)),
    "prod": (lambda x: (nnjit.prod(x, axis=1), nnjit.prod(x)), (f32(B, 3, 2),), (0,)),
    # a process group of one: collectives are identities, and the batched value passes through
    "collectives": (lambda x: (dist.psum(x), dist.broadcast(x * 2.0, root=0),
                               dist.all_gather(x, axis=1), dist.psum_scatter(x, axis=0)),
                    (f32(B, 2, 3),), (0,)),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_vmap_matches_a_loop(backend, name):
    fn, args, in_axes = CASES[name]
    _check(fn, args, in_axes, backend)


def _mlp_loss(p, x, y):
    h = nnjit.tanh(x @ p["w1"] + p["b1"])
    return nn.cross_entropy((h @ p["w2"])[None], y[None])


def test_per_example_gradients_of_an_mlp(backend):
    p = {"w1": f32(4, 5), "b1": f32(5), "w2": f32(5, 3)}
    x, y = f32(B, 4), RNG.integers(0, 3, B)
    _check(nnjit.grad(_mlp_loss), (p, x, y), (None, 0, 0), backend)
    # and their mean is the batch gradient
    per = nnjit.vmap(nnjit.grad(_mlp_loss), in_axes=(None, 0, 0))(p, x, y)
    batch = nnjit.grad(lambda p: sum(_mlp_loss(p, x[i], y[i]) for i in range(B)) / B)(p)
    for k in p:
        assert_close(per[k].mean(axis=0), batch[k])


def test_per_example_gradients_of_a_convnet(backend):
    """conv2d_grad_weight with both operands batched, max_pool2d_grad, scatter via take."""
    def loss(p, x, y):
        h = nnjit.relu(nnjit.conv2d(x[None], p["w"], padding=1))
        h = nnjit.max_pool2d(h, 2).reshape(1, -1)
        return nn.cross_entropy(h @ p["fc"], y[None])

    p = {"w": f32(2, 1, 3, 3), "fc": f32(2 * 3 * 3, 4)}
    _check(nnjit.grad(loss), (p, f32(B, 1, 6, 6), RNG.integers(0, 4, B)), (None, 0, 0), backend)


def test_per_example_gradients_through_an_embedding_and_lstm(backend):
    """take's VJP is scatter_add (batched indices and updates); scan batches its body."""
    emb, lstm = nn.Embedding(7, 4), nn.LSTM(4, 5)
    p = {"emb": emb.init(seed=1), "lstm": lstm.init(seed=2), "out": f32(5, 3)}

    def loss(p, tokens, y):
        xs = emb.apply(p["emb"], tokens[:, None])          # (T, 1, 4)
        hs, _ = lstm.apply(p["lstm"], xs)
        return nn.cross_entropy(hs[-1] @ p["out"], y[None])

    _check(nnjit.grad(loss), (p, RNG.integers(0, 7, (B, 5)), RNG.integers(0, 3, B)),
           (None, 0, 0), backend, atol=2e-5)


def test_per_example_gradients_through_a_checkpointed_block(backend):
    block = nnjit.checkpoint(lambda h, w: nnjit.tanh(h @ w))

    def loss(p, x, y):
        return nn.cross_entropy(block(block(x[None], p["w1"]), p["w2"]), y[None])

    p = {"w1": f32(4, 4), "w2": f32(4, 3)}
    _check(nnjit.grad(loss), (p, f32(B, 4), RNG.integers(0, 3, B)), (None, 0, 0), backend)


def test_scan_with_an_unbatched_carry_that_becomes_batched(backend):
    def cumulative(x):
        def body(c, xt):
            c = c * 0.5 + xt
            return c, c * 2.0
        return nnjit.scan(body, np.zeros(2, np.float32), x)

    _check(cumulative, (f32(B, 4, 2),), (0,), backend)


def test_scatter_add_directly(backend):
    from nnjit.ir import prims as P

    def f(idx, upd):
        return P.scatter_add(idx, upd, (5, 2), axis=0)

    _check(f, (RNG.integers(0, 5, (B, 3)), f32(B, 3, 2)), (0, 0), backend)
    _check(f, (np.array([0, 4, 4]), f32(B, 3, 2)), (None, 0), backend)
    _check(f, (RNG.integers(0, 5, (B, 3)), f32(3, 2)), (0, None), backend)


def test_out_axes_captures_and_unbatched_values(backend):
    w = f32(4, 3)

    def f(x, x2):
        g = nnjit.vmap(lambda v: (nnjit.relu(v @ x2), nnjit.sum(x2)), out_axes=(1, None))
        return g(x)

    out, total = nnjit.jit(f, backend=backend)(f32(B, 4), w)       # x2 captured from jit
    assert out.shape == (3, B) and total.shape == ()
    assert_close(total, w.sum())
    g = nnjit.trace(lambda x, w: nnjit.vmap(lambda v: v * 2.0 + nnjit.sum(w * 1.0))(x),
                    f32(B, 4), w)
    # sum(w * 1.0) does not depend on v: computed once, on (4, 3), not per example
    assert [n.type.shape for n in g.nodes if n.op == Op.SUM] == [()]
    # an unbatched output with an int out_axes is broadcast, as in JAX
    _, three = nnjit.vmap(lambda v: (v * 2.0, 3.0))(f32(B, 2))
    np.testing.assert_array_equal(three, np.full(B, 3.0, np.float32))


def test_vmap_of_vmap(backend):
    x = f32(2, B, 4)
    got = nnjit.jit(nnjit.vmap(nnjit.vmap(lambda v: nnjit.softmax(v)), in_axes=0),
                    backend=backend)(x)
    e = np.exp(x - x.max(-1, keepdims=True))
    assert_close(got, e / e.sum(-1, keepdims=True))


def test_vmap_errors_name_the_problem():
    with pytest.raises(ShapeError, match="mapped axes differ in size"):
        nnjit.vmap(lambda a, b: a + b)(f32(3, 2), f32(4, 2))
    with pytest.raises(ShapeError, match="in_axes has 1 entries but <lambda> was called with 2"):
        nnjit.vmap(lambda a, b: a + b, in_axes=(0,))(f32(3, 2), f32(3, 2))
    with pytest.raises(ShapeError, match="no argument is mapped"):
        nnjit.vmap(lambda a: a, in_axes=None)(f32(3))
    with pytest.raises(ShapeError, match="in_axes 2 is out of range"):
        nnjit.vmap(lambda a: a, in_axes=2)(f32(3, 2))
    with pytest.raises(ShapeError, match="output 0 depends on the mapped inputs, but its "
                                         "out_axes is None"):
        nnjit.vmap(lambda a: a * 2.0, out_axes=None)(f32(3))
    with pytest.raises(BatchingError, match="conv2d with a batched weight"):
        nnjit.vmap(lambda x, w: nnjit.conv2d(x, w), in_axes=(None, 0))(f32(1, 1, 4, 4),
                                                                        f32(B, 2, 1, 3, 3))
    with pytest.raises(BatchingError, match="random_uniform with a batched seed"):
        nnjit.vmap(lambda s: nnjit.dropout(nnjit.sum(s * 0) + f32(4), 0.5, s))(np.arange(3))
    with pytest.raises(BatchingError, match="vmap: fusion cannot be batched"):
        _rule(Op.FUSION)(None, type("N", (), {"loc": None})(), [], [True], 2)


# every op at the time vmap was written: a batching rule, or elementwise (operands broadcast),
# or a source without operands (never batched)
OPS_WITH_RULES = {Op.SUM, Op.MAX, Op.ARGMAX, Op.RESHAPE, Op.TRANSPOSE, Op.BROADCAST_TO,
                  Op.SLICE, Op.PAD, Op.CONCAT, Op.TAKE, Op.SCATTER_ADD, Op.CHECK_INDEX,
                  Op.MATMUL, Op.CONV2D, Op.CONV2D_GRAD_INPUT, Op.CONV2D_GRAD_WEIGHT,
                  Op.MAX_POOL2D, Op.AVG_POOL2D, Op.MAX_POOL2D_GRAD, Op.AVG_POOL2D_GRAD, Op.SCAN,
                  Op.RANDOM_UNIFORM, Op.FUSION, Op.OPTIMIZATION_BARRIER, Op.PROD,
                  Op.ALL_REDUCE, Op.BROADCAST, Op.ALL_GATHER, Op.REDUCE_SCATTER}


def test_every_non_elementwise_op_has_a_rule():
    from nnjit.ir import Kind
    from nnjit.ir.opdef import OPDEFS
    for op in OPS_WITH_RULES:
        assert OPDEFS[op].batch is not None, op
    for op, d in OPDEFS.items():
        if op not in OPS_WITH_RULES and d.arity != 0 and d.kind != Kind.ELEMENTWISE:
            pytest.fail(f"{op} (kind {d.kind}) has no batching rule")
