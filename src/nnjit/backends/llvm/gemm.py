"""nnjit's own GEMM (GotoBLAS/BLIS recipe): packed A and B panels in a caller-owned workspace and
a register-blocked AVX-512 micro-kernel, generated once per dtype into a runtime library module
whose symbols (`nnjit_gemm_f32`, `nnjit_gemm_f64`) other JIT modules simply `declare`.

C ABI (f64: double instead of float)::

    void nnjit_gemm_f32(int64 M, int64 N, int64 K,
                        const float *A, int64 a_row_stride, int64 a_col_stride,
                        const float *B, int64 b_row_stride, int64 b_col_stride,
                        float *C, int64 ldc, int32 accumulate, void *workspace,
                        void (*epilogue)(void *ctx, float *c_block, int64 row0, int64 col0,
                                         int64 rows, int64 cols, int64 ldc),
                        void *epilogue_ctx, int32 nthreads)

computes C[M,N] (= or +=) A[M,K] @ B[K,N]; A(i,k) is A[i*a_row_stride + k*a_col_stride] (any
strides, so transposed operands need no copy), C is row-major with leading dimension ldc.
`accumulate` is a bit set: bit 0 (ACCUMULATE) adds to C, else C is never read; bit 1
(C_SCRATCH) says C is only the epilogue's input, so where one K-slice covers K and an epilogue
is given, blocks are computed into a per-thread tile in the workspace (with the tile's leading
dimension) and C is not touched at all. `nthreads` is an upper bound (< 1 means 1): small problems
(M*N*K < 64^3) run on the calling thread, larger ones split M or N (whichever duplicates less
packing) into one contiguous range of micro-panels per thread (the thread pool, no barriers).
`workspace` holds `gemm_workspace_bytes(dtype, nthreads)` bytes at any alignment (the GEMM aligns
it up to 64 bytes itself; the size includes that slack); one workspace may not be shared by two
concurrent calls, otherwise calls are reentrant.

Pre-packed operands (constant weights packed once, at compile time)::

    void nnjit_gemm_f32_prepacked(<the same arguments as nnjit_gemm_f32>, int32 packed)

is `nnjit_gemm_f32` where bit 0 of `packed` says A, bit 1 that B, is already in panel form
(`ir.kernel.Panels(kc=KC, width=MR)` of A transposed, `Panels(kc=KC, width=NR)` of B; see
`panels(dtype, operand)`): such an operand's pointer is the packed data, its row-stride
argument the packed pitch (M or N rounded up to whole panels) and its column stride is ignored.
The call packs only the other operand, and splits the work so that no thread repacks a
duplicate of what is left to pack.

Epilogue contract: if `epilogue` is non-null it is called exactly once per finished block of C,
after the block's last K-slice has been accumulated, from the thread that computed the block,
with `c_block` holding the block's values (at `&C[row0*ldc + col0]`, or in the scratch tile
under C_SCRATCH), `ldc` their leading dimension and the block's extent (rows x cols, each
>= 1). The blocks are disjoint and tile C[0:M, 0:N] exactly; their size is at most MR x NR (an
implementation detail callers must not rely on). Blocks may be visited in any order and concurrently on different
threads, so an epilogue may only touch its own block (and read shared, read-only data).
"""
from __future__ import annotations

import ctypes
import functools
import hashlib
import sys
import threading
import time
from dataclasses import dataclass

import llvmlite.binding as llvm
import llvmlite.ir as ir
import numpy as np

from ...ir.kernel import Panels
from . import target, threadpool
from .helpers import (
    F32,
    F64,
    I1,
    I32,
    I64,
    PTR,
    VOID,
    call_indirect,
    ceil_div,
    const_float,
    const_i32,
    const_i64,
    fma,
    for_range,
    gep,
    imax,
    imin,
    lane_mask,
    load,
    load_vec,
    masked_load_vec,
    masked_store_vec,
    splat,
    store_vec,
    transpose_vectors,
)
from .parallel import num_threads, parallel_for, start_pool, thread_index, threads_available

#: Problems with M*N*max(K,1) below this run on one thread (a fork costs a few microseconds).
SERIAL_WORK = 64 ** 3

#: The bits of the `accumulate` argument (see the module docstring).
ACCUMULATE, C_SCRATCH = 1, 2


@dataclass(frozen=True)
class GemmConfig:
    """Blocking for one dtype: an MR x (NV*lanes) register tile, KC x NR B micro-panels in L1,
    an MC x KC block of packed A in L2 and a KC x NC block of packed B in L3."""

    name: str
    ty: ir.Type
    size: int  # bytes per element
    lanes: int  # elements per zmm register
    mr: int
    nv: int  # vectors per tile row
    kc: int
    mc: int
    nc: int
    unroll: int = 4  # k-loop unroll of the micro-kernel
    #: Narrow micro-kernel variants (vectors per row) for the last, partial column panel. Each
    #: costs ~0.05 s of compile time; 3 (33..48 of 64 columns) did not earn its keep.
    narrow: tuple[int, ...] = (1, 2)
    #: Short variants (rows) for the last, partial row panel: M = 6 (a conv's out-channels)
    #: runs 6 rows of FMAs, not 8.
    short: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        # NOTE: packed blocks hold whole micro-panels, so the workspace layout needs these.
        if self.mc % self.mr or self.nc % self.nr or self.kc < 1:
            raise ValueError(f"gemm config {self}: MC must be a multiple of MR, NC of NR")

    @property
    def nr(self) -> int:
        return self.nv * self.lanes

    @property
    def vec(self) -> ir.VectorType:
        return ir.VectorType(self.ty, self.lanes)

    def thread_bytes(self) -> int:
        """Per-thread workspace: packed A block, packed B block, then one MR x NR tile of C
        (for C_SCRATCH), each a 64-byte multiple."""
        return self.tile_offset() + _round64(self.mr * self.nr * self.size)

    def tile_offset(self) -> int:
        return _round64(self.mc * self.kc * self.size) + _round64(self.kc * self.nc * self.size)


