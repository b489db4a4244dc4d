"""`nnjit.scan` against an explicit Python loop in numpy (jax.lax.scan semantics), on every backend:
carry only, ys only, several carries and pytree xs, consts captured from the outer trace, nested
scans, reverse, `length` without xs, and zero-length scans.
"""
from __future__ import annotations

import numpy as np
import pytest

import nnjit
from nnjit.ir import Op
from tests.helpers import assert_close, run

RNG = np.random.default_rng(0)


def randn(*shape, dtype=np.float32):
    return RNG.standard_normal(shape).astype(dtype)


def np_scan(step, init, xs, length=None, reverse=False):
    """The reference: a Python loop. `xs` is a list of arrays (or None); `step(c, x_t)`."""
    n = length if xs is None else len(xs[0])
    c, ys = init, []
    order = range(n - 1, -1, -1) if reverse else range(n)
    out = {}
    for t in order:
        c, y = step(c, None if xs is None else [x[t] for x in xs])
        out[t] = y
    ys = [out[t] for t in range(n)]
    return c, ys


def test_carry_only(backend):
    def f(h0, xs):
        return nnjit.scan(lambda h, x: (nnjit.tanh(h * 0.5 + x), None), h0, xs)[0]

    h0, xs = randn(3), randn(5, 3)
    want, _ = np_scan(lambda h, x: (np.tanh(h * 0.5 + x[0]), None), h0, [xs])
    assert_close(run(f, h0, xs, backend=backend), want)


def test_ys_only(backend):
    def f(xs):
        _, ys = nnjit.scan(lambda c, x: (c, x * x + 1.0), None, xs)
        return ys

    xs = randn(4, 2, 3)
    assert_close(run(f, xs, backend=backend), xs * xs + 1)


def test_cumulative_sum_and_running_max(backend):
    def f(xs):
        def step(c, x):
            s, m = c
            s, m = s + x, nnjit.maximum(m, x)
            return (s, m), (s, m * 2.0)
        return nnjit.scan(step, (xs[0] * 0.0, xs[0]), xs)

    xs = randn(6, 4)
    (s, m), (ss, mm) = run(f, xs, backend=backend)
    assert_close(s, xs.sum(0), rtol=1e-5)
    assert_close(m, xs.max(0))
    assert_close(ss, np.cumsum(xs, 0), rtol=1e-5)
    assert_close(mm, np.maximum.accumulate(xs, 0) * 2)


def test_pytree_carries_and_xs(backend):
    def f(init, seq):
        def step(c, x):
            h = nnjit.tanh(c["h"] @ x["w"] + x["b"])
            n = c["n"] + 1
            return {"h": h, "n": n}, [h.sum(), nnjit.cast(n, np.float32) * x["b"]]
        return nnjit.scan(step, init, seq)

    init = {"h": randn(2, 3), "n": np.int64(0)}
    seq = {"w": randn(4, 3, 3), "b": randn(4, 3)}

    def step(c, x):
        w, b = x
        h = np.tanh(c["h"] @ w + b)
        return {"h": h, "n": c["n"] + 1}, [h.sum(), np.float32(c["n"] + 1) * b]

    want_c, want_ys = np_scan(step, init, [seq["w"], seq["b"]])
    c, ys = run(f, init, seq, backend=backend)
    assert sorted(c) == ["h", "n"] and isinstance(ys, list) and len(ys) == 2
    assert_close(c["h"], want_c["h"])
    assert c["n"] == 4 and np.asarray(c["n"]).dtype == np.int64
    assert_close(ys[0], np.array([y[0] for y in want_ys], np.float32), rtol=1e-5)
    assert_close(ys[1], np.stack([y[1] for y in want_ys]))


def test_integer_and_bool_carries(backend):
    def f(xs):
        def step(c, x):
            k, seen = c
            return (k + x, seen | (x > 2)), k * x
        return nnjit.scan(step, (np.int32(0), False), xs)

    xs = np.array([1, 3, 0, 2], np.int32)
    (k, seen), ys = run(f, xs, backend=backend)
    assert k == xs.sum() and bool(seen)
    np.testing.assert_array_equal(ys, np.concatenate([[0], np.cumsum(xs)[:-1]]) * xs)


