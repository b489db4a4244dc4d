"""The LLVM executable at run time: argument validation (ArgumentError naming the argument),
caller-provided outputs, the arena (allocated once, reused, huge-page mmap when large), thread
counts, concurrent callers, and the CompiledFunction inspection API through `nnjit.jit`."""
from __future__ import annotations

import mmap
import threading

import numpy as np
import pytest

import nnjit
from nnjit import ArgumentError
from nnjit.backends.llvm import executable as ex
from nnjit.backends.llvm.executable import ArgSpec, compile_program
from tests.backends.kernel_programs import (F32, I64, add, c, inp, ld, map_kernel, mul, out,
                                            program, temp)
from tests.backends.test_llvm_render import reduce_rows_program
from tests.helpers import assert_close

RNG = np.random.default_rng(3)


@pytest.fixture(scope="module")
def axpy():
    """out0 = a * 2 + b over x: f32[4, 3], with a temporary in the arena (t = a * 2)."""
    n = 12
    p = program([map_kernel(n, lambda i: mul(ld("a", i), c(2.0)), "t", "k0"),
                 map_kernel(n, lambda i: add(ld("t", i), ld("b", i)), "out0", "k1")],
                [inp("a", F32, n, 0), inp("b", F32, n, 1), out("out0", F32, n, 0),
                 temp("t", F32, n, 0)], arena_bytes=64)
    return compile_program(p, [ArgSpec("x", (4, 3), np.dtype(np.float32)),
                               ArgSpec("bias", (4, 3), np.dtype(np.float32))],
                           [ArgSpec("y", (4, 3), np.dtype(np.float32))])


def f32(*shape):
    return RNG.standard_normal(shape).astype(np.float32)


def test_call_returns_fresh_outputs(axpy):
    x, b = f32(4, 3), f32(4, 3)
    (y,) = axpy([x, b])
    assert y.shape == (4, 3) and y.dtype == np.float32
    np.testing.assert_array_equal(y, x * 2 + b)
    (y2,) = axpy([x, b])
    assert y2 is not y and not np.shares_memory(y, y2)


def _axpy_fn(x, bias):
    return x * 2.0 + bias


@pytest.fixture(scope="module")
def axpy_cf():
    """The same function through nnjit: the runtime checks every argument, once."""
    return nnjit.compile(_axpy_fn, f32(4, 3), f32(4, 3), backend="llvm")


@pytest.mark.parametrize("args,match", [
    (lambda: [f32(4, 3)], r"argument structure differs"),
    (lambda: [f32(4, 3), f32(4, 3), f32(1)], r"argument structure differs"),
    (lambda: [f32(3, 4), f32(4, 3)], r"argument x must be f32\[4,3\], got f32\[3,4\]"),
    (lambda: [f32(4, 3), f32(4, 3).astype(np.float64)],
     r"argument bias must be f32\[4,3\], got f64\[4,3\]"),
    (lambda: [f32(4, 3).tolist(), f32(4, 3)], r"list of lists"),
    (lambda: [np.frombuffer(b"\0" * 49, np.uint8)[1:].view(np.float32).reshape(4, 3),
              f32(4, 3)], r"argument x is a misaligned array"),
])
def test_bad_arguments_raise_argument_error_naming_them(axpy_cf, args, match):
    with pytest.raises(ArgumentError, match=match):
        axpy_cf(*args())


@pytest.mark.parametrize("make", [lambda a: a.astype(">f4"), lambda a: np.asfortranarray(a),
                                  lambda a: np.repeat(a, 2, axis=1)[:, ::2]])
def test_arguments_in_other_layouts_are_converted_once(axpy_cf, make):
    """Big-endian, Fortran-order and strided arrays of the right type are copied into the
    dense layout native code reads (numpy semantics), not refused."""
    x, b = f32(4, 3), f32(4, 3)
    np.testing.assert_array_equal(axpy_cf(make(x), b), x * 2 + b)


def test_caller_provided_outputs_are_checked_and_written(axpy, axpy_cf):
    x, b = f32(4, 3), f32(4, 3)
    y = np.empty((4, 3), np.float32)
    assert axpy([x, b], outs=[y])[0] is y
    np.testing.assert_array_equal(y, x * 2 + b)
    assert axpy_cf(x, b, out=y) is y
    ro = np.empty((4, 3), np.float32)
    ro.flags.writeable = False
    with pytest.raises(ArgumentError, match=r"out\[0\] must be a writable"):
        axpy_cf(x, b, out=ro)
    with pytest.raises(ArgumentError, match="out has structure"):
        axpy_cf(x, b, out=[y])
    with pytest.raises(ArgumentError, match="overlaps an argument"):
        axpy_cf(x, b, out=x)


