"""Bad input found by trial is a clear error naming the argument, never a silent wrong answer or a
crash inside the compiler: out-of-range donate_argnums, nested lists of numbers passed for
arrays, and empty sequences/batches for the recurrent layers."""
from __future__ import annotations

import numpy as np
import pytest

import nnjit
from nnjit import ArgumentError, ShapeError, nn

X = np.ones(3, np.float32)


def add(a, b):
    return a + b


# -- donate_argnums --------------------------------------------------------------------------------

@pytest.mark.parametrize("argnums, shown", [((5,), 5), ((2,), 2), ((-3,), -3), ((0, 7), 7)])
def test_donate_argnums_out_of_range_is_an_error_at_jit_time(argnums, shown):
    with pytest.raises(ArgumentError, match=rf"jit\(add\): donate_argnums has {shown}, but add "
                                            r"takes 2 positional arguments \(a, b\); valid "
                                            r"positions are -2\.\.1"):
        nnjit.jit(add, donate_argnums=argnums)


def test_donate_argnums_checked_at_the_call_when_the_signature_is_open():
    def first(*xs):
        return xs[0] * 2.0
    f = nnjit.jit(first, donate_argnums=(3,))
    with pytest.raises(ArgumentError, match=r"donate_argnums has 3, but first was called with 1 "
                                            r"positional argument; valid positions are -1\.\.0"):
        f(X)
    np.testing.assert_array_equal(f(X, X, X, X.copy()), 2 * X)     # 4 arguments: fine

    def scale(x, k=2.0):
        return x * k
    g = nnjit.jit(scale, donate_argnums=(1,))                      # can have 2 arguments
    with pytest.raises(ArgumentError, match="scale was called with 1 positional argument"):
        g(X)
    with pytest.raises(ArgumentError, match="donate_argnums has 1"):
        nnjit.compile(scale, X, donate_argnums=(1,))


@pytest.mark.parametrize("argnums", [("0",), (1.0,), (True,), ([0],)])
def test_donate_argnums_must_be_ints(argnums):
    with pytest.raises(ArgumentError, match="donate_argnums must be argument positions"):
        nnjit.jit(add, donate_argnums=argnums)


def test_valid_donate_argnums_still_donate():
    """Negative positions count from the end, a bare int is one position; both donate."""
    for argnums in ((-1,), 1, (0, -1)):
        f = nnjit.jit(add, backend="llvm", donate_argnums=argnums)
        np.testing.assert_array_equal(f(X.copy(), X.copy()), 2 * X)
        assert f.lower(X, X).options.donate, argnums
    assert nnjit.jit(add, donate_argnums=None).donate_argnums == ()


# -- lists of numbers where an array was meant -----------------------------------------------------

def double(a):
    return a * 2.0


@pytest.mark.parametrize("value, label, what", [
    ([[1.0, 2.0], [3.0, 4.0]], "a", r"np\.asarray gives an array of shape \(2, 2\)"),
    (((1, 2), (3, 4)), "a", r"tuple of tuples of Python numbers"),
    ([[1.0], [2.0, 3.0]], "a", "its rows differ in length"),
    ([[[True]]], "a", r"shape \(1, 1, 1\)"),
])
def test_nested_lists_of_numbers_get_the_asarray_hint(value, label, what):
    with pytest.raises(ArgumentError, match=rf"double: argument {label} is a .*{what}.*pass "
                                            rf"np\.asarray\({label}\)"):
        nnjit.jit(double)(value)


def test_the_hint_names_the_leaf_inside_a_pytree():
    def f(params, x):
        return params["w"] * x
    with pytest.raises(ArgumentError, match=r"argument params\['w'\] is a list of lists .* 4 "
                                            r"separate scalars: pass np\.asarray\(params\['w'\]\)"):
        nnjit.jit(f)({"w": [[1.0, 2.0], [3.0, 4.0]]}, X)


def test_compiled_functions_give_the_hint_too():
    cf = nnjit.jit(double).lower(np.ones((2, 2), np.float32))
    with pytest.raises(ArgumentError, match=r"argument a is a list of lists.*np\.asarray\(a\)"):
        cf([[1.0, 2.0], [3.0, 4.0]])


def test_flat_lists_of_numbers_stay_pytrees_with_a_note_when_they_fail():
    """[lr, momentum] is a valid pytree of scalars; only when the function then fails with a
    Python TypeError (list * float) does a note point at the argument."""
    np.testing.assert_allclose(nnjit.jit(lambda h: h[0] * h[1])([0.5, 4.0]), 2.0)
    with pytest.raises(TypeError, match="can't multiply sequence") as e:
        nnjit.jit(double)([1.0, 2.0])
    assert any("argument a is a list of 2 Python numbers" in n and "np.asarray(a)" in n
               for n in e.value.__notes__)