# f32, measured on Zen 4 (32 KiB L1d, 1 MiB L2 per core, 512-bit FMAs on two 256-bit pipes):
# an 8 x 3-zmm tile (24 accumulators, 3 loads + 8 broadcasts per 24 FMAs) runs large GEMMs at
# the 6 x 4 tile's rate (1024^3 at 1 thread 21.4 vs 21.2 ms) and fits the batch sizes of small
# steps (M = 16, 32: whole panels, where 6 rows wasted 1/9), with short variants for M = 6 or
# 4 past a multiple of 8: char-LSTM step 51.6 -> 47.3 ms. (On Zen 5, 6 x 4 had beaten 14x2,
# 12x2 and 8x3.) KC x NR of B (48 KiB f32) streams through L1/L2, MC x KC of A (192 KiB) stays
# in L2.
CONFIGS = {
    "f32": GemmConfig("f32", F32, 4, 16, mr=8, nv=3, kc=256, mc=8 * 24, nc=2064,
                      short=(4, 6)),
    "f64": GemmConfig("f64", F64, 8, 8, mr=6, nv=4, kc=256, mc=6 * 20, nc=1024),
}
_ALIASES = {"float32": "f32", "float64": "f64", "f32": "f32", "f64": "f64"}

#: A sub-problem of at most this many row panels reads B in place instead of packing it.
DIRECT_B_ROWS = 2


def _round64(n: int) -> int:
    return (n + 63) // 64 * 64


def _config(dtype) -> GemmConfig:
    key = _ALIASES.get(dtype) if isinstance(dtype, str) else None
    if key is None:
        try:
            key = _ALIASES.get(np.dtype(getattr(dtype, "name", dtype)).name)
        except TypeError:
            key = None
    if key is None:
        raise TypeError(f"nnjit gemm: unsupported dtype {dtype!r} (want float32 or float64)")
    return CONFIGS[key]


def gemm_symbol(dtype) -> str:
    """The exported symbol for `dtype`: 'nnjit_gemm_f32' or 'nnjit_gemm_f64'."""
    return f"nnjit_gemm_{_config(dtype).name}"


def gemm_workspace_bytes(dtype, nthreads: int) -> int:
    """Bytes of workspace a call with up to `nthreads` threads needs (allocate once, reuse).
    Includes 64 bytes of slack, so the buffer itself needs no particular alignment."""
    return max(1, nthreads) * _config(dtype).thread_bytes() + 64


def gemm_type(dtype) -> ir.FunctionType:
    """The LLVM function type of `nnjit_gemm_<dtype>` (all pointers opaque)."""
    return ir.FunctionType(VOID, [I64, I64, I64, PTR, I64, I64, PTR, I64, I64, PTR, I64, I32,
                                  PTR, PTR, PTR, I32])


def prepacked_symbol(dtype) -> str:
    """The entry taking pre-packed operands: 'nnjit_gemm_f32_prepacked' (or _f64_)."""
    return f"{gemm_symbol(dtype)}_prepacked"


def prepacked_type(dtype) -> ir.FunctionType:
    """`gemm_type` with the trailing i32 `packed` flags (bit 0: A, bit 1: B)."""
    return ir.FunctionType(VOID, [*gemm_type(dtype).args, I32])


def declare_prepacked(module: ir.Module, dtype) -> ir.Function:
    """Declare `nnjit_gemm_<dtype>_prepacked` in a caller's module (idempotent)."""
    name = prepacked_symbol(dtype)
    existing = module.globals.get(name)
    return existing if existing is not None else ir.Function(module, prepacked_type(dtype), name)


def panels(dtype, operand: str) -> Panels:
    """The panel layout the GEMM packs operand "a" (A transposed: MR-wide panels) or "b" (B:
    NR-wide) into: pack a constant with it once, and call the prepacked entry."""
    cfg = _config(dtype)
    return Panels(cfg.kc, cfg.mr if operand == "a" else cfg.nr)


#: void epilogue(ptr ctx, ptr c_block, i64 row0, i64 col0, i64 rows, i64 cols, i64 ldc)
EPILOGUE_TYPE = ir.FunctionType(VOID, [PTR, PTR, I64, I64, I64, I64, I64])


def declare_gemm(module: ir.Module, dtype) -> ir.Function:
    """Declare `nnjit_gemm_<dtype>` in a caller's module (idempotent); link it with
    `ensure_runtime_loaded()` (JIT) or `runtime_object()` (AOT)."""
    name = gemm_symbol(dtype)
    existing = module.globals.get(name)
    return existing if existing is not None else ir.Function(module, gemm_type(dtype), name)


# --- micro-kernel -----------------------------------------------------------------------------
def _emit_microkernel(module: ir.Module, cfg: GemmConfig, nv: int, rows: int) -> ir.Function:
    """`ukernel(kc, a, b, c, ldc, load_c, mr, nr, ldb)`: C[0:mr, 0:nr] (+)= Ap[kc x MR]^T
    B[kc x NR], B's row k at b + k * ldb (NR in a packed panel; B's own row stride where small
    M reads B in place), using the first `nv` vectors of each B row (nv < NV: narrow variants
    for the last, partial column panel, so N = 10 does not pay for 48 columns) and the first
    `rows` rows of each A panel (rows < MR: short variants for the last, partial row panel;
    mr <= rows). The rows*nv accumulators live in registers (loop phis); full tiles use plain vector stores,
    edge tiles masked ones, so nothing outside the mr x nr tile is read or written."""
    fnty = ir.FunctionType(VOID, [I64, PTR, PTR, PTR, I64, I1, I64, I64, I64])
    suffix = ("" if nv == cfg.nv else f".n{nv}") + ("" if rows == cfg.mr else f".m{rows}")
    fn = ir.Function(module, fnty, f"nnjit_gemm_{cfg.name}.ukernel{suffix}")
    fn.linkage = "internal"
    fn.attributes.add("noinline")
    kc, a, b, c, ldc, load_c, mr, nr, ldb = fn.args
    for p in (a, b, c):
        p.add_attribute("noalias")
    builder = ir.IRBuilder(fn.append_basic_block("entry"))
    zero = const_float(cfg.vec, 0.0)
    acc = [[zero] * nv for _ in range(rows)]

    def step(bld: ir.IRBuilder, k: ir.Value, acc: list[list[ir.Value]]) -> list[list[ir.Value]]:
        bv = [load_vec(bld, gep(bld, b, cfg.ty, bld.add(bld.mul(k, ldb),
                                                         const_i64(v * cfg.lanes))),
                       cfg.ty, cfg.lanes) for v in range(nv)]
        arow = gep(bld, a, cfg.ty, bld.mul(k, const_i64(cfg.mr)))
        out = []
        for i in range(rows):
            ai = splat(bld, load(bld, gep(bld, arow, cfg.ty, i), cfg.ty), cfg.lanes)
            out.append([fma(bld, ai, bv[v], acc[i][v]) for v in range(nv)])
        return out

    main_end = builder.mul(builder.sdiv(kc, const_i64(cfg.unroll)), const_i64(cfg.unroll))
    acc = _carried_loop(builder, const_i64(0), main_end, cfg.unroll, acc,
                        lambda bld, k, acc: _unrolled(bld, k, acc, step, cfg.unroll), "kmain")
    acc = _carried_loop(builder, main_end, kc, 1, acc, step, "ktail")

    full = builder.and_(builder.icmp_signed("==", mr, const_i64(rows)),
                        builder.icmp_signed("==", nr, const_i64(nv * cfg.lanes)))
    with builder.if_else(full) as (then, otherwise):
        with then:
            _store_tile(builder, cfg, acc, c, ldc, load_c, None, None)
        with otherwise:
            _store_tile(builder, cfg, acc, c, ldc, load_c, mr, nr)
    builder.ret_void()
    return fn


