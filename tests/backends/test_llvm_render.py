"""The LLVM renderer on hand-built kernel-IR programs: every KOp against numpy (NaN/inf/-0,
integer edge cases, casts, bool in memory), loops and reductions, GEMM kernels, scans, copies,
aliases and constants, threads, debug bounds checks, and the generated code itself."""
from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from nnjit.backends.llvm import target, threadpool
from nnjit.backends.llvm.render import render
from nnjit.ir import CompileError, philox
from nnjit.ir.kernel import (Assign, Buffer, BufKind, CopyKernel, GemmKernel, KOp, Let,
                             Loop, LoopKernel, LoopKind, MatView, ScanKernel, Store, Var)
from nnjit.ir.kernel_eval import run_program
from tests.backends.kernel_programs import (BOOL, F32, F64, I, I32, I64, add, c, call,
                                            compile_checked, idx2, inp, ld, map_kernel, mul, out,
                                            program, run, temp)
from tests.helpers import assert_close

RNG = np.random.default_rng(7)
SPECIAL = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0, 1e-30, -1e-30, 1e-40, 0.5, -0.5, 1.0,
                    -1.0, 2.5, -3.75, 20.0, -20.0, 88.0, 89.0, -104.0, 700.0, -750.0, 1e30])
FLOATS = [F32, F64]


def unary(op: KOp, x: np.ndarray, src, dst=None) -> np.ndarray:
    n = x.size
    p = program([map_kernel(n, lambda i: call(op, ld("a", i, src), dtype=dst or src))],
                [inp("a", src, n, 0), out("out0", dst or src, n, 0)])
    return run(p, x)[0]


def binary(op: KOp, x: np.ndarray, y: np.ndarray, src, dst=None) -> np.ndarray:
    n = x.size
    p = program([map_kernel(n, lambda i: call(op, ld("a", i, src), ld("b", i, src),
                                                dtype=dst or src))],
                [inp("a", src, n, 0), inp("b", src, n, 1), out("out0", dst or src, n, 0)])
    return run(p, x, y)[0]


def with_noise(dt, n=64):
    return np.concatenate([SPECIAL, RNG.standard_normal(n) * 5]).astype(dt.np)


# --- scalar ops -------------------------------------------------------------------------------
def _sigmoid(x):
    return 1 / (1 + np.exp(-x))


UNARY = {KOp.EXP: np.exp, KOp.LOG: np.log, KOp.SQRT: np.sqrt, KOp.TANH: np.tanh,
         KOp.SIGMOID: _sigmoid, KOp.NEG: np.negative, KOp.ABS: np.abs,
         KOp.RELU: lambda x: np.maximum(x, x.dtype.type(0))}


@pytest.mark.parametrize("dt", FLOATS, ids=str)
@pytest.mark.parametrize("op", list(UNARY), ids=lambda o: o.value)
def test_float_unary_against_numpy(op, dt):
    x = with_noise(dt)
    with np.errstate(all="ignore"):
        want = UNARY[op](x)
    assert_close(unary(op, x, dt), want)


def test_relu_keeps_nan_and_isnan():
    x = SPECIAL.astype(np.float32)
    got = unary(KOp.RELU, x, F32)
    assert np.isnan(got[0]) and np.all(got[1:] >= 0)
    np.testing.assert_array_equal(unary(KOp.ISNAN, x, F32, BOOL), np.isnan(x))
    np.testing.assert_array_equal(unary(KOp.ISNAN, np.arange(4), I64, BOOL), [False] * 4)


BINARY = {KOp.ADD: np.add, KOp.SUB: np.subtract, KOp.MUL: np.multiply, KOp.DIV: np.divide,
          KOp.POW: np.power, KOp.MAX: np.maximum, KOp.MIN: np.minimum, KOp.MOD: np.mod}
COMPARE = {KOp.LT: np.less, KOp.LE: np.less_equal, KOp.GT: np.greater,
           KOp.GE: np.greater_equal, KOp.EQ: np.equal, KOp.NE: np.not_equal}


def grid(dt):
    s = SPECIAL.astype(dt.np)
    x, y = np.meshgrid(s, s)
    return x.ravel(), y.ravel()


