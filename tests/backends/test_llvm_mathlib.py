"""Inline LLVM math functions (`mathlib`, and `special`: sin, cos, erf): accuracy against numpy
over sweeps, random bit patterns and edge values, in float32 (ulp) and float64 (relative error,
against long double references), plus a check that loops over them vectorize to AVX-512 without
libm calls."""
import ctypes
import functools
import math
import re

import llvmlite.ir as ir
import numpy as np
import pytest

from nnjit.backends.llvm import mathlib, special, target

F32, F64, I64, PTR = ir.FloatType(), ir.DoubleType(), ir.IntType(64), ir.PointerType()
LD = np.longdouble
RNG_SEED = 20240601


def map_loop_ir(emit, dtype, arity=1, lanes=1):
    """`void f(T* noalias in0.., T* noalias out, i64 n) { for i < n: out[i] = emit(in[i]..) }`;
    with lanes > 1 each iteration handles one `<lanes x T>` vector and n counts vectors."""
    elem = F64 if np.dtype(dtype) == np.float64 else F32
    ty = elem if lanes == 1 else ir.VectorType(elem, lanes)
    mod = ir.Module(name="mathlib_test")
    fn = ir.Function(mod, ir.FunctionType(ir.VoidType(), [PTR] * (arity + 1) + [I64]), "f")
    for arg in fn.args[:-1]:
        arg.add_attribute("noalias")
    n = fn.args[-1]
    entry, body, done = (fn.append_basic_block(s) for s in ("entry", "body", "done"))
    b = ir.IRBuilder(entry)
    b.cbranch(b.icmp_signed(">", n, ir.Constant(I64, 0)), body, done)
    b.position_at_end(body)
    i = b.phi(I64)
    i.add_incoming(ir.Constant(I64, 0), entry)
    align = 8 if elem == F64 else 4  # numpy only guarantees element alignment
    args = [b.load(b.gep(p, [i], inbounds=True, source_etype=ty), typ=ty, align=align)
            for p in fn.args[:arity]]
    b.store(emit(b, *args), b.gep(fn.args[arity], [i], inbounds=True, source_etype=ty),
            align=align)
    nxt = b.add(i, ir.Constant(I64, 1))
    i.add_incoming(nxt, body)
    b.cbranch(b.icmp_signed("<", nxt, n), body, done)
    b.position_at_end(done)
    b.ret_void()
    return str(mod)