def _unrolled(bld, k, acc, step, unroll):
    for u in range(unroll):
        acc = step(bld, bld.add(k, const_i64(u)), acc)
    return acc


def _carried_loop(builder: ir.IRBuilder, start, stop, stride: int, acc, body, name: str):
    """A counted loop whose accumulators (a nested list of values) are loop-carried phis."""
    flat = [v for row in acc for v in row]
    pre = builder.block
    head = builder.append_basic_block(f"{name}.head")
    loop = builder.append_basic_block(f"{name}.body")
    end = builder.append_basic_block(f"{name}.end")
    builder.branch(head)
    builder.position_at_end(head)
    k = builder.phi(I64, name="k")
    phis = [builder.phi(v.type) for v in flat]
    k.add_incoming(start, pre)
    for phi, v in zip(phis, flat):
        phi.add_incoming(v, pre)
    builder.cbranch(builder.icmp_signed("<", k, stop), loop, end)
    builder.position_at_end(loop)
    width = len(acc[0])
    cur = [phis[i:i + width] for i in range(0, len(phis), width)]
    new = [v for row in body(builder, k, cur) for v in row]
    k.add_incoming(builder.add(k, const_i64(stride)), builder.block)
    for phi, v in zip(phis, new):
        phi.add_incoming(v, builder.block)
    builder.branch(head)
    builder.position_at_end(end)
    return cur


def _store_tile(builder, cfg, acc, c, ldc, load_c, mr, nr) -> None:
    """Write the accumulators to C: whole tile (mr is None) or rows < mr, columns < nr."""
    def emit(add: bool) -> None:
        for i in range(len(acc)):
            def row(i=i):
                crow = gep(builder, c, cfg.ty, builder.mul(const_i64(i), ldc))
                for v in range(len(acc[i])):
                    ptr = gep(builder, crow, cfg.ty, v * cfg.lanes)
                    if mr is None:
                        val = acc[i][v]
                        if add:
                            val = builder.fadd(load_vec(builder, ptr, cfg.ty, cfg.lanes), val)
                        store_vec(builder, val, ptr)
                        continue
                    mask = lane_mask(builder, cfg.lanes,
                                     builder.sub(nr, const_i64(v * cfg.lanes)))
                    val = acc[i][v]
                    if add:
                        old = masked_load_vec(builder, ptr, cfg.ty, cfg.lanes, mask)
                        val = builder.fadd(old, val)
                    masked_store_vec(builder, val, ptr, mask)
            if mr is None:
                row()
            else:
                with builder.if_then(builder.icmp_signed(">", mr, const_i64(i))):
                    row()

    with builder.if_else(load_c) as (then, otherwise):
        with then:
            emit(True)
        with otherwise:
            emit(False)


# --- packing ----------------------------------------------------------------------------------
def _emit_pack(module: ir.Module, cfg: GemmConfig, which: str) -> ir.Function:
    """`pack(rows, kc, src, s_row, s_k, dst)`: copy a rows x kc operand block into micro-panels
    of W = MR (A) or NR (B) rows, k-major inside a panel (dst[p*W*kc + k*W + r]), zero-padding
    the last panel. For B, "rows" are the columns of B (s_row = b_col_stride, s_k = b_row_stride).
    """
    width = cfg.mr if which == "a" else cfg.nr
    fn = ir.Function(module, ir.FunctionType(VOID, [I64, I64, PTR, I64, I64, PTR]),
                     f"nnjit_gemm_{cfg.name}.pack_{which}")
    fn.linkage = "internal"
    rows, kc, src, s_row, s_k, dst = fn.args
    src.add_attribute("noalias")
    dst.add_attribute("noalias")
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    full = b.sdiv(rows, const_i64(width))
    with for_range(b, 0, full, name="p") as p:
        psrc = gep(b, src, cfg.ty, b.mul(b.mul(p, const_i64(width)), s_row), inbounds=False)
        pdst = gep(b, dst, cfg.ty, b.mul(b.mul(p, const_i64(width)), kc))
        contiguous = b.icmp_signed("==", s_row, const_i64(1))
        if which == "b":
            # Rows of B (k) hold NR consecutive columns: copy them as whole vectors.
            with b.if_else(contiguous) as (vec_path, gen_path):
                with vec_path:
                    with for_range(b, 0, kc, name="k") as k:
                        srow = gep(b, psrc, cfg.ty, b.mul(k, s_k), inbounds=False)
                        drow = gep(b, pdst, cfg.ty, b.mul(k, const_i64(width)))
                        for v in range(cfg.nv):
                            val = load_vec(b, gep(b, srow, cfg.ty, v * cfg.lanes, inbounds=False),
                                           cfg.ty, cfg.lanes)
                            store_vec(b, val, gep(b, drow, cfg.ty, v * cfg.lanes), align=64)
                with gen_path:
                    # k contiguous (B is a transposed row-major matrix): lanes x lanes blocks
                    # transposed in registers, so reads and writes both use whole cache lines.
                    k_contiguous = b.icmp_signed("==", s_k, const_i64(1))
                    kmain = b.mul(b.sdiv(kc, const_i64(cfg.lanes)), const_i64(cfg.lanes))
                    kstart = b.select(k_contiguous, kmain, const_i64(0))
                    with b.if_then(k_contiguous):
                        _pack_transposed(b, cfg, psrc, s_row, pdst, kmain)
                    _pack_generic(b, cfg, psrc, s_row, s_k, pdst, kc, width, const_i64(width),
                                  kstart)
        else:
            # A stored transposed (the MR rows of a panel are adjacent): one short vector per k.
            with b.if_else(contiguous) as (vec_path, gen_path):
                with vec_path:
                    with for_range(b, 0, kc, name="k") as k:
                        val = load_vec(b, gep(b, psrc, cfg.ty, b.mul(k, s_k), inbounds=False),
                                       cfg.ty, width)
                        store_vec(b, val, gep(b, pdst, cfg.ty, b.mul(k, const_i64(width))))
                with gen_path:
                    _pack_generic(b, cfg, psrc, s_row, s_k, pdst, kc, width, const_i64(width))
    left = b.sub(rows, b.mul(full, const_i64(width)))
    with b.if_then(b.icmp_signed(">", left, const_i64(0))):
        psrc = gep(b, src, cfg.ty, b.mul(b.mul(full, const_i64(width)), s_row), inbounds=False)
        pdst = gep(b, dst, cfg.ty, b.mul(b.mul(full, const_i64(width)), kc))
        _pack_generic(b, cfg, psrc, s_row, s_k, pdst, kc, width, left)
    b.ret_void()
    return fn


