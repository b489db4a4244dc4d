"""Kernel-IR `Program` -> one LLVM module with one C-ABI entry point.

    void <prog>(T0 *in0, ..., U0 *out0, ..., void *arena)

`arena` is `Rendered.arena_bytes` bytes, 64-byte aligned, owned by the caller: TEMP buffers at
their offsets in [0, temp_bytes), then (if the program checks indices) the status word
(`status_bytes`: i64 site + 1, i64 bad index; zeroed at entry, read by the caller after the
call), then the GEMM workspace. A failed check makes the entry return before the next kernel,
so nothing after it (a donated parameter's update) runs. Each loop kernel is
an internal function over its buffers (`noalias` where no two may overlap); a top-level
parallel loop is split over threads with `parallel.parallel_for`. GEMMs call the runtime
library (`nnjit_gemm_<dtype>`), scans loop over a nested program function, copies are memcpy.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import llvmlite.ir as ir
import numpy as np

from ...codegen.analysis import affine, facts, loads_of, may_overlap, memory_region, trip_count
from ...ir import CompileError, DType
from ...ir.kernel import (
    PACKED_KINDS,
    STATUS_BUFFER,
    STATUS_BYTES,
    BufKind,
    CopyKernel,
    GemmKernel,
    HostKernel,
    Loop,
    LoopKernel,
    LoopKind,
    MatView,
    Program,
    ScanKernel,
)
from . import gemm, parallel, threadpool
from .helpers import (
    I1,
    AccessGroup,
    I8,
    I32,
    I64,
    PTR,
    VOID,
    alloca_once,
    for_range,
    gep,
    intrinsic,
    load,
    prefetch_range,
    tag_access,
)
from .render_loops import MEM_TYPE, BufRef, StmtRenderer, streaming_plan


@dataclass(frozen=True)
class Rendered:
    """The module text and the facts a caller needs to run it."""

    text: str               # LLVM IR, before optimization
    entry: str              # the exported symbol
    temp_bytes: int         # TEMP region: arena[0 : temp_bytes]
    workspace_bytes: int    # GEMM workspace, after the status word
    nthreads: int           # the thread count compiled in (parallel loops and GEMMs)
    gemm_dtypes: tuple[str, ...]  # the GEMM runtime libraries it calls ('f32', 'f64')
    status_bytes: int = 0   # the status word at arena[temp_bytes:], if indices are checked
    profile_bytes: int = 0  # profiling builds: one i64 timestamp (ns) per kernel boundary
    host_bytes: int = 0     # programs with host steps: the runtime's callback pointer

    @property
    def uses_gemm(self) -> bool:
        return bool(self.gemm_dtypes)

    @property
    def uses_runtime(self) -> bool:
        """Whether the code calls the runtime library: a GEMM or the thread pool."""
        return self.uses_gemm or threadpool.called_in(self.text)

    @property
    def arena_bytes(self) -> int:
        return (self.temp_bytes + self.status_bytes + self.host_bytes + self.profile_bytes
                + self.workspace_bytes)

    @property
    def host_offset(self) -> int | None:
        """Where the runtime stores `int32 host(int64 step, void **buffers)` (host steps)."""
        return self.temp_bytes if self.host_bytes else None

    # The arena: temporaries | host callback | profile stamps | status word | GEMM workspace. The
    # status word sits just below the workspace, where every function (scan bodies included)
    # finds it from the workspace pointer it is given.
    @property
    def profile_offset(self) -> int | None:
        return self.temp_bytes + self.host_bytes if self.profile_bytes else None

    @property
    def status_offset(self) -> int | None:
        return self.temp_bytes + self.host_bytes + self.profile_bytes if self.status_bytes \
            else None


def round64(n: int) -> int:
    return (n + 63) // 64 * 64


def entry_name(program: Program) -> str:
    """The C identifier exported for `program` (its name, made a valid identifier)."""
    name = re.sub(r"\W", "_", program.name) or "program"
    name = "_" + name if name[0].isdigit() else name
    return name + "_" if name == "main" else name


def render(program: Program, nthreads: int | None = None, bounds: bool = False,
           profile: bool = False) -> Rendered:
    """Render `program`; `nthreads` defaults to `parallel.num_threads()`; `bounds` traps on
    any out-of-range load or store (NNJIT_DEBUG_BOUNDS=1); `profile` stores a timestamp
    before the first kernel and after each one (a separate build: the normal one has none)."""
    if nthreads is None:
        nthreads = parallel.num_threads()
    nthreads = max(1, nthreads) if parallel.threads_available() else 1
    r = _ModuleRenderer(program.name, nthreads, bounds)
    name = entry_name(program)
    temp = round64(program.arena_bytes)
    status = STATUS_BYTES if program.sites else 0
    host = 64 if any(isinstance(k, HostKernel) for k in program.kernels) else 0
    stamps = round64(8 * (len(program.kernels) + 1)) if profile else 0
    r.program_function(program, name, workspace_offset=temp + status + host + stamps,
                       profile_offset=temp + host if profile else None,
                       host_offset=temp if host else None)
    ws = max((gemm.gemm_workspace_bytes(dt.np, nthreads) for dt in r.gemm_dtypes), default=0)
    return Rendered(str(r.module), name, temp, round64(ws), nthreads,
                    tuple(sorted(dt.value for dt in r.gemm_dtypes)),
                    status, stamps, host)


class _Frame:
    """One program function: its buffers' addresses and memory regions."""

    def __init__(self, prog: Program, fn: ir.Function, b: ir.IRBuilder, consts, ws: ir.Value,
                 entry: bool = False):
        self.prog, self.fn, self.ws = prog, fn, ws
        self.bufs = {buf.name: buf for buf in prog.buffers}
        self.ptrs: dict[str, ir.Value] = {}
        # An output computed in place over a donated input: both names get the output's
        # pointer (the runtime passes one array for the two; `copy_donated` makes a caller that
        # passes two arrays right as well), so kernels see one pointer, not two arguments that
        # may overlap, and their loops vectorize without a run-time overlap check.
        self.donated = {buf.base: buf.name for buf in prog.buffers
                        if entry and buf.kind == BufKind.OUTPUT and buf.base
                        and self.bufs[buf.base].kind == BufKind.INPUT}
        nin = len(prog.inputs)
        arena = fn.args[nin + len(prog.outputs)]
        for buf in prog.buffers:
            self.ptrs[buf.name] = self._address(b, buf, nin, arena, consts)

    def copy_donated(self, b: ir.IRBuilder) -> None:
        """At entry: a donated input that arrived in its own array is copied into its output's."""
        for src, dst in self.donated.items():
            given, into = self.fn.args[self._position(self.prog.inputs, self.bufs[src])], \
                self.ptrs[dst]
            with b.if_then(b.icmp_unsigned("!=", given, into), likely=False):
                fn = intrinsic(b.module, "llvm.memmove", VOID, [PTR, PTR, I64, I1],
                               [PTR, PTR, I64])
                b.call(fn, [into, given, ir.Constant(I64, self.bufs[src].nbytes),
                            ir.Constant(I1, 0)])

    def _address(self, b, buf, nin, arena, consts) -> ir.Value:
        if buf.name in self.ptrs:
            return self.ptrs[buf.name]
        if buf.kind == BufKind.INPUT and buf.name in self.donated:
            return self.fn.args[nin + self._position(self.prog.outputs,
                                                     self.bufs[self.donated[buf.name]])]
        if buf.kind == BufKind.INPUT:
            return self.fn.args[self._position(self.prog.inputs, buf)]
        if buf.kind == BufKind.OUTPUT:
            return self.fn.args[nin + self._position(self.prog.outputs, buf)]
        if buf.kind == BufKind.TEMP:
            if buf.offset % 64:
                raise CompileError(f"buffer {buf.name}: arena offset {buf.offset} is not "
                                   f"64-byte aligned")
            return gep(b, arena, I8, buf.offset)
        if buf.kind == BufKind.CONST:
            return consts(buf)
        if buf.kind == BufKind.STATUS:        # just below the workspace, in every function
            return gep(b, self.ws, I8, -STATUS_BYTES)
        base = self.buffer(buf.base)
        ptr = self._address(b, base, nin, arena, consts)
        self.ptrs[base.name] = ptr
        nbytes = buf.offset * buf.dtype.itemsize
        if isinstance(ptr, (ir.GlobalVariable, ir.FormattedConstant)):
            # A constant expression, so kernel functions can use it too (constants are not
            # passed to them as arguments).
            return ir.FormattedConstant(PTR, f"getelementptr inbounds (i8, ptr "
                                             f"{ptr.get_reference()}, i64 {nbytes})")
        return gep(b, ptr, I8, nbytes)

    def _position(self, names, buf) -> int:
        try:
            return names.index(buf.name)
        except ValueError:
            raise CompileError(f"buffer {buf.name} is {buf.kind.value} but not in the "
                               f"program's signature") from None

    def buffer(self, name: str):
        try:
            return self.bufs[name]
        except KeyError:
            raise CompileError(f"program {self.prog.name}: unknown buffer {name!r}") from None

    def ref(self, name: str) -> BufRef:
        buf = self.buffer(name)
        return BufRef(self.ptrs[name], buf.dtype, buf.size, name)

    def root_kind(self, name: str) -> BufKind:
        """The kind of the memory `name` lives in (through aliases)."""
        buf = self.buffer(name)
        while buf.kind == BufKind.ALIAS:
            buf = self.buffer(buf.base)
        return buf.kind

    def is_const(self, name: str) -> bool:
        return self.root_kind(name) == BufKind.CONST