@functools.cache
def compiled(name, dtype, lanes=1):
    """A numpy-callable compiled map loop for `mathlib.emit_<name>` (cached per module)."""
    emit = getattr(mathlib, f"emit_{name}", None) or getattr(special, f"emit_{name}")
    arity = 2 if name == "pow" else 1
    lib = target.jit(map_loop_ir(emit, dtype, arity, lanes))
    fn = lib.function("f", None, *[ctypes.c_void_p] * (arity + 1), ctypes.c_int64)

    def call(*xs):
        xs = [np.ascontiguousarray(x, dtype=dtype) for x in xs]
        out = np.empty_like(xs[0])
        assert out.size % lanes == 0
        fn(*[x.ctypes.data for x in xs], out.ctypes.data, out.size // lanes)
        return out

    call.lib = lib  # keep the code alive
    return call


# --- error measures ----------------------------------------------------------------------------
def ulp_error_f32(ours, ref64):
    """Per-element error in float32 ulps at the reference (subnormal spacing below FLT_MIN);
    inf counts as 2**128 so a result that overflows one ulp early is 1 ulp off, not infinitely.
    Returns (errors over non-nan elements, count of nan mismatches)."""
    big = 2.0**128
    o = ours.astype(np.float64)
    o = np.where(np.isinf(o), np.sign(o) * big, o)
    r = np.clip(ref64, -big, big)
    nan_mismatch = int((np.isnan(o) != np.isnan(r)).sum())
    ok = ~(np.isnan(o) | np.isnan(r))
    mag = np.minimum(np.abs(r[ok]), np.finfo(np.float32).max).astype(np.float32)
    spacing = np.maximum(np.spacing(mag).astype(np.float64), 2.0**-149)
    return np.abs(o[ok] - r[ok]) / spacing, nan_mismatch


def rel_error_f64(ours, ref_ld):
    """Relative error against a long double reference on normal results (absolute error in units
    of the smallest normal below it); nan and inf must match exactly (returns mismatch count)."""
    o = ours.astype(LD)
    r64 = ref_ld.astype(np.float64)
    nan_o, nan_r = np.isnan(o), np.isnan(r64)
    special = nan_o | nan_r | np.isinf(o) | np.isinf(r64)
    mismatch = int((special & ~((o == r64) | (nan_o & nan_r))).sum())
    d = np.abs(o[~special] - ref_ld[~special])
    return (d / np.maximum(np.abs(ref_ld[~special]), 2.0**-1022)).astype(np.float64), mismatch


# --- inputs ------------------------------------------------------------------------------------
def inputs(dtype, lo, hi, n_dense=400_001, n_rand=150_000, n_bits=150_000):
    """A dense sweep and uniform samples over [lo, hi], random bit patterns (every exponent,
    subnormals, inf, nan) and the usual edge values."""
    rng = np.random.default_rng(RNG_SEED)
    dt = np.dtype(dtype)
    bits = rng.integers(0, 2 ** (8 * dt.itemsize), n_bits, dtype=np.uint64, endpoint=False)
    bits = bits.astype(np.uint32).view(np.float32) if dt == np.float32 else bits.view(np.float64)
    tiny = np.finfo(dt).smallest_subnormal
    edges = [0.0, -0.0, np.inf, -np.inf, np.nan, tiny, -tiny, 1.0, -1.0, 0.5, 1e-30, -1e-30,
             np.finfo(dt).max, -np.finfo(dt).max, np.finfo(dt).tiny, -np.finfo(dt).tiny]
    with np.errstate(all="ignore"):
        return np.concatenate([np.linspace(lo, hi, n_dense).astype(dt),
                               rng.uniform(lo, hi, n_rand).astype(dt), bits,
                               np.array(edges, dtype=dt)])


def _sigmoid(x):
    return 1 / (1 + np.exp(-x))


# name: (numpy reference, float32 sweep range, float64 sweep range, bound f32 ulp, bound f64 rel)
# The bounds are what we measured rounded up; the spec is 4 ulp and 1e-14.
CASES = {
    "exp": (np.exp, (-110, 95), (-750, 715), 1.5, 5e-16),
    "exp2": (np.exp2, (-160, 130), (-1080, 1030), 1.5, 5e-16),
    "expm1": (np.expm1, (-20, 90), (-45, 712), 2.0, 5e-16),
    "log": (np.log, (0, 100), (0, 1000), 1.5, 5e-16),
    "log1p": (np.log1p, (-1, 10), (-1, 10), 2.0, 5e-16),
    "tanh": (np.tanh, (-12, 12), (-22, 22), 3.0, 6e-16),
    "sigmoid": (_sigmoid, (-110, 30), (-750, 40), 3.0, 6e-16),
    "sqrt": (np.sqrt, (0, 100), (0, 1000), 0.5, 2.3e-16),
}


@pytest.mark.parametrize("name", CASES)
def test_accuracy_f32(name):
    ref, rng32, _, bound, _ = CASES[name]
    x = inputs(np.float32, *rng32)
    with np.errstate(all="ignore"):
        err, nan_mismatch = ulp_error_f32(compiled(name, np.float32)(x), ref(x.astype(np.float64)))
    assert nan_mismatch == 0
    assert err.max() <= bound <= 4.0, f"{name} f32: {err.max():.3f} ulp"


@pytest.mark.parametrize("name", CASES)
def test_accuracy_f64(name):
    ref, _, rng64, _, bound = CASES[name]
    x = inputs(np.float64, *rng64)
    with np.errstate(all="ignore"):
        rel, mismatch = rel_error_f64(compiled(name, np.float64)(x), ref(x.astype(LD)))
    assert mismatch == 0
    assert rel.max() <= bound <= 1e-14, f"{name} f64: relative error {rel.max():.3g}"


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_edge_values(dtype):
    dt = np.dtype(dtype)
    inf, nan, tiny = np.inf, np.nan, np.finfo(dt).smallest_subnormal
    big, under = (89.0, -110.0) if dt == np.float32 else (710.0, -750.0)

    def check(name, x, expected):
        got = compiled(name, dtype)(np.array(x, dtype=dt))
        expected = np.array(expected, dtype=dt)
        np.testing.assert_array_equal(got, expected, err_msg=name)
        num = ~np.isnan(expected)  # signed zeros and infinities must match too
        assert np.array_equal(np.signbit(got[num]), np.signbit(expected[num])), name

    check("exp", [0.0, -0.0, inf, -inf, nan, big, under], [1, 1, inf, 0, nan, inf, 0])
    check("log", [1.0, 0.0, -0.0, -1.0, inf, -inf, nan], [0, -inf, -inf, nan, inf, nan, nan])
    check("tanh", [0.0, -0.0, tiny, -tiny, 1e-20, inf, -inf, nan, 30.0, -30.0, 1e30],
          [0.0, -0.0, tiny, -tiny, 1e-20, 1, -1, nan, 1, -1, 1])
    check("sigmoid", [0.0, inf, -inf, nan, 40.0, 1e30, -1e30], [0.5, 1, 0, nan, 1, 1, 0])
    check("expm1", [0.0, -0.0, tiny, inf, -inf, nan, -60.0], [0.0, -0.0, tiny, inf, -1, nan, -1])
    check("log1p", [0.0, -0.0, tiny, -1.0, -2.0, inf, nan], [0.0, -0.0, tiny, -inf, nan, inf, nan])
    check("exp2", [0.0, 1.0, 10.0, -3.0, inf, -inf, nan], [1, 2, 1024, 0.125, inf, 0, nan])
    check("sqrt", [4.0, -0.0, -1.0, inf, nan], [2.0, -0.0, nan, inf, nan])


def test_tails_and_symmetry():
    x32 = np.linspace(-50, 50, 100_001, dtype=np.float32)
    t = compiled("tanh", np.float32)(x32)
    np.testing.assert_array_equal(t, -t[::-1])  # odd, bit for bit
    for dt, sat in ((np.float32, 9.1), (np.float64, 19.1)):
        x = np.linspace(sat, 1e4, 10_001, dtype=dt)
        assert np.all(compiled("tanh", dt)(x) == 1) and np.all(compiled("tanh", dt)(-x) == -1)
    s = compiled("sigmoid", np.float32)(x32)
    assert np.all((s >= 0) & (s <= 1)) and np.all(np.diff(s) >= 0)
    assert np.all(s[x32 > 17] == 1.0)
    # The far negative tail is subnormal in float32 and still accurate (not flushed to 0).
    x = np.array([-88.0, -100.0, -103.0, -104.0], np.float32)
    err, _ = ulp_error_f32(compiled("sigmoid", np.float32)(x), np.exp(x.astype(np.float64)))
    assert err.max() <= 1.0
    assert compiled("sigmoid", np.float64)(np.array([-700.0]))[0] == pytest.approx(np.exp(-700))
    # exp gradual underflow: subnormal results within an ulp of the true value.
    x = np.linspace(-103.9, -87.4, 20_001, dtype=np.float32)
    err, _ = ulp_error_f32(compiled("exp", np.float32)(x), np.exp(x.astype(np.float64)))
    assert err.max() <= 1.0


# --- pow ---------------------------------------------------------------------------------------
POW_SPECIALS = np.array([0.0, -0.0, 1.0, -1.0, 2.0, -2.0, 0.5, -0.5, 3.0, -3.0, 1.5, 1e-310,
                         1e300, 0.99999, np.inf, -np.inf, np.nan, 7.0, -7.0])


def pow_inputs(dtype, n=100_000):
    rng = np.random.default_rng(RNG_SEED)
    sign = np.where(rng.random(n) < 0.2, -1.0, 1.0)
    x = np.exp(rng.uniform(-12, 12, n)) * sign
    y = np.where(rng.random(n) < 0.3, rng.integers(-40, 40, n), rng.uniform(-30, 30, n))
    # Products y*log|x| right up to the overflow and underflow thresholds.
    x2 = np.exp(rng.uniform(-5, 5, n))
    y2 = rng.uniform(-1, 1, n) * (700 if dtype == np.float64 else 100) / np.abs(np.log(x2))
    gx, gy = np.meshgrid(POW_SPECIALS, POW_SPECIALS)
    with np.errstate(all="ignore"):
        return (np.concatenate([x, x2, gx.ravel()]).astype(dtype),
                np.concatenate([y, y2, gy.ravel()]).astype(dtype))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_pow(dtype):
    x, y = pow_inputs(dtype)
    got = compiled("pow", dtype)(x, y)
    with np.errstate(all="ignore"):
        if dtype == np.float32:
            ref = np.power(x.astype(np.float64), y.astype(np.float64))
            err, nan_mismatch = ulp_error_f32(got, ref)
            assert nan_mismatch == 0 and err.max() <= 1.0, err.max()
        else:
            rel, mismatch = rel_error_f64(got, np.power(x.astype(LD), y.astype(LD)))
            assert mismatch == 0 and rel.max() <= 1.5e-15, rel.max()
        # Every special case (0, inf, nan, +-1, signed zeros) agrees with numpy exactly.
        expected = np.power(x, y)
    special = np.isinf(expected) | (expected == 0) | (np.abs(expected) == 1)
    np.testing.assert_array_equal(got[special], expected[special])
    assert np.array_equal(np.signbit(got[special]), np.signbit(expected[special]))
    assert np.array_equal(np.isnan(got), np.isnan(expected))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("c", [0, 1, 2, 3, 4, -1, -2, 0.5, -0.5, 1.5])
def test_pow_constant_exponent(dtype, c):
    """A Python-number exponent is strength-reduced; results keep C pow's specials (numpy's
    with a full-shape exponent: its scalar 0.5 shortcut is sqrt) and accuracy."""
    lib = target.jit(map_loop_ir(lambda b, v: mathlib.emit_pow(b, v, c), dtype))
    fn = lib.function("f", None, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64)
    with np.errstate(over="ignore"):
        x = np.concatenate([POW_SPECIALS, np.linspace(-20, 20, 4001)]).astype(dtype)
    out = np.empty_like(x)
    fn(x.ctypes.data, out.ctypes.data, x.size)
    with np.errstate(all="ignore"):
        expected = np.power(x, np.full(x.shape, c, dtype))
    np.testing.assert_allclose(out, expected, rtol=4e-7 if dtype == np.float32 else 1e-15)
    assert np.array_equal(np.isnan(out), np.isnan(expected))
    special = np.isinf(expected) | (expected == 0)
    assert np.array_equal(np.signbit(out[special]), np.signbit(expected[special]))


def test_pow_type_mismatch():
    b = ir.IRBuilder(ir.Function(ir.Module(), ir.FunctionType(ir.VoidType(), []), "g")
                     .append_basic_block())
    with pytest.raises(TypeError, match="emit_pow"):
        mathlib.emit_pow(b, ir.Constant(F32, 1.0), ir.Constant(F64, 2.0))
    with pytest.raises(TypeError, match="mathlib"):
        mathlib.emit_exp(b, ir.Constant(I64, 1))


# --- vectors and vectorization -----------------------------------------------------------------
@pytest.mark.parametrize("dtype,lanes", [(np.float32, 16), (np.float64, 4)])
@pytest.mark.parametrize("name", ["exp", "log", "tanh", "sigmoid", "pow"])
def test_vector_operands_match_scalar(name, dtype, lanes):
    """Given `<N x T>` operands the emitters build the same math, bit for bit."""
    x = inputs(dtype, -20, 20, n_dense=4096, n_rand=4096, n_bits=4096)[:12_288]
    args = (x, x[::-1]) if name == "pow" else (x,)
    np.testing.assert_array_equal(compiled(name, dtype, lanes)(*args),
                                  compiled(name, dtype)(*args))


def _has_avx512() -> bool:
    return "+avx512f" in target.host_cpu()[1].split(",")


@pytest.mark.skipif(not _has_avx512(), reason="host has no AVX-512")
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", ["exp", "log", "tanh", "sigmoid", "pow"])
def test_loops_vectorize_to_avx512(name, dtype):
    """Plain O3 (no fast-math) turns the scalar loop into zmm code with no libm calls."""
    text = map_loop_ir(getattr(mathlib, f"emit_{name}"), dtype, 2 if name == "pow" else 1)
    assert not re.search(r"\b(fast|nnan|ninf|nsz|reassoc|afn|arcp|contract)\b", text)
    asm = target.emit_assembly(text)
    assert re.search(r"\bv\w+\s+.*%zmm", asm), "loop did not vectorize to 512-bit"
    assert not re.search(r"\bcall", asm), re.findall(r"call\w*\s+\S+", asm)
    assert not re.search(r"\b(expf?|logf?|tanhf?|powf?)\b", asm)


# --- sin, cos, erf (issue 12) ------------------------------------------------------------------
_verf = np.vectorize(math.erf, otypes=[np.float64])


@pytest.mark.parametrize("name", ["sin", "cos"])
@pytest.mark.parametrize("hi", [10.0, 1e5, 1e9, 3e38])
def test_trig_accuracy_f32(name, hi):
    """Every float32 is reduced exactly (Cody-Waite in double below 2**40, Payne-Hanek above),
    so the result is within 0.5 ulp of numpy's double everywhere, big arguments included."""
    x = inputs(np.float32, -hi, hi, n_dense=100_001, n_rand=50_000, n_bits=50_000)
    ref = getattr(np, name)
    with np.errstate(all="ignore"):
        err, nan_mismatch = ulp_error_f32(compiled(name, np.float32)(x), ref(x.astype(np.float64)))
    assert nan_mismatch == 0
    assert err.max() <= 0.51, f"{name} f32 up to {hi}: {err.max():.3f} ulp"


def test_trig_f32_hard_cases():
    """Floats just next to multiples of pi/2 (the worst cancellations of the reduction) and
    powers of two across the whole exponent range."""
    k = np.arange(1, 200_000, 7, dtype=np.float64)
    near = (k * (np.pi / 2)).astype(np.float32)
    near = np.concatenate([near, np.nextafter(near, np.float32(np.inf)),
                           np.float32(2.0) ** np.arange(-20, 128).astype(np.float32)])
    for name in ("sin", "cos"):
        err, _ = ulp_error_f32(compiled(name, np.float32)(near),
                               getattr(np, name)(near.astype(np.float64)))
        assert err.max() <= 0.51, (name, err.max())


@pytest.mark.parametrize("name", ["sin", "cos"])
@pytest.mark.parametrize("hi", [10.0, 1e6, 1e12, 1e300])
def test_trig_accuracy_f64(name, hi):
    """Cody-Waite below 2**40, Payne-Hanek above (random bit patterns: every exponent)."""
    x = inputs(np.float64, -hi, hi, n_dense=100_001, n_rand=50_000, n_bits=50_000)
    with np.errstate(all="ignore"):
        rel, mismatch = rel_error_f64(compiled(name, np.float64)(x),
                                      getattr(np, name)(x.astype(LD)))
    assert mismatch == 0
    # Relative error near the zeros of sin/cos is what a correct reduction buys.
    assert rel.max() <= 4e-16, f"{name} f64 up to {hi}: {rel.max():.3g}"


def test_trig_f64_hardest_reduction():
    """6381956970095103 * 2**797 is the double closest to a multiple of pi/2 (r ~ 2**-61):
    cos there is -4.687165924254628e-19 (30-digit reference), to a few ulp."""
    x = np.array([math.ldexp(6381956970095103, 797), -math.ldexp(6381956970095103, 797)])
    got = compiled("cos", np.float64)(x)
    np.testing.assert_allclose(got, -4.687165924254628e-19, rtol=5e-16)
    np.testing.assert_allclose(compiled("sin", np.float64)(x), [1.0, -1.0], rtol=1e-16)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_trig_erf_edge_values(dtype):
    dt = np.dtype(dtype)
    inf, nan, tiny = np.inf, np.nan, np.finfo(dt).smallest_subnormal

    def check(name, x, expected):
        got = compiled(name, dtype)(np.array(x, dtype=dt))
        expected = np.array(expected, dtype=dt)
        np.testing.assert_array_equal(got, expected, err_msg=name)
        num = ~np.isnan(expected)
        assert np.array_equal(np.signbit(got[num]), np.signbit(expected[num])), name

    check("sin", [0.0, -0.0, tiny, -tiny, inf, -inf, nan], [0.0, -0.0, tiny, -tiny, nan, nan, nan])
    check("cos", [0.0, -0.0, inf, -inf, nan], [1, 1, nan, nan, nan])
    check("erf", [0.0, -0.0, tiny, inf, -inf, nan, 10.0, -10.0, 6.0],
          [0.0, -0.0, np.float64(tiny) * 2 / np.sqrt(np.pi), 1, -1, nan, 1, -1, 1])


def test_erf_accuracy_f32():
    x = inputs(np.float32, -5, 5)
    with np.errstate(all="ignore"):
        err, nan_mismatch = ulp_error_f32(compiled("erf", np.float32)(x),
                                          _verf(x.astype(np.float64)))
    assert nan_mismatch == 0
    assert err.max() <= 0.52, f"erf f32: {err.max():.3f} ulp"


def test_erf_accuracy_f64():
    """Against the C library's erf in double (itself within ~1 ulp), so the bound counts both:
    measured 2.2e-16 against 30-digit mpmath, including each fitted piece's boundary."""
    x = inputs(np.float64, -7, 7, n_dense=200_001, n_rand=100_000, n_bits=50_000)
    edges = np.array([0.75, 1.617213, 3.482336, 5.95])[:, None] * (
        1 + np.linspace(-1e-6, 1e-6, 101))
    x = np.concatenate([x, edges.ravel(), -edges.ravel()])
    with np.errstate(all="ignore"):
        rel, mismatch = rel_error_f64(compiled("erf", np.float64)(x),
                                      _verf(x).astype(LD))
    assert mismatch == 0
    assert rel.max() <= 4.5e-16, f"erf f64: relative error {rel.max():.3g}"


@pytest.mark.parametrize("dtype,lanes", [(np.float32, 16), (np.float64, 4)])
@pytest.mark.parametrize("name", ["sin", "cos", "erf"])
def test_new_vector_operands_match_scalar(name, dtype, lanes):
    x = inputs(dtype, -1e6, 1e6, n_dense=4096, n_rand=4096, n_bits=4096)[:12_288]
    np.testing.assert_array_equal(compiled(name, dtype, lanes)(x), compiled(name, dtype)(x))


@pytest.mark.skipif(not _has_avx512(), reason="host has no AVX-512")
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", ["sin", "cos", "erf"])
def test_new_loops_vectorize_to_avx512(name, dtype):
    text = map_loop_ir(getattr(special, f"emit_{name}"), dtype)
    asm = target.emit_assembly(text)
    assert re.search(r"\bv\w+\s+.*%zmm", asm), "loop did not vectorize to 512-bit"
    assert not re.search(r"\bcall", asm), re.findall(r"call\w*\s+\S+", asm)
