"""The thread runtime of the LLVM CPU backend: libgomp's `GOMP_parallel` driving outlined loop
bodies. Generated code forks a team, each thread runs one contiguous chunk of `[0, n)`, and the
call returns when all chunks are done (GOMP_parallel joins), so no other synchronisation exists.
"""
from __future__ import annotations

import ctypes.util
import functools
import os
import warnings
from collections.abc import Callable, Sequence

import llvmlite.binding as llvm
import llvmlite.ir as ir

from .helpers import (
    I32,
    I64,
    PTR,
    VOID,
    alloca_once,
    as_i64,
    const_i32,
    for_range,
    gep,
    get_or_declare,
    load,
)

#: Below this many "work items" (e.g. flops / 2, or elements x cost) one thread is faster than
#: forking a team: a GOMP_parallel round trip costs a few microseconds.
MIN_PARALLEL_WORK = 1 << 16

Body = Callable[[ir.IRBuilder, ir.Value, ir.Value, list[ir.Value]], None]


#: libgomp's idle policy unless the user chose one. Its default spins for ~300k iterations
#: after each parallel region; on a machine whose cores are shared (CI, a laptop running
#: anything else) the spinning worker and a descheduled team member stall every fork: LeNet's
#: step went from 14 ms to 216 ms at 2 threads beside other jobs, while sleeping workers cost a
#: futex wake (microseconds) per kernel. libgomp reads this once, when it is loaded.
DEFAULT_WAIT_POLICY = "passive"


@functools.cache
def gomp_available() -> bool:
    """Load libgomp into the process once; False (with a warning) when it cannot be found."""
    if "OMP_WAIT_POLICY" not in os.environ and "GOMP_SPINCOUNT" not in os.environ:
        os.environ["OMP_WAIT_POLICY"] = DEFAULT_WAIT_POLICY
    reasons = []
    for path in dict.fromkeys([ctypes.util.find_library("gomp"), "libgomp.so.1"]):
        if not path:
            continue
        try:
            llvm.load_library_permanently(path)
            return True
        except RuntimeError as exc:  # llvmlite reports dlopen failures as RuntimeError
            reasons.append(str(exc))
    warnings.warn(f"nnjit: libgomp unavailable ({'; '.join(reasons) or 'not found'}); "
                  "native code runs on one thread", RuntimeWarning, stacklevel=2)
    return False