def _pack_transposed(b, cfg, psrc, s_row, pdst, kmain) -> None:
    """Full B panel with unit k stride, k in [0, kmain) (a multiple of lanes): load `lanes`
    columns of `lanes` consecutive k each, transpose, store `lanes` packed rows."""
    lanes = cfg.lanes
    with for_range(b, 0, kmain, step=lanes, name="k0") as k0:
        with for_range(b, 0, cfg.nr, step=lanes, unroll=False, name="j0") as j0:
            cols = [load_vec(b, gep(b, psrc, cfg.ty,
                                    b.add(b.mul(b.add(j0, const_i64(j)), s_row), k0),
                                    inbounds=False), cfg.ty, lanes) for j in range(lanes)]
            for kk, row in enumerate(transpose_vectors(b, cols)):
                drow = b.add(b.mul(b.add(k0, const_i64(kk)), const_i64(cfg.nr)), j0)
                store_vec(b, row, gep(b, pdst, cfg.ty, drow), align=64)


def _pack_generic(b, cfg, psrc, s_row, s_k, pdst, kc, width, count, kstart=None) -> None:
    """One panel, any strides: dst[k*W + r] = src[r*s_row + k*s_k] for r < count, else 0, for
    k in [kstart, kc). A full A panel (constant `count`, MR rows) is unrolled; other loops are
    kept rolled and unvectorized: they are rare, and SLP-vectorizing 64 strided scalar copies
    was most of the runtime module's compile time."""
    plain = {"vectorize": False, "unroll": False}
    with for_range(b, kstart if kstart is not None else 0, kc, name="k") as k:
        scol = gep(b, psrc, cfg.ty, b.mul(k, s_k), inbounds=False)
        drow = gep(b, pdst, cfg.ty, b.mul(k, const_i64(width)))
        if isinstance(count, ir.Constant) and width <= 8:
            for r in range(width):
                addr = gep(b, scol, cfg.ty, b.mul(const_i64(r), s_row), inbounds=False)
                b.store(load(b, addr, cfg.ty), gep(b, drow, cfg.ty, r))
        else:
            with for_range(b, 0, count, name="r", **plain) as r:
                addr = gep(b, scol, cfg.ty, b.mul(r, s_row), inbounds=False)
                b.store(load(b, addr, cfg.ty), gep(b, drow, cfg.ty, r))
            with for_range(b, count, width, name="z", **plain) as r:
                b.store(const_float(cfg.ty, 0.0), gep(b, drow, cfg.ty, r))


