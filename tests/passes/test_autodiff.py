"""The autodiff pass and `nnjit.grad` on composite functions and models, against central finite
differences in float64 (`tests.gradcheck`), plus the API contract: argnums and pytrees, has_aux,
non-differentiable arguments, stop_gradient, summed fan-out, grad of grad, and the gradient graph
as ordinary IR (prints, parses back, verifies, keeps the forward op's source lines)."""
from __future__ import annotations

import inspect

import numpy as np
import pytest

import nnjit
from nnjit.frontend.pytree import flatten
from nnjit.ir import CompileError, Op, evaluate, parse, subgraphs, verify
from nnjit.passes import autodiff
from tests.gradcheck import check_grads
from tests.helpers import assert_close, run

RNG = np.random.default_rng(1234)


def randn(*shape, scale=1.0):
    return RNG.standard_normal(shape) * scale


# -- models (float64) ------------------------------------------------------------------------------

def xent(z, y):
    """Mean cross-entropy of logits z (N, C) against int labels y (N,)."""
    n, c = z.shape
    return -(nnjit.one_hot(y, c, np.float64) * nnjit.log_softmax(z)).sum() / n


def mlp_loss(p, x, y):
    h = nnjit.relu(nnjit.linear(x, p["w1"], p["b1"]))
    return xent(nnjit.linear(h, p["w2"], p["b2"]), y)


def mlp_args():
    p = {"w1": randn(6, 4, scale=0.5), "b1": randn(6, scale=0.1),
         "w2": randn(3, 6, scale=0.5), "b2": randn(3, scale=0.1)}
    return p, randn(5, 4), np.array([0, 2, 1, 2, 0])


def convnet_loss(p, x, y):
    h = nnjit.relu(nnjit.conv2d(x, p["c1"], p["cb1"], padding=1))       # (N, 3, 6, 6)
    h = nnjit.max_pool2d(h, 2)                                           # (N, 3, 3, 3)
    h = nnjit.relu(nnjit.conv2d(h, p["c2"], p["cb2"], stride=1))         # (N, 4, 2, 2)
    h = nnjit.avg_pool2d(h, 2)                                           # (N, 4, 1, 1)
    logits = nnjit.linear(h.reshape(h.shape[0], -1), p["w"], p["b"])     # (N, 3)
    return xent(logits, y)


def convnet_args():
    p = {"c1": randn(3, 2, 3, 3, scale=0.5), "cb1": randn(3, scale=0.1),
         "c2": randn(4, 3, 2, 2, scale=0.5), "cb2": randn(4, scale=0.1),
         "w": randn(3, 4, scale=0.5), "b": randn(3, scale=0.1)}
    return p, randn(2, 2, 6, 6), np.array([1, 2])


def rnn_loss(h0, xs, p):
    def body(h, x):
        h = nnjit.tanh(x @ p["wx"] + h @ p["wh"] + p["b"])   # weights closed over
        return h, h
    h, hs = nnjit.scan(body, h0, xs)
    return (hs * hs).sum() + h.sum()


def rnn_args():
    p = {"wx": randn(3, 4, scale=0.5), "wh": randn(4, 4, scale=0.5), "b": randn(4, scale=0.1)}
    return randn(2, 4), randn(5, 2, 3), p


def lstm_cell(carry, x, p):
    """One LSTM step in torch.nn.LSTM's convention (gates i, f, g, o)."""
    h, c = carry
    n = h.shape[-1]
    gates = nnjit.linear(x, p["w_ih"], p["b_ih"]) + nnjit.linear(h, p["w_hh"], p["b_hh"])
    i, f = nnjit.sigmoid(gates[:, :n]), nnjit.sigmoid(gates[:, n:2 * n])
    g, o = nnjit.tanh(gates[:, 2 * n:3 * n]), nnjit.sigmoid(gates[:, 3 * n:])
    c = f * c + i * g
    h = o * nnjit.tanh(c)
    return (h, c), h


