"""`pack_scan_operands`: a scan's loop-invariant GEMM operands (an RNN's recurrent weight:
a parameter, so `prepack_constants` cannot pack it at compile time) packed once per call,
before the loop, instead of by every step's GEMM call.

Guarantees afterwards: every GEMM at the top of a scan body (length >= 2) whose A or B is a
view, the same for every batch, of one of the scan's consts reads it from a new const input
of the body holding `gemm.panels(dtype, operand)` of that view (`a_packed` / `b_packed` set,
the view's offset and strides zeroed), and is rendered as a call to
`nnjit_gemm_<dtype>_prepacked`. The panels live in a new temporary of the enclosing program
(placed by `plan_memory`, sized for the padded panels), written by pack loop kernels just
before the scan; where the const is a compiled-in constant, in a new constant packed now.
A const the body no longer reads leaves the scan; a const that is a plain transposing copy
of an input (`W_hh.T`) is packed from the input itself, and the copy goes if nothing else
reads it. Results are unchanged: packing copies elements, and the GEMM adds the same
products in the same order either way. NNJIT_PREPACK=0 turns this stage off too. The
char-LSTM's forward scan (h @ W_hh^T, W_hh = in4):

    kernel k5_scan_pack0_b0(reads in4; writes k5_scan_packed0):
      parallel for k in [0, 16):
        for p in [0, 16):
          for kk in [0, 16):
            for r in [0, 64):
              k5_scan_packed0[(((((k * 16) + kk) * 64) + (p * 16384)) + r)] =
                  in4[(((k * 16) + kk) + (((p * 64) + r) * 256))]
    kernel k5_scan(...): scan t in [0, 32): ... consts (k5_scan_packed0)
      program ...
        kernel k0_matmul(reads in0, in3p; writes t0):
          gemm f32 batch=[] m=16 n=1024 k=256
            B = in3p packed(kc=256, width=64)
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from ...codegen.analysis import accesses, affine, perfect_nest
from ...codegen.index import c64, iadd, idiv, imod, imul
from ...ir import DType
from ...ir.kernel import (
    Buffer,
    BufKind,
    Const,
    GemmKernel,
    Load,
    Loop,
    LoopKernel,
    LoopKind,
    MatView,
    Panels,
    Program,
    ScanKernel,
    Store,
    Var,
)
from . import gemm
from .prepack import _used_buffers, prepack_enabled

_FLOATS = (DType.F32, DType.F64)


def pack_scan_operands(program: Program) -> Program:
    """`program` with its scans' loop-invariant GEMM operands packed once per call (see the
    module docstring); nested scans are handled inside their enclosing body."""
    if not prepack_enabled():
        return program
    kernels: list = []
    buffers = list(program.buffers)
    taken = {b.name for b in buffers}
    copies: set[str] = set()           # kernels some pack reads through (_through_permutation)
    for k in program.kernels:
        if isinstance(k, ScanKernel):
            k = dataclasses.replace(k, body=pack_scan_operands(k.body))
            packs, k, added = _ScanPacker(program, k, taken, kernels, copies).run()
            kernels += packs
            buffers += added
        kernels.append(k)
    if tuple(kernels) == program.kernels:
        return program
    dead = [k for k in kernels if _dead_copy(k, program, kernels, copies)]
    kernels = [k for k in kernels if k not in dead]
    gone = {n for k in dead for n in k.writes}
    used = _used_buffers(program, kernels)
    buffers = [b for b in buffers if b.name not in gone
               and (b.kind != BufKind.CONST or b.name in used)]
    return dataclasses.replace(program, buffers=tuple(buffers), kernels=tuple(kernels))


@dataclass(frozen=True)
class PackOperand:
    """What a pack kernel reads: a GEMM operand seen as the K x W matrix X the panels hold
    (B itself; A transposed): X[k, w] = buf[offset + k * k_stride + w * w_stride], in the
    enclosing program's `buf`."""

    buf: str
    dtype: DType
    offset: int
    k_stride: int
    w_stride: int
    k: int
    w: int
    panels: Panels


