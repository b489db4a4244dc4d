"""`nnjit.jit` specializes per argument signature (pytree structure, shapes, dtypes): it retraces
only on a new signature and says why (`jf.recompiles`, `NNJIT_LOG=recompiles`); it takes and
returns pytrees, Python scalars and captured arrays; `nnjit.compile` checks its arguments;
jit inside jit is transparent; `nnjit.trace` names inputs after arguments and pytree paths.
"""
from __future__ import annotations

import functools
from collections import namedtuple

import numpy as np
import pytest

import nnjit
from nnjit.ir import Op
from tests.helpers import assert_close, run

State = namedtuple("State", "h c")


def f32(*shape, fill=1.0):
    return np.full(shape, fill, np.float32)


class Counted:
    """A function that counts how often it is traced (its Python body runs only then)."""

    def __init__(self, fn):
        self.fn, self.traces = fn, 0
        functools.update_wrapper(self, fn)      # keeps the parameter names jit reports

    def __call__(self, *args):
        self.traces += 1
        return self.fn(*args)


def counted_jit(fn, backend):
    c = Counted(fn)
    return c, nnjit.jit(c, backend=backend)


# -- caching per signature -------------------------------------------------------------------------

def test_same_signature_reuses_the_compiled_function(backend):
    def affine(x, w):
        return x @ w + 1.0

    c, jf = counted_jit(affine, backend)
    x, w = np.arange(6, dtype=np.float32).reshape(2, 3), f32(3, 4)
    assert_close(jf(x, w), x @ w + 1.0)
    assert_close(jf(x * 2, w * 3), (x * 2) @ (w * 3) + 1.0)     # new values, same signature
    assert_close(jf(x.copy(), w), x @ w + 1.0)
    assert c.traces == 1 and jf.recompiles == []


def test_a_call_like_the_last_one_skips_binding_and_anything_else_does_not(backend,
                                                                          monkeypatch):
    """Arguments exactly like the previous call's go straight to its compiled function (no
    binding, no signature hashing); a new shape, a non-contiguous array, a Python scalar or
    a keyword argument takes the full path, and so gets the right function or error."""
    c, jf = counted_jit(lambda x, s: x * s, backend)
    x = f32(2, 3, fill=2.0)
    assert_close(jf(x, np.float32(3)), x * 3)
    from nnjit.frontend.binding import StaticArgs
    split = StaticArgs.split
    calls = []
    monkeypatch.setattr(StaticArgs, "split", lambda *a: calls.append(1) or split(*a))
    assert_close(jf(x + 1, np.float32(2)), (x + 1) * 2)           # the fast path
    assert calls == []
    assert_close(jf(f32(4), np.float32(2)), f32(4) * 2)            # a new shape: retraced
    assert_close(jf(np.ones((3, 2), np.float32).T, np.float32(5)), f32(2, 3, fill=5.0))
    assert_close(jf(x, 2.0), x * 2)                                # Python float
    assert_close(jf(x, s=np.float32(4)), x * 4)                    # keyword
    assert len(calls) == 4 and c.traces == 2       # only the new shape retraced
    with pytest.raises(TypeError, match="positional"):
        jf(x, np.float32(2), np.float32(1))                        # too many arguments
    assert c.traces == 3                           # the failed trace
    jf.clear_cache()
    assert_close(jf(x, np.float32(3)), x * 3)
    assert c.traces == 4


def test_new_shape_or_dtype_retraces(backend):
    c, jf = counted_jit(lambda x: x * 2, backend)
    jf(f32(2))
    jf(f32(3))                                        # shape
    jf(np.ones(3, np.float64))                        # dtype
    jf(np.ones(3, np.int32))
    jf(f32(2))                                        # back to the first: cached
    jf(np.ones(3, np.float64))
    assert c.traces == 4
    assert jf.recompiles == [
        "argument x shape changed from f32[2] to f32[3]",
        "argument x dtype changed from f32[3] to f64[3]",
        "argument x dtype changed from f64[3] to i32[3]",
    ]