def lstm(p, xs, h0, c0):
    (h, c), hs = nnjit.scan(lambda carry, x: lstm_cell(carry, x, p), (h0, c0), xs)
    return hs, h, c


def lstm_args():
    hid, inp = 3, 2
    p = {"w_ih": randn(4 * hid, inp, scale=0.5), "w_hh": randn(4 * hid, hid, scale=0.5),
         "b_ih": randn(4 * hid, scale=0.1), "b_hh": randn(4 * hid, scale=0.1)}
    return p, randn(4, 2, inp), randn(2, hid), randn(2, hid)


def nested_scan(h0, xss, w):
    def outer(h, xs):
        def inner(g, x):
            g = nnjit.tanh(g * w + x)      # w is captured through both bodies
            return g, g * g
        g, gs = nnjit.scan(inner, h, xs)
        return g, gs.sum(axis=0)
    h, ys = nnjit.scan(outer, h0, xss)
    return h, ys


# -- composite functions -------------------------------------------------------------------------

@pytest.mark.parametrize("name,fn", [
    ("softmax", lambda z: nnjit.softmax(z)),
    ("softmax_axis0", lambda z: nnjit.softmax(z, axis=0)),
    ("log_softmax", lambda z: nnjit.log_softmax(z)),
    ("logsumexp", lambda z: nnjit.logsumexp(z)),
    ("logsumexp_keepdims", lambda z: nnjit.logsumexp(z, axis=0, keepdims=True)),
    ("mean", lambda z: nnjit.mean(z, axis=1)),
    ("min", lambda z: nnjit.min(z, axis=-1)),
    ("square_tanh", lambda z: nnjit.square(nnjit.tanh(z)) / 3.0 - z),
    ("getitem", lambda z: z[1:, ::-2] * z[0, ::-2] + z[-1, 1::2]),
])
def test_composites(backend, name, fn):
    check_grads(fn, (randn(3, 4),), backend=backend)


def test_cross_entropy_from_int_labels(backend):
    z, y = randn(5, 4), np.array([3, 0, 1, 1, 2])
    g = check_grads(xent, (z, y), 0, backend=backend, scalar=True)
    # the closed form: (softmax(z) - one_hot(y)) / n
    e = np.exp(z - z.max(1, keepdims=True))
    assert_close(g, (e / e.sum(1, keepdims=True) - np.eye(4)[y]) / 5)


def test_mlp(backend):
    check_grads(mlp_loss, mlp_args(), (0, 1), backend=backend, scalar=True)


def test_convnet(backend):
    check_grads(convnet_loss, convnet_args(), (0, 1), backend=backend, scalar=True)


# -- scan: backpropagation through time ------------------------------------------------------------

def test_rnn_scan(backend):
    """Gradients w.r.t. the initial carry, the sequence and the closed-over weights."""
    check_grads(rnn_loss, rnn_args(), (0, 1, 2), backend=backend, scalar=True)


def test_lstm_scan(backend):
    check_grads(lstm, lstm_args(), (0, 1, 2, 3), backend=backend)


def test_nested_scan(backend):
    check_grads(nested_scan, (randn(3), randn(2, 3, 3), randn(3, scale=0.5)), (0, 1, 2),
                backend=backend)


@pytest.mark.parametrize("reverse", [False, True])
def test_scan_reverse_and_several_carries(backend, reverse):
    def f(a0, b0, xs, ys, w):
        def body(carry, x):
            a, b = carry
            u, v = x
            a = nnjit.tanh(a * w + u)
            b = b + a * v
            return (a, b), (a * b, b.sum())
        return nnjit.scan(body, (a0, b0), (xs, ys), reverse=reverse)

    check_grads(f, (randn(3), randn(3), randn(4, 3), randn(4, 3), randn(3)), (0, 1, 2, 3, 4),
                backend=backend)


