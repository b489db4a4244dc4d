"""The thread runtime of the LLVM CPU backend: `threadpool`'s `nnjit_parallel` driving outlined
loop bodies. Generated code hands the pool a body whose threads claim chunks of `[0, n)` from a
shared atomic counter until none is left, and the call returns when all chunks are done (the
pool joins), so no other synchronisation exists. Claiming rather than a static split is what
keeps a machine shared with other processes fast: a thread descheduled for milliseconds finds
its share taken by the threads still running instead of the whole team waiting for it to do
that share.
"""
from __future__ import annotations

import atexit
import ctypes
import functools
import os
import warnings
from collections.abc import Callable, Sequence

import llvmlite.ir as ir

from . import threadpool

from .helpers import (
    I32,
    I64,
    PTR,
    VOID,
    alloca_once,
    as_i64,
    ceil_div,
    const_i32,
    const_i64,
    for_range,
    gep,
    imax,
    imin,
    load,
)

#: Below this many "work items" (e.g. flops / 2, or elements x cost) one thread is faster than
#: waking the team: a pool round trip costs about a microsecond with the workers spinning,
#: tens with them asleep.
MIN_PARALLEL_WORK = 1 << 16

#: A parallel loop is cut into about this many chunks per thread (see `grain_for`).
CHUNKS_PER_THREAD = 8

#: ... but no chunk smaller than this much work: a claim and a chunk's loop set-up cost tens of
#: nanoseconds, so a chunk should run for microseconds.
MIN_CHUNK_WORK = MIN_PARALLEL_WORK // 4

Body = Callable[[ir.IRBuilder, ir.Value, ir.Value, list[ir.Value]], None]


@functools.cache
def threads_available() -> bool:
    """Whether native code may use more than one thread (False, with a warning, where the
    thread pool cannot run: see `threadpool.available`)."""
    if threadpool.available():
        return True
    warnings.warn("nnjit: no thread pool for this platform; native code runs on one thread",
                  RuntimeWarning, stacklevel=2)
    return False


def spin_ns() -> int:
    """How long an idle pool thread spins before it sleeps: NNJIT_SPIN_US (microseconds, >= 0;
    0 sleeps at once), else `threadpool.DEFAULT_SPIN_US`."""
    env = os.environ.get("NNJIT_SPIN_US", "").strip()
    if env:
        try:
            value = float(env)
            if value >= 0:
                return int(value * 1000)
        except ValueError:
            pass
        warnings.warn(f"nnjit: ignoring NNJIT_SPIN_US={env!r} (want a number >= 0)",
                      RuntimeWarning, stacklevel=2)
    return threadpool.DEFAULT_SPIN_US * 1000


def start_pool(library) -> None:
    """Configure a just-loaded pool library (`library.function` gives ctypes callables): its
    spin time, a shutdown at interpreter exit (its workers must be stopped before the code
    they run is unloaded) and a reset in children forked from this process."""
    library.function("nnjit_pool_set_spin", None, ctypes.c_int64)(spin_ns())
    shutdown = library.function("nnjit_pool_shutdown", None)
    after_fork = library.function("nnjit_pool_after_fork", None)
    atexit.register(shutdown)
    os.register_at_fork(after_in_child=after_fork)
    _keep.extend([shutdown, after_fork, library])


_keep: list = []   # the pool's library and callables stay alive as long as the process


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
    if not threads_available():
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
    return ["-lpthread", "-lm"]


def thread_index(builder: ir.IRBuilder) -> ir.Value:
    """The i32 index of the thread running the current `parallel_for` body (0 .. team-1), or 0
    outside one. Use it to pick a per-thread slice of a scratch workspace."""
    return getattr(builder.function, "_nnjit_thread_index", const_i32(0))


