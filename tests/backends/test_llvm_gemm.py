"""nnjit's packed GEMM (runtime library) against a float64 numpy reference: edge shapes, any
strides, accumulate, epilogue coverage and ordering, 1 and 2 threads, guard pages around the
operands, and the link-level contract (declare from another JIT module, object bytes)."""
import ctypes
import itertools
import mmap
import re

import llvmlite.ir as ir
import numpy as np
import pytest

from nnjit.backends.llvm import gemm, target
from nnjit.backends.llvm.helpers import I64, PTR, VOID, for_range, gep, load

DTYPES = [np.float32, np.float64]
SIZES = [1, 2, 3, 5, 7, 17, 31, 33, 63, 65, 127, 129, 255, 300]
RNG = np.random.default_rng(20240601)


def reference(a, b):
    return a.astype(np.float64) @ b.astype(np.float64)


def check(c, ref, k, dtype):
    """Error bound for a length-k dot product: k * eps * sum|a||b| (checked against |ref|)."""
    eps = np.finfo(dtype).eps
    tol = (4 * max(k, 1) * eps) * (np.abs(ref).max(initial=0.0) + 1.0)
    assert c.shape == ref.shape
    assert np.all(np.isfinite(c)), "non-finite output (read of uninitialised C?)"
    np.testing.assert_allclose(c, ref, rtol=0, atol=tol)


def operands(m, n, k, dtype):
    return (RNG.standard_normal((m, k)).astype(dtype), RNG.standard_normal((k, n)).astype(dtype))


# --- the runtime module -----------------------------------------------------------------------
def test_runtime_ir_is_valid_and_exports_stable_symbols():
    text = gemm.runtime_module_ir()
    mod = target.prepare_module(text)  # parse + verify
    exported = {f.name for f in mod.functions if not f.is_declaration
                and f.linkage.name == "external"}
    assert exported == {"nnjit_gemm_f32", "nnjit_gemm_f64", "nnjit_gemm_f32_prepacked",
                        "nnjit_gemm_f64_prepacked", "nnjit_parallel", "nnjit_pool_set_spin",
                        "nnjit_pool_shutdown", "nnjit_pool_after_fork"}
    assert exported == set(gemm.RUNTIME_SYMBOLS)


def test_workspace_size_contract():
    for dtype in DTYPES:
        one = gemm.gemm_workspace_bytes(dtype, 1)
        assert one > 64 and gemm.gemm_workspace_bytes(dtype, 2) > one
    with pytest.raises(TypeError):
        gemm.gemm_workspace_bytes(np.int32, 1)


# --- shapes -----------------------------------------------------------------------------------
SQUARE = [(s, s, s) for s in SIZES]
MIXED = [(1, 1, 1), (1, 300, 7), (300, 1, 7), (7, 5, 300), (65, 33, 0), (0, 5, 3), (5, 0, 3),
         (1, 64, 1), (6, 64, 256), (6, 64, 257), (12, 128, 512), (13, 129, 513), (127, 255, 17),
         (255, 31, 129), (33, 300, 65), (2, 3, 600), (129, 2, 63), (3, 1000, 3), (1000, 3, 5)]