def test_scan_with_int_carry_and_bool_mask_sequence(backend):
    """Integer carries and bool sequences ride along without cotangents."""
    def f(h0, xs, mask, w):
        def body(carry, x):
            h, t = carry
            xt, m = x
            new = nnjit.tanh(h * w + xt * nnjit.cast(t, np.float64))
            h = nnjit.where(m, new, h)
            return (h, t + 1), h
        (h, t), hs = nnjit.scan(body, (h0, np.int64(1)), (xs, mask))
        return h, hs

    mask = np.array([[True, False], [True, True], [False, True], [True, False]])
    check_grads(f, (randn(2), randn(4, 2), mask, randn(2)), (0, 1, 3), backend=backend)


def test_scan_ys_unused_and_carry_unused(backend):
    """Cotangents missing for some scan results are zeros, not errors."""
    def f(h0, xs):
        h, ys = nnjit.scan(lambda h, x: (h * x, h + x), h0, xs)
        return ys.sum()

    def g(h0, xs):
        h, ys = nnjit.scan(lambda h, x: (h * x, h + x), h0, xs)
        return h.sum()

    args = (randn(3), randn(4, 3))
    check_grads(f, args, (0, 1), backend=backend, scalar=True)
    check_grads(g, args, (0, 1), backend=backend, scalar=True)


# -- fan-out ---------------------------------------------------------------------------------------

def test_value_used_several_times_sums_gradients(backend):
    x = randn(4)
    g = run(lambda x: nnjit.grad(lambda x: (x * x + x).sum())(x), x, backend=backend)
    assert_close(g, 2 * x + 1)
    # one value feeding four consumers, with broadcasting in between
    check_grads(lambda x: nnjit.exp(x) * x + nnjit.tanh(x) - x.T @ x + x.sum(axis=0),
                (randn(3, 3),), backend=backend)
    check_grads(lambda a: a + a.T, (randn(3, 1),), backend=backend)


def test_same_array_as_two_arguments(backend):
    x = randn(3)
    gx, gy = run(lambda x, y: nnjit.grad(lambda x, y: (x * y).sum(), (0, 1))(x, y), x, x,
                 backend=backend)
    assert_close(gx, x)
    assert_close(gy, x)


# -- non-differentiable values -------------------------------------------------------------------

def test_int_labels_and_bool_mask_arguments(backend):
    def masked_xent(z, y, mask):
        n, c = z.shape
        per_row = -(nnjit.one_hot(y, c, np.float64) * nnjit.log_softmax(z)).sum(axis=1)
        return nnjit.where(mask, per_row, 0.0).sum() / n

    args = (randn(4, 3), np.array([2, 0, 1, 1], np.int32), np.array([True, False, True, True]))
    g = check_grads(masked_xent, args, 0, backend=backend, scalar=True)
    assert np.all(g[1] == 0)   # the masked-out row gets no gradient


@pytest.mark.parametrize("args,argnums", [
    ((np.ones(3), np.arange(3)), 1),
    ((np.ones(3), np.arange(3)), (0, 1)),
    ((np.ones(3), np.array([True, False, True])), 1),
])
def test_grad_of_non_float_argument_is_an_error(backend, args, argnums):
    def f(x, y):
        return (x * nnjit.cast(y, np.float64)).sum()

    with pytest.raises(nnjit.NnjitError, match=r"differentiate.*(i64|bool)"):
        run(lambda *a: nnjit.grad(f, argnums)(*a), *args, backend=backend)
    with pytest.raises(nnjit.NnjitError, match=r"differentiate.*(i64|bool)"):
        nnjit.grad(f, argnums)(*args)   # eagerly too


def test_int_and_bool_paths_carry_no_gradient(backend):
    def f(x, table):
        k = nnjit.argmax(x)                                     # int path
        q = nnjit.cast(nnjit.cast(x * 3.0, np.int64), np.float64)  # float -> int -> float
        m = x > 0.0                                             # bool path
        return table[k].sum() + (q * x).sum() + nnjit.where(m, x, -x).sum()

    x = np.array([0.7, -1.3, 2.2, -0.4])
    table = randn(4, 2)
    gx, gt = run(lambda x, t: nnjit.grad(f, (0, 1))(x, t), x, table, backend=backend)
    q = np.trunc(x * 3.0)
    assert_close(gx, q + np.sign(x))
    assert_close(gt, np.eye(4)[2][:, None] * np.ones((4, 2)))
    check_grads(f, (x, table), (0, 1), backend=backend, scalar=True)