@pytest.mark.parametrize("dt", FLOATS, ids=str)
@pytest.mark.parametrize("op", list(BINARY), ids=lambda o: o.value)
def test_float_binary_against_numpy_on_special_grid(op, dt):
    x, y = grid(dt)
    with np.errstate(all="ignore"):
        want = BINARY[op](x, y)
    assert_close(binary(op, x, y, dt), want)


@pytest.mark.parametrize("dt", FLOATS, ids=str)
@pytest.mark.parametrize("op", list(COMPARE), ids=lambda o: o.value)
def test_float_compare_nan_is_unordered_like_numpy(op, dt):
    x, y = grid(dt)
    np.testing.assert_array_equal(binary(op, x, y, dt, BOOL), COMPARE[op](x, y))


@pytest.mark.parametrize("exponent", [0.0, 1.0, 2.0, 3.0, -1.0, -2.0, 0.5, -0.5, 1.7, -3.0])
def test_pow_by_constant_is_specialised_and_matches_numpy(exponent):
    x = with_noise(F32)
    n = x.size
    p = program([map_kernel(n, lambda i: call(KOp.POW, ld("a", i), c(exponent)))],
                [inp("a", F32, n, 0), out("out0", F32, n, 0)])
    with np.errstate(all="ignore"):
        # C pow (numpy with a full-shape exponent: its scalar 0.5 shortcut is sqrt)
        assert_close(run(p, x)[0], np.power(x, np.full(x.shape, exponent, np.float32)))


INT_EDGE = [0, 1, -1, 2, -2, 3, -3, 7, -7, 100, -100]


@pytest.mark.parametrize("dt", [I32, I64], ids=str)
@pytest.mark.parametrize("op", [KOp.ADD, KOp.SUB, KOp.MUL, KOp.DIV, KOp.MOD, KOp.MAX, KOp.MIN,
                                *COMPARE], ids=lambda o: o.value)
def test_int_binary_wraps_and_floors_like_numpy(op, dt):
    info = np.iinfo(dt.np)
    vals = np.array(INT_EDGE + [info.max, info.min, info.max - 1, info.min + 1], dt.np)
    x, y = (a.ravel() for a in np.meshgrid(vals, vals))
    ref = {**BINARY, **COMPARE, KOp.DIV: np.floor_divide, KOp.MOD: np.remainder}[op]
    with np.errstate(all="ignore"):
        want = ref(x, y)  # x // 0 == x % 0 == 0; MIN // -1 wraps to MIN
    got = binary(op, x, y, dt, BOOL if op in COMPARE else dt)
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("dt", [I32, I64], ids=str)
def test_int_unary(dt):
    info = np.iinfo(dt.np)
    x = np.array(INT_EDGE + [info.max, info.min], dt.np)
    with np.errstate(all="ignore"):
        np.testing.assert_array_equal(unary(KOp.NEG, x, dt), -x)
        np.testing.assert_array_equal(unary(KOp.ABS, x, dt), np.abs(x))
        np.testing.assert_array_equal(unary(KOp.RELU, x, dt), np.maximum(x, 0))
        np.testing.assert_array_equal(unary(KOp.NOT, x, dt), ~x)