def test_arena_is_allocated_once_and_reused(axpy):
    ptr = axpy._arena_ptr
    assert ptr % 64 == 0 and axpy.arena_bytes >= 64
    for _ in range(3):
        x, b = f32(4, 3), f32(4, 3)
        np.testing.assert_array_equal(axpy([x, b])[0], x * 2 + b)
        assert axpy._arena.ctypes.data == ptr


def test_large_arena_is_mmapped_with_huge_page_hint():
    n = (ex.HUGE_ARENA_BYTES // 4) + 16
    p = program([map_kernel(n, lambda i: mul(ld("a", i), c(3.0)), "t", "k0"),
                 map_kernel(n, lambda i: add(ld("t", i), c(1.0)), "out0", "k1")],
                [inp("a", F32, n, 0), out("out0", F32, n, 0), temp("t", F32, n, 0)],
                arena_bytes=4 * n)
    exe = compile_program(p)
    # 2 MiB aligned, so the kernel can back it with whole transparent huge pages.
    assert isinstance(exe._arena_keep, mmap.mmap) and exe._arena_ptr % (2 << 20) == 0
    a = f32(n)
    np.testing.assert_array_equal(exe([a])[0], a * 3 + 1)
    assert exe._arena_ptr == exe._arena.ctypes.data


def test_num_threads_env_1_and_2_give_equal_results(monkeypatch):
    rows, cols = 512, 300
    x = f32(rows, cols)
    results = []
    for nt in ("1", "2"):
        monkeypatch.setenv("NNJIT_NUM_THREADS", nt)
        exe = compile_program(reduce_rows_program(rows, cols))
        assert exe.rendered.nthreads == int(nt) or not ex.parallel.threads_available()
        results.append(exe([x.reshape(-1)]))
    for a, b in zip(*results):
        np.testing.assert_array_equal(a, b)


def test_concurrent_callers_share_the_arena_safely(axpy):
    errors = []

    def worker(seed):
        rng = np.random.default_rng(seed)
        for _ in range(200):
            x, b = (rng.standard_normal((4, 3)).astype(np.float32) for _ in range(2))
            if not np.array_equal(axpy([x, b])[0], x * 2 + b):
                errors.append(seed)

    threads = [threading.Thread(target=worker, args=(s,)) for s in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors


def test_int_and_bool_arguments():
    n = 5
    p = program([map_kernel(n, lambda i: add(ld("a", i, I64), c(1, I64)), "out0")],
                [inp("a", I64, n, 0), out("out0", I64, n, 0)])
    exe = compile_program(p)
    np.testing.assert_array_equal(exe([np.arange(n)])[0], np.arange(1, n + 1))
    f = nnjit.compile(lambda a: a + 1, np.arange(n), backend="llvm")
    with pytest.raises(ArgumentError, match="must be i64\\[5\\], got i32\\[5\\]"):
        f(np.arange(n, dtype=np.int32))


# --- through nnjit.jit ------------------------------------------------------------------------
def mlp(x, w, b):
    h = nnjit.relu(x @ w + b)
    return nnjit.log_softmax(h, axis=-1), h.sum(axis=0), h.argmax(axis=1)


def test_jit_llvm_matches_interp_and_exposes_inspection():
    args = (f32(6, 5), f32(5, 7), f32(7))
    cf = nnjit.compile(mlp, *args, backend="llvm")
    got = cf(*args)
    want = nnjit.compile(mlp, *args, backend="interp")(*args)
    for g, w in zip(got, want):
        assert_close(g, w)
    assert "gemm f32" in cf.kernel_ir()
    assert "define void @\"mlp\"" in cf.llvm_ir()
    assert "nnjit_gemm_f32" in cf.llvm_ir(optimized=True)
    assert "mlp:" in cf.asm()
    assert cf.memory_plan() is not None


def test_jit_llvm_argument_errors_name_the_parameter():
    cf = nnjit.compile(mlp, f32(6, 5), f32(5, 7), f32(7), backend="llvm")
    with pytest.raises(ArgumentError, match="argument w must be"):
        cf(f32(6, 5), f32(7, 5), f32(7))
    with pytest.raises(ArgumentError, match="argument x must be"):
        cf(f32(5, 6), f32(5, 7), f32(7))


def test_debug_2_prints_kernel_ir_and_llvm_ir(monkeypatch, capfd):
    monkeypatch.setenv("NNJIT_DEBUG", "2")
    n = 4
    compile_program(program([map_kernel(n, lambda i: mul(ld("a", i), c(5.0)), name="k5")],
                            [inp("a", F32, n, 0), out("out0", F32, n, 0)], name="dbg"))
    err = capfd.readouterr().err
    assert "kernel k5(" in err and "--- nnjit LLVM IR ---" in err and 'define void @"dbg"' in err