def test_dropout_gradient_is_its_fixed_mask(backend):
    """random_uniform's seed is not differentiable; the mask is fixed for a given seed."""
    def f(x, seed):
        return nnjit.dropout(x, 0.5, seed)

    x = randn(4, 5)
    check_grads(f, (x, np.int64(7)), 0, backend=backend)
    g = run(lambda x, s: nnjit.grad(lambda x, s: f(x, s).sum())(x, s), x, np.int64(7),
            backend=backend)
    y = run(f, x, np.int64(7), backend=backend)
    assert set(np.unique(g)) <= {0.0, 2.0}
    assert_close(g, np.where(y != 0, 2.0, 0.0))


def test_stop_gradient_blocks_gradients(backend):
    x = randn(5)
    g = run(lambda x: nnjit.grad(lambda x: (x * nnjit.stop_gradient(x)).sum())(x), x,
            backend=backend)
    assert_close(g, x)
    g = run(lambda x: nnjit.grad(lambda x: nnjit.stop_gradient(x * x).sum() + x.sum())(x), x,
            backend=backend)
    assert_close(g, np.ones(5))


def test_input_that_does_not_affect_the_loss_gets_zeros(backend):
    x, unused = randn(3), randn(2, 2)
    gx, gu = run(lambda x, u: nnjit.grad(lambda x, u: (x * x).sum(), (0, 1))(x, u), x, unused,
                 backend=backend)
    assert_close(gx, 2 * x)
    assert_close(gu, np.zeros((2, 2)))


def test_non_scalar_loss_is_an_error(backend):
    with pytest.raises(nnjit.NnjitError, match="scalar"):
        run(lambda x: nnjit.grad(lambda x: x * 2.0)(x), randn(3), backend=backend)


# -- API: argnums, pytrees, has_aux, value_and_grad ---------------------------------------------

def test_argnums_tuple_returns_a_tuple(backend):
    a, b, c = randn(2, 3), randn(3), randn(3, 2)

    def f(a, b, c):
        return ((a * b) @ c).sum()

    ga, gc = run(lambda *x: nnjit.grad(f, (0, 2))(*x), a, b, c, backend=backend)
    assert_close(ga, (b * c.sum(1))[None, :].repeat(2, 0))
    assert_close(gc, (a * b).sum(0)[:, None].repeat(2, 1))
    (gb,) = run(lambda *x: nnjit.grad(f, (1,))(*x), a, b, c, backend=backend)
    assert gb.shape == b.shape


def test_pytree_arguments_give_gradients_of_the_same_structure(backend):
    params = {"layer": [{"w": randn(3, 2), "b": randn(2)}, {"w": randn(2, 1)}],
              "scale": (randn(1), randn())}

    def f(params, x):
        h = x @ params["layer"][0]["w"] + params["layer"][0]["b"]
        h = nnjit.tanh(h) @ params["layer"][1]["w"]
        s0, s1 = params["scale"]
        return (h * s0 * s1).sum()

    x = randn(4, 3)
    g = check_grads(f, (params, x), 0, backend=backend, scalar=True)
    assert flatten(g)[1] == flatten(params)[1]
    assert isinstance(g["layer"], list) and isinstance(g["scale"], tuple)
    gp, gx = check_grads(f, (params, x), (0, 1), backend=backend, scalar=True)
    assert flatten(gp)[1] == flatten(params)[1] and gx.shape == x.shape