class _ModuleRenderer:
    def __init__(self, name: str, nthreads: int, bounds: bool):
        self.module = ir.Module(name=name)
        self.nthreads = nthreads
        self.bounds = bounds
        self.gemm_dtypes: set[DType] = set()
        self._names: set[str] = set()

    def unique(self, name: str) -> str:
        name = re.sub(r"[^\w.]", "_", name)
        out, i = name, 1
        while out in self._names:
            out, i = f"{name}.{i}", i + 1
        self._names.add(out)
        return out

    # -- program functions ---------------------------------------------------------------------
    def program_function(self, prog: Program, name: str, workspace_offset: int | None = None,
                         profile_offset: int | None = None, host_offset: int | None = None
                         ) -> ir.Function:
        """`void name(ptr inputs..., ptr outputs..., ptr arena[, ptr workspace])`: the entry when
        `workspace_offset` is given (the workspace is then inside the arena), else internal;
        with `profile_offset`, the kernel boundary timestamps go to the arena there."""
        nargs = len(prog.inputs) + len(prog.outputs)
        top = workspace_offset is not None
        fn = ir.Function(self.module, ir.FunctionType(VOID, [PTR] * (nargs + 1 + (not top))),
                         self.unique(name))
        fn.attributes.add("nounwind")
        if not top:
            fn.linkage = "internal"
            fn.attributes.add("noinline")    # a scan body: see loop_kernel
        b = ir.IRBuilder(fn.append_basic_block("entry"))
        ws = gep(b, fn.args[nargs], I8, workspace_offset) if top else fn.args[nargs + 1]
        frame = _Frame(prog, fn, b, lambda buf: self.const_global(fn.name, buf), ws, entry=top)
        frame.copy_donated(b)
        if top and prog.sites:
            for word in (0, 1):
                b.store(ir.Constant(I64, 0), gep(b, frame.ptrs[STATUS_BUFFER], I64, word))
        stamp = None
        if profile_offset is not None:
            stamps = gep(b, fn.args[nargs], I8, profile_offset)
            stamp = lambda i: b.store(_monotonic_ns(b), gep(b, stamps, I64, i))  # noqa: E731
            stamp(0)
        hosts = 0
        for i, k in enumerate(prog.kernels):
            try:
                if isinstance(k, LoopKernel):
                    self.loop_kernel(b, frame, k)
                elif isinstance(k, GemmKernel):
                    self.gemm_kernel(b, frame, k)
                elif isinstance(k, ScanKernel):
                    self.scan_kernel(b, frame, k)
                elif isinstance(k, CopyKernel):
                    self.copy(b, frame, k.dst_buf, k.src_buf, k.size * k.dtype.itemsize)
                elif isinstance(k, HostKernel):
                    if host_offset is None:
                        raise CompileError("collectives inside a scan body are not supported "
                                           "(move them out of the scanned function)")
                    self.host_kernel(b, frame, k, hosts, gep(b, fn.args[nargs], I8, host_offset))
                    hosts += 1
                else:
                    raise CompileError(f"unknown kernel {k!r}")
            except CompileError as e:
                raise CompileError(f"llvm backend, program {prog.name}, kernel {k.name}"
                                   f"{' (' + k.src + ')' if k.src else ''}: {e}") from e
            if stamp is not None:
                stamp(i + 1)
            if top and STATUS_BUFFER in k.writes:
                failed = b.icmp_signed("!=", b.load(frame.ptrs[STATUS_BUFFER], typ=I64),
                                       ir.Constant(I64, 0))
                with b.if_then(failed, likely=False):
                    b.ret_void()
        b.ret_void()
        return fn

    def host_kernel(self, b: ir.IRBuilder, frame: _Frame, k: HostKernel, index: int,
                    slot: ir.Value) -> None:
        """`if (host(index, {buffers...})) return;`: the runtime's callback (stored in the
        arena) runs the step on the host; nonzero means it failed (the runtime raises)."""
        names = k.srcs + k.dsts
        arr_ty = ir.ArrayType(PTR, max(len(names), 1))
        arr = alloca_once(b, arr_ty, name=f"{k.name}.bufs")
        for j, name in enumerate(names):
            b.store(frame.ptrs[name], gep(b, arr, PTR, j))
        # NOTE: loaded as a function pointer type so llvmlite knows the indirect callee's
        # signature (LLVM reads `T*` as the opaque `ptr`).
        callee = b.load(slot, typ=ir.FunctionType(I32, [I64, PTR]).as_pointer(),
                        name=f"{k.name}.host")
        rc = b.call(callee, [ir.Constant(I64, index), arr])
        with b.if_then(b.icmp_signed("!=", rc, ir.Constant(I32, 0)), likely=False):
            b.ret_void()

    def const_global(self, prefix: str, buf) -> ir.Value:
        if buf.value is None:
            raise CompileError(f"constant buffer {buf.name} has no value")
        data = np.ascontiguousarray(np.asarray(buf.value).astype(buf.dtype.np, copy=False))
        if data.size == 0:  # NOTE: the lowering gives empty tensors one-element buffers
            data = np.zeros(buf.size, buf.dtype.np)
        if data.size != buf.size:
            raise CompileError(f"constant buffer {buf.name}: value has {data.size} elements, "
                               f"buffer {buf.size}")
        raw = bytearray(data.reshape(-1).view(np.uint8).tobytes())
        ty = ir.ArrayType(I8, len(raw))
        g = ir.GlobalVariable(self.module, ty, self.unique(f"{prefix}.{buf.name}"))
        g.initializer = ir.Constant(ty, raw)
        g.global_constant = True
        g.linkage = "private"
        g.unnamed_addr = True
        g.align = 64
        return g

    # -- loop kernels --------------------------------------------------------------------------
    def loop_kernel(self, b: ir.IRBuilder, frame: _Frame, k: LoopKernel) -> None:
        used, written = facts(k.body).used, set(facts(k.body).writes) | set(k.writes)
        # One parameter per distinct pointer (a donated input and its output share one).
        first = {}
        for n in used:
            if not frame.is_const(n):
                first.setdefault(id(frame.ptrs[n]), n)
        params = list(first.values())
        top = k.body[0] if len(k.body) == 1 and isinstance(k.body[0], Loop) else None
        split = top is not None and top.kind == LoopKind.PARALLEL
        fnty = ir.FunctionType(VOID, [PTR] * len(params) + [I64, I64] * split)
        fn = ir.Function(self.module, fnty, self.unique(f"{frame.fn.name}.{k.name}"))
        fn.linkage = "internal"
        fn.attributes.add("nounwind")
        # NOTE: each kernel stays its own function. Inlined (each is called once), they made one
        # huge entry whose optimization grew superlinearly (LeNet's step: O3 1.12 -> 0.66 s CPU)
        # and ran slower (LeNet 12.5 -> 9.3 ms, MLP and LSTM within noise), side by side.
        fn.attributes.add("noinline")
        self._mark_noalias(frame, fn, params, written)
        bufs = {n: frame.ref(n) for n in used}
        arg_of = {id(frame.ptrs[n]): fn.args[i] for i, n in enumerate(params)}
        for n in used:
            if not frame.is_const(n):
                bufs[n].ptr = arg_of[id(frame.ptrs[n])]
        kb = ir.IRBuilder(fn.append_basic_block("entry"))
        renderer = StmtRenderer(kb, bufs, bounds=self.bounds, where=f"kernel {k.name}")
        stream = None
        if split:
            callers = {n for n in used if frame.root_kind(n) in (BufKind.INPUT, BufKind.OUTPUT)}
            stream = streaming_plan(top, {n: bufs[n].dtype for n in used if not frame.is_const(n)},
                                    callers)
        renderer.stmts(k.body, loop_range=tuple(fn.args[-2:]) if split else None, stream=stream)
        kb.ret_void()

        ptrs = [frame.ptrs[n] for n in params]
        if not split:
            b.call(fn, ptrs)
            return
        work = k.cost or trip_count(k.body)
        nt = min(parallel.choose_threads(work, self.nthreads), top.extent)

        def chunk(bld: ir.IRBuilder, lo, hi, captured) -> None:
            bld.call(fn, [*captured, lo, hi])

        parallel.parallel_for(self.module, b, f"{fn.name}.par", top.extent, ptrs, chunk, nt,
                              grain=parallel.grain_for(top.extent, work, nt))

    def _mark_noalias(self, frame: _Frame, fn: ir.Function, params: list[str],
                      written: set[str]) -> None:
        # Distinct arguments never overlap (the ABI contract), except two inputs: a caller may
        # pass one array twice. That only matters if one of them is written.
        for i, name in enumerate(params):
            clash = any(may_overlap(frame.bufs, name, other) and (name in written
                                                                  or other in written)
                        for j, other in enumerate(params) if j != i)
            if not clash:
                fn.args[i].add_attribute("noalias")

    # -- GEMM ----------------------------------------------------------------------------------
    def gemm_kernel(self, b: ir.IRBuilder, frame: _Frame, k: GemmKernel) -> None:
        if not k.dtype.is_float:
            raise CompileError(f"GEMM needs float32/float64 operands, got {k.dtype}")
        if k.c.col_stride != 1 and k.n > 1 and k.m > 0:
            raise CompileError(f"GEMM output C must have unit column stride, got {k.c}")
        for view, rows, cols, packed in ((k.a, k.m, k.k, k.a_packed),
                                         (k.b, k.k, k.n, k.b_packed), (k.c, k.m, k.n, None)):
            if packed is None:
                _check_view(frame, view, k.batch, rows, cols, k.dtype)
        _check_packed(frame, k.a, k.a_packed, "a", k, k.m)
        _check_packed(frame, k.b, k.b_packed, "b", k, k.n)
        self.gemm_dtypes.add(k.dtype)
        flags = (k.a_packed is not None) | (k.b_packed is not None) << 1
        callee = (gemm.declare_prepacked if flags else gemm.declare_gemm)(self.module, k.dtype.np)
        # A packed operand's row-stride argument is its pitch (see backends/llvm/gemm.py).
        a_rs = k.a.row_stride if k.a_packed is None else k.a_packed.padded(k.m)
        b_rs = k.b.row_stride if k.b_packed is None else k.b_packed.padded(k.n)
        tail = [ir.Constant(I32, flags)] if flags else []
        nbatch = int(np.prod(k.batch, dtype=np.int64)) if k.batch else 1
        null = ir.Constant(PTR, None)
        epi, ctx, set_coords = (self._epilogue(b, frame, k) if k.epilogue
                                else (null, null, lambda coords: None))

        def call(coords: list[ir.Value], flat: ir.Value, kdim: int) -> None:
            set_coords(coords)
            ptrs = [self._view_ptr(b, frame, v, coords, k.dtype) for v in (k.a, k.b, k.c)]
            if k.accumulate_batches:
                acc = b.zext(b.icmp_signed("!=", flat, ir.Constant(I64, 0)), I32)
                last = b.icmp_signed("==", flat, ir.Constant(I64, max(nbatch - 1, 0)))
                fn_ptr = b.select(last, epi, null) if k.epilogue else null
            else:   # with an epilogue, C is its scratch (see GemmKernel)
                acc, fn_ptr = ir.Constant(I32, gemm.C_SCRATCH if k.epilogue else 0), epi
            i64 = lambda v: ir.Constant(I64, v)  # noqa: E731
            b.call(callee, [i64(k.m), i64(k.n), i64(kdim), ptrs[0], i64(a_rs),
                            i64(k.a.col_stride), ptrs[1], i64(b_rs),
                            i64(k.b.col_stride), ptrs[2], i64(k.c.row_stride), acc, frame.ws,
                            fn_ptr, ctx, ir.Constant(I32, self.nthreads), *tail])

        if nbatch == 0:
            if k.accumulate_batches:  # an empty sum: K = 0 writes C = 0 (and runs the epilogue)
                call([ir.Constant(I64, 0)] * len(k.batch), ir.Constant(I64, 0), 0)
            return
        _batch_loops(b, k.batch, lambda coords, flat: call(coords, flat, k.k))

    def _view_ptr(self, b, frame: _Frame, v: MatView, coords, dtype: DType) -> ir.Value:
        off: ir.Value = ir.Constant(I64, v.offset)
        for c, s in zip(coords, v.batch_strides):
            if s:
                off = b.add(off, b.mul(c, ir.Constant(I64, s)))
        return gep(b, frame.ptrs[v.buf], MEM_TYPE[dtype], off)

    def _epilogue(self, b: ir.IRBuilder, frame: _Frame, k: GemmKernel):
        """The epilogue function, its context {ptr buffers..., i64 batch coords...} (on the
        caller's stack) and a function storing a batch's coordinates into the context."""
        used = facts(k.epilogue).used
        nb = len(k.batch)
        ctx_ty = ir.LiteralStructType([PTR] * len(used) + [I64] * nb)
        fn = ir.Function(self.module, gemm.EPILOGUE_TYPE,
                         self.unique(f"{frame.fn.name}.{k.name}.epilogue"))
        fn.linkage = "internal"
        fn.attributes.add("nounwind")
        ctx_arg, cblk, row0, col0, rows, cols, ldc = fn.args
        eb = ir.IRBuilder(fn.append_basic_block("entry"))
        fields = [load(eb, gep(eb, ctx_arg, ctx_ty, 0, ir.Constant(I32, i)), t)
                  for i, t in enumerate(ctx_ty.elements)]
        bufs = {n: frame.ref(n) for n in used}
        for n, p in zip(used, fields):
            bufs[n].ptr = p
        batch = {f"b{i}": v for i, v in enumerate(fields[len(used):])}
        ety = MEM_TYPE[k.dtype]
        for name, terms in _epilogue_prefetches(k):
            _prefetch_next_tile(eb, bufs[name], terms, row0, col0, rows, cols, k.m, batch)
        # The columns of a row are independent: each reads its own accumulator and stores its
        # own elements, and an input it reads as an output is written in place (a donated
        # weight's SGD update) only at the same index. Said so, LLVM vectorizes the row
        # without the overlap check that the in-place update always failed (it ran scalar).
        group = AccessGroup(self.module)
        with for_range(eb, 0, rows, name="r") as i:
            crow = gep(eb, cblk, ety, eb.mul(i, ldc))
            row = eb.add(row0, i)
            with for_range(eb, 0, cols, name="c", parallel=group) as j:
                acc = tag_access(load(eb, gep(eb, crow, ety, j), ety, align=k.dtype.itemsize),
                                 group)
                env = {"acc": acc, "row": row, "col": eb.add(col0, j), **batch}
                StmtRenderer(eb, bufs, env, self.bounds, f"kernel {k.name} epilogue",
                             access_group=group).stmts(k.epilogue)
        eb.ret_void()
        ctx = alloca_once(b, ctx_ty, name=f"{k.name}.ctx")
        field_ptr = lambda i: gep(b, ctx, ctx_ty, 0, ir.Constant(I32, i))  # noqa: E731
        for i, n in enumerate(used):
            b.store(frame.ptrs[n], field_ptr(i))

        def set_coords(coords: list[ir.Value]) -> None:
            for i, c in enumerate(coords):
                b.store(c, field_ptr(len(used) + i))
        return fn, ctx, set_coords

    # -- scan ----------------------------------------------------------------------------------
    def scan_kernel(self, b: ir.IRBuilder, frame: _Frame, k: ScanKernel) -> None:
        body = k.body
        nc = len(k.carry_bufs)
        groups = (k.init_bufs, k.next_bufs, k.final_bufs)
        if any(len(g) != nc for g in groups) or len(body.inputs) != nc + len(k.xs_bufs) + len(
                k.const_bufs) or len(body.outputs) != nc + len(k.ys_bufs):
            raise CompileError("scan: carry/xs/ys/consts do not match the body's signature")
        body_fn = self.program_function(body, f"{frame.fn.name}.{k.name}.body")
        for init, carry in zip(k.init_bufs, k.carry_bufs):
            self.copy(b, frame, carry, init, frame.buffer(carry).nbytes)
        # Elements per step: an empty slice has a one-element buffer but takes no room in
        # the stacked sequence (whose size is length * slice).
        steps = max(k.length, 1)
        x_elems = [min(body.buffer(n).size, frame.buffer(o).size // steps)
                   for n, o in zip(body.inputs[nc:nc + len(k.xs_bufs)], k.xs_bufs)]
        y_elems = [min(body.buffer(n).size, frame.buffer(o).size // steps)
                   for n, o in zip(body.outputs[nc:], k.ys_bufs)]
        _check_slices(frame, k.xs_bufs, x_elems, k.length)
        _check_slices(frame, k.ys_bufs, y_elems, k.length)
        slots = [[alloca_once(b, PTR, name=f"{k.name}.{w}{i}") for i in range(nc)]
                 for w in ("cur", "nxt")]
        for slot, c, n in zip(range(nc), k.carry_bufs, k.next_bufs):
            b.store(frame.ptrs[c], slots[0][slot])
            b.store(frame.ptrs[n], slots[1][slot])
        consts = [frame.ptrs[n] for n in k.const_bufs]
        arena = frame.ptrs[k.arena_buf]
        with for_range(b, 0, k.length, name="t") as s:
            t = b.sub(ir.Constant(I64, k.length - 1), s) if k.reverse else s
            cur = [load(b, p, PTR) for p in slots[0]]
            nxt = [load(b, p, PTR) for p in slots[1]]
            xs = [self._slice(b, frame, n, t, e) for n, e in zip(k.xs_bufs, x_elems)]
            ys = [self._slice(b, frame, n, t, e) for n, e in zip(k.ys_bufs, y_elems)]
            b.call(body_fn, [*cur, *xs, *consts, *nxt, *ys, arena, frame.ws])
            for i in range(nc):
                b.store(nxt[i], slots[0][i])
                b.store(cur[i], slots[1][i])
        last = k.carry_bufs if k.length % 2 == 0 else k.next_bufs
        for final, src in zip(k.final_bufs, last):
            self.copy(b, frame, final, src, frame.buffer(final).nbytes)

    def _slice(self, b, frame: _Frame, name: str, t: ir.Value, elems: int) -> ir.Value:
        ety = MEM_TYPE[frame.buffer(name).dtype]
        return gep(b, frame.ptrs[name], ety, b.mul(t, ir.Constant(I64, elems)))

    # -- copies --------------------------------------------------------------------------------
    def copy(self, b: ir.IRBuilder, frame: _Frame, dst: str, src: str, nbytes: int) -> None:
        """memcpy, or memmove when the two buffers may partially overlap."""
        if nbytes <= 0 or dst == src:
            return
        same = memory_region(frame.bufs, dst)[:2] == memory_region(frame.bufs, src)[:2]
        overlap = may_overlap(frame.bufs, dst, src)
        kind = "llvm.memmove" if overlap and not same else "llvm.memcpy"
        fn = intrinsic(self.module, kind, VOID, [PTR, PTR, I64, I1], [PTR, PTR, I64])
        b.call(fn, [frame.ptrs[dst], frame.ptrs[src], ir.Constant(I64, nbytes),
                    ir.Constant(I1, 0)])


def _monotonic_ns(b: ir.IRBuilder) -> ir.Value:
    """clock_gettime(CLOCK_MONOTONIC) in nanoseconds (profiling builds only)."""
    mod = b.module
    fn = mod.globals.get("clock_gettime")
    if fn is None:
        fn = ir.Function(mod, ir.FunctionType(I32, [I32, PTR]), "clock_gettime")
    ts = alloca_once(b, ir.ArrayType(I64, 2), name="timespec")
    b.call(fn, [ir.Constant(I32, 1), ts])      # CLOCK_MONOTONIC is 1 on Linux
    sec, nsec = (b.load(gep(b, ts, I64, k), typ=I64) for k in (0, 1))
    return b.add(b.mul(sec, ir.Constant(I64, 1_000_000_000)), nsec)


def _batch_loops(b: ir.IRBuilder, batch: tuple[int, ...], emit) -> None:
    """Row-major loops over `batch`; `emit(coords, flat_index)` in the innermost body."""
    def nest(dim: int, coords: list, flat: ir.Value) -> None:
        if dim == len(batch):
            emit(coords, flat)
            return
        with for_range(b, 0, batch[dim], name=f"b{dim}") as i:
            nest(dim + 1, coords + [i], b.add(b.mul(flat, ir.Constant(I64, batch[dim])), i))
    nest(0, [], ir.Constant(I64, 0))


def _epilogue_prefetches(k: GemmKernel) -> list[tuple[str, dict]]:
    """The arrays an epilogue reads row by row, as `buf[row * R + col + c (+ batch terms)]`
    (the affine terms of that one index), e.g. a weight the optimizer's update reads."""
    out = []
    batch_vars = {f"b{i}" for i in range(len(k.batch))}
    for name in facts(k.epilogue).reads:
        terms = [affine(ix) for ix in loads_of(k.epilogue, name)]
        first = terms[0] if terms else None
        if (first is not None and all(t == first for t in terms) and first.get("col") == 1
                and not set(first) - {"row", "col", 1} - batch_vars):
            out.append((name, first))
    return out


def _prefetch_next_tile(b: ir.IRBuilder, ref: BufRef, terms: dict, row0, col0, rows, cols,
                        m: int, batch: dict) -> None:
    """Prefetch what the next block's epilogue reads of `ref`, guessing that it is the `rows`
    rows below, same columns (the GEMM visits blocks down a column panel; a wrong guess costs
    only the prefetches). Rows < m only, so no address outside the array. Why: with K as small as a batch, the epilogue of a weight
    update waits on memory for each row of the weight; prefetching a block ahead made MLP's
    batch-16 step 8% faster (0.978 -> 0.902 ms, 1 thread)."""
    size = ref.dtype.itemsize
    with for_range(b, 0, rows, name="ahead") as i:
        row = b.add(b.add(row0, rows), i)
        with b.if_then(b.icmp_signed("<", row, ir.Constant(I64, m))):
            index = b.add(b.mul(row, ir.Constant(I64, terms.get("row", 0))),
                          b.add(col0, ir.Constant(I64, terms.get(1, 0))))
            for var, coef in terms.items():
                if var in batch:
                    index = b.add(index, b.mul(batch[var], ir.Constant(I64, coef)))
            start = b.add(b.ptrtoint(ref.ptr, I64), b.mul(index, ir.Constant(I64, size)))
            prefetch_range(b, start, b.add(start, b.mul(cols, ir.Constant(I64, size))))


def _check_view(frame: _Frame, v: MatView, batch, rows: int, cols: int, dtype: DType) -> None:
    """Every element a GEMM touches lies inside its buffer (checked once, at compile time)."""
    buf = frame.buffer(v.buf)
    if buf.dtype != dtype:
        raise CompileError(f"GEMM view {v} has dtype {buf.dtype}, expected {dtype}")
    if len(v.batch_strides) != len(batch):
        raise CompileError(f"GEMM view {v}: {len(v.batch_strides)} batch strides for batch "
                           f"{batch}")
    dims = [*zip(batch, v.batch_strides), (rows, v.row_stride), (cols, v.col_stride)]
    if any(d == 0 for d, _ in dims):
        return
    lo = v.offset + sum(min(0, (d - 1) * s) for d, s in dims)
    hi = v.offset + sum(max(0, (d - 1) * s) for d, s in dims)
    if lo < 0 or hi >= buf.size:
        raise CompileError(f"GEMM view {v} spans elements [{lo}, {hi}] of {v.buf}"
                           f"[{buf.size}]")


def _check_packed(frame: _Frame, v: MatView, packed, operand: str, k: GemmKernel,
                  width: int) -> None:
    """A pre-packed operand: a whole buffer of its packed size (a constant packed at compile
    time, or a scan body's input its enclosing program packs before the loop), the same for
    every batch, in this GEMM's own panel layout."""
    if packed is None:
        return
    buf = frame.buffer(v.buf)
    want = gemm.panels(k.dtype.np, operand)
    if packed != want:
        raise CompileError(f"GEMM operand {v.buf} is {packed}, this GEMM packs {want}")
    if (buf.kind not in PACKED_KINDS or buf.dtype != k.dtype or v.offset
            or any(v.batch_strides) or buf.size != packed.size(k.k, width)):
        raise CompileError(f"GEMM packed operand {v} must be a whole {k.dtype.value} constant, "
                           f"input or temporary of {packed.size(k.k, width)} elements, shared "
                           "by the batch")


def _check_slices(frame: _Frame, names, elems, length: int) -> None:
    for n, e in zip(names, elems):
        if length * e > frame.buffer(n).size:
            raise CompileError(f"scan: {length} slices of {e} elements overflow {n}"
                               f"[{frame.buffer(n).size}]")