def test_lists_of_arrays_are_still_params():
    ws = [np.ones((2, 2), np.float32), np.full(2, 3.0, np.float32)]
    out = nnjit.jit(lambda ps: [p * 2.0 for p in ps])(ws)
    np.testing.assert_array_equal(out[1], [6.0, 6.0])
    layers = [[ws[0], ws[1]], [], [ws[0], ws[1]]]            # per-layer lists, one empty
    out = nnjit.jit(lambda ls, x: ls[2][0] @ (ls[0][0] @ x))(layers, np.ones(2, np.float32))
    np.testing.assert_array_equal(out, [4.0, 4.0])
    hyper = {"lr": 0.1, "betas": (0.9, 0.999), "sched": [np.float32(1.0), np.float32(2.0)]}
    np.testing.assert_allclose(nnjit.jit(lambda h: h["lr"] * h["betas"][0] * h["sched"][1])(
        hyper), 0.18, rtol=1e-6)


# -- empty sequences and batches in RNN / LSTM -----------------------------------------------------

def _run(cls, backend, t, b):
    model = cls(4, 5)
    params = model.init(seed=0)
    x = np.random.default_rng(0).standard_normal((t, b, 4)).astype(np.float32)
    return nnjit.jit(lambda p, x: model.apply(p, x), backend=backend)(params, x)


@pytest.mark.parametrize("backend", ["interp", "llvm"])
@pytest.mark.parametrize("cls", [nn.RNN, nn.LSTM])
def test_empty_batch_gives_empty_outputs(cls, backend):
    """B=0 works, as in torch: outputs (T, 0, H) and final states (1, 0, H)."""
    ys, state = _run(cls, backend, 3, 0)
    assert ys.shape == (3, 0, 5) and ys.dtype == np.float32
    for s in (state if cls is nn.LSTM else (state,)):
        assert s.shape == (1, 0, 5)


@pytest.mark.parametrize("backend", ["interp", "llvm"])
@pytest.mark.parametrize("cls", [nn.RNN, nn.LSTM])
@pytest.mark.parametrize("b", [2, 0])
def test_empty_sequence_is_refused_as_torch_does(cls, backend, b):
    name = cls.__name__
    with pytest.raises(ShapeError, match=rf"{name}: the input sequence is empty: x has shape "
                                         rf"\(0, {b}, 4\) \(T=0 steps\); torch\.nn\.{name} "
                                         r"refuses T=0 too at .*test_bad_input\.py"):
        _run(cls, backend, 0, b)


@pytest.mark.parametrize("cls", [nn.RNN, nn.LSTM])
def test_nonempty_sequences_are_unchanged(cls):
    """The projection reshape now names the hidden width instead of -1 (which cannot be
    inferred from zero elements); the results are the interpreter's, on both backends."""
    want = _run(cls, "interp", 3, 2)
    got = _run(cls, "llvm", 3, 2)
    for w, g in zip(nnjit.tree_leaves(want), nnjit.tree_leaves(got)):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6)
        assert w.shape[-1] == 5


# -- the fast argument path (arguments like the last call's skip the full check) ----------------
def test_the_fast_path_still_rejects_what_the_full_check_rejects():
    p, x = {"w": np.ones(3, np.float32)}, np.arange(3, dtype=np.float32)
    f = nnjit.compile(lambda p, x: (p["w"] * x).sum(), p, x, backend="llvm")
    assert f(p, x) == 3.0
    assert f(p, x) == 3.0                                   # the fast path
    with pytest.raises(ArgumentError, match=r"must be f32\[3\], got f32\[4\]"):
        f(p, np.zeros(4, np.float32))                      # another shape
    with pytest.raises(ArgumentError):
        f({"v": p["w"]}, x)                                 # another key
    with pytest.raises(ArgumentError, match=r"got f64\[3\]"):
        f(p, x.astype(np.float64))                         # another dtype
    strided = np.arange(6, dtype=np.float32)[::2]          # not contiguous: full path copies
    assert f(p, strided) == float(strided.sum())
    assert f(p, np.float32(2.0) * np.ones(3, np.float32)) == 6.0


def test_the_fast_path_accepts_numpy_scalars_for_scalar_arguments():
    x = np.ones(2, np.float32)
    f = nnjit.compile(lambda x, s: x * s, x, np.float32(1.0), backend="llvm")
    np.testing.assert_array_equal(f(x, np.float32(3.0)), [3.0, 3.0])
    np.testing.assert_array_equal(f(x, np.float32(4.0)), [4.0, 4.0])
    np.testing.assert_array_equal(f(x, np.array(5.0, np.float32)), [5.0, 5.0])


def test_a_read_only_array_is_not_donated_through_the_fast_path():
    f = nnjit.compile(lambda x: x + 1.0, np.zeros(4, np.float32), backend="llvm",
                      donate_argnums=(0,))
    f(np.zeros(4, np.float32))
    frozen = np.zeros(4, np.float32)
    frozen.flags.writeable = False
    with pytest.raises(ArgumentError, match="donated argument x must be writable"):
        f(frozen)
    np.testing.assert_array_equal(frozen, np.zeros(4))