def grain_for(n: int, work: int, nthreads: int,
              chunks_per_thread: int = CHUNKS_PER_THREAD,
              min_chunk_work: int = MIN_CHUNK_WORK) -> int:
    """Iterations per claimed chunk of a parallel loop of `n` iterations costing `work` in all:
    about `chunks_per_thread` chunks per thread, so a thread that runs late (descheduled by
    another process) leaves its share to the others, but no chunk under `min_chunk_work` (a
    claim is one atomic add, a chunk boundary a vector remainder loop). At least 1 when n > 0."""
    if n <= 0:
        return 1
    per_iteration = max(1, work) / n
    by_count = -(-n // max(1, nthreads * chunks_per_thread))
    by_work = int(-(-min_chunk_work // per_iteration))
    return max(1, min(n, max(by_count, by_work)))


def parallel_for(module: ir.Module, builder: ir.IRBuilder, name: str, n: ir.Value | int,
                 captures: Sequence[ir.Value], body: Body, nthreads: ir.Value | int,
                 grain: ir.Value | int | None = None) -> None:
    """Run `body` over `[0, n)` in chunks of `grain` iterations that the team's threads claim
    from a shared counter until none is left (dynamic scheduling).

    `body(builder, lo, hi, captured)` emits the loop over the chunk `[lo, hi)` (i64 values);
    `captured` are the values of `captures` as seen inside the outlined worker (only those and
    constants may be used there). `nthreads` is a Python int (compile-time; 1 emits the plain
    inline loop with no runtime call) or an i32 value (runtime; <= 1 runs the whole range on the
    calling thread, without forking). `grain` (i64 or int, >= 1) defaults to one chunk per
    thread, `ceil(n / nthreads)`: uncontended, that is the static split; with a thread
    descheduled, the running ones take its chunk instead of waiting for it at the join.
    Emitted code for `nthreads` = 2::

        %data = alloca {i64 n, i64 grain, i64 next, <captures>}
        call void @nnjit_parallel(ptr @name.claim, ptr %data, i32 2)

    where each thread runs `@name.claim(ptr data, i32 tid)` (internal), which loops
    `lo = atomic next += grain` while `lo < n`,
    running `body` on `[lo, min(lo + grain, n))`. Which thread runs which chunk varies from run
    to run: a body must not make its results depend on `thread_index` (scratch slices only).
    """
    n = as_i64(builder, n)
    if (isinstance(nthreads, int) and nthreads <= 1) or not threads_available():
        body(builder, ir.Constant(I64, 0), n, list(captures))
        return
    ctx_ty = ir.LiteralStructType([I64, I64, I64] + [v.type for v in captures])
    claim = _emit_claim(module, name, ctx_ty, body)

    nt = const_i32(nthreads) if isinstance(nthreads, int) else nthreads
    fork = builder.icmp_signed(">", nt, const_i32(1))
    if grain is None:
        grain = ceil_div(builder, imax(builder, n, const_i64(1)), builder.sext(
            builder.select(fork, nt, const_i32(1)), I64))
    grain = imax(builder, as_i64(builder, grain), const_i64(1))
    data = alloca_once(builder, ctx_ty, name=f"{name}.data")
    for i, value in enumerate([n, grain, const_i64(0), *captures]):
        builder.store(value, gep(builder, data, ctx_ty, 0, const_i32(i)))
    with builder.if_else(fork) as (parallel, serial):
        with parallel:
            builder.call(threadpool.declare(module), [claim, data, nt])
        with serial:
            builder.call(claim, [data, const_i32(0)])


def _emit_claim(module: ir.Module, name: str, ctx_ty: ir.LiteralStructType,
                body: Body) -> ir.Function:
    fn = ir.Function(module, ir.FunctionType(VOID, [PTR, I32]), f"{name}.claim")
    fn.linkage = "internal"
    data, tid = fn.args
    fn._nnjit_thread_index = tid  # read by thread_index()
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    fields = [load(b, gep(b, data, ctx_ty, 0, const_i32(i)), ty)
              for i, ty in enumerate(ctx_ty.elements) if i != 2]
    n, grain, captured = fields[0], fields[1], fields[2:]
    next_ptr = gep(b, data, ctx_ty, 0, const_i32(2))
    head = b.append_basic_block("claim")
    run = b.append_basic_block("chunk")
    done = b.append_basic_block("done")
    b.branch(head)
    b.position_at_end(head)
    # Monotonic is enough: chunks share nothing, and the pool's join orders the results before
    # the caller reads them.
    lo = b.atomic_rmw("add", next_ptr, grain, "monotonic", name="lo")
    b.cbranch(b.icmp_signed("<", lo, n), run, done)
    b.position_at_end(run)
    body(b, lo, imin(b, b.add(lo, grain), n), captured)
    b.branch(head)
    b.position_at_end(done)
    b.ret_void()
    return fn


def serial_for(builder: ir.IRBuilder, lo: ir.Value, hi: ir.Value, emit_iteration) -> None:
    """Convenience body for `parallel_for`: `emit_iteration(builder, i)` for each i in the chunk."""
    with for_range(builder, lo, hi) as i:
        emit_iteration(builder, i)
