"""nnjit's thread pool: the runtime behind `parallel.parallel_for`, generated as LLVM IR into its
own runtime library (one per process, like the GEMM's; AOT objects link their own copy).

    void nnjit_parallel(void (*fn)(void *data, int32 tid), void *data, int32 nthreads)

runs `fn(data, tid)` once on each of `nthreads` threads, tid 0 on the caller, and returns when
all are done. Workers are pthreads created on first use and kept. Each has its own 64-byte slot
(a job generation, the job, a "sleeping" flag), so a worker spins on its own cache line and a
job of a small team wakes only the workers it needs. A caller that finds the pool busy (another
thread's job, or a parallel loop nested in a worker) runs `fn(data, 0)` alone: every `fn` here
claims chunks until none is left, so one thread finishing the whole range is correct.

Why not libgomp. Its idle workers either sleep (OMP_WAIT_POLICY=passive: every kernel pays a
futex wake of a halted vCPU, tens of microseconds here: the MLP forward took 1.39 ms against
0.84 ms spinning) or spin without yielding (two processes of 2 threads on this 2-core machine:
a LeNet step 12 ms each with a 10k spin count against 7 ms passive). A waiter here spins for
`spin_ns` (NNJIT_SPIN_US, set from Python) checking its word, calling `sched_yield` between
short bursts of `pause` so a runnable thread of another process gets the core at once, and then
sleeps on a futex; a yield that actually ran another thread means the core is wanted, and the
waiter sleeps at once. A waker calls FUTEX_WAKE only when the waiter said it sleeps.

Memory ordering: the master writes a slot's job, then bumps its generation (seq_cst); the worker
reads the generation (acquire) before the job. Workers count `pending` down (seq_cst) after
their `fn`; the master's acquire load of `pending == 0` orders their writes before its return.
Sleep flags use the Dekker pattern (store flag, re-check word / bump word, load flag, all
seq_cst), so no wake-up is lost.

Linux on x86-64 or aarch64 only (futex syscall numbers); elsewhere `available()` is False and
native code runs on one thread.
"""
from __future__ import annotations

import llvmlite.binding as llvm
import llvmlite.ir as ir

from .helpers import (
    I8,
    I32,
    I64,
    PTR,
    VOID,
    const_i32,
    const_i64,
    for_range,
    gep,
    get_or_declare,
    imin,
)

#: Most workers a pool creates (a team is at most this many plus the caller).
MAX_WORKERS = 255

#: Symbols the pool library exports.
SYMBOLS = ("nnjit_parallel", "nnjit_pool_set_spin", "nnjit_pool_shutdown",
           "nnjit_pool_after_fork")

#: Type of the function `nnjit_parallel` runs on every thread: fn(data, tid).
TASK_TYPE = ir.FunctionType(VOID, [PTR, I32])
PARALLEL_TYPE = ir.FunctionType(VOID, [PTR, PTR, I32])

#: Default time a waiter spins before it sleeps: long enough to bridge the gaps between the
#: kernels of one call and between calls of a training loop (tens to hundreds of microseconds
#: of Python). Side by side on 2 cores, 1000 against 200 us: LSTM step 0.85, MLP step (batch
#: 16) 0.75, MLP forward 0.79; with one core busy, 2 threads still within 2% of 1.
DEFAULT_SPIN_US = 1000

_SYS_FUTEX = {"x86_64": 202, "aarch64": 98}
_FUTEX_WAIT_PRIVATE, _FUTEX_WAKE_PRIVATE = 128, 129
_CLOCK_MONOTONIC = 1
_PAUSES_PER_CHECK = 16
#: A `sched_yield` that took longer than this ran another process's thread for a time slice
#: (CFS slices are milliseconds): the core is wanted. Much lower (30 us) also fired on the
#: short stalls of this VM's vCPUs and cost quiet runs up to 1.4x.
_CROWDED_NS = 500_000
_INT_MAX = (1 << 31) - 1

# slot: {i32 gen, i32 sleeping, ptr fn, ptr data, padding to 64 bytes}
_SLOT = ir.LiteralStructType([I32, I32, PTR, PTR, ir.ArrayType(I8, 40)])