MIXED += [tuple(int(x) for x in RNG.choice(SIZES, 3)) for _ in range(12)]


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("nthreads", [1, 2])
def test_shapes(dtype, nthreads):
    ws = gemm.workspace(dtype, nthreads)
    for m, n, k in SQUARE + MIXED:
        a, b = operands(m, n, k, dtype)
        c = np.full((m, n), np.nan, dtype)  # accumulate=0 must not read C
        gemm.matmul(a, b, out=c, nthreads=nthreads, ws=ws)
        check(c, reference(a, b), k, dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
def test_every_row_and_column_remainder(dtype):
    """Each micro-kernel variant (short rows x narrow columns) on its edge tiles: M over two
    row panels plus every remainder, N over whole, narrow and partial column panels."""
    cfg = gemm._config(dtype)
    ws = gemm.workspace(dtype, 1)
    for m in range(1, 2 * cfg.mr + 2):
        for n in (1, cfg.lanes + 1, cfg.nr - 1, cfg.nr, cfg.nr + 2 * cfg.lanes + 3):
            a, b = operands(m, n, 11, dtype)
            c = np.full((m, n), np.nan, dtype)
            gemm.matmul(a, b, out=c, nthreads=1, ws=ws)
            check(c, reference(a, b), 11, dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("offset", [1, 8, 36])
def test_misaligned_workspace(dtype, offset):
    nbytes = gemm.gemm_workspace_bytes(dtype, 2)
    raw = gemm.workspace(dtype, 3)  # aligned and big enough for the shifted slice
    ws = raw[offset:offset + nbytes]
    a, b = operands(130, 200, 300, dtype)
    c = gemm.matmul(a, b, nthreads=2, ws=ws)
    check(c, reference(a, b), 300, dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
def test_k_zero_writes_zeros_or_keeps_c(dtype):
    a, b = np.empty((7, 0), dtype), np.empty((0, 65), dtype)
    c = np.full((7, 65), np.nan, dtype)
    gemm.matmul(a, b, out=c, nthreads=2)
    assert np.all(c == 0)
    c0 = RNG.standard_normal((7, 65)).astype(dtype)
    c = c0.copy()
    gemm.matmul(a, b, out=c, accumulate=True, nthreads=2)
    np.testing.assert_array_equal(c, c0)


# --- strides ----------------------------------------------------------------------------------
def views(x):
    """The same matrix as: contiguous, transposed storage, every-other-element, reversed rows."""
    yield "contig", x
    yield "transposed", np.ascontiguousarray(x.T).T
    big = np.full((x.shape[0] * 2 + 1, x.shape[1] * 3 + 1), np.nan, x.dtype)
    big[1::2, 1::3] = x
    yield "strided", big[1::2, 1::3]
    yield "reversed", np.ascontiguousarray(x[::-1])[::-1]


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("m,n,k", [(37, 70, 45), (130, 129, 300), (5, 200, 513)])
def test_any_operand_strides(dtype, m, n, k):
    a, b = operands(m, n, k, dtype)
    ref = reference(a, b)
    for (na, av), (nb, bv) in itertools.product(views(a), views(b)):
        for nthreads in (1, 2):
            c = np.full((m, n), np.nan, dtype)
            gemm.matmul(av, bv, out=c, nthreads=nthreads)
            check(c, ref, k, dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("nthreads", [1, 2])
def test_accumulate_and_ldc(dtype, nthreads):
    for m, n, k in [(1, 1, 1), (17, 65, 300), (300, 127, 33), (64, 64, 600)]:
        a, b = operands(m, n, k, dtype)
        big = np.full((m, n + 9), np.nan, dtype)  # ldc = n + 9: the gap must stay untouched
        c = big[:, :n]
        c[...] = RNG.standard_normal((m, n))
        c0 = c.copy()
        gemm.matmul(a, b, out=c, accumulate=True, nthreads=nthreads)
        check(c, c0 + reference(a, b), k, dtype)
        assert np.all(np.isnan(big[:, n:]))


# --- epilogue ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def epilogues():
    """Per dtype, an LLVM epilogue `c = 2*c + 1` that also counts coverage: ctx is an int64
    array [N, count(0,0), count(0,1), ...]; it also rejects blocks whose size is not >= 1."""
    mod = ir.Module(name="epilogue_test")
    for name, ty in (("f32", ir.FloatType()), ("f64", ir.DoubleType())):
        fn = ir.Function(mod, gemm.EPILOGUE_TYPE, f"epi_{name}")
        ctx, cblk, row0, col0, rows, cols, ldc = fn.args
        b = ir.IRBuilder(fn.append_basic_block("entry"))
        ncols = load(b, ctx, I64)
        with for_range(b, 0, rows) as i:
            with for_range(b, 0, cols) as j:
                p = gep(b, cblk, ty, b.add(b.mul(i, ldc), j))
                val = load(b, p, ty)
                b.store(b.fadd(b.fmul(val, ir.Constant(ty, 2.0)), ir.Constant(ty, 1.0)), p)
                idx = b.add(b.add(b.mul(b.add(row0, i), ncols), b.add(col0, j)),
                            ir.Constant(I64, 1))
                q = gep(b, ctx, I64, idx)
                b.store(b.add(load(b, q, I64), ir.Constant(I64, 1)), q)
        b.ret_void()
    lib = target.jit(str(mod))
    return lib, {"f32": lib.address("epi_f32"), "f64": lib.address("epi_f64")}


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("nthreads", [1, 2])
@pytest.mark.parametrize("accumulate", [False, True])
def test_epilogue_covers_each_element_once_after_last_k_block(epilogues, dtype, nthreads,
                                                              accumulate):
    _, addr = epilogues
    name = "f32" if dtype == np.float32 else "f64"
    for m, n, k in [(1, 1, 1), (7, 5, 0), (65, 129, 600), (300, 33, 257), (128, 512, 40)]:
        a, b = operands(m, n, k, dtype)
        c0 = RNG.standard_normal((m, n)).astype(dtype)
        c = c0.copy() if accumulate else np.full((m, n), np.nan, dtype)
        ctx = np.zeros(1 + m * n, np.int64)
        ctx[0] = n
        gemm.matmul(a, b, out=c, accumulate=accumulate, nthreads=nthreads,
                    epilogue=addr[name], epilogue_ctx=ctx.ctypes.data)
        assert np.all(ctx[1:] == 1), f"coverage counts {np.unique(ctx[1:])} for {(m, n, k)}"
        # 2*(c0 + AB) + 1 only if the epilogue ran after the last K-block (K=600 has 3).
        full = reference(a, b) + (c0 if accumulate else 0)
        check(c, 2 * full + 1, 2 * k + 2, dtype)


@pytest.fixture(scope="module")
def copy_out_epilogues():
    """Per dtype, an epilogue `out = 2*c + 1` into another matrix: ctx is int64 [N, &out]."""
    mod = ir.Module(name="copy_out_epilogue_test")
    for name, ty in (("f32", ir.FloatType()), ("f64", ir.DoubleType())):
        fn = ir.Function(mod, gemm.EPILOGUE_TYPE, f"epi_{name}")
        ctx, cblk, row0, col0, rows, cols, ldc = fn.args
        b = ir.IRBuilder(fn.append_basic_block("entry"))
        ncols = load(b, ctx, I64)
        out = b.inttoptr(load(b, gep(b, ctx, I64, 1), I64), ir.PointerType())
        with for_range(b, 0, rows) as i:
            with for_range(b, 0, cols) as j:
                val = load(b, gep(b, cblk, ty, b.add(b.mul(i, ldc), j)), ty)
                at = b.add(b.mul(b.add(row0, i), ncols), b.add(col0, j))
                b.store(b.fadd(b.fmul(val, ir.Constant(ty, 2.0)), ir.Constant(ty, 1.0)),
                        gep(b, out, ty, at))
        b.ret_void()
    lib = target.jit(str(mod))
    return lib, {"f32": lib.address("epi_f32"), "f64": lib.address("epi_f64")}


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("nthreads", [1, 2])
@pytest.mark.parametrize("accumulate", [False, True])
def test_c_scratch_leaves_c_alone_where_one_k_slice_covers_k(copy_out_epilogues, dtype,
                                                              nthreads, accumulate):
    _, addr = copy_out_epilogues
    name = "f32" if dtype == np.float32 else "f64"
    kc = gemm.CONFIGS[name].kc
    for m, n, k in [(1, 1, 1), (7, 5, 0), (16, 784, 16), (65, 129, kc), (300, 33, kc + 1)]:
        a, b = operands(m, n, k, dtype)
        c0 = RNG.standard_normal((m, n)).astype(dtype)
        c = c0.copy() if accumulate else np.full((m, n), np.nan, dtype)
        out = np.full((m, n), np.nan, dtype)
        ctx = np.array([n, out.ctypes.data], np.int64)
        gemm.matmul(a, b, out=c, accumulate=accumulate, nthreads=nthreads, c_scratch=True,
                    epilogue=addr[name], epilogue_ctx=ctx.ctypes.data)
        full = reference(a, b) + (c0 if accumulate else 0)
        check(out, 2 * full + 1, 2 * k + 2, dtype)
        if accumulate or k > kc:   # C holds the sum: it is read, or K needs two slices
            check(c, full, k + 1, dtype)
        else:
            assert np.all(np.isnan(c)), f"C was written for {(m, n, k)}"


# --- memory safety ----------------------------------------------------------------------------
class GuardedArena:
    """Pages followed by a PROT_NONE guard page: `tail(shape, strides)` places an operand so that
    its last element ends exactly at the guard; any read past it faults."""

    PAGE = mmap.PAGESIZE

    def __init__(self, nbytes):
        self.pages = (nbytes + self.PAGE - 1) // self.PAGE + 1
        self.mm = mmap.mmap(-1, (self.pages + 1) * self.PAGE)
        self.buf = np.frombuffer(self.mm, np.uint8)
        self.base = self.buf.ctypes.data
        libc = ctypes.CDLL(None, use_errno=True)
        guard = self.base + self.pages * self.PAGE
        assert libc.mprotect(ctypes.c_void_p(guard), self.PAGE, 0) == 0  # PROT_NONE

    def tail(self, rows, cols, row_stride, dtype, fill=np.nan):
        item = np.dtype(dtype).itemsize
        span = ((rows - 1) * row_stride + cols) * item
        end = self.pages * self.PAGE
        region = np.frombuffer(self.mm, dtype, count=(end // item), offset=0)
        region[:] = fill  # sentinels everywhere outside the operand
        start = (end - span) // item
        return np.lib.stride_tricks.as_strided(region[start:], (rows, cols),
                                               (row_stride * item, item)), region, start


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("m,n,k", [(1, 1, 1), (7, 5, 3), (13, 65, 129), (31, 63, 17),
                                   (65, 130, 257), (129, 33, 7)])
def test_operands_against_guard_pages(dtype, m, n, k):
    a0, b0 = operands(m, n, k, dtype)
    ref = reference(a0, b0)
    arenas = [GuardedArena((m * (k + 3) + n * (k + 3) + m * (n + 5)) * 8 + 4096)
              for _ in range(3)]
    a, _, _ = arenas[0].tail(m, k, k + 3, dtype)
    b, _, _ = arenas[1].tail(k, n, n, dtype)
    a[...] = a0
    b[...] = b0
    for nthreads, accumulate in itertools.product((1, 2), (False, True)):
        c, region, start = arenas[2].tail(m, n, n + 5, dtype)
        c[...] = 0.5 if accumulate else np.nan
        gemm.matmul(a, b, out=c, accumulate=accumulate, nthreads=nthreads)
        check(c, ref + (0.5 if accumulate else 0), k, dtype)
        # Sentinels before C and in the ldc gaps are untouched (C ends at the guard page).
        assert np.all(np.isnan(region[:start]))
        gaps = np.lib.stride_tricks.as_strided(region[start + n:], (m - 1, 5),
                                               ((n + 5) * c.itemsize, c.itemsize))
        assert np.all(np.isnan(gaps))


# --- linking and code quality -----------------------------------------------------------------
def test_other_jit_modules_can_declare_and_call_it():
    gemm.ensure_runtime_loaded()
    mod = ir.Module(name="caller")
    callee = gemm.declare_gemm(mod, np.float32)
    assert gemm.declare_gemm(mod, "f32") is callee  # idempotent
    fn = ir.Function(mod, ir.FunctionType(VOID, [PTR, PTR, PTR, PTR]), "square_matmul_4")
    a, b, c, ws = fn.args
    bld = ir.IRBuilder(fn.append_basic_block("entry"))
    i64 = lambda v: ir.Constant(I64, v)  # noqa: E731
    i32 = lambda v: ir.Constant(ir.IntType(32), v)  # noqa: E731
    null = ir.Constant(PTR, None)
    bld.call(callee, [i64(4), i64(4), i64(4), a, i64(4), i64(1), b, i64(4), i64(1), c, i64(4),
                      i32(0), ws, null, null, i32(1)])
    bld.ret_void()
    lib = target.jit(str(mod))
    f = lib.function("square_matmul_4", None, *[ctypes.c_void_p] * 4)
    x, y = operands(4, 4, 4, np.float32)
    out = np.full((4, 4), np.nan, np.float32)
    ws_buf = gemm.workspace(np.float32, 1)
    f(x.ctypes.data, y.ctypes.data, out.ctypes.data, ws_buf.ctypes.data)
    check(out, reference(x, y), 4, np.float32)


def test_runtime_object_bytes_reload():
    obj = gemm.runtime_object()
    assert isinstance(obj, bytes) and len(obj) > 1000
    lib = target.load_object(obj)
    assert lib.address("nnjit_gemm_f32") and lib.address("nnjit_gemm_f64")
    assert len(gemm.runtime_cache_key()) == 64
    for name in ("f32", "f64"):
        lib = target.load_object(gemm.compile_library(name))
        assert lib.address(f"nnjit_gemm_{name}")


def test_microkernel_keeps_accumulators_in_zmm_registers():
    cpu, feats = target.host_cpu()
    if "+avx512f" not in feats.split(","):
        pytest.skip("host has no AVX-512")
    for name, cfg in gemm.CONFIGS.items():
        mod = ir.Module(name="ukernel_only")
        gemm._emit_microkernel(mod, cfg, cfg.nv, cfg.mr).linkage = ""  # nothing calls it
        asm = target.emit_assembly(str(mod))
        start = asm.index(f"nnjit_gemm_{name}.ukernel:")
        body = asm[start:asm.index(".Lfunc_end", start)]
        blocks = re.split(r"\n(?=\.LBB)", body)
        hot = max(blocks, key=lambda blk: blk.count("vfmadd"))
        assert hot.count("vfmadd") >= cfg.mr * cfg.nv * cfg.unroll
        assert all("zmm" in line for line in hot.splitlines() if "vfmadd" in line)
        # (rbp may serve as an address register; a spill would be a stack slot)
        assert not re.search(r"\(%rsp\)|-\d+\(%rbp\)", hot), "spills in the micro-kernel loop"