def test_consts_captured_from_the_outer_trace(backend):
    def f(w, b, xs):
        scale = (w * w).sum()                       # an outer traced value
        table = np.arange(3, dtype=np.float32)      # a numpy constant
        def step(h, x):
            return nnjit.tanh(h @ w + b + x * scale) + table, h.sum()
        return nnjit.scan(step, xs[0] * 0.0, xs)

    w, b, xs = randn(3, 3), randn(3), randn(5, 3)
    g = nnjit.trace(f, w, b, xs)
    (scan,) = [n for n in g.nodes if n.op == Op.SCAN]
    assert scan.attrs["num_consts"] == 3                    # w, b and scale
    scale = (w * w).sum()
    table = np.arange(3, dtype=np.float32)
    want = np_scan(lambda h, x: (np.tanh(h @ w + b + x[0] * scale) + table, h.sum()),
                   np.zeros(3, np.float32), [xs])
    h, ys = run(f, w, b, xs, backend=backend)
    assert_close(h, want[0], rtol=1e-5)
    assert_close(ys, np.array(want[1], np.float32), rtol=1e-5)


def test_nested_scan(backend):
    def f(h0, xss, w):
        def outer(h, xs):
            def inner(g, x):
                g = nnjit.tanh(g * w + x)           # w is captured through both bodies
                return g, g * g
            g, gs = nnjit.scan(inner, h, xs)
            return g + 1.0, gs.sum(axis=0)
        return nnjit.scan(outer, h0, xss)

    h0, xss, w = randn(3), randn(4, 2, 3), randn(3)

    def outer(h, xs):
        g, gs = np_scan(lambda g, x: (np.tanh(g * w + x[0]),) * 2, h, [xs[0]])
        return g + 1, np.sum([v * v for v in gs], axis=0)

    want_h, want_ys = np_scan(outer, h0, [xss])
    h, ys = run(f, h0, xss, w, backend=backend)
    assert_close(h, want_h, rtol=1e-5)
    assert_close(ys, np.stack(want_ys), rtol=1e-5)


@pytest.mark.parametrize("reverse", [False, True])
def test_reverse(backend, reverse):
    def f(h0, xs):
        return nnjit.scan(lambda h, x: (h * 0.5 + x, h), h0, xs, reverse=reverse)

    h0, xs = randn(2), randn(5, 2)
    want_h, want_ys = np_scan(lambda h, x: (h * 0.5 + x[0], h), h0, [xs], reverse=reverse)
    h, ys = run(f, h0, xs, backend=backend)
    assert_close(h, want_h)
    assert_close(ys, np.stack(want_ys))        # ys[t] belongs to x[t] in both directions
    if reverse:
        assert_close(ys[-1], h0)


def test_length_without_xs(backend):
    def f(h0):
        return nnjit.scan(lambda h, _: (h * 2.0 + 1.0, h), h0, None, length=4)

    h0 = randn(3)
    want_h, want_ys = np_scan(lambda h, _: (h * 2 + 1, h), h0, None, length=4)
    h, ys = run(f, h0, backend=backend)
    assert_close(h, want_h)
    assert_close(ys, np.stack(want_ys))
    assert ys.shape == (4, 3)


def test_length_without_xs_reversed_counter(backend):
    def f(k0):
        return nnjit.scan(lambda k, _: (k + 1, k * k), k0, None, length=5, reverse=True)

    k, ys = run(f, np.int64(2), backend=backend)
    assert k == 7
    np.testing.assert_array_equal(ys, np.array([6, 5, 4, 3, 2]) ** 2)


def test_zero_length_with_xs(backend):
    def f(h0, xs):
        return nnjit.scan(lambda h, x: (h + x, h * x), h0, xs)

    h0 = randn(3)
    h, ys = run(f, h0, np.zeros((0, 3), np.float32), backend=backend)
    assert_close(h, h0)
    assert ys.shape == (0, 3) and ys.dtype == np.float32


def test_zero_length_without_xs(backend):
    def f(h0):
        return nnjit.scan(lambda h, _: (h + 1.0, (h, h.sum())), h0, None, length=0)

    h0 = randn(2, 2)
    h, (ys, sums) = run(f, h0, backend=backend)
    assert_close(h, h0)
    assert ys.shape == (0, 2, 2) and sums.shape == (0,)


def test_length_agrees_with_xs(backend):
    def f(xs):
        return nnjit.scan(lambda c, x: (c + x, x), xs[0], xs, length=3)

    xs = randn(3, 2)
    c, ys = run(f, xs, backend=backend)
    assert_close(c, xs[0] + xs.sum(0), rtol=1e-5)
    with pytest.raises(nnjit.ShapeError, match="disagree"):
        nnjit.trace(lambda xs: nnjit.scan(lambda c, x: (c, x), xs[0], xs, length=4), xs)


def test_scan_is_one_op_not_unrolled():
    g = nnjit.trace(lambda h, xs: nnjit.scan(lambda h, x: (h + x, h), h, xs),
                    randn(3), randn(100, 3))
    assert [n.op for n in g.nodes] == [Op.SCAN]
    assert g.nodes[0].attrs["length"] == 100