class _ScanPacker:
    """The packs one scan needs: which body GEMM operands are loop-invariant, one packed
    temporary (and body input) per distinct operand view, the rewritten scan."""

    def __init__(self, outer: Program, scan: ScanKernel, taken: set[str], before: list,
                 copies: set[str]):
        self.outer = {b.name: b for b in outer.buffers}
        self.before = before                    # the enclosing program's kernels so far
        self.copies = copies
        self.scan = scan
        self.body = scan.body
        self.body_bufs = {b.name: b for b in scan.body.buffers}
        self.taken = taken
        first = len(scan.carry_bufs) + len(scan.xs_bufs)
        # Body input -> the enclosing buffer it is, for the scan's consts (the same memory on
        # every step; no body kernel may write an input, `verify_program` checks that).
        self.consts = {name: scan.const_bufs[i]
                       for i, name in enumerate(scan.body.inputs[first:])}
        self.packed: dict[PackOperand, str] = {}       # operand -> its packed body input

    def run(self) -> tuple[list[LoopKernel], ScanKernel, list[Buffer]]:
        if self.scan.length < 2:
            return [], self.scan, []
        kernels = tuple(self.gemm(k) if isinstance(k, GemmKernel) else k
                        for k in self.body.kernels)
        if not self.packed:
            return [], self.scan, []
        outer_names, body_bufs, packs, added = [], [], [], []
        for i, (op, body_name) in enumerate(self.packed.items()):
            name = self._fresh(f"{self.scan.name}_packed{i}")
            size = op.panels.size(op.k, op.w)
            source = self.outer[op.buf]
            if source.kind == BufKind.CONST and source.value is not None:
                # A compiled-in constant (`jit(..., constants=)`): packed now, once.
                added.append(Buffer(name, op.dtype, size, BufKind.CONST,
                                    value=op.panels.pack(_matrix(op, source.value))))
            else:
                added.append(Buffer(name, op.dtype, size, BufKind.TEMP))
                packs += pack_kernels(f"{self.scan.name}_pack{i}", op, name, self.scan.src)
            body_bufs.append(Buffer(body_name, op.dtype, size, BufKind.INPUT,
                                    index=len(self.body.inputs) + i))
            outer_names.append(name)
        body = dataclasses.replace(self.body, buffers=self.body.buffers + tuple(body_bufs),
                                   inputs=self.body.inputs + tuple(b.name for b in body_bufs),
                                   kernels=kernels)
        scan = dataclasses.replace(self.scan, body=body,
                                   const_bufs=self.scan.const_bufs + tuple(outer_names),
                                   reads=self.scan.reads + tuple(outer_names))
        return packs, _without_unused_consts(scan), added

    def gemm(self, k: GemmKernel) -> GemmKernel:
        if k.dtype not in _FLOATS or k.inlined or min(k.m, k.n, k.k) <= 0:
            return k
        a, a_packed = self.operand(k, k.a, k.a_packed, "a")
        b, b_packed = self.operand(k, k.b, k.b_packed, "b")
        if a_packed is k.a_packed and b_packed is k.b_packed:
            return k
        epi_reads = accesses(k.epilogue)[0] if k.epilogue else ()
        reads = tuple(dict.fromkeys((a.buf, b.buf) + tuple(epi_reads)))
        return dataclasses.replace(k, a=a, b=b, a_packed=a_packed, b_packed=b_packed,
                                   reads=reads)

    def operand(self, k: GemmKernel, v: MatView, packed: Panels | None, which: str
                ) -> tuple[MatView, Panels | None]:
        """The view of operand `which` and its packing: a packed body input if the view lies
        in one of the scan's consts and is shared by every batch, else as it was."""
        if packed is not None or any(v.batch_strides):
            return v, packed
        name, offset = v.buf, v.offset
        while name in self.body_bufs and self.body_bufs[name].kind == BufKind.ALIAS:
            offset += self.body_bufs[name].offset
            name = self.body_bufs[name].base
        outer = self.outer.get(self.consts.get(name, ""))
        if outer is None or outer.dtype != k.dtype:
            return v, packed
        panels = gemm.panels(k.dtype.np, which)
        # X is B itself, or A transposed (its k runs along A's columns).
        k_stride, w_stride, w = ((v.row_stride, v.col_stride, k.n) if which == "b" else
                                 (v.col_stride, v.row_stride, k.m))
        op = PackOperand(outer.name, k.dtype, offset, k_stride, w_stride, k.k, w, panels)
        if not _inside(op, outer.size):
            return v, packed            # not a view inside the buffer: left to the checks
        moved = _through_permutation(op, self.before, self.outer)
        if moved is not None:
            self.copies.add(next(k.name for k in self.before if op.buf in k.writes))
            op = moved
        if op not in self.packed:
            self.packed[op] = self._fresh_body(f"{name}p")
        return MatView(self.packed[op], 0, (0,) * len(v.batch_strides), 0, 0), panels

    def _fresh(self, base: str) -> str:
        name, i = base, 1
        while name in self.taken:
            name, i = f"{base}_{i}", i + 1
        self.taken.add(name)
        return name

    def _fresh_body(self, base: str) -> str:
        taken = set(self.body_bufs) | set(self.packed.values())
        name, i = base, 1
        while name in taken:
            name, i = f"{base}{i}", i + 1
        return name