# --- drivers ----------------------------------------------------------------------------------
def _emit_serial(module: ir.Module, cfg: GemmConfig, ukernels, pack_a, pack_b,
                 prepacked: bool = False) -> ir.Function:
    """The five GotoBLAS loops on one thread over a sub-problem; (row0, col0) is the
    sub-problem's position in the caller's C, reported to the epilogue. `prepacked`: the
    variant taking the `packed` flags last, whose packed operands are the whole operand's
    panels (found from the global position row0 + ic, col0 + jc) instead of a sub-matrix."""
    fnty = ir.FunctionType(VOID, [I64, I64, I64, PTR, I64, I64, PTR, I64, I64, PTR, I64, I32,
                                  PTR, PTR, PTR, I64, I64] + [I32] * prepacked)
    fn = ir.Function(module, fnty, f"nnjit_gemm_{cfg.name}.serial{'.prepacked' * prepacked}")
    fn.linkage = "internal"
    m, n, k, a, rsa, csa, bm, rsb, csb, c, ldc, accumulate, ws, epi, ctx, row0, col0 = \
        fn.args[:17]
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    if prepacked:
        a_packed = b.icmp_signed("!=", b.and_(fn.args[17], const_i32(1)), const_i32(0))
        b_packed = b.icmp_signed("!=", b.and_(fn.args[17], const_i32(2)), const_i32(0))
    ap = ws
    bp = gep(b, ws, ir.IntType(8), _round64(cfg.mc * cfg.kc * cfg.size))
    has_epi = b.icmp_unsigned("!=", epi, ir.Constant(PTR, None))
    bits = accumulate
    accumulate = b.icmp_signed("!=", b.and_(bits, const_i32(ACCUMULATE)), const_i32(0))
    kblocks = imax(b, ceil_div(b, k, cfg.kc), const_i64(1))  # K == 0 still stores C (= 0)
    # A weight gradient's GEMM (K = the batch) fused with the optimizer's update writes no C:
    # the epilogue reads each tile from L1 instead of a C that is written, then read back.
    scratch = b.and_(b.and_(b.icmp_signed("!=", b.and_(bits, const_i32(C_SCRATCH)),
                                          const_i32(0)), has_epi),
                     b.and_(b.not_(accumulate), b.icmp_signed("==", kblocks, const_i64(1))))
    tile = gep(b, ws, ir.IntType(8), cfg.tile_offset())
    tile_ld = b.select(scratch, const_i64(cfg.nr), ldc)
    # With a few rows of A, each B panel serves one or two micro-tiles: packing it (a copy of
    # all of B per call) cost more than the reads it saved. Rows of B with unit column stride
    # are then read in place (the MLP step's forward at batch 16: a 784 x 512 weight).
    direct = b.and_(b.icmp_signed("==", csb, const_i64(1)),
                    b.icmp_signed("<=", m, const_i64(DIRECT_B_ROWS * cfg.mr)))
    if prepacked:
        direct = b.and_(direct, b.not_(b_packed))
    with for_range(b, 0, n, step=cfg.nc, name="jc") as jc:
        nc = imin(b, const_i64(cfg.nc), b.sub(n, jc))
        with for_range(b, 0, kblocks, name="pb") as pb:
            pc = b.mul(pb, const_i64(cfg.kc))
            kc = imin(b, const_i64(cfg.kc), b.sub(k, pc))
            load_c = b.or_(accumulate, b.icmp_signed(">", pb, const_i64(0)))
            last = b.icmp_signed("==", pb, b.sub(kblocks, const_i64(1)))
            bsrc = gep(b, bm, cfg.ty, b.add(b.mul(pc, rsb), b.mul(jc, csb)), inbounds=False)
            bblock = _packed_block(b, cfg, b_packed, bm, pc, rsb, b.add(col0, jc), kc, bp) \
                if prepacked else bp
            # Whole panels of an in-place B; the last, partial one is packed (zero-padded).
            nwhole = b.select(direct, b.mul(b.sdiv(nc, const_i64(cfg.nr)), const_i64(cfg.nr)),
                              const_i64(0))
            _unless(b, b_packed if prepacked else None, lambda: b.call(pack_b, [
                b.sub(nc, nwhole), kc, gep(b, bsrc, cfg.ty, nwhole, inbounds=False), csb, rsb,
                bp]))
            with for_range(b, 0, m, step=cfg.mc, name="ic") as ic:
                mc = imin(b, const_i64(cfg.mc), b.sub(m, ic))
                asrc = gep(b, a, cfg.ty, b.add(b.mul(ic, rsa), b.mul(pc, csa)), inbounds=False)
                ablock = _packed_block(b, cfg, a_packed, a, pc, rsa, b.add(row0, ic), kc, ap) \
                    if prepacked else ap
                _unless(b, a_packed if prepacked else None,
                        lambda: b.call(pack_a, [mc, kc, asrc, rsa, csa, ap]))
                with for_range(b, 0, nc, step=cfg.nr, name="jr") as jr:
                    nr = imin(b, const_i64(cfg.nr), b.sub(nc, jr))
                    whole = b.icmp_signed("<", jr, nwhole)
                    bpanel = b.select(whole, gep(b, bsrc, cfg.ty, jr, inbounds=False),
                                      gep(b, bblock, cfg.ty, b.mul(b.sub(jr, nwhole), kc)))
                    ldb = b.select(whole, rsb, const_i64(cfg.nr))
                    vectors = ceil_div(b, nr, cfg.lanes)
                    with for_range(b, 0, mc, step=cfg.mr, name="ir") as ir_:
                        mr = imin(b, const_i64(cfg.mr), b.sub(mc, ir_))
                        row, col = b.add(ic, ir_), b.add(jc, jr)
                        ctile = b.select(scratch, tile, gep(b, c, cfg.ty, b.add(
                            b.mul(row, ldc), col), inbounds=False))
                        _call_ukernel(b, ukernels, mr, vectors,
                                      [kc, gep(b, ablock, cfg.ty, b.mul(ir_, kc)), bpanel, ctile,
                                       tile_ld, load_c, mr, nr, ldb])
                        with b.if_then(b.and_(last, has_epi)):
                            call_indirect(b, EPILOGUE_TYPE, epi,
                                          [ctx, ctile, b.add(row0, row), b.add(col0, col),
                                           mr, nr, tile_ld])
    b.ret_void()
    return fn


def _unless(b: ir.IRBuilder, packed, emit) -> None:
    """`emit()` (a packing call) where the operand is not pre-packed (`packed` None: never)."""
    if packed is None:
        emit()
        return
    with b.if_then(b.not_(packed)):
        emit()


def _packed_block(b: ir.IRBuilder, cfg: GemmConfig, packed, base, pc, pitch, first, kc,
                  workspace_block):
    """Where the micro-panels of K-block `pc` (kc deep) start, from panel row/column `first`
    on: in the pre-packed operand `base` (pitch: its padded width) if `packed`, else in the
    workspace, where this call packs them."""
    at = gep(b, base, cfg.ty, b.add(b.mul(pc, pitch), b.mul(first, kc)), inbounds=False)
    return b.select(packed, at, workspace_block)


def _call_ukernel(b: ir.IRBuilder, ukernels: dict, mr, vectors, args) -> None:
    """Call the smallest micro-kernel variant covering the tile's `mr` rows and `vectors` B
    vectors (`ukernels`: (rows, vectors) -> kernel)."""
    done = b.append_basic_block("uk.done")
    _switch(b, mr, sorted({r for r, _ in ukernels}), done, lambda rows: _switch(
        b, vectors, sorted({v for r, v in ukernels if r == rows}), done,
        lambda nv: b.call(ukernels[rows, nv], args)))
    b.position_at_end(done)


def _switch(b: ir.IRBuilder, value, sizes: list[int], done, emit) -> None:
    """Branch on `value` (1..max(sizes)) to `emit(size)` for the smallest size >= value (the
    largest is the default case), each then branching to `done`."""
    full = b.append_basic_block(f"uk.{sizes[-1]}")
    switch = b.switch(value, full)
    for size in sizes[:-1]:
        block = b.append_basic_block(f"uk.{size}")
        for v in range(1 + max([s for s in sizes if s < size], default=0), size + 1):
            switch.add_case(const_i64(v), block)
        b.position_at_end(block)
        emit(size)
        if not b.block.is_terminated:
            b.branch(done)
    b.position_at_end(full)
    emit(sizes[-1])
    if not b.block.is_terminated:
        b.branch(done)