def test_has_aux_and_value_and_grad(backend):
    def f(w, x, y):
        logits = x @ w
        return xent(logits, y), {"logits": logits, "pred": nnjit.argmax(logits, -1)}

    w, x, y = randn(3, 4), randn(5, 3), np.array([0, 1, 2, 3, 0])
    g, aux = run(lambda *a: nnjit.grad(f, has_aux=True)(*a), w, x, y, backend=backend)
    (loss, aux2), g2 = run(lambda *a: nnjit.value_and_grad(f, has_aux=True)(*a), w, x, y,
                           backend=backend)
    assert_close(aux["logits"], x @ w)
    assert_close(aux["pred"], np.argmax(x @ w, -1))
    assert_close(aux2["logits"], x @ w)
    assert_close(g, g2)
    assert_close(loss, run(lambda *a: f(*a)[0], w, x, y, backend=backend))
    check_grads(lambda w, x, y: f(w, x, y)[0], (w, x, y), 0, backend=backend, scalar=True)
    v, gv = run(lambda *a: nnjit.value_and_grad(lambda *b: f(*b)[0], (0, 1))(*a), w, x, y,
                backend=backend)
    assert_close(v, loss)
    assert_close(gv[0], g)


def test_has_aux_requires_a_pair(backend):
    with pytest.raises(nnjit.NnjitError, match="has_aux"):
        run(lambda x: nnjit.grad(lambda x: x.sum(), has_aux=True)(x), randn(3), backend=backend)


# -- higher order -------------------------------------------------------------------------------

def test_grad_of_grad_scalar(backend):
    def cube(x):
        return x ** 3.0

    for x in (np.float64(1.5), np.float64(0.3), np.float64(2.0)):
        d2 = run(lambda x: nnjit.grad(nnjit.grad(cube))(x), x, backend=backend)
        d3 = run(lambda x: nnjit.grad(nnjit.grad(nnjit.grad(cube)))(x), x, backend=backend)
        assert_close(d2, 6 * x)
        assert_close(d3, np.float64(6.0))


@pytest.mark.parametrize("name,loss,args,argnums", [
    ("tanh_softmax", lambda x, w: (nnjit.softmax(nnjit.tanh(x @ w)) ** 2).sum(),
     (randn(3, 4), randn(4, 2)), (0, 1)),
    # conv2d's VJP applied twice: differentiates conv2d_grad_input and conv2d_grad_weight
    ("conv_wrt_x", lambda x, w: (nnjit.conv2d(x, w, stride=2, padding=1) ** 2).sum(),
     (randn(1, 2, 5, 5), randn(3, 2, 3, 3)), 0),
    ("conv_wrt_w", lambda x, w: (nnjit.conv2d(x, w, dilation=2, padding=(1, 2)) ** 2).sum(),
     (randn(2, 1, 5, 6), randn(2, 1, 2, 2)), 1),
    ("avg_pool", lambda x: (nnjit.avg_pool2d(x, 3, 2, padding=1, count_include_pad=False)
                            ** 2).sum(), (randn(1, 2, 5, 5),), 0),
    ("rnn", rnn_loss, rnn_args(), 2),
])
def test_grad_of_grad_matches_finite_differences(backend, name, loss, args, argnums):
    """Hessian-vector products: the gradient function itself checked against finite
    differences of the gradient."""
    check_grads(lambda *a: nnjit.grad(loss, argnums)(*a), args, tuple(range(len(args))),
                backend=backend)


def test_grad_of_max_pool_gradient_is_a_clear_error(backend):
    def g(x):
        return (nnjit.grad(lambda x: (nnjit.max_pool2d(x, 2) ** 2).sum())(x) ** 2).sum()

    with pytest.raises(CompileError, match="max_pool2d_grad is not differentiable"):
        run(lambda x: nnjit.grad(g)(x), randn(1, 1, 4, 4), backend=backend)


# -- the gradient graph is ordinary IR -------------------------------------------------------------

GRAPH_CASES = {
    "mlp": (mlp_loss, mlp_args(), (0, 1)),
    "convnet": (convnet_loss, convnet_args(), 0),
    "rnn": (rnn_loss, rnn_args(), (0, 1, 2)),
    "lstm": (lambda p, xs, h0, c0: lstm(p, xs, h0, c0)[0].sum(), lstm_args(), (0, 2, 3)),
    "nested_scan": (lambda h0, xss, w: nested_scan(h0, xss, w)[1].sum(),
                    (randn(3), randn(2, 3, 3), randn(3)), (0, 1, 2)),
}


