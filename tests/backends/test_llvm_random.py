"""The LLVM Philox uniform is bit-identical to `nnjit.ir.philox` and vectorizes."""
import ctypes
import functools
import re

import llvmlite.ir as ir
import numpy as np
import pytest

from nnjit.backends.llvm import target
from nnjit.backends.llvm.random import emit_philox4x32_10, emit_philox_uniform
from nnjit.ir import philox
from nnjit.ir.types import DType

I32, I64, PTR = ir.IntType(32), ir.IntType(64), ir.PointerType()


def _loop(fn, body):
    """Append `for i in 0..n: body(b, i)` to `fn`, whose last argument is n."""
    n = fn.args[-1]
    entry, loop, done = (fn.append_basic_block(s) for s in ("entry", "loop", "done"))
    b = ir.IRBuilder(entry)
    b.cbranch(b.icmp_signed(">", n, ir.Constant(I64, 0)), loop, done)
    b.position_at_end(loop)
    i = b.phi(I64)
    i.add_incoming(ir.Constant(I64, 0), entry)
    body(b, i)
    nxt = b.add(i, ir.Constant(I64, 1))
    i.add_incoming(nxt, loop)
    b.cbranch(b.icmp_signed("<", nxt, n), loop, done)
    b.position_at_end(done)
    b.ret_void()


def gather_ir(salt, dtype, lanes=1):
    """`void f(i64 seed, i64* idx, T* out, i64 n) { out[i] = uniform(seed, idx[i]) }`; with
    lanes > 1 the emitter gets `<lanes x i64>` indices and n counts vectors."""
    elem = ir.DoubleType() if np.dtype(dtype) == np.float64 else ir.FloatType()
    ity, fty = I64, elem
    if lanes > 1:
        ity, fty = ir.VectorType(I64, lanes), ir.VectorType(elem, lanes)
    mod = ir.Module(name="philox_test")
    fn = ir.Function(mod, ir.FunctionType(ir.VoidType(), [I64, PTR, PTR, I64]), "f")
    fn.args[1].add_attribute("noalias")
    fn.args[2].add_attribute("noalias")

    def body(b, i):
        idx = b.load(b.gep(fn.args[1], [i], source_etype=ity), typ=ity, align=8)
        u = emit_philox_uniform(b, fn.args[0], idx, salt, dtype)
        b.store(u, b.gep(fn.args[2], [i], source_etype=fty), align=np.dtype(dtype).itemsize)

    _loop(fn, body)
    return str(mod)


def fill_ir(salt, dtype):
    """`void f(i64 seed, T* out, i64 n) { out[i] = uniform(seed, i) }`: the dropout-mask loop."""
    elem = ir.DoubleType() if np.dtype(dtype) == np.float64 else ir.FloatType()
    mod = ir.Module(name="philox_fill")
    fn = ir.Function(mod, ir.FunctionType(ir.VoidType(), [I64, PTR, I64]), "f")
    fn.args[1].add_attribute("noalias")

    def body(b, i):
        u = emit_philox_uniform(b, fn.args[0], i, salt, dtype)
        b.store(u, b.gep(fn.args[1], [i], source_etype=elem))

    _loop(fn, body)
    return str(mod)


@functools.cache
def gather(salt, dtype, lanes=1):
    lib = target.jit(gather_ir(salt, dtype, lanes))
    fn = lib.function("f", None, ctypes.c_int64, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64)

    def call(seed, idx):
        idx = np.ascontiguousarray(idx, dtype=np.int64)
        out = np.empty(idx.shape, dtype=dtype)
        fn(seed, idx.ctypes.data, out.ctypes.data, idx.size // lanes)
        return out

    call.lib = lib
    return call


def _indices(n=100_000):
    rng = np.random.default_rng(7)
    return np.concatenate([np.arange(n // 2), rng.integers(0, 2**62, n // 2 - 4),
                           [2**32 - 1, 2**32, 2**32 + 1, 2**63 - 1]]).astype(np.int64)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("seed,salt", [(0, 0), (12345, 3), (-1, 7), (-(2**63), -5),
                                       (2**40 + 9, 2**32 + 1)])
def test_bit_exact_vs_numpy(seed, salt, dtype):
    idx = _indices()
    got = gather(salt, dtype)(seed, idx)
    np.testing.assert_array_equal(got.view(np.uint8), philox.uniform_at(seed, idx, salt, dtype)
                                  .view(np.uint8))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_fill_matches_uniform(dtype):
    lib = target.jit(fill_ir(salt=11, dtype=dtype))
    fn = lib.function("f", None, ctypes.c_int64, ctypes.c_void_p, ctypes.c_int64)
    out = np.empty((37, 1001), dtype=dtype)  # odd size: vector body plus scalar remainder
    fn(-42, out.ctypes.data, out.size)
    np.testing.assert_array_equal(out, philox.uniform(-42, out.shape, 11, dtype))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_vector_operands(dtype):
    idx = _indices(8192)
    np.testing.assert_array_equal(gather(5, dtype, lanes=8)(99, idx),
                                  philox.uniform_at(99, idx, 5, dtype))


def test_known_answer_words():
    """The raw rounds reproduce a Random123 known-answer vector (constant-folded by LLVM)."""
    mod = ir.Module(name="kat")
    fn = ir.Function(mod, ir.FunctionType(ir.VoidType(), [PTR]), "kat")
    b = ir.IRBuilder(fn.append_basic_block())
    ctr = [ir.Constant(I32, v) for v in (0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344)]
    key = [ir.Constant(I32, v) for v in (0xA4093822, 0x299F31D0)]
    for j, w in enumerate(emit_philox4x32_10(b, ctr, key)):
        b.store(w, b.gep(fn.args[0], [ir.Constant(I64, j)], source_etype=I32))
    b.ret_void()
    lib = target.jit(str(mod))
    out = np.zeros(4, np.uint32)
    lib.function("kat", None, ctypes.c_void_p)(out.ctypes.data)
    assert [int(w) for w in out] == [0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1]


def test_dtype_spellings():
    b = ir.IRBuilder(ir.Function(ir.Module(), ir.FunctionType(ir.VoidType(), [I64]), "g")
                     .append_basic_block())
    seed = b.function.args[0]
    for dt, ty in ((DType.F32, ir.FloatType()), ("float64", ir.DoubleType()),
                   (ir.FloatType(), ir.FloatType())):
        assert emit_philox_uniform(b, seed, seed, 1, dt).type == ty
    with pytest.raises(TypeError, match="float32 or float64"):
        emit_philox_uniform(b, seed, seed, 1, np.int32)


def _has_avx512() -> bool:
    return "+avx512f" in target.host_cpu()[1].split(",")


@pytest.mark.skipif(not _has_avx512(), reason="host has no AVX-512")
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_fill_vectorizes(dtype):
    asm = target.emit_assembly(fill_ir(salt=1, dtype=dtype))
    assert re.search(r"vpmuludq\s+.*%zmm", asm), "32x32->64 products did not vectorize"
    assert not re.search(r"\bcall", asm)
