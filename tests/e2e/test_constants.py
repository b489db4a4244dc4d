"""`jit(fn, constants=params)`: inference with the weights compiled in. Results equal the
interpreter and the params-as-argument version on every backend; on llvm the constant GEMM
operands are pre-packed (the kernel IR says `packed`, the module calls the prepacked entry);
bad constants are errors naming them; donation, the memory plan, profiles and AOT export
keep working."""
from __future__ import annotations

import ctypes
import re

import numpy as np
import pytest

import nnjit
from nnjit import nn
from nnjit.backends.llvm import aot, gemm
from nnjit.ir import Op
from tests.helpers import assert_close

RNG = np.random.default_rng(3)


def mlp():
    return nn.Sequential(nn.Linear(20, 32), nn.ReLU(), nn.Linear(32, 7))


def lenet():
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.Tanh(), nn.AvgPool2d(2),
                         nn.Conv2d(4, 6, 3), nn.ReLU(), nn.Flatten(), nn.Linear(6 * 2 * 2, 5))


def conv_pool():
    """A conv whose output is no fused consumer's but a pooling kernel's input: the images-
    folded conv copies its [O, N*HW] result to NCHW, which must not be a flat copy."""
    return nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Flatten(), nn.Linear(3 * 4 * 4, 4))


MODELS = {"mlp": (mlp, (6, 20)), "lenet": (lenet, (3, 1, 8, 8)),
          "conv_pool": (conv_pool, (5, 1, 8, 8))}


@pytest.mark.parametrize("name", list(MODELS))
def test_constants_equal_the_argument_version_and_the_interpreter(backend, name):
    make, shape = MODELS[name]
    model = make()
    params = model.init(seed=1)
    x = RNG.standard_normal(shape).astype(np.float32)
    want = nnjit.jit(lambda p, x: model.apply(p, x), backend="interp")(params, x)
    as_arg = nnjit.jit(lambda p, x: model.apply(p, x), backend=backend)(params, x)
    got = nnjit.jit(model.apply, constants=params, backend=backend)(x)
    assert_close(got, want)
    if backend != "interp":
        np.testing.assert_allclose(got, as_arg, rtol=1e-6, atol=1e-6)


def test_llvm_prepacks_constant_gemm_operands():
    model = lenet()
    params = model.init(seed=2)
    x = RNG.standard_normal((3, 1, 8, 8)).astype(np.float32)
    cf = nnjit.jit(model.apply, constants=params, backend="llvm").lower(x)
    kir = cf.kernel_ir()
    # conv weights are A (one panel layout for every image), the linear weight is B
    cfg = gemm.CONFIGS["f32"]
    assert kir.count(f"packed(kc={cfg.kc}, width={cfg.mr})") == 2
    assert f"packed(kc={cfg.kc}, width={cfg.nr})" in kir
    assert re.search(r'call void @"?nnjit_gemm_f32_prepacked"?\(', cf.llvm_ir())
    assert "prepack_constants" in cf.stages()
    # With the weights as arguments nothing is packed ahead of time.
    cf_arg = nnjit.jit(lambda p, x: model.apply(p, x), backend="llvm").lower(params, x)
    assert "packed(" not in cf_arg.kernel_ir()
    assert "nnjit_gemm_f32_prepacked" not in cf_arg.llvm_ir()


def test_prepack_can_be_turned_off(monkeypatch):
    w = RNG.standard_normal((20, 30)).astype(np.float32)
    x = RNG.standard_normal((6, 20)).astype(np.float32)
    monkeypatch.setenv("NNJIT_PREPACK", "0")
    cf = nnjit.jit(lambda w, x: x @ w, constants=w, backend="llvm").lower(x)
    assert "packed(" not in cf.kernel_ir()
    assert_close(cf(x), x @ w)


def test_weight_transposes_fold_into_the_constant():
    """Linear's x @ W.T: with W a constant, the transpose is folded away (one [in, out]
    constant, read contiguously) instead of being a view re-strided on every call."""
    model = mlp()
    params = model.init(seed=0)
    x = RNG.standard_normal((6, 20)).astype(np.float32)
    cf = nnjit.jit(model.apply, constants=params, backend="llvm").lower(x)
    assert not any(n.op == Op.TRANSPOSE for n in cf.graph.walk())
    assert [n.attrs["value"].shape for n in cf.graph.nodes if n.op == Op.CONST
            and n.attrs["value"].ndim == 2] == [(20, 32), (32, 7)]


def test_constants_are_copied_when_jit_is_called():
    w = np.ones((4, 3), np.float32)
    f = nnjit.jit(lambda w, x: x @ w, constants=w, backend="llvm")
    w[...] = 5.0                            # after jit(): not what f computes with
    x = np.ones((2, 4), np.float32)
    assert_close(f(x), np.full((2, 3), 4.0, np.float32))