def _through_permutation(op: PackOperand, before: list, bufs: dict) -> PackOperand | None:
    """`op` read from where its buffer was copied from, if that buffer is a temporary whose
    one writer (among the kernels `before`) is a 2-D permuting copy of an input or constant
    no kernel writes after it (an RNN's `W_hh.T`, materialized for the scan):

        t6[i0 * 1024 + i1] = in4[i1 * 256 + i0]    and X[k, w] = t6[k * 1024 + w]
        ->  X[k, w] = in4[w * 256 + k]

    The pack then reads the weight itself (the copy may become dead: see `_dead_copy`)."""
    writers = [i for i, k in enumerate(before) if op.buf in k.writes]
    aliased = any(b.base == op.buf for b in bufs.values())    # written under another name?
    if bufs[op.buf].kind != BufKind.TEMP or len(writers) != 1 or op.offset or aliased:
        return None
    copy = _permuting_copy(before[writers[0]], op.buf, bufs[op.buf].size)
    if copy is None:
        return None
    (axes, strides), (src, src_terms) = copy
    if bufs[src].kind not in (BufKind.INPUT, BufKind.CONST) or any(
            src in k.writes for k in before[writers[0] + 1:]):
        return None
    dims = {(stride, extent): var for (var, extent), stride in zip(axes, strides)}
    k_var, w_var = dims.get((op.k_stride, op.k)), dims.get((op.w_stride, op.w))
    if k_var is None or w_var is None or k_var == w_var:
        return None
    moved = dataclasses.replace(op, buf=src, offset=src_terms.get(1, 0),
                                k_stride=src_terms.get(k_var, 0),
                                w_stride=src_terms.get(w_var, 0))
    return moved if _inside(moved, bufs[src].size) else None


def _permuting_copy(k, dst: str, size: int):
    """((((var, extent), ...), strides), (src, src index terms)) of a kernel that is exactly
    `for v0: for v1: dst[v0 * e1 + v1] = src[affine(v0, v1)]` over all of `dst`, else None."""
    if not (isinstance(k, LoopKernel) and k.writes == (dst,) and len(k.body) == 1
            and isinstance(k.body[0], Loop)):
        return None
    loops, inner = perfect_nest(k.body[0])
    if len(loops) != 2 or len(inner) != 1 or not isinstance(inner[0], Store):
        return None
    store = inner[0]
    if store.buf != dst or not isinstance(store.value, Load) or store.value.buf == dst:
        return None
    (v0, e0), (v1, e1) = ((lp.var, lp.extent) for lp in loops)
    terms, src_terms = affine(store.index), affine(store.value.index)
    if terms != {v0: e1, v1: 1} or e0 * e1 != size or src_terms is None \
            or set(src_terms) - {v0, v1, 1}:
        return None
    return (((v0, e0), (v1, e1)), (e1, 1)), (store.value.buf, src_terms)


def _dead_copy(k, program: Program, kernels: list, copies: set[str]) -> bool:
    """Whether `k` is one of the `copies` packs read through, and no kernel, result or alias
    needs what it wrote any more."""
    if k.name not in copies:
        return False
    needed = set(program.outputs) | {b.base for b in program.buffers if b.base}
    for other in kernels:
        if other is not k:
            needed |= set(other.reads)
    return not needed & set(k.writes)


def _without_unused_consts(scan: ScanKernel) -> ScanKernel:
    """`scan` without the consts its body no longer reads (an operand now read packed only):
    the unpacked buffer need not live across the loop, nor a constant be compiled in twice."""
    body = scan.body
    first = len(scan.carry_bufs) + len(scan.xs_bufs)
    used = _used_buffers(dataclasses.replace(body, inputs=body.inputs[:first]), body.kernels)
    keep = [i for i, n in enumerate(body.inputs[first:]) if n in used]
    if len(keep) == len(scan.const_bufs):
        return scan
    drop = {n for i, n in enumerate(body.inputs[first:]) if i not in keep}
    inputs = tuple(n for n in body.inputs if n not in drop)
    position = {n: i for i, n in enumerate(inputs)}
    buffers = tuple(dataclasses.replace(b, index=position[b.name]) if b.kind == BufKind.INPUT
                    else b for b in body.buffers if b.name not in drop)
    consts = tuple(scan.const_bufs[i] for i in keep)
    still = set(scan.init_bufs + scan.carry_bufs + scan.next_bufs + scan.xs_bufs + consts)
    gone = set(scan.const_bufs) - still
    return dataclasses.replace(scan, const_bufs=consts,
                               body=dataclasses.replace(body, inputs=inputs, buffers=buffers),
                               reads=tuple(n for n in scan.reads if n not in gone))


