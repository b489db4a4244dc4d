"""`jit(static_argnums=, static_argnames=)` and keyword arguments: static values are baked into
the trace, hashable, part of the cache key (a new value recompiles, and the message says which
argument); traced keyword arguments are pytree inputs named after the parameter; grad and
value_and_grad pass keyword arguments through undifferentiated."""
from __future__ import annotations

import numpy as np
import pytest

import nnjit
from nnjit import ArgumentError
from tests.helpers import assert_close


def f32(*shape, fill=1.0):
    return np.full(shape, fill, np.float32)


class Counted:
    def __init__(self):
        self.traces = 0


def test_static_argnums_recompile_per_value(backend):
    c = Counted()

    def act(x, kind, scale):
        c.traces += 1
        y = nnjit.relu(x) if kind == "relu" else nnjit.tanh(x)
        return y * scale

    jf = nnjit.jit(act, backend=backend, static_argnums=1)
    x = np.linspace(-1, 1, 6, dtype=np.float32)
    assert_close(jf(x, "relu", 2.0), np.maximum(x, 0) * 2)
    assert_close(jf(x, "relu", 3.0), np.maximum(x, 0) * 3)     # traced scale: no recompile
    assert c.traces == 1
    assert_close(jf(x, "tanh", 2.0), np.tanh(x) * 2)
    # by name: the same dynamic arguments (x, scale), so the same cache entry
    assert_close(jf(x, kind="relu", scale=1.0), np.maximum(x, 0))
    assert c.traces == 2 and len(jf._cache) == 2
    assert jf.recompiles[0] == "static argument kind changed from 'relu' to 'tanh'"


def test_static_argnames_and_python_ints_in_control_flow(backend):
    def mlp(x, w, n_layers):
        for _ in range(n_layers):
            x = nnjit.tanh(x @ w)
        return x

    jf = nnjit.jit(mlp, backend=backend, static_argnames="n_layers")
    x, w = f32(2, 3, fill=0.5), np.eye(3, dtype=np.float32) * 0.9
    for n in (1, 3, 1):
        want = x.astype(np.float64)
        for _ in range(n):
            want = np.tanh(want @ w)
        assert_close(jf(x, w, n_layers=n), want.astype(np.float32))
        assert_close(jf(x, w, n), want.astype(np.float32))             # positionally: static too (as in JAX)
    assert len(jf._cache) == 2 and jf.recompiles.count(
        "static argument n_layers changed from 1 to 3") == 1


def test_static_value_type_is_part_of_the_key(backend):
    jf = nnjit.jit(lambda x, k: x * (2 if isinstance(k, float) else 3), backend=backend,
                   static_argnums=(1,))
    assert_close(jf(f32(2), 1), f32(2, fill=3))
    assert_close(jf(f32(2), 1.0), f32(2, fill=2))    # 1 == 1.0, but a different type


def test_traced_kwargs_are_named_inputs(backend):
    c = Counted()

    def f(x, *, bias, gain=1.0):
        c.traces += 1
        return x * gain + bias["b"]

    jf = nnjit.jit(f, backend=backend)
    x = f32(3)
    assert_close(jf(x, bias={"b": f32(3, fill=2.0)}), f32(3, fill=3.0))
    assert_close(jf(x, bias={"b": f32(3, fill=1.0)}, gain=np.float32(4)), f32(3, fill=5.0))
    assert_close(jf(x, gain=np.float32(2), bias={"b": f32(3, fill=0.0)}), f32(3, fill=2.0))
    assert c.traces == 2                      # gain given or not: two trees; order irrelevant
    g = jf.trace(x, bias={"b": f32(3)}, gain=np.float32(1)).graph
    assert g.input_names == ("x", "bias_b", "gain")
    jf(x, bias={"b": f32(1)}, gain=np.float32(1))
    assert jf.recompiles[-1] == "argument bias['b'] shape changed from f32[3] to f32[1]"


def test_static_errors_name_the_argument():
    def f(x, cfg, *, mode="a"):
        return x

    with pytest.raises(ArgumentError, match=r"static argument cfg must be hashable.*list"):
        nnjit.jit(f, static_argnums=1)(f32(2), [1, 2])
    with pytest.raises(ArgumentError, match="static argument mode must be hashable"):
        nnjit.jit(f, static_argnames="mode")(f32(2), 1.0, mode={"a": 1})
    with pytest.raises(ArgumentError, match=r"static_argnums has 5, but f takes 2"):
        nnjit.jit(f, static_argnums=5)
    with pytest.raises(ArgumentError, match=r"static_argnames has 'modes', which is not a "
                                            r"parameter of f \(x, cfg, mode\)"):
        nnjit.jit(f, static_argnames="modes")
    with pytest.raises(ArgumentError, match="both static and donated"):
        nnjit.jit(f, static_argnums=0, donate_argnums=0)
    with pytest.raises(ArgumentError, match=r"jit\(f\): .*unexpected keyword argument 'mdoe'"):
        nnjit.jit(f)(f32(2), 1.0, mdoe="b")


def test_donation_with_static_arguments_maps_positions(backend):
    def f(n, x):
        return x * n

    jf = nnjit.jit(f, backend=backend, static_argnums=0, donate_argnums=1)
    x = f32(4)
    assert_close(jf(3, x), f32(4, fill=3))
    cf = next(iter(jf._cache.values()))
    assert cf.options.donate == (0,)


def test_compile_with_kwargs_and_statics(backend):
    cf = nnjit.compile(lambda x, k, *, y: x * k + y, f32(2), 3, backend=backend,
                       static_argnums=1, y=f32(2))
    assert_close(cf(f32(2), f32(2, fill=2)), f32(2, fill=5))


def test_grad_and_value_and_grad_take_keyword_arguments(backend):
    def loss(w, x, *, target):
        return nnjit.sum((x @ w - target) ** 2)

    w = np.array([[1.0], [2.0]], np.float32)
    x = np.array([[1.0, 0.5], [2.0, 1.0]], np.float32)
    t = np.array([[1.0], [0.0]], np.float32)
    r = x @ w - t
    want = 2 * x.T @ r
    assert_close(nnjit.grad(loss)(w, x, target=t), want)              # eager
    step = nnjit.jit(lambda w, x, t: nnjit.value_and_grad(loss)(w, x, target=t), backend=backend)
    value, g = step(w, x, t)
    assert_close(value, np.sum(r ** 2))
    assert_close(g, want)