def _emit_prepacked(module: ir.Module, cfg: GemmConfig, serial: ir.Function) -> ir.Function:
    """`nnjit_gemm_<dtype>_prepacked`: the entry for calls with pre-packed operands (see the
    module docstring). As `nnjit_gemm_<dtype>`, it splits M or N in micro-panel units, one
    contiguous range per thread, but it weighs only what is still to pack: with B packed,
    splitting M duplicates nothing."""
    fn = ir.Function(module, prepacked_type(cfg.name), prepacked_symbol(cfg.name))
    m, n, k, a, rsa, csa, bm, rsb, csb, c, ldc, accumulate, ws, epi, ctx, nthreads, flags = \
        fn.args
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    empty = b.or_(b.icmp_signed("<=", m, const_i64(0)), b.icmp_signed("<=", n, const_i64(0)))
    with b.if_then(empty, likely=False):
        b.ret_void()
    misalign = b.and_(b.sub(const_i64(0), b.ptrtoint(ws, I64)), const_i64(63))
    ws = gep(b, ws, ir.IntType(8), misalign)
    work = b.mul(b.mul(m, n), imax(b, k, const_i64(1)))
    nt = imax(b, b.sext(nthreads, I64), const_i64(1))
    nt = b.select(b.icmp_signed("<", work, const_i64(SERIAL_WORK)), const_i64(1), nt)
    a_packed = b.icmp_signed("!=", b.and_(flags, const_i32(1)), const_i32(0))
    b_packed = b.icmp_signed("!=", b.and_(flags, const_i32(2)), const_i32(0))
    # What each split makes every thread pack in full: splitting N, all of A; splitting M, B.
    dup_if_n = b.select(a_packed, const_i64(0), m)
    dup_if_m = b.select(b_packed, const_i64(0), n)
    mpanels, npanels = ceil_div(b, m, cfg.mr), ceil_div(b, n, cfg.nr)
    n_ok, m_ok = b.icmp_signed(">=", npanels, nt), b.icmp_signed(">=", mpanels, nt)
    split_n = b.select(b.icmp_signed("<=", dup_if_n, dup_if_m), b.or_(n_ok, b.not_(m_ok)),
                       b.and_(b.not_(m_ok), b.icmp_signed(">", npanels, mpanels)))
    # Fewer than two panels a thread balances badly (M=16: 3 panels split 2/1), and with the
    # other operand packed the duplicate the other split packs is at most that few panels
    # (A of 16x256): split the dimension that has enough. Prepacked B, 2 threads: 16x1024x256
    # 52.7 -> 41.5 us (1 thread: 73.0).
    two_each = b.mul(nt, const_i64(2))
    m_few, n_few = (b.icmp_signed("<", mpanels, two_each),
                    b.icmp_signed("<", npanels, two_each))
    split_n = b.select(b.and_(m_few, b.not_(n_few)), ir.Constant(ir.IntType(1), 1),
                       b.select(b.and_(n_few, b.not_(m_few)), ir.Constant(ir.IntType(1), 0),
                                split_n))
    units = b.select(split_n, npanels, mpanels)
    nt = b.trunc(imin(b, nt, units), I32)

    def body(bld: ir.IRBuilder, lo, hi, cap) -> None:
        (m, n, k, a, rsa, csa, bm, rsb, csb, c, ldc, accumulate, ws, epi, ctx, split_n,
         flags, a_packed, b_packed) = cap
        tid = bld.sext(thread_index(bld), I64)
        tws = gep(bld, ws, ir.IntType(8), bld.mul(tid, const_i64(cfg.thread_bytes())))
        zero = const_i64(0)
        with bld.if_else(split_n) as (by_cols, by_rows):
            with by_cols:
                n0 = bld.mul(lo, const_i64(cfg.nr))
                n1 = imin(bld, bld.mul(hi, const_i64(cfg.nr)), n)
                bsub = bld.select(b_packed, bm,
                                  gep(bld, bm, cfg.ty, bld.mul(n0, csb), inbounds=False))
                csub = gep(bld, c, cfg.ty, n0, inbounds=False)
                bld.call(serial, [m, bld.sub(n1, n0), k, a, rsa, csa, bsub, rsb, csb, csub, ldc,
                                  accumulate, tws, epi, ctx, zero, n0, flags])
            with by_rows:
                m0 = bld.mul(lo, const_i64(cfg.mr))
                m1 = imin(bld, bld.mul(hi, const_i64(cfg.mr)), m)
                asub = bld.select(a_packed, a,
                                  gep(bld, a, cfg.ty, bld.mul(m0, rsa), inbounds=False))
                csub = gep(bld, c, cfg.ty, bld.mul(m0, ldc), inbounds=False)
                bld.call(serial, [bld.sub(m1, m0), n, k, asub, rsa, csa, bm, rsb, csb, csub,
                                  ldc, accumulate, tws, epi, ctx, m0, zero, flags])

    captures = [m, n, k, a, rsa, csa, bm, rsb, csb, c, ldc, accumulate, ws, epi, ctx, split_n,
                flags, a_packed, b_packed]
    parallel_for(module, b, f"{prepacked_symbol(cfg.name)}.worker", units, captures, body, nt)
    b.ret_void()
    return fn