def test_recompile_explanations_name_pytree_paths(backend):
    def mlp(params, x):
        h = nnjit.tanh(x @ params["w1"] + params["b1"])
        return h @ params["w2"]

    c, jf = counted_jit(mlp, backend)
    p = {"w1": f32(3, 4), "b1": f32(4), "w2": f32(4, 2)}
    x = f32(5, 3)
    jf(p, x)
    jf(dict(p, w2=f32(4, 7)), x)
    assert jf.recompiles[-1] == "argument params['w2'] shape changed from f32[4,2] to f32[4,7]"
    jf(dict(p, w1=np.ones((3, 4)), b1=np.ones(4)), np.ones((5, 3)))
    assert jf.recompiles[-1] == (
        "argument params['b1'] dtype changed from f32[4] to f64[4]; "
        "argument params['w1'] dtype changed from f32[3,4] to f64[3,4]; "
        "argument x dtype changed from f32[5,3] to f64[5,3]")
    jf(p, f32(6, 3, fill=2.0))
    assert jf.recompiles[-1] == "argument x shape changed from f32[5,3] to f32[6,3]"
    assert c.traces == 4


def test_recompile_explains_against_the_closest_cached_signature(backend):
    _, jf = counted_jit(lambda x, y: x + y, backend)
    jf(f32(2), f32(2))
    jf(f32(3), f32(3))
    jf(f32(3), np.ones(3, np.float64))     # nearest: (f32[3], f32[3]), not the first entry
    assert jf.recompiles[-1] == "argument y dtype changed from f32[3] to f64[3]"
    jf(f32(2), np.ones(2, np.int64))       # nearest: (f32[2], f32[2])
    assert jf.recompiles[-1] == "argument y dtype changed from f32[2] to i64[2]"


def test_recompile_explains_shape_and_dtype_together(backend):
    _, jf = counted_jit(lambda x: x, backend)
    jf(f32(2))
    jf(np.ones((4, 4), np.int32))
    assert jf.recompiles == ["argument x shape and dtype changed from f32[2] to i32[4,4]"]


def test_recompile_explains_structure_changes(backend):
    def f(params, xs, st):
        return params["a"] + xs[0] + st.h

    _, jf = counted_jit(f, backend)
    p, xs, st = {"a": f32(2)}, [f32(2)], State(f32(2), f32(2))
    jf(p, xs, st)
    jf(dict(p, b=f32(2)), xs, st)
    assert jf.recompiles[-1] == "argument params changed structure: keys ['b'] added"
    jf(p, xs + [f32(2)], st)
    assert jf.recompiles[-1] == "argument xs length changed from 1 to 2"
    jf(p, (f32(2),), st)
    assert jf.recompiles[-1] == "argument xs changed from a list of 1 to a tuple of 1"
    jf(p, xs, State(f32(2), [f32(2), f32(2)]))
    assert jf.recompiles[-1] == "argument st.c changed from an array to a list of 2"
    jf(p, xs, State(f32(2), f32(3)))
    assert jf.recompiles[-1] == "argument st.c shape changed from f32[2] to f32[3]"
    jf(p, [f32(2, 2)], st)
    assert jf.recompiles[-1] == "argument xs[0] shape changed from f32[2] to f32[2,2]"


def test_recompile_explains_a_changed_argument_count(backend):
    _, jf = counted_jit(lambda *xs: sum(xs[1:], xs[0]), backend)
    jf(f32(2), f32(2))
    jf(f32(2), f32(2), f32(2))
    assert jf.recompiles == ["called with 3 positional arguments, previously 2"]


def test_nnjit_log_recompiles_prints_to_stderr(backend, capsys, monkeypatch):
    def step(params, x):
        return params["w"] * x

    jf = nnjit.jit(step, backend=backend)
    monkeypatch.setenv("NNJIT_LOG", "recompiles")
    jf({"w": f32(2)}, f32(2))
    assert capsys.readouterr().err == ""                 # first compile: nothing to explain
    jf({"w": f32(3)}, f32(3))
    err = capsys.readouterr().err
    assert err.startswith("nnjit: recompiling step: ")
    assert "argument params['w'] shape changed from f32[2] to f32[3]" in err
    assert "argument x shape changed from f32[2] to f32[3]" in err
    monkeypatch.setenv("NNJIT_LOG", " recompiles, ")      # spaces and empty items are fine
    jf({"w": f32(4)}, f32(4))
    assert "recompiling step" in capsys.readouterr().err
    monkeypatch.setenv("NNJIT_LOG", "passes, recompiles")  # an unknown topic is an error
    with pytest.raises(nnjit.NnjitError, match="unknown topic"):
        jf({"w": f32(6)}, f32(6))
    monkeypatch.delenv("NNJIT_LOG")
    jf({"w": f32(5)}, f32(5))
    assert capsys.readouterr().err == ""
    assert len(jf.recompiles) == 4