def _matrix(op: PackOperand, value) -> np.ndarray:
    """X (K x W) read from a constant's value."""
    flat = np.ascontiguousarray(value, op.dtype.np).reshape(-1)
    at = op.offset + np.arange(op.k)[:, None] * op.k_stride + np.arange(op.w)[None, :] * \
        op.w_stride
    return flat[at]


def _inside(op: PackOperand, size: int) -> bool:
    """Every element of X lies in [0, size) of its buffer."""
    dims = ((op.k, op.k_stride), (op.w, op.w_stride))
    lo = op.offset + sum(min(0, (d - 1) * s) for d, s in dims)
    hi = op.offset + sum(max(0, (d - 1) * s) for d, s in dims)
    return lo >= 0 and hi < size


def pack_kernels(name: str, op: PackOperand, dst: str, src: str = "") -> list[LoopKernel]:
    """Loop kernels writing `op.panels.pack(X)` into `dst`: the rows of X's full K-blocks
    (split over threads), then those of a shorter last block. Row k of X goes, in each panel,
    to the k-th `width`-long row; the last panel's columns past W are zeros."""
    kc, kfull = op.panels.kc, op.k // op.panels.kc * op.panels.kc
    out = []
    if kfull:
        out.append(_rows_kernel(f"{name}_b0", op, dst, 0, kfull, kc, src))
    if op.k > kfull:
        out.append(_rows_kernel(f"{name}_b{len(out)}", op, dst, kfull, op.k - kfull,
                                op.k - kfull, src))
    return out


#: Rows of X one iteration of a transposed pack (X's k contiguous in memory) reads per column:
#: a 16-float cache line, so each line is read once instead of once per row.
_TILE = 16


def _rows_kernel(name: str, op: PackOperand, dst: str, k0: int, rows: int, kb: int,
                 src: str) -> LoopKernel:
    """Rows [k0, k0 + rows) of X, in K-blocks of `kb` rows starting at k0: for each row,
    for each column, one element (a tile of `_TILE` rows per column where X is stored
    transposed, so reads run along cache lines)."""
    width, wp = op.panels.width, op.panels.padded(op.w)
    tile = _TILE if (op.k_stride == 1 and op.w_stride != 1 and rows % _TILE == 0
                     and kb % _TILE == 0) else 1
    t, kk, p, r = Var("k"), Var("kk"), Var("p"), Var("r")
    per_block = kb // tile                 # iterations of the parallel loop per K-block
    blk = c64(0) if rows == kb else idiv(t, per_block)
    in_block = t if rows == kb else imod(t, per_block)
    in_block = iadd(imul(in_block, c64(tile)), kk) if tile > 1 else in_block
    row = iadd(c64(k0), iadd(imul(blk, c64(kb)), in_block))
    # dst[k0 * Wp + blk * kb * Wp + panel * kb * width + in_block * width + lane]
    base = iadd(iadd(c64(k0 * wp), imul(blk, c64(kb * wp))), imul(in_block, c64(width)))
    panel_step = kb * width

    def element(panel: int | Var, lane: Var) -> Store:
        col = iadd(imul(panel if isinstance(panel, Var) else c64(panel), c64(width)), lane)
        at = iadd(c64(op.offset), iadd(imul(row, c64(op.k_stride)), imul(col, c64(op.w_stride))))
        return Store(dst, _panel_at(base, panel, panel_step, lane), Load(op.buf, at, op.dtype))

    def rows_of(stmts: list) -> tuple:
        return (Loop("kk", tile, tuple(stmts)),) if tile > 1 else tuple(stmts)

    full, rest = divmod(op.w, width)
    body: list = []
    if full:
        body.append(Loop("p", full, rows_of([Loop("r", width, (element(p, r),))])))
    if rest:
        zero = Store(dst, _panel_at(base, full, panel_step, iadd(Var("z"), c64(rest))),
                     Const(0.0, op.dtype))
        body += rows_of([Loop("r", rest, (element(full, r),)), Loop("z", width - rest, (zero,))])
    nest = Loop("k", rows // tile, tuple(body), LoopKind.PARALLEL)
    return LoopKernel(name, (nest,), (op.buf,), (dst,), cost=rows * wp, src=src)


def _panel_at(base, panel, panel_step: int, lane):
    at = imul(panel if isinstance(panel, Var) else c64(panel), c64(panel_step))
    return iadd(iadd(base, at), lane)