def all_nodes(g):
    for n in g.nodes:
        yield n
        for sub in subgraphs(n):
            yield from all_nodes(sub)


@pytest.mark.parametrize("name", sorted(GRAPH_CASES))
def test_gradient_graph_prints_parses_and_verifies(name):
    loss, args, argnums = GRAPH_CASES[name]
    g = nnjit.trace(nnjit.grad(loss, argnums), *args)
    verify(g)
    text = str(g)
    back = parse(text)
    assert back == g
    assert str(back) == text
    assert any(n.op == Op.SCAN for n in g.nodes) == ("rnn" in name or "scan" in name
                                                    or "lstm" in name)


@pytest.mark.parametrize("name", sorted(GRAPH_CASES))
def test_autodiff_pass_on_a_traced_graph(backend, name):
    """`autodiff.grad(g, wrt)`: forward outputs unchanged, then the gradients; the result
    verifies, round-trips through text, and evaluates to what nnjit.grad computes."""
    loss, args, argnums = GRAPH_CASES[name]
    fwd = nnjit.trace(loss, *args)
    leaves = [np.asarray(x) for x in flatten(tuple(args))[0]]
    wrt = [i for i, x in enumerate(leaves) if x.dtype.kind == "f"]
    gg = autodiff.grad(fwd, wrt)
    verify(gg)
    assert parse(str(gg)) == gg
    assert len(gg.outputs) == len(fwd.outputs) + len(wrt)
    assert [v.type for v in gg.outputs[len(fwd.outputs):]] == [fwd.inputs[i].type for i in wrt]
    got = evaluate(gg, leaves)
    assert_close(got[0], evaluate(fwd, leaves)[0])
    nums = tuple(i for i, a in enumerate(args) if all(
        np.asarray(x).dtype.kind == "f" for x in flatten(a)[0]))
    want = flatten(run(lambda *a: nnjit.grad(loss, nums)(*a), *args, backend=backend))[0]
    assert len(want) == len(wrt)
    for a, b in zip(got[len(fwd.outputs):], want):
        assert_close(a, b)


def test_autodiff_pass_errors():
    g = nnjit.trace(lambda x, n: x * nnjit.cast(n, np.float64), randn(3), np.arange(3))
    with pytest.raises(CompileError, match="float scalar"):
        autodiff.grad(g, [0])
    g = nnjit.trace(lambda x, n: (x * nnjit.cast(n, np.float64)).sum(), randn(3), np.arange(3))
    with pytest.raises(CompileError, match="cannot differentiate with respect to input 'n'"):
        autodiff.grad(g, [1])


def located(x, w, h0, xs):
    h = nnjit.tanh(x @ w)
    s = nnjit.softmax(h * h)

    def body(c, xt):
        c = nnjit.sigmoid(c * xt) + c
        return c, c * c

    c, ys = nnjit.scan(body, h0, xs)
    return (s.max(axis=1) * c.sum()).sum() + nnjit.max_pool2d(ys, 1).mean()


def test_gradient_nodes_carry_the_forward_source_lines():
    args = (randn(2, 3), randn(3, 2), randn(1, 1, 2), randn(3, 1, 1, 2))
    fwd_locs = {n.loc for n in all_nodes(nnjit.trace(located, *args))}
    lines, first = inspect.getsourcelines(located)
    body_lines = range(first, first + len(lines))
    g = nnjit.trace(nnjit.grad(located, (0, 1, 2, 3)), *args)
    n_checked = 0
    for n in all_nodes(g):
        if n.op == Op.CONST:     # constants are shared (one 1.0 for many rules)
            continue
        assert n.loc is not None and n.loc.file.endswith("test_autodiff.py"), (n.op, n.loc)
        assert n.loc.line in body_lines, (n.op, n.loc)
        assert n.loc in fwd_locs, f"{n.op.value} at {n.loc}: no forward op there"
        n_checked += 1
    assert n_checked > 60