def test_constants_keep_argument_dtypes():
    """Traced as an argument would be: a float64 constant stays float64 (and promotes the
    product), Python numbers become f32 / i64 scalars."""
    w = RNG.standard_normal((4, 3))
    x = RNG.standard_normal((2, 4)).astype(np.float32)
    got = nnjit.jit(lambda c, x: x @ c["w"] * c["s"], constants={"w": w, "s": 2.0},
                    backend="llvm")(x)
    want = nnjit.jit(lambda c, x: x @ c["w"] * c["s"], backend="llvm")({"w": w, "s": 2.0}, x)
    assert got.dtype == want.dtype == np.float64
    np.testing.assert_allclose(got, want, rtol=1e-12)


@pytest.mark.parametrize("bad,what", [
    ({"w": "weights"}, r"constants\['w'\] is a str"),
    ({"w": [np.ones(3), object()]}, r"constants\['w'\]\[1\] is a object"),
    ({"w": np.array(["a", "b"])}, r"constants\['w'\]"),
])
def test_bad_constant_leaves_are_errors_naming_them(bad, what):
    with pytest.raises(nnjit.ArgumentError, match=what):
        nnjit.jit(lambda c, x: x, constants=bad)


def test_constants_the_function_cannot_use_fail_at_trace_time():
    w = np.ones((5, 3), np.float32)                 # x is [2, 4]: inner dims differ
    f = nnjit.jit(lambda w, x: x @ w, constants=w, backend="llvm")
    with pytest.raises(nnjit.ShapeError, match=r"matmul.*\(2, 4\) @ \(5, 3\)"):
        f(np.ones((2, 4), np.float32))


def test_constants_need_a_first_argument():
    with pytest.raises(nnjit.ArgumentError, match="first positional argument"):
        nnjit.jit(lambda *, x: x, constants=np.ones(3))


def test_arguments_after_the_constants_are_checked_and_named():
    f = nnjit.jit(lambda w, x: x @ w, constants=np.ones((4, 3), np.float32), backend="llvm")
    f(np.ones((2, 4), np.float32))
    assert f.lower(np.ones((2, 4), np.float32)).graph.input_names == ("x",)
    with pytest.raises(nnjit.ArgumentError, match="argument x must be f32"):
        f.lower(np.ones((2, 4), np.float32))(np.ones((2, 4), np.float64))


def test_donation_and_static_arguments_count_after_the_constants():
    w = RNG.standard_normal((8, 8)).astype(np.float32)

    def step(w, x, y, scale):
        return x * scale + w[0], y @ w

    f = nnjit.jit(step, constants=w, donate_argnums=(0,), static_argnums=(2,),
                  backend="llvm")
    x = RNG.standard_normal((16, 8)).astype(np.float32)
    y = RNG.standard_normal((4, 8)).astype(np.float32)
    want = (x * 3.0 + w[0], y @ w)
    out = f(x.copy(), y, 3.0)
    assert_close(out[0], want[0])
    assert_close(out[1], want[1])
    cf = f.lower(x, y, 3.0)
    assert cf.executable.donated == [(0, 0)]       # the first result is written over x
    assert "packed(" in cf.kernel_ir()
    buf = x.copy()
    got = cf(buf, y)
    assert got[0] is buf
    assert_close(got[0], want[0])
    assert_close(got[1], want[1])


def test_memory_plan_profile_and_extras_with_packed_constants():
    model = mlp()
    params = model.init(seed=0)
    x = RNG.standard_normal((6, 20)).astype(np.float32)
    cf = nnjit.jit(model.apply, constants=params, backend="llvm").lower(x)
    plan = cf.memory_plan()
    assert plan.total_bytes == cf.executable._arena.nbytes
    assert plan.total_bytes == plan.arena_bytes + sum(n for _, n in plan.extras)
    p = cf.profile(x, repeats=2)
    assert [k.name for k in p.kernels] == [k.name for k in cf.program.kernels]


@pytest.mark.skipif(aot.c_compiler() is None, reason="no C compiler")
def test_aot_export_with_prepacked_constants(tmp_path):
    model = mlp()
    params = model.init(seed=4)
    x = RNG.standard_normal((6, 20)).astype(np.float32)
    cf = nnjit.jit(model.apply, constants=params, backend="llvm").lower(x)
    assert "packed(" in cf.kernel_ir()
    so = tmp_path / "infer.so"
    cf.export(so)
    lib = ctypes.CDLL(str(so))
    out = np.empty((6, 7), np.float32)
    arena = np.zeros(cf.executable.arena_bytes + 64, np.uint8)
    base = arena.ctypes.data + (-arena.ctypes.data) % 64
    lib.apply.argtypes = [ctypes.c_void_p] * 3
    lib.apply(x.ctypes.data, out.ctypes.data, base)
    assert_close(out, nnjit.jit(model.apply, constants=params, backend="interp")(x))