# -- pytrees, scalars, constants -------------------------------------------------------------------

def test_pytrees_in_and_out(backend):
    def f(params, batch, st, nothing):
        y = batch["x"] @ params[0] + params[1]
        return {"y": y, "pair": (st.h * 2.0, [st.c, None]), "st": State(st.c, st.h)}, None

    p = [np.arange(6, dtype=np.float32).reshape(3, 2), f32(2, fill=0.5)]
    batch = {"x": np.arange(12, dtype=np.float32).reshape(4, 3)}
    st = State(f32(2, fill=3.0), f32(1))
    out, none = run(f, p, batch, st, None, backend=backend)
    assert none is None
    assert sorted(out) == ["pair", "st", "y"]
    assert_close(out["y"], batch["x"] @ p[0] + p[1])
    assert isinstance(out["pair"], tuple) and isinstance(out["pair"][1], list)
    assert_close(out["pair"][0], st.h * 2)
    assert_close(out["pair"][1][0], st.c)
    assert out["pair"][1][1] is None
    assert isinstance(out["st"], State)
    assert_close(out["st"].h, st.c)
    assert_close(out["st"].c, st.h)


def test_dict_keys_flatten_sorted_whatever_the_insertion_order(backend):
    c, jf = counted_jit(lambda d: d["b"] - d["a"], backend)
    assert_close(jf({"a": f32(2, fill=1.0), "b": f32(2, fill=5.0)}), f32(2, fill=4.0))
    assert_close(jf({"b": f32(2, fill=5.0), "a": f32(2, fill=1.0)}), f32(2, fill=4.0))
    assert c.traces == 1


def test_python_scalars_are_inputs_not_constants(backend):
    def scale(x, s, n, flag):
        y = x * s + nnjit.cast(n, np.float32)
        return nnjit.where(flag, y, -y)

    c, jf = counted_jit(scale, backend)
    x = f32(3)
    assert_close(jf(x, 2.0, 1, True), f32(3, fill=3.0))
    assert_close(jf(x, 0.5, 4, False), f32(3, fill=-4.5))      # new values: no retrace
    assert c.traces == 1
    jf(x, 2, 1, True)                                           # int where a float was
    assert c.traces == 2
    assert jf.recompiles == ["argument s dtype changed from f32[] to i64[]"]
    g = nnjit.trace(scale, x, 2.0, 1, True)
    assert [str(t) for t in g.input_types] == ["f32[3]", "f32[]", "i64[]", "bool[]"]


def test_python_scalar_outputs_become_arrays(backend):
    out = run(lambda x: (x, 3, 2.5, True), f32(2), backend=backend)
    assert [np.asarray(o).dtype for o in out] == [np.float32, np.int64, np.float32, np.bool_]
    assert out[1] == 3 and out[2] == 2.5 and out[3]


def test_captured_numpy_arrays_become_constants(backend):
    table = np.arange(6, dtype=np.float32).reshape(2, 3)

    def f(x):
        return x * table

    c, jf = counted_jit(f, backend)
    assert_close(jf(f32(2, 3)), table)
    g = nnjit.trace(f, f32(2, 3))
    consts = [n for n in g.nodes if n.op == Op.CONST]
    assert len(g.inputs) == 1 and len(consts) == 1
    np.testing.assert_array_equal(consts[0].attrs["value"], table)
    assert "dense<f32[2,3], [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]>" in str(g)
    table[:] = 100.0                       # baked in at trace time: the compiled code keeps it
    assert_close(jf(f32(2, 3)), np.arange(6, dtype=np.float32).reshape(2, 3))
    assert c.traces == 1


def test_canonical_dtypes_and_non_contiguous_inputs(backend):
    c, jf = counted_jit(lambda x, i: x + nnjit.cast(i, np.float32), backend)
    base = np.arange(24, dtype=np.float32).reshape(4, 6)
    view = base[::2, 1::2]                                   # strided view, shape (2, 3)
    fortran = np.asfortranarray(np.arange(6, dtype=np.float32).reshape(2, 3))
    i16 = np.ones((2, 3), np.int16)                          # traced as i64
    assert_close(jf(view, i16), view + 1)
    assert_close(jf(fortran, i16), fortran + 1)
    assert_close(jf(view.astype(np.float16), i16), view + 1)  # float16 is traced as f32
    assert c.traces == 1
    assert str(nnjit.trace(lambda x, i: x, view.astype(np.float16), i16).input_types[1]) == \
        "i64[2,3]"