def _emit_gemm(module: ir.Module, cfg: GemmConfig) -> ir.Function:
    """The exported entry: picks a thread count, splits M or N (in micro-panel units) into one
    contiguous range per thread, and runs the serial driver on each range with that thread's
    slice of the workspace. No barriers: the ranges share nothing writable."""
    ukernels = {(rows, nv): _emit_microkernel(module, cfg, nv, rows)
                for rows in {*cfg.short, cfg.mr} for nv in {*cfg.narrow, cfg.nv}}
    pack_a = _emit_pack(module, cfg, "a")
    pack_b = _emit_pack(module, cfg, "b")
    serial = _emit_serial(module, cfg, ukernels, pack_a, pack_b)
    _emit_prepacked(module, cfg, _emit_serial(module, cfg, ukernels, pack_a, pack_b, True))
    fn = ir.Function(module, gemm_type(cfg.name), f"nnjit_gemm_{cfg.name}")
    args = list(fn.args)
    m, n, k, a, rsa, csa, bm, rsb, csb, c, ldc, accumulate, ws, epi, ctx, nthreads = args
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    empty = b.or_(b.icmp_signed("<=", m, const_i64(0)), b.icmp_signed("<=", n, const_i64(0)))
    with b.if_then(empty, likely=False):
        b.ret_void()
    # Packed panels are read with 64-byte aligned vector loads: align the workspace up.
    misalign = b.and_(b.sub(const_i64(0), b.ptrtoint(ws, I64)), const_i64(63))
    ws = gep(b, ws, ir.IntType(8), misalign)

    work = b.mul(b.mul(m, n), imax(b, k, const_i64(1)))
    nt = imax(b, b.sext(nthreads, I64), const_i64(1))
    nt = b.select(b.icmp_signed("<", work, const_i64(SERIAL_WORK)), const_i64(1), nt)
    # Splitting N makes every thread pack all of A (M x K), splitting M all of B (K x N): split
    # the dimension whose duplicated operand is smaller, unless it has too few panels to share.
    mpanels, npanels = ceil_div(b, m, cfg.mr), ceil_div(b, n, cfg.nr)
    n_ok, m_ok = b.icmp_signed(">=", npanels, nt), b.icmp_signed(">=", mpanels, nt)
    split_n = b.select(b.icmp_signed(">=", n, m), b.or_(n_ok, b.not_(m_ok)),
                       b.and_(b.not_(m_ok), b.icmp_signed(">", npanels, mpanels)))
    units = b.select(split_n, npanels, mpanels)
    nt = b.trunc(imin(b, nt, units), I32)

    def body(bld: ir.IRBuilder, lo, hi, cap) -> None:
        (m, n, k, a, rsa, csa, bm, rsb, csb, c, ldc, accumulate, ws, epi, ctx, split_n) = cap
        tid = bld.sext(thread_index(bld), I64)
        tws = gep(bld, ws, ir.IntType(8), bld.mul(tid, const_i64(cfg.thread_bytes())))
        zero = const_i64(0)
        with bld.if_else(split_n) as (by_cols, by_rows):
            with by_cols:
                n0 = bld.mul(lo, const_i64(cfg.nr))
                n1 = imin(bld, bld.mul(hi, const_i64(cfg.nr)), n)
                bsub = gep(bld, bm, cfg.ty, bld.mul(n0, csb), inbounds=False)
                csub = gep(bld, c, cfg.ty, n0, inbounds=False)
                bld.call(serial, [m, bld.sub(n1, n0), k, a, rsa, csa, bsub, rsb, csb, csub, ldc,
                                  accumulate, tws, epi, ctx, zero, n0])
            with by_rows:
                m0 = bld.mul(lo, const_i64(cfg.mr))
                m1 = imin(bld, bld.mul(hi, const_i64(cfg.mr)), m)
                asub = gep(bld, a, cfg.ty, bld.mul(m0, rsa), inbounds=False)
                csub = gep(bld, c, cfg.ty, bld.mul(m0, ldc), inbounds=False)
                bld.call(serial, [bld.sub(m1, m0), n, k, asub, rsa, csa, bm, rsb, csb, csub,
                                  ldc, accumulate, tws, epi, ctx, m0, zero])

    captures = [m, n, k, a, rsa, csa, bm, rsb, csb, c, ldc, accumulate, ws, epi, ctx, split_n]
    parallel_for(module, b, f"nnjit_gemm_{cfg.name}.worker", units, captures, body, nt)
    b.ret_void()
    return fn


# --- the runtime library ---------------------------------------------------------------------
#: The libraries of the runtime: the thread pool (`threadpool`, which every parallel loop and
#: GEMM calls, loaded first) and one GEMM library per dtype, so a float32 model never compiles
#: (or loads) the float64 GEMM.
POOL = "pool"
RUNTIME_SYMBOLS = ("nnjit_gemm_f32", "nnjit_gemm_f64", "nnjit_gemm_f32_prepacked",
                   "nnjit_gemm_f64_prepacked", *threadpool.SYMBOLS)
#: The modules whose source decides the generated IR and its compilation: the cache key hashes
#: them instead of generating the IR, so a warm start neither generates nor renders it.
_GENERATOR_MODULES = ("gemm", "helpers", "parallel", "target", "threadpool")


def _names(dtypes) -> tuple[str, ...]:
    """Config names ('f32', 'f64') for `dtypes` (None: all of them), in CONFIGS order."""
    if dtypes is None:
        return tuple(CONFIGS)
    wanted = {_config(d).name for d in dtypes}
    return tuple(n for n in CONFIGS if n in wanted)


def _exports(name: str) -> tuple[str, ...]:
    if name == POOL:
        return threadpool.SYMBOLS
    return f"nnjit_gemm_{name}", prepacked_symbol(name)


@functools.cache
def library_ir(name: str) -> str:
    """LLVM IR text of one library: `POOL`, or a dtype's (`nnjit_gemm_<name>` and its
    internal helpers: packing, micro-kernels, thread workers)."""
    module = ir.Module(name=f"nnjit_runtime_{name}")
    if name == POOL:
        threadpool.emit(module)
    else:
        _emit_gemm(module, CONFIGS[name])
    return str(module)


@functools.cache
def runtime_module_ir() -> str:
    """LLVM IR text of the whole runtime (the pool and every dtype in one module: what AOT
    links in)."""
    module = ir.Module(name="nnjit_runtime")
    threadpool.emit(module)
    for cfg in CONFIGS.values():
        _emit_gemm(module, cfg)
    return str(module)


@functools.cache
def generator_digest() -> str:
    """sha256 over the source files that generate and compile the runtime library."""
    from pathlib import Path  # noqa: PLC0415

    h = hashlib.sha256()
    here = Path(__file__).resolve().parent
    for mod in _GENERATOR_MODULES:
        data = (here / f"{mod}.py").read_bytes()
        h.update(f"{mod}:{len(data)}:".encode())
        h.update(data)
    return h.hexdigest()