def test_floor_div_mod_by_constant_index_math():
    n = 50
    p = program([map_kernel(n, lambda i: add(mul(call(KOp.DIV, ld("a", i, I64), c(7, I64)),
                                                     c(100, I64)),
                                                 call(KOp.MOD, ld("a", i, I64), c(7, I64))))],
                [inp("a", I64, n, 0), out("out0", I64, n, 0)])
    x = np.arange(-25, 25, dtype=np.int64)
    np.testing.assert_array_equal(run(p, x)[0], (x // 7) * 100 + x % 7)


def test_bool_ops_and_bool_in_memory():
    a = np.array([True, False, True, False])
    b = np.array([True, True, False, False])
    np.testing.assert_array_equal(binary(KOp.AND, a, b, BOOL), a & b)
    np.testing.assert_array_equal(binary(KOp.OR, a, b, BOOL), a | b)
    np.testing.assert_array_equal(binary(KOp.EQ, a, b, BOOL), a == b)
    np.testing.assert_array_equal(binary(KOp.NE, a, b, BOOL), a != b)
    np.testing.assert_array_equal(binary(KOp.LT, a, b, BOOL), a < b)
    np.testing.assert_array_equal(unary(KOp.NOT, a, BOOL), ~a)
    # Bools are one byte 0/1 in memory: written as such and readable by numpy.
    got = binary(KOp.OR, a, b, BOOL)
    assert got.dtype == np.bool_ and set(got.view(np.uint8)) <= {0, 1}


def test_where_selects_with_bool_condition():
    n = 8
    p = program([map_kernel(n, lambda i: call(KOp.WHERE, ld("m", i, BOOL), ld("a", i),
                                              ld("b", i)))],
                [inp("m", BOOL, n, 0), inp("a", F32, n, 1), inp("b", F32, n, 2),
                 out("out0", F32, n, 0)])
    m = RNG.random(n) > 0.5
    a, b = RNG.standard_normal((2, n)).astype(np.float32)
    np.testing.assert_array_equal(run(p, m, a, b)[0], np.where(m, a, b))


def _cast_ref(x: np.ndarray, dst: np.dtype) -> np.ndarray:
    """The kernel IR's cast: float->int truncates toward zero, saturates, NaN -> 0."""
    if x.dtype.kind == "f" and dst.kind == "i":
        info = np.iinfo(dst)
        vals = [0 if v != v else info.max if v == np.inf else info.min if v == -np.inf
                else min(max(int(v), info.min), info.max) for v in x.astype(np.float64)]
        return np.array(vals, dst)
    with np.errstate(all="ignore"):
        return x.astype(dst)


CAST_VALUES = [np.nan, np.inf, -np.inf, 0.0, -0.0, 0.5, -0.5, 2.7, -2.7, 1.0, 255.9, 3e9, -3e9,
               1e20, -1e20, 2.0**31, -(2.0**31), 2.0**63, 123456789.0]


@pytest.mark.parametrize("src", [F32, F64, I32, I64, BOOL], ids=str)
@pytest.mark.parametrize("dst", [F32, F64, I32, I64, BOOL], ids=str)
def test_cast_matrix(src, dst):
    if src.is_float:
        x = np.array(CAST_VALUES, src.np)
    elif src == BOOL:
        x = np.array([True, False, True])
    else:
        info = np.iinfo(src.np)
        x = np.array(INT_EDGE + [info.max, info.min, 2**20 + 1], src.np)
    got = unary(KOp.CAST, x, src, dst)
    want = _cast_ref(x, dst.np)
    assert got.dtype == dst.np
    if dst.is_float:
        assert_close(got, want)
    else:
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("dt", FLOATS, ids=str)
def test_rand_is_bit_exact_with_philox(dt):
    n, seed, salt = 1000, 1234567890123, 5
    p = program([map_kernel(n, lambda i: call(KOp.RAND, ld("s", c(0, I64), I64), i, dtype=dt,
                                              salt=salt))],
                [inp("s", I64, 1, 0), out("out0", dt, n, 0)])
    got = run(p, np.array([seed]))[0]
    np.testing.assert_array_equal(got, philox.uniform(seed, (n,), salt, dt.np))


# --- loops and reductions ---------------------------------------------------------------------
def test_fused_elementwise_chain_f32_and_f64():
    for dt in FLOATS:
        n = 1000
        x = ld("a", I, dt)
        expr = add(mul(call(KOp.TANH, add(mul(x, c(1.5, dt)), c(0.5, dt))),
                       call(KOp.SIGMOID, x)), call(KOp.RELU, call(KOp.SUB, x, c(0.25, dt))))
        p = program([LoopKernel("k", (Loop("i", n, (Store("out0", I, expr),),
                                           LoopKind.PARALLEL),), ("a",), ("out0",))],
                    [inp("a", dt, n, 0), out("out0", dt, n, 0)])
        a = RNG.standard_normal(n).astype(dt.np) * 3
        want = np.tanh(a * 1.5 + 0.5) * _sigmoid(a) + np.maximum(a - 0.25, 0)
        assert_close(run(p, a)[0], want)


def test_broadcast_add_2d():
    r, k = 5, 7
    body = (Loop("i", r, (Loop("j", k, (Store("out0", idx2("i", "j", k),
                                              add(ld("a", idx2("i", "j", k)),
                                                  ld("b", Var("j")))),)),), LoopKind.PARALLEL),)
    p = program([LoopKernel("bcast", body, ("a", "b"), ("out0",))],
                [inp("a", F32, r * k, 0), inp("b", F32, k, 1), out("out0", F32, r * k, 0)])
    a, b = RNG.standard_normal((r, k)).astype(np.float32), RNG.standard_normal(k).astype(np.float32)
    np.testing.assert_array_equal(run(p, a, b)[0].reshape(r, k), a + b)


def reduce_rows_program(rows, cols, dt=F32):
    """out0[i] = sum_j x, out1[i] = max_j x, out2[i] = argmax_j x (first max, NaN wins), and
    out3[i, j] = softmax(x[i])[j]: accumulators, several reductions per row, then a map."""
    x = ld("x", idx2("i", "j", cols), dt)
    s, m, best, arg = Var("s", dt), Var("m", dt), Var("best", dt), Var("arg", I64)
    take = Var("take", BOOL)
    e = call(KOp.EXP, call(KOp.SUB, x, m))
    z = Var("z", dt)
    row = (
        Let(s, c(0.0, dt)), Let(m, c(float("-inf"), dt)),
        Loop("j", cols, (Assign(s, add(s, x)), Assign(m, call(KOp.MAX, m, x))), LoopKind.REDUCE),
        Let(best, c(float("-inf"), dt)), Let(arg, c(0, I64)),
        Loop("j", cols, (
            Let(take, call(KOp.OR, call(KOp.GT, x, best, dtype=BOOL),
                           call(KOp.AND, call(KOp.ISNAN, x, dtype=BOOL),
                                call(KOp.NOT, call(KOp.ISNAN, best, dtype=BOOL))))),
            Assign(best, call(KOp.WHERE, take, x, best)),
            Assign(arg, call(KOp.WHERE, take, Var("j"), arg)))),
        Let(z, c(0.0, dt)),
        Loop("j", cols, (Assign(z, add(z, e)),), LoopKind.REDUCE),
        Loop("j", cols, (Store("out3", idx2("i", "j", cols), call(KOp.DIV, e, z)),)),
        Store("out0", I, s), Store("out1", I, m), Store("out2", I, arg))
    k = LoopKernel("rows", (Loop("i", rows, row, LoopKind.PARALLEL),), ("x",),
                   ("out0", "out1", "out2", "out3"), cost=rows * cols * 20)
    return program([k], [inp("x", dt, rows * cols, 0), out("out0", dt, rows, 0),
                         out("out1", dt, rows, 1), out("out2", I64, rows, 2),
                         out("out3", dt, rows * cols, 3)])


@pytest.mark.parametrize("dt", FLOATS, ids=str)
def test_row_reductions_sum_max_argmax_softmax(dt):
    rows, cols = 9, 37
    x = RNG.standard_normal((rows, cols)).astype(dt.np)
    x[1, 5] = np.nan
    x[2, :] = -np.inf
    x[3, 4] = np.inf
    x[4, 3] = x[4, 30] = 50.0  # first max wins
    s, m, arg, sm = run(reduce_rows_program(rows, cols, dt), x)
    with np.errstate(all="ignore"):
        assert_close(s, x.sum(1))
        assert_close(m, x.max(1))
        np.testing.assert_array_equal(arg, np.argmax(x, 1))
        e = np.exp(x - x.max(1, keepdims=True))
        assert_close(sm.reshape(rows, cols), e / e.sum(1, keepdims=True))


def test_reductions_vectorize_with_reassoc():
    exe = compile_checked(reduce_rows_program(64, 512))
    text = exe.llvm_ir()
    assert re.search(r"fadd reassoc float", text)
    assert "nsz" not in text     # nsz would let LLVM fold acc + (x - x) to acc (wrong for inf)
    opt = exe.llvm_ir(optimized=True)
    assert "llvm.vector.reduce.fadd" in opt and "llvm.vector.reduce.fmaximum" in opt


def test_parallel_and_serial_give_equal_results():
    rows, cols = 300, 257
    p = reduce_rows_program(rows, cols)
    x = RNG.standard_normal((rows, cols)).astype(np.float32)
    one = run(p, x, nthreads=1)
    two = run(p, x, nthreads=2)
    assert threadpool.called_in(compile_checked(p, nthreads=2).llvm_ir())
    for a, b in zip(one, two):
        np.testing.assert_array_equal(a, b)


def test_shared_subexpressions_render_once():
    """A DAG with 2**60 paths: rendered in time linear in its size, the value kept."""
    e = ld("a", I)
    for _ in range(60):
        e = add(mul(e, c(0.5)), mul(e, c(0.5)))
    n = 64
    p = program([map_kernel(n, lambda i: e)], [inp("a", F32, n, 0), out("out0", F32, n, 0)])
    text = render(p, nthreads=1).text
    assert text.count("fmul") == 60 and text.count("fadd") == 60
    x = RNG.standard_normal(n).astype(np.float32)
    np.testing.assert_array_equal(run(p, x)[0], x)


def test_stores_invalidate_cached_loads():
    """t[0] is read, overwritten, then read again in the same scope."""
    z = c(0, I64)
    k = LoopKernel("k", (Store("out0", z, ld("out0", z)), Store("out0", c(1, I64), ld("a", z)),
                         Store("out0", z, add(ld("out0", c(1, I64)), ld("a", z))),
                         Store("out0", c(2, I64), ld("out0", z))), ("a",), ("out0",))
    p = program([k], [inp("a", F32, 1, 0), out("out0", F32, 3, 0)])
    np.testing.assert_array_equal(run(p, np.array([2.0], np.float32))[0][1:], [2.0, 4.0])


# --- memory: temps, aliases, constants, copies, noalias ---------------------------------------
def test_temp_alias_const_and_copy_buffers():
    n = 8
    cvals = np.arange(n, dtype=np.float32) * 0.5
    bufs = [inp("a", F32, n + 4, 0), out("out0", F32, n, 0), out("out1", F32, n, 1),
            out("out2", F32, n, 2), temp("t", F32, n, 64),
            Buffer("w", F32, n, BufKind.CONST, value=cvals.reshape(2, 4)),
            Buffer("a2", F32, n, BufKind.ALIAS, offset=4, base="a"),
            Buffer("w2", F32, n - 2, BufKind.ALIAS, offset=2, base="w")]
    ks = [map_kernel(n, lambda i: mul(ld("a2", i), ld("w", i)), "t", "k0"),
          map_kernel(n - 2, lambda i: add(ld("t", i), ld("w2", i)), "t", "kw2"),
          map_kernel(n, lambda i: add(ld("t", i), c(1.0)), "out0", "k1"),
          CopyKernel("k2", "w", "out1", n, F32, ("w",), ("out1",)),
          CopyKernel("k3", "a2", "out2", n, F32, ("a2",), ("out2",))]
    p = program(ks, bufs, arena_bytes=128)
    a = RNG.standard_normal(n + 4).astype(np.float32)
    o0, o1, o2 = run(p, a)
    t = a[4:] * cvals
    t[:-2] += cvals[2:]
    np.testing.assert_array_equal(o0, t + 1)
    np.testing.assert_array_equal(o1, cvals)
    np.testing.assert_array_equal(o2, a[4:])
    for got, want in zip((o0, o1, o2), run_program(p, [a])):
        np.testing.assert_array_equal(got, want)


def _kernel_signature(text: str, name: str) -> str:
    return next(line for line in text.splitlines() if f'@"p.{name}"(' in line
                and line.startswith("define"))


def test_noalias_only_where_regions_cannot_overlap():
    bufs = [temp("x", F32, 32, 0), temp("y", F32, 16, 128), temp("z", F32, 16, 64),
            inp("a", F32, 16, 0), out("out0", F32, 16, 0)]
    ks = [map_kernel(16, lambda i: ld("a", i), "x", "init"),
          map_kernel(16, lambda i: ld("x", i), "y", "disjoint"),    # [0,128) -> [128,192)
          map_kernel(16, lambda i: ld("x", i), "z", "overlap"),     # [0,128) -> [64,128)
          map_kernel(16, lambda i: ld("z", i), "out0", "result")]
    text = render(program(ks, bufs, arena_bytes=192), nthreads=1).text
    assert _kernel_signature(text, "disjoint").count("noalias") == 2
    assert "noalias" not in _kernel_signature(text, "overlap")
    assert _kernel_signature(text, "result").count("noalias") == 2


def test_unknown_buffer_is_a_compile_error_naming_the_kernel():
    p = program([map_kernel(4, lambda i: ld("nope", i), name="kbad")],
                [out("out0", F32, 4, 0)])
    with pytest.raises(CompileError, match="kbad.*nope"):
        render(p)


# --- GEMM ---------------------------------------------------------------------------------------
def gemm_program(dt, batch, m, n, k, a_view, b_view, c_view, sizes, accumulate_batches=False,
                 epilogue=(), extra=()):
    g = GemmKernel("mm", dt, batch, m, n, k, a_view, b_view, c_view, accumulate_batches,
                   tuple(epilogue))
    bufs = [inp("A", dt, sizes[0], 0), inp("B", dt, sizes[1], 1), out("C", dt, sizes[2], 0),
            *extra]
    return program([g], bufs)


@pytest.mark.parametrize("dt", FLOATS, ids=str)
def test_gemm_plain_and_k_zero(dt):
    for m, n, k in [(7, 13, 5), (1, 1, 1), (33, 65, 70), (4, 3, 0)]:
        a = RNG.standard_normal((m, k)).astype(dt.np)
        b = RNG.standard_normal((k, n)).astype(dt.np)
        p = gemm_program(dt, (), m, n, k, MatView("A", 0, (), k, 1), MatView("B", 0, (), n, 1),
                         MatView("C", 0, (), n, 1), (max(m * k, 1), max(k * n, 1), m * n))
        got = run(p, a if a.size else np.zeros(1, dt.np), b if b.size else np.zeros(1, dt.np))
        assert_close(got[0].reshape(m, n), a @ b, rtol=1e-4 if dt == F32 else None)


def test_gemm_batched_strided_transposed_with_ldc_gap():
    """A[b] is stored transposed, B is shared by all batches (batch stride 0), C rows have a
    gap of 3 elements (ldc = n + 3); the gaps stay untouched."""
    bt, m, n, k = (2, 3), 5, 6, 4
    a = RNG.standard_normal((*bt, k, m)).astype(np.float32)     # A[b] = a[b].T
    b = RNG.standard_normal((k, n)).astype(np.float32)
    ldc = n + 3
    csize = 6 * m * ldc
    p = gemm_program(F32, bt, m, n, k, MatView("A", 0, (3 * k * m, k * m), 1, m),
                     MatView("B", 0, (0, 0), n, 1), MatView("C", 0, (3 * m * ldc, m * ldc), ldc, 1),
                     (a.size, b.size, csize))
    exe = compile_checked(p)
    cbuf = np.full(csize, np.nan, np.float32)
    exe([a.reshape(-1), b.reshape(-1)], outs=[cbuf])
    got = cbuf.reshape(*bt, m, ldc)
    assert_close(got[..., :n], np.swapaxes(a, -1, -2) @ b, rtol=1e-4)
    assert np.all(np.isnan(got[..., n:]))


def test_gemm_accumulate_batches_with_epilogue():
    """C = sum_b A[b] @ B[b] (conv weight-gradient style); the epilogue runs once, on the final
    sums: out[row, col] = relu(acc + bias[col]) * 2."""
    nb, m, n, k = 4, 6, 17, 9
    a = RNG.standard_normal((nb, m, k)).astype(np.float32)
    b = RNG.standard_normal((nb, k, n)).astype(np.float32)
    bias = RNG.standard_normal(n).astype(np.float32)
    acc, row, col = Var("acc", F32), Var("row"), Var("col")
    epi = [Store("out1", add(mul(row, c(n, I64)), col),
                 mul(call(KOp.RELU, add(acc, ld("bias", col))), c(2.0)))]
    p = gemm_program(F32, (nb,), m, n, k, MatView("A", 0, (m * k,), k, 1),
                     MatView("B", 0, (k * n,), n, 1), MatView("C", 0, (0,), n, 1),
                     (a.size, b.size, m * n), True, epi,
                     [inp("bias", F32, n, 2), out("out1", F32, m * n, 1)])
    _, got = run(p, a, b, bias)
    want = np.maximum(np.einsum("bmk,bkn->mn", a, b) + bias, 0) * 2
    assert_close(got.reshape(m, n), want, rtol=1e-4)


def test_gemm_epilogue_sees_batch_coordinates():
    bt, m, n, k = (2, 3), 4, 5, 3
    a = RNG.standard_normal((*bt, m, k)).astype(np.float32)
    b = RNG.standard_normal((*bt, k, n)).astype(np.float32)
    acc, row, col = Var("acc", F32), Var("row"), Var("col")
    flat = add(mul(add(mul(Var("b0"), c(3, I64)), Var("b1")), c(m * n, I64)),
               add(mul(row, c(n, I64)), col))
    coord = call(KOp.CAST, add(mul(Var("b0"), c(10, I64)), Var("b1")), dtype=F32)
    epi = [Let(Var("v", F32), add(acc, mul(coord, c(100.0)))), Store("out1", flat, Var("v", F32))]
    p = gemm_program(F32, bt, m, n, k, MatView("A", 0, (3 * m * k, m * k), k, 1),
                     MatView("B", 0, (3 * k * n, k * n), n, 1),
                     MatView("C", 0, (3 * m * n, m * n), n, 1), (a.size, b.size, a.size // k * n),
                     epilogue=epi, extra=[out("out1", F32, 6 * m * n, 1)])
    _, got = run(p, a, b)
    coords = (np.arange(2)[:, None] * 10 + np.arange(3)[None, :]).astype(np.float32) * 100
    assert_close(got.reshape(*bt, m, n), a @ b + coords[..., None, None], rtol=1e-4)


def test_gemm_empty_batch_accumulates_to_zero():
    m, n, k = 3, 4, 2
    p = gemm_program(F32, (0,), m, n, k, MatView("A", 0, (m * k,), k, 1),
                     MatView("B", 0, (k * n,), n, 1), MatView("C", 0, (0,), n, 1), (1, 1, m * n),
                     accumulate_batches=True)
    np.testing.assert_array_equal(run(p, np.ones(1), np.ones(1))[0], np.zeros(m * n))


def test_gemm_view_out_of_bounds_is_a_compile_error():
    p = gemm_program(F32, (), 4, 4, 4, MatView("A", 0, (), 4, 1), MatView("B", 1, (), 4, 1),
                     MatView("C", 0, (), 4, 1), (16, 16, 16))
    with pytest.raises(CompileError, match="spans"):
        render(p)


# --- scan ---------------------------------------------------------------------------------------
def scan_program(length: int, n: int, reverse: bool, with_gemm: bool = False):
    """carry h: f32[n], xs: f32[length, n], const w: f32[n] (or W: f32[n, n] with `with_gemm`);
    body: t = h * w (a temp in the body's arena) or t = W @ h (a GEMM); h' = tanh(t + x);
    y = h' * 2."""
    h, x = (lambda i: ld("h", i)), (lambda i: ld("x", i))
    if with_gemm:
        first = GemmKernel("mv", F32, (), n, 1, n, MatView("w", 0, (), n, 1),
                           MatView("h", 0, (), 1, 1), MatView("t", 0, (), 1, 1))
        wsize = n * n
    else:
        first = map_kernel(n, lambda i: mul(h(i), ld("w", i)), "t", "mulw")
        wsize = n
    v = call(KOp.TANH, add(ld("t", I), x(I)))
    step = LoopKernel("upd", (Loop("i", n, (Let(Var("v", F32), v),
                                              Store("h2", I, Var("v", F32)),
                                              Store("y", I, mul(Var("v", F32), c(2.0))))),),
                      ("t", "x"), ("h2", "y"))
    body = program([first, step], [inp("h", F32, n, 0), inp("x", F32, n, 1),
                                   inp("w", F32, wsize, 2), out("h2", F32, n, 0),
                                   out("y", F32, n, 1), temp("t", F32, n, 0)],
                   arena_bytes=64 * ((4 * n + 63) // 64), name="body")
    scan = ScanKernel("scan", length, reverse, body, ("h0",), ("carry",), ("next",), ("hT",),
                      ("xs",), ("ys",), ("w",), "sarena")
    cb = 64 * ((4 * n + 63) // 64)
    bufs = [inp("h0", F32, n, 0), inp("xs", F32, max(length * n, 1), 1), inp("w", F32, wsize, 2),
            out("hT", F32, n, 0), out("ys", F32, max(length * n, 1), 1),
            temp("carry", F32, n, 0), temp("next", F32, n, cb),
            temp("sarena", BOOL, body.arena_bytes, 2 * cb)]
    return program([scan], bufs, arena_bytes=2 * cb + body.arena_bytes)


def scan_reference(h0, xs, w, reverse, with_gemm):
    h, ys = h0.copy(), np.zeros_like(xs)
    for t in (range(len(xs) - 1, -1, -1) if reverse else range(len(xs))):
        h = np.tanh((w @ h if with_gemm else h * w) + xs[t])
        ys[t] = h * 2
    return h, ys


@pytest.mark.parametrize("length", [0, 1, 4, 5])
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("with_gemm", [False, True], ids=["map", "gemm"])
def test_scan_forward_reverse_and_empty(length, reverse, with_gemm):
    n = 6
    h0 = RNG.standard_normal(n).astype(np.float32)
    xs = RNG.standard_normal((length, n)).astype(np.float32)
    w = RNG.standard_normal((n, n) if with_gemm else n).astype(np.float32) * 0.5
    p = scan_program(length, n, reverse, with_gemm)
    hT, ys = run(p, h0, xs.reshape(-1) if length else np.zeros(1, np.float32), w)
    want_h, want_ys = scan_reference(h0, xs, w, reverse, with_gemm)
    assert_close(hT, want_h, rtol=1e-4)
    if length:
        assert_close(ys.reshape(length, n), want_ys, rtol=1e-4)


# --- generated code ---------------------------------------------------------------------------
@pytest.mark.parametrize("op", [KOp.EXP, KOp.TANH, KOp.SIGMOID, KOp.LOG])
def test_transcendental_loops_use_zmm_and_no_libm_calls(op):
    cpu, feats = target.host_cpu()
    if "+avx512f" not in feats.split(","):
        pytest.skip("host has no AVX-512")
    n = 4096
    p = program([map_kernel(n, lambda i: call(op, ld("a", i)))],
                [inp("a", F32, n, 0), out("out0", F32, n, 0)])
    asm = compile_checked(p, nthreads=1).asm()
    assert re.search(r"\bzmm\d+", asm)
    calls = re.findall(r"call\w*\s+(\S+)", asm)
    assert not [f for f in calls if re.search(r"exp|log|tanh|sigm", f)], calls


def test_rendered_text_reparses_for_every_kernel_kind():
    for p in (reduce_rows_program(3, 5), scan_program(3, 4, True, True),
              gemm_program(F32, (2,), 2, 2, 2, MatView("A", 0, (4,), 2, 1),
                           MatView("B", 0, (4,), 2, 1), MatView("C", 0, (0,), 2, 1),
                           (8, 8, 4), True)):
        text = render(p).text
        target.prepare_module(text)  # parse + verify


BOUNDS_SCRIPT = """
import sys
sys.path.insert(0, {root!r})
import numpy as np
from tests.backends.kernel_programs import *
p = program([map_kernel(8, lambda i: ld("a", add(i, c({shift}, I64))))],
            [inp("a", F32, 8, 0), out("out0", F32, 8, 0)])
print(run(p, np.arange(8, dtype=np.float32))[0].sum())
"""


@pytest.mark.parametrize("shift,ok", [(0, True), (1, False)])
def test_debug_bounds_mode_traps_on_out_of_range_loads(shift, ok, tmp_path):
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = {**os.environ, "NNJIT_DEBUG_BOUNDS": "1", "NNJIT_CACHE_DIR": str(tmp_path)}
    res = subprocess.run([sys.executable, "-c", textwrap.dedent(
        BOUNDS_SCRIPT.format(root=root, shift=shift))], env=env, capture_output=True, text=True,
        timeout=120)
    if ok:
        assert res.returncode == 0 and res.stdout.strip() == "28.0", res.stderr
    else:
        assert res.returncode < 0, (res.returncode, res.stdout, res.stderr)  # killed: SIGILL


def test_debug_bounds_code_has_traps():
    p = program([map_kernel(8, lambda i: ld("a", i))], [inp("a", F32, 8, 0),
                                                          out("out0", F32, 8, 0)])
    assert "llvm.trap" in render(p, bounds=True).text
    assert "llvm.trap" not in render(p).text