# -- nnjit.compile and argument checking -----------------------------------------------------------

def test_compile_returns_a_compiled_function(backend):
    def f(params, x):
        return nnjit.relu(x @ params["w"])

    p, x = {"w": f32(3, 2)}, f32(4, 3)
    cf = nnjit.compile(f, p, x, backend=backend)
    assert isinstance(cf, nnjit.CompiledFunction)
    assert_close(cf(p, x), f32(4, 2, fill=3.0))
    assert cf.stages()[0] == "input"
    assert "matmul(%x, %params_w)" in cf.ir("input")
    assert nnjit.parse(cf.ir()) == cf.graph


@pytest.mark.parametrize("args,needles", [
    (({"w": f32(3, 2)}, f32(4, 4)), ["argument x ", "f32[4,3]", "f32[4,4]"]),
    (({"w": f32(3, 2)}, np.ones((4, 3))), ["argument x ", "f32[4,3]", "f64[4,3]"]),
    (({"w": f32(3, 3)}, f32(4, 3)), ["argument params['w']", "f32[3,2]", "f32[3,3]"]),
    (({"w": np.ones((3, 2), np.int32)}, f32(4, 3)), ["params['w']", "i32[3,2]"]),
    (({"w": f32(3, 2), "v": f32(1)}, f32(4, 3)), ["structure", "'v'"]),
    (({"w": [f32(3, 2)]}, f32(4, 3)), ["structure"]),
    (({"w": f32(3, 2)},), ["structure"]),
    (({"w": f32(3, 2)}, f32(4, 3), f32(1)), ["structure"]),
    (({"w": f32(3, 2)}, "x"), ["x", "str"]),
    (({"w": f32(3, 2)}, 1.0), ["argument x ", "f32[]"]),
], ids=["shape", "dtype", "param shape", "param dtype", "extra key", "list for array",
        "too few", "too many", "string", "scalar"])
def test_compiled_function_rejects_a_wrong_signature(backend, args, needles):
    def f(params, x):
        return x @ params["w"]

    cf = nnjit.compile(f, {"w": f32(3, 2)}, f32(4, 3), backend=backend)
    with pytest.raises(nnjit.ArgumentError) as info:
        cf(*args)
    for s in needles:
        assert s in str(info.value), f"{s!r} not in {info.value}"
    assert isinstance(info.value, TypeError)


# -- jit inside jit, grad inside jit ---------------------------------------------------------------

def test_jit_inside_jit_is_transparent(backend):
    inner_c, inner = counted_jit(lambda x: nnjit.tanh(x) * 2.0, backend)
    outer_c, outer = counted_jit(lambda x, y: inner(x) + inner(y) @ np.eye(3, dtype=np.float32),
                                 backend)
    x, y = f32(2, 3, fill=0.5), f32(2, 3, fill=-1.0)
    assert_close(outer(x, y), np.tanh(x) * 2 + np.tanh(y) * 2)
    assert inner_c.traces == 2 and outer_c.traces == 1
    assert inner._cache == {}                           # never compiled on its own
    g = nnjit.trace(lambda x, y: inner(x) + inner(y), x, y)
    assert [n.op for n in g.nodes].count(Op.TANH) == 2  # inlined, no call op
    assert_close(inner(x), np.tanh(x) * 2)               # and still works on its own
    assert inner_c.traces == 5 and len(inner._cache) == 1


def test_grad_inside_jit(backend):
    def loss(w, x):
        return ((x @ w) ** 2.0).sum()

    c, step = counted_jit(lambda w, x: w - 0.1 * nnjit.grad(loss)(w, x), backend)
    w, x = f32(3, 2, fill=0.5), np.arange(12, dtype=np.float32).reshape(4, 3) / 10
    want = w - 0.1 * (2 * x.T @ (x @ w))
    assert_close(step(w, x), want)
    assert_close(step(w, x), want)
    assert c.traces == 1


# -- input names -----------------------------------------------------------------------------------