def runtime_cache_key(name: str | None = None) -> str:
    """What one library's object (`name`; None: the whole runtime) depends on: the host target
    (triple, CPU, features, llvmlite), the thread pool's presence, the generator's source and
    the blocking config. Computed without generating any IR."""
    names = (POOL, *_names(None)) if name is None else (name,)
    text = "|".join([target.target_id(), f"pool={threads_available()}", generator_digest(),
                     *(repr(CONFIGS.get(n, n)) for n in names)])
    return hashlib.sha256(text.encode()).hexdigest()


#: Runtime libraries compiled by this process (a test hook: disk cache hits do not count).
compile_stats = {"runtime": 0}


def compile_library(name: str | None = None) -> bytes:
    """Host object code of one library (None: the whole runtime, for AOT links and tests),
    compiled now. NNJIT_DEBUG >= 1 logs the compile time, >= 2 prints the LLVM IR."""
    text = runtime_module_ir() if name is None else library_ir(name)
    if target.debug_level() >= 2:
        print(text, file=sys.stderr)
    start = time.perf_counter()
    obj, _ = target.compile_object(text, target.RUNTIME_OPT_LEVEL)
    compile_stats["runtime"] += 1
    if target.debug_level() >= 1:
        print(f"nnjit: runtime library {name or 'all'} compiled in "
              f"{time.perf_counter() - start:.2f} s ({len(obj)} bytes)", file=sys.stderr)
    return obj


@functools.cache
def runtime_object() -> bytes:
    """Host object code of the whole runtime (compiled once per process)."""
    return compile_library(None)


def cached_library(name: str) -> bytes:
    """One library's object code from the disk cache (`backends.cache`), else compiled and
    stored. A corrupt entry is warned about, deleted and rebuilt by `cache.load`."""
    import nnjit  # noqa: PLC0415  (fully imported by the time anything compiles)

    from .. import cache  # noqa: PLC0415

    key = cache.cache_key("gemm-runtime", runtime_cache_key(name), nnjit.__version__)
    obj = cache.load(key)
    if obj is None:
        obj = compile_library(name)
        cache.store(key, obj)
    return obj


_loaded: dict[str, target.JitLibrary] = {}
_lock = threading.Lock()


def ensure_runtime_loaded(dtypes=None) -> None:
    """Load the thread pool and the GEMM libraries for `dtypes` (None: all) once per process,
    their object code from the disk cache when it can, and register their symbols with
    `llvm.add_symbol`, so JIT modules that call `nnjit_parallel` or `declare_gemm` resolve
    against them. Call before loading such a module."""
    with _lock:
        pool = (POOL,) if threads_available() else ()
        for name in (*pool, *_names(dtypes)):
            if name not in _loaded:
                lib = target.load_object(cached_library(name))
                for symbol in _exports(name):
                    llvm.add_symbol(symbol, lib.address(symbol))
                if name == POOL:
                    start_pool(lib)
                _loaded[name] = lib


# --- a numpy entry point (tests, benchmarks, eager fallbacks) ---------------------------------
_C_GEMM = {}


def gemm_cfunc(dtype):
    """A ctypes callable for `nnjit_gemm_<dtype>` (loads the runtime library if needed)."""
    cfg = _config(dtype)
    if cfg.name not in _C_GEMM:
        i64, p, i32 = ctypes.c_int64, ctypes.c_void_p, ctypes.c_int32
        proto = ctypes.CFUNCTYPE(None, i64, i64, i64, p, i64, i64, p, i64, i64, p, i64, i32,
                                 p, p, p, i32)
        ensure_runtime_loaded([cfg.name])
        _C_GEMM[cfg.name] = proto(_loaded[cfg.name].address(gemm_symbol(dtype)))
    return _C_GEMM[cfg.name]


def workspace(dtype, nthreads: int) -> np.ndarray:
    """A uint8 workspace for `nthreads` threads (64-byte aligned, though that is not required)."""
    nbytes = gemm_workspace_bytes(dtype, nthreads)
    raw = np.empty(nbytes + 64, np.uint8)
    off = (-raw.ctypes.data) % 64
    return raw[off:off + nbytes]


def matmul(a: np.ndarray, b: np.ndarray, out: np.ndarray | None = None,
           accumulate: bool = False, nthreads: int | None = None,
           ws: np.ndarray | None = None, epilogue: int = 0, epilogue_ctx: int = 0,
           c_scratch: bool = False) -> np.ndarray:
    """`out (+)= a @ b` with our GEMM, for 2-D float32/float64 arrays of any strides (`out`
    must have unit column stride). Example: `matmul(x, w.T)` packs `w.T` without a copy.
    `c_scratch` sets C_SCRATCH (`out` may then be left unwritten: the epilogue's results are
    elsewhere)."""
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[0] or a.dtype != b.dtype:
        raise ValueError(f"matmul: bad operands {a.shape} {a.dtype} @ {b.shape} {b.dtype}")
    m, k = a.shape
    n = b.shape[1]
    if out is None:
        out = np.empty((m, n), a.dtype)
    unit_cols = m == 0 or n <= 1 or out.strides[1] == a.itemsize
    if out.shape != (m, n) or out.dtype != a.dtype or not unit_cols:
        raise ValueError(f"matmul: bad output {out.shape} {out.dtype} strides {out.strides}")
    nthreads = num_threads() if nthreads is None else nthreads
    ws = workspace(a.dtype, nthreads) if ws is None else ws
    if ws.nbytes < gemm_workspace_bytes(a.dtype, nthreads):
        raise ValueError("matmul: workspace too small for this many threads")
    item = a.itemsize
    ldc = out.strides[0] // item if m > 1 else n
    gemm_cfunc(a.dtype)(m, n, k, a.ctypes.data, a.strides[0] // item, a.strides[1] // item,
                        b.ctypes.data, b.strides[0] // item, b.strides[1] // item,
                        out.ctypes.data, ldc,
                        (ACCUMULATE if accumulate else 0) | (C_SCRATCH if c_scratch else 0),
                        ws.ctypes.data,
                        epilogue or None, epilogue_ctx or None, nthreads)
    return out