def _store(b: ir.IRBuilder, value: ir.Value, ptr: ir.Value, ordering: str) -> None:
    """An atomic store, as an exchange (llvmlite's `store_atomic` wants typed pointers)."""
    b.atomic_rmw("xchg", ptr, value, ordering)


def _arch() -> str:
    return llvm.get_process_triple().split("-")[0]


def available() -> bool:
    """Whether this host can run the pool (Linux on an architecture whose futex call we know)."""
    triple = llvm.get_process_triple()
    return "linux" in triple and _arch() in _SYS_FUTEX


def declare(module: ir.Module) -> ir.Function:
    """Declare `nnjit_parallel` in a module that calls it."""
    return get_or_declare(module, "nnjit_parallel", PARALLEL_TYPE)


def called_in(module_text: str) -> bool:
    """Whether LLVM IR text (as llvmlite prints it) calls the pool."""
    return '@"nnjit_parallel"' in module_text


def emit(module: ir.Module) -> None:
    """Define the pool (its state and the `SYMBOLS` functions) in `module`."""
    _Pool(module).emit()


class _Pool:
    def __init__(self, module: ir.Module):
        self.m = module
        self.slots = self._global("slots", ir.ArrayType(_SLOT, MAX_WORKERS + 1))
        self.threads = self._global("threads", ir.ArrayType(I64, MAX_WORKERS + 1))
        self.pending = self._global("pending", I32)
        self.master_sleeping = self._global("master_sleeping", I32)
        self.busy = self._global("busy", I32)
        self.started = self._global("started", I32)
        self.quit = self._global("quit", I32)
        self.spin_ns = self._global("spin_ns", I64, DEFAULT_SPIN_US * 1000)
        self.syscall = get_or_declare(module, "syscall", ir.FunctionType(I64, [I64], var_arg=True))
        self.sched_yield = get_or_declare(module, "sched_yield", ir.FunctionType(I32, []))
        self.clock_gettime = get_or_declare(module, "clock_gettime",
                                            ir.FunctionType(I32, [I32, PTR]))

    def _global(self, name: str, ty: ir.Type, init: int | None = None) -> ir.GlobalVariable:
        g = ir.GlobalVariable(self.m, ty, f"nnjit_pool.{name}")
        g.linkage = "internal"
        g.align = 64          # every word on its own cache line: no false sharing between them
        g.initializer = ir.Constant(ty, init) if init is not None else ir.Constant(ty, None)
        g.type = PTR  # NOTE: llvmlite types globals as `ty*`; everything here is opaque `ptr`
        return g

    def _function(self, name: str, fnty: ir.FunctionType, internal: bool = True):
        fn = ir.Function(self.m, fnty, name)
        if internal:
            fn.linkage = "internal"
        return fn, ir.IRBuilder(fn.append_basic_block("entry"))

    def _slot_field(self, b: ir.IRBuilder, tid: ir.Value, field: int) -> ir.Value:
        return gep(b, self.slots, self.slots.value_type, 0, tid, const_i32(field))

    def emit(self) -> None:
        self.now_ns = self._emit_now()
        self.futex = self._emit_futex()
        self.relax = self._emit_relax()
        self.wait_change = self._emit_wait_change()
        self.notify = self._emit_notify()
        self.worker = self._emit_worker()
        self._emit_parallel()
        self._emit_set_spin()
        self._emit_shutdown()
        self._emit_after_fork()

    # -- small pieces --------------------------------------------------------------------------
    def _emit_now(self) -> ir.Function:
        fn, b = self._function("nnjit_pool.now_ns", ir.FunctionType(I64, []))
        ts = b.alloca(ir.LiteralStructType([I64, I64]))
        b.call(self.clock_gettime, [const_i32(_CLOCK_MONOTONIC), ts])
        sec = b.load(gep(b, ts, ts.allocated_type, 0, const_i32(0)), typ=I64)
        nsec = b.load(gep(b, ts, ts.allocated_type, 0, const_i32(1)), typ=I64)
        b.ret(b.add(b.mul(sec, const_i64(1_000_000_000)), nsec))
        return fn

    def _emit_futex(self) -> ir.Function:
        """futex(word, op, value): every syscall argument passed as a full i64 (variadic)."""
        fn, b = self._function("nnjit_pool.futex", ir.FunctionType(VOID, [PTR, I32, I32]))
        word, op, value = fn.args
        b.call(self.syscall, [const_i64(_SYS_FUTEX[_arch()]), b.ptrtoint(word, I64),
                              b.sext(op, I64), b.sext(value, I64), const_i64(0), const_i64(0),
                              const_i64(0)])
        b.ret_void()
        return fn

    def _emit_relax(self) -> ir.Function:
        """i1 relax(): a burst of `pause`s (x86; elsewhere nothing), then `sched_yield`, which
        hands the core to a runnable thread of another process if there is one and returns at
        once if not. True when it did hand it over (the yield took over `_CROWDED_NS`): the
        core is wanted, so the waiter should sleep instead of spinning on."""
        fn, b = self._function("nnjit_pool.relax", ir.FunctionType(ir.IntType(1), []))
        if _arch() == "x86_64":
            pause = get_or_declare(self.m, "llvm.x86.sse2.pause", ir.FunctionType(VOID, []))
            for _ in range(_PAUSES_PER_CHECK):
                b.call(pause, [])
        before = b.call(self.now_ns, [])
        b.call(self.sched_yield, [])
        took = b.sub(b.call(self.now_ns, []), before)
        b.ret(b.icmp_signed(">", took, const_i64(_CROWDED_NS)))
        return fn

    def _emit_wait_change(self) -> ir.Function:
        """i32 wait_change(ptr word, i32 value, ptr sleeping): wait until *word != value and
        return it; spin up to `spin_ns` (less when another thread wants the core), then set
        *sleeping and sleep on the futex, re-checking."""
        fn, b = self._function("nnjit_pool.wait_change", ir.FunctionType(I32, [PTR, I32, PTR]))
        word, value, sleeping = fn.args
        spin = b.append_basic_block("spin")
        relax = b.append_basic_block("relax")
        sleep = b.append_basic_block("sleep")
        done = b.append_basic_block("done")
        budget = b.load_atomic(self.spin_ns, "monotonic", 8, typ=I64)
        t0 = b.call(self.now_ns, [])
        b.branch(spin)

        b.position_at_end(spin)
        seen = b.load_atomic(word, "acquire", 4, typ=I32)
        b.cbranch(b.icmp_unsigned("!=", seen, value), done, relax)

        b.position_at_end(relax)
        crowded = b.call(self.relax, [])
        late = b.icmp_signed(">", b.sub(b.call(self.now_ns, []), t0), budget)
        b.cbranch(b.or_(crowded, late), sleep, spin)

        b.position_at_end(sleep)
        b.atomic_rmw("xchg", sleeping, const_i32(1), "seq_cst")
        again = b.load_atomic(word, "seq_cst", 4, typ=I32)
        with b.if_then(b.icmp_unsigned("==", again, value)):
            b.call(self.futex, [word, const_i32(_FUTEX_WAIT_PRIVATE), value])
        b.atomic_rmw("xchg", sleeping, const_i32(0), "seq_cst")
        b.branch(spin)       # woken, or the word moved before we slept: look again

        b.position_at_end(done)
        b.ret(seen)
        return fn

    def _emit_notify(self) -> ir.Function:
        """notify(ptr word, ptr sleeping): after changing *word (seq_cst), wake its sleeper."""
        fn, b = self._function("nnjit_pool.notify", ir.FunctionType(VOID, [PTR, PTR]))
        word, sleeping = fn.args
        asleep = b.load_atomic(sleeping, "seq_cst", 4, typ=I32)
        with b.if_then(b.icmp_unsigned("!=", asleep, const_i32(0)), likely=False):
            b.call(self.futex, [word, const_i32(_FUTEX_WAKE_PRIVATE), const_i32(_INT_MAX)])
        b.ret_void()
        return fn

    # -- the worker ----------------------------------------------------------------------------
    def _emit_worker(self) -> ir.Function:
        """ptr worker(ptr tid): signals blocked (the caller's threads handle them), then: wait
        for the slot's generation to move, run its job, count `pending` down, forever."""
        fn, b = self._function("nnjit_pool.worker", ir.FunctionType(PTR, [PTR]))
        tid64 = b.ptrtoint(fn.args[0], I64)
        tid = b.trunc(tid64, I32)
        sigset = b.alloca(ir.ArrayType(I8, 128))
        b.store(ir.Constant(ir.ArrayType(I8, 128), bytearray(b"\xff" * 128)), sigset)
        sigmask = get_or_declare(self.m, "pthread_sigmask", ir.FunctionType(I32, [I32, PTR, PTR]))
        b.call(sigmask, [const_i32(0), sigset, ir.Constant(PTR, None)])   # SIG_BLOCK
        gen = self._slot_field(b, tid64, 0)
        sleeping = self._slot_field(b, tid64, 1)
        entry = b.block
        loop = b.append_basic_block("loop")
        work = b.append_basic_block("work")
        leave = b.append_basic_block("leave")
        b.branch(loop)

        b.position_at_end(loop)
        seen = b.phi(I32)
        seen.add_incoming(const_i32(0), entry)
        now = b.call(self.wait_change, [gen, seen, sleeping])
        stop = b.load_atomic(self.quit, "acquire", 4, typ=I32)
        b.cbranch(b.icmp_unsigned("!=", stop, const_i32(0)), leave, work)

        b.position_at_end(work)
        task = b.load(self._slot_field(b, tid64, 2), typ=PTR)
        data = b.load(self._slot_field(b, tid64, 3), typ=PTR)
        b.call(b.inttoptr(b.ptrtoint(task, I64), ir.PointerType(TASK_TYPE)), [data, tid])
        left = b.atomic_rmw("sub", self.pending, const_i32(1), "seq_cst")
        with b.if_then(b.icmp_unsigned("==", left, const_i32(1))):
            b.call(self.notify, [self.pending, self.master_sleeping])
        seen.add_incoming(now, b.block)
        b.branch(loop)

        b.position_at_end(leave)
        b.ret(ir.Constant(PTR, None))
        return fn

    # -- the exported entries ------------------------------------------------------------------
    def _emit_parallel(self) -> None:
        fn, b = self._function("nnjit_parallel", PARALLEL_TYPE, internal=False)
        task, data, nthreads = fn.args
        call_task = lambda: b.call(  # noqa: E731
            b.inttoptr(b.ptrtoint(task, I64), ir.PointerType(TASK_TYPE)), [data, const_i32(0)])
        alone = b.append_basic_block("alone")
        claim = b.append_basic_block("claim")
        b.cbranch(b.icmp_signed("<=", nthreads, const_i32(1)), alone, claim)

        b.position_at_end(alone)
        call_task()
        b.ret_void()

        b.position_at_end(claim)
        pair = b.cmpxchg(self.busy, const_i32(0), const_i32(1), "acquire", "monotonic")
        owned = b.append_basic_block("owned")
        b.cbranch(b.extract_value(pair, 1), owned, alone)

        b.position_at_end(owned)
        want = imin(b, b.sub(nthreads, const_i32(1)), const_i32(MAX_WORKERS))
        team = self._start_workers(b, want)
        with b.if_then(b.icmp_signed("<=", team, const_i32(0)), likely=False):
            call_task()
            _store(b, const_i32(0), self.busy, "release")
            b.ret_void()
        _store(b, team, self.pending, "monotonic")
        with for_range(b, 1, b.add(b.sext(team, I64), const_i64(1)), name="w") as w:
            b.store(task, self._slot_field(b, w, 2))
            b.store(data, self._slot_field(b, w, 3))
            b.atomic_rmw("add", self._slot_field(b, w, 0), const_i32(1), "seq_cst")
            b.call(self.notify, [self._slot_field(b, w, 0), self._slot_field(b, w, 1)])
        call_task()
        head = b.append_basic_block("join")
        wait = b.append_basic_block("join.wait")
        done = b.append_basic_block("join.done")
        b.branch(head)
        b.position_at_end(head)
        left = b.load_atomic(self.pending, "acquire", 4, typ=I32)
        b.cbranch(b.icmp_unsigned("==", left, const_i32(0)), done, wait)
        b.position_at_end(wait)
        b.call(self.wait_change, [self.pending, left, self.master_sleeping])
        b.branch(head)
        b.position_at_end(done)
        _store(b, const_i32(0), self.busy, "release")
        b.ret_void()

    def _start_workers(self, b: ir.IRBuilder, want: ir.Value) -> ir.Value:
        """Create workers until `want` exist (fewer if pthread_create fails); the team size."""
        create = get_or_declare(self.m, "pthread_create",
                                ir.FunctionType(I32, [PTR, PTR, PTR, PTR]))
        pre = b.block
        head = b.append_basic_block("start")
        body = b.append_basic_block("start.one")
        done = b.append_basic_block("start.done")
        have0 = b.load(self.started, typ=I32)
        b.branch(head)
        b.position_at_end(head)
        have = b.phi(I32)
        have.add_incoming(have0, pre)
        b.cbranch(b.icmp_signed("<", have, want), body, done)
        b.position_at_end(body)
        tid = b.add(have, const_i32(1))
        tid64 = b.sext(tid, I64)
        slot = gep(b, self.threads, self.threads.value_type, 0, tid64)
        rc = b.call(create, [slot, ir.Constant(PTR, None), self.worker, b.inttoptr(tid64, PTR)])
        ok = b.icmp_signed("==", rc, const_i32(0))
        nxt = b.select(ok, tid, want)      # a failure stops creating: fewer workers, no error
        with b.if_then(ok):
            b.store(tid, self.started)
        have.add_incoming(nxt, b.block)
        b.branch(head)
        b.position_at_end(done)
        return imin(b, want, b.load(self.started, typ=I32))

    def _emit_set_spin(self) -> None:
        fn, b = self._function("nnjit_pool_set_spin", ir.FunctionType(VOID, [I64]),
                               internal=False)
        _store(b, fn.args[0], self.spin_ns, "monotonic")
        b.ret_void()

    def _emit_shutdown(self) -> None:
        """Stop and join every worker (at interpreter exit, before the code is unloaded); a pool
        busy with another thread's job is left as it is. The pool restarts on next use."""
        fn, b = self._function("nnjit_pool_shutdown", ir.FunctionType(VOID, []), internal=False)
        pair = b.cmpxchg(self.busy, const_i32(0), const_i32(1), "acquire", "monotonic")
        with b.if_then(b.not_(b.extract_value(pair, 1))):
            b.ret_void()
        _store(b, const_i32(1), self.quit, "seq_cst")
        count = b.add(b.sext(b.load(self.started, typ=I32), I64), const_i64(1))
        with for_range(b, 1, count, name="w") as w:
            gen = self._slot_field(b, w, 0)
            b.atomic_rmw("add", gen, const_i32(1), "seq_cst")
            b.call(self.futex, [gen, const_i32(_FUTEX_WAKE_PRIVATE), const_i32(_INT_MAX)])
        join = get_or_declare(self.m, "pthread_join", ir.FunctionType(I32, [I64, PTR]))
        with for_range(b, 1, count, name="j") as w:
            thread = b.load(gep(b, self.threads, self.threads.value_type, 0, w), typ=I64)
            b.call(join, [thread, ir.Constant(PTR, None)])
        self._reset(b)
        b.ret_void()

    def _emit_after_fork(self) -> None:
        """In a forked child: the workers did not come along; forget them (and any job)."""
        fn, b = self._function("nnjit_pool_after_fork", ir.FunctionType(VOID, []),
                               internal=False)
        self._reset(b)
        b.ret_void()

    def _reset(self, b: ir.IRBuilder) -> None:
        b.store(ir.Constant(self.slots.value_type, None), self.slots)
        for word in (self.started, self.pending, self.master_sleeping, self.quit):
            b.store(const_i32(0), word)
        _store(b, const_i32(0), self.busy, "release")