def num_threads() -> int:
    """Threads to use: `NNJIT_NUM_THREADS` if set (>= 1), else the cores this process may run on."""
    env = os.environ.get("NNJIT_NUM_THREADS", "").strip()
    if env:
        try:
            value = int(env)
            if value >= 1:
                return value
        except ValueError:
            pass
        warnings.warn(f"nnjit: ignoring NNJIT_NUM_THREADS={env!r} (want an integer >= 1)",
                      RuntimeWarning, stacklevel=2)
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def choose_threads(work: int, nthreads: int | None = None,
                   min_work: int = MIN_PARALLEL_WORK) -> int:
    """Compile-time thread count: 1 when `work` is too small to pay for a fork, else `nthreads`
    (default `num_threads()`), never more than one thread per `min_work` items."""
    nthreads = num_threads() if nthreads is None else max(1, nthreads)
    if not gomp_available():
        return 1
    return max(1, min(nthreads, work // max(1, min_work)))


def runtime_threads(builder: ir.IRBuilder, work: ir.Value, nthreads: ir.Value | int,
                    min_work: int = MIN_PARALLEL_WORK) -> ir.Value:
    """The same rule as `choose_threads`, emitted as code for runtime sizes (returns i32)."""
    per = builder.sdiv(as_i64(builder, work), ir.Constant(I64, max(1, min_work)))
    nt = as_i64(builder, nthreads)
    nt = builder.select(builder.icmp_signed("<", per, nt), per, nt)
    nt = builder.select(builder.icmp_signed("<", nt, ir.Constant(I64, 1)), ir.Constant(I64, 1), nt)
    return builder.trunc(nt, I32)


def link_flags() -> list[str]:
    """Libraries a shared object built from our generated objects must link against."""
    return ["-lgomp", "-lm"] if gomp_available() else ["-lm"]


def thread_index(builder: ir.IRBuilder) -> ir.Value:
    """The i32 index of the thread running the current `parallel_for` body (0 .. team-1), or 0
    outside one. Use it to pick a per-thread slice of a scratch workspace."""
    return getattr(builder.function, "_nnjit_thread_index", const_i32(0))


def parallel_for(module: ir.Module, builder: ir.IRBuilder, name: str, n: ir.Value | int,
                 captures: Sequence[ir.Value], body: Body, nthreads: ir.Value | int) -> None:
    """Run `body` over `[0, n)` split into one contiguous chunk per thread.

    `body(builder, lo, hi, captured)` emits the loop over the chunk `[lo, hi)` (i64 values);
    `captured` are the values of `captures` as seen inside the outlined worker (only those and
    constants may be used there). `nthreads` is a Python int (compile-time; 1 emits the plain
    inline loop with no runtime call) or an i32 value (runtime; <= 1 calls the chunk function
    directly, without forking). Emitted code for `nthreads` = 2::

        %data = alloca {i64, <captures>}        ; n and the captured values
        call void @GOMP_parallel(ptr @name, ptr %data, i32 2, i32 0)

    `@name` (`void (ptr)`, internal) reads `omp_get_thread_num/num_threads` and calls
    `@name.chunk(ptr data, i32 tid, i32 nt)`, which runs `body` on its balanced share.
    """
    n = as_i64(builder, n)
    if (isinstance(nthreads, int) and nthreads <= 1) or not gomp_available():
        body(builder, ir.Constant(I64, 0), n, list(captures))
        return
    ctx_ty = ir.LiteralStructType([I64] + [v.type for v in captures])
    chunk = _emit_chunk(module, name, ctx_ty, body)
    worker = _emit_worker(module, name, chunk)

    data = alloca_once(builder, ctx_ty, name=f"{name}.data")
    for i, value in enumerate([n, *captures]):
        builder.store(value, gep(builder, data, ctx_ty, 0, const_i32(i)))
    nt = const_i32(nthreads) if isinstance(nthreads, int) else nthreads
    gomp = get_or_declare(module, "GOMP_parallel", ir.FunctionType(VOID, [PTR, PTR, I32, I32]))
    fork = builder.icmp_signed(">", nt, const_i32(1))
    with builder.if_else(fork) as (parallel, serial):
        with parallel:
            builder.call(gomp, [worker, data, nt, const_i32(0)])
        with serial:
            builder.call(chunk, [data, const_i32(0), const_i32(1)])


def _emit_chunk(module: ir.Module, name: str, ctx_ty: ir.LiteralStructType,
                body: Body) -> ir.Function:
    fn = ir.Function(module, ir.FunctionType(VOID, [PTR, I32, I32]), f"{name}.chunk")
    fn.linkage = "internal"
    fn.args[0].add_attribute("noalias")
    data, tid, nt = fn.args
    fn._nnjit_thread_index = tid  # read by thread_index()
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    fields = [load(b, gep(b, data, ctx_ty, 0, const_i32(i)), ty)
              for i, ty in enumerate(ctx_ty.elements)]
    n, captured = fields[0], fields[1:]
    # Balanced split: chunk t is [n*t/nt, n*(t+1)/nt), sizes differ by at most one.
    tid64, nt64 = b.sext(tid, I64), b.sext(nt, I64)
    lo = b.sdiv(b.mul(n, tid64), nt64, name="lo")
    hi = b.sdiv(b.mul(n, b.add(tid64, ir.Constant(I64, 1))), nt64, name="hi")
    with b.if_then(b.icmp_signed("<", lo, hi)):
        body(b, lo, hi, captured)
    b.ret_void()
    return fn


def _emit_worker(module: ir.Module, name: str, chunk: ir.Function) -> ir.Function:
    fn = ir.Function(module, ir.FunctionType(VOID, [PTR]), name)
    fn.linkage = "internal"
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    tid = b.call(get_or_declare(module, "omp_get_thread_num", ir.FunctionType(I32, [])), [])
    nt = b.call(get_or_declare(module, "omp_get_num_threads", ir.FunctionType(I32, [])), [])
    b.call(chunk, [fn.args[0], tid, nt])
    b.ret_void()
    return fn


def serial_for(builder: ir.IRBuilder, lo: ir.Value, hi: ir.Value, emit_iteration) -> None:
    """Convenience body for `parallel_for`: `emit_iteration(builder, i)` for each i in the chunk."""
    with for_range(builder, lo, hi) as i:
        emit_iteration(builder, i)