def test_trace_names_inputs_after_arguments_and_paths():
    def f(params, xs, st, scale, *rest):
        return params["layer1"]["w"], xs[1], st.c, scale, rest[0]

    g = nnjit.trace(f, {"layer1": {"w": f32(2), "b": f32(2)}}, [f32(1), f32(1)],
                    State(f32(3), f32(3)), 2.0, f32(4))
    assert g.name == "f"
    assert g.input_names == ("params_layer1_b", "params_layer1_w", "xs_0", "xs_1", "st_h", "st_c",
                             "scale", "arg4")


def test_trace_input_names_are_unique_and_printable():
    def f(x_0, x, **kw):
        return x_0 + x[0]

    g = nnjit.trace(f, f32(2), [f32(2)])
    assert g.input_names == ("x_0", "x_0_1")
    h = nnjit.trace(lambda d: d["a b"] + d["é"] + d[3], {"a b": f32(1), "é": f32(1), 3: f32(1)})
    assert all(n.isidentifier() and n.isascii() for n in h.input_names)
    assert h.name == "lambda"
    assert nnjit.parse(str(h)) == h


def test_jit_of_lambdas_and_unicode_names_round_trips(backend, monkeypatch):
    monkeypatch.setenv("NNJIT_VERIFY", "1")          # verify + print/parse every stage

    def скорость(α, β):
        return α * β

    got = run(скорость, f32(2, fill=2.0), f32(2, fill=3.0), backend=backend)
    assert_close(got, f32(2, fill=6))
    assert_close(nnjit.grad(lambda v: (v * v).sum())(f32(2, fill=3.0)), f32(2, fill=6.0))
    jf = nnjit.jit(lambda x: x + 1, backend=backend, name="my model (v2)")
    assert_close(jf(f32(2)), f32(2, fill=2.0))
    assert jf.lower(f32(2)).graph.name == "my_model__v2"


# -- the default backend ---------------------------------------------------------------------------

def test_jit_compiles_natively_by_default(monkeypatch):
    """Like jax.jit and torch.compile: native code unless a backend is named; the interpreter
    is chosen explicitly (or by NNJIT_BACKEND), and Modules/grad called eagerly stay on it."""
    monkeypatch.delenv("NNJIT_BACKEND", raising=False)
    f = nnjit.jit(lambda x: x * 2.0)
    assert f.backend == "llvm"
    cf = f.lower(f32(3))
    assert cf.options.backend == "llvm" and "define" in cf.llvm_ir()
    np.testing.assert_array_equal(f(f32(3)), [2.0, 2.0, 2.0])
    assert nnjit.compile(lambda x: x + 1.0, f32(2)).options.backend == "llvm"
    assert nnjit.jit(lambda x: x, backend="interp").backend == "interp"
    monkeypatch.setenv("NNJIT_BACKEND", "interp")
    assert nnjit.jit(lambda x: x).backend == "interp"
    assert nnjit.jit(lambda x: x, backend="llvm").backend == "llvm"    # an explicit name wins


def test_eager_transforms_run_on_the_reference_backend(monkeypatch):
    monkeypatch.delenv("NNJIT_BACKEND", raising=False)
    vg = nnjit.value_and_grad(lambda x: (x * x).sum())
    value, grad = vg(f32(2, fill=3.0))
    assert float(value) == 18.0 and grad.tolist() == [6.0, 6.0]
    assert vg._nnjit_eager.backend == "interp"
    layer = nnjit.nn.Linear(2, 3)
    layer(layer.init(seed=0), f32(1, 2))
    assert {jf.backend for jf in layer._eager_cache.values()} == {"interp"}


@pytest.mark.parametrize("value", ["llvm2", "LLVM", "numpy"])
def test_an_unknown_nnjit_backend_is_an_error_listing_the_valid_ones(monkeypatch, value):
    monkeypatch.setenv("NNJIT_BACKEND", value)
    with pytest.raises(nnjit.NnjitError, match=rf"NNJIT_BACKEND='{value}' is not a backend; "
                                               r"valid: interp, llvm, cuda"):
        nnjit.jit(lambda x: x)
    assert nnjit.jit(lambda x: x, backend="interp").backend == "interp"   # named: no lookup
    with pytest.raises(nnjit.NnjitError, match=r"unknown backend 'gpu' \(available: interp, "):
        nnjit.jit(lambda x: x, backend="gpu")
