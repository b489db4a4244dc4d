"""The thread runtime (`parallel_for` on the pool of `threadpool`, thread counts, the pool's own
guarantees: concurrent and nested callers, forks, exit, sleeping workers) and the IR helpers it
is built on."""
import ctypes
import os

import llvmlite.ir as ir
import numpy as np
import pytest

from nnjit.backends.llvm import gemm, parallel, target, threadpool
from nnjit.backends.llvm.helpers import (F32, I32, I64, PTR, VOID, alloca_once, const_i32,
                                         for_range, gep, lane_mask, load, load_vec,
                                         masked_load_vec, masked_store_vec, store_vec,
                                         transpose_vectors)


def cover_module(nthreads, grain=None):
    """`cover(i32* counts, i32* tids, i64 n, i32 nt, i64 grain)`: counts[i] += 1, tids[i] =
    thread index, for i in [0, n), through parallel_for (compile-time `nthreads`, or the runtime
    `nt` if None; a compile-time `grain`, the runtime argument if "runtime", or the default)."""
    mod = ir.Module(name="cover")
    fn = ir.Function(mod, ir.FunctionType(VOID, [PTR, PTR, I64, I32, I64]), "cover")
    counts, tids, n, nt, grain_arg = fn.args
    b = ir.IRBuilder(fn.append_basic_block("entry"))

    def body(bld, lo, hi, captured):
        cnt, tid_out = captured
        with for_range(bld, lo, hi) as i:
            p = gep(bld, cnt, I32, i)
            bld.store(bld.add(load(bld, p, I32), const_i32(1)), p)
            bld.store(parallel.thread_index(bld), gep(bld, tid_out, I32, i))

    parallel.parallel_for(mod, b, "cover_worker", n, [counts, tids], body,
                          nt if nthreads is None else nthreads,
                          grain=grain_arg if grain == "runtime" else grain)
    b.ret_void()
    return str(mod)


COVER_ARGS = (ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64, ctypes.c_int32, ctypes.c_int64)


@pytest.fixture(scope="module")
def cover():
    gemm.ensure_runtime_loaded(())   # the pool only: modules that call nnjit_parallel need it
    lib = target.jit(cover_module(None, grain="runtime"))
    return lib, lib.function("cover", None, *COVER_ARGS)


@pytest.fixture(scope="module")
def cover_default_grain():
    gemm.ensure_runtime_loaded(())
    lib = target.jit(cover_module(None))
    return lib, lib.function("cover", None, *COVER_ARGS)


def _run_cover(fn, n, nthreads, grain=0):
    counts = np.zeros(n + 8, np.int32)
    tids = np.full(n + 8, -1, np.int32)
    fn(counts.ctypes.data, tids.ctypes.data, n, nthreads, grain)
    return counts, tids


@pytest.mark.parametrize("nthreads", [1, 2, 3, 8])
@pytest.mark.parametrize("n", [0, 1, 2, 7, 1000, 1001])
@pytest.mark.parametrize("grain", [1, 3, 64, 5000])
def test_dynamic_chunks_cover_range_exactly_once(cover, nthreads, n, grain):
    """Chunks claimed from the shared counter: n not divisible by the grain, n below the team
    size, n = 0, a grain above n: every index exactly once, nothing past n."""
    _, fn = cover
    counts, tids = _run_cover(fn, n, nthreads, grain)
    assert np.all(counts[:n] == 1) and np.all(counts[n:] == 0)
    assert np.all(tids[n:] == -1)
    if parallel.threads_available():
        assert set(tids[:n].tolist()) <= set(range(nthreads))
        # A chunk runs on one thread: within a chunk the thread index is the same.
        for lo in range(0, n, grain):
            assert len(set(tids[lo:min(lo + grain, n)].tolist())) == 1


@pytest.mark.parametrize("nthreads", [1, 2, 3])
@pytest.mark.parametrize("n", [0, 1, 7, 1000])
def test_default_grain_is_one_chunk_per_thread(cover_default_grain, nthreads, n):
    _, fn = cover_default_grain
    counts, tids = _run_cover(fn, n, nthreads)
    assert np.all(counts[:n] == 1) and np.all(counts[n:] == 0)
    if parallel.threads_available() and n:
        # ceil(n / nthreads) iterations per chunk: at most nthreads runs of one thread index.
        runs = 1 + int(np.count_nonzero(np.diff(tids[:n])))
        assert runs <= min(n, nthreads)


def test_nonpositive_runtime_grain_is_clamped_to_one(cover):
    _, fn = cover
    for grain in (0, -5):
        counts, _ = _run_cover(fn, 50, 2, grain)
        assert np.all(counts[:50] == 1) and np.all(counts[50:] == 0)


def test_grain_for_is_a_pure_function_of_the_work():
    g = parallel.grain_for
    assert g(0, 0, 2) == 1 and g(1, 10, 4) == 1
    # Plenty of work per iteration: about CHUNKS_PER_THREAD chunks per thread.
    assert g(1000, 1 << 30, 2, chunks_per_thread=8) == 63
    assert g(1024, 1 << 30, 4, chunks_per_thread=1) == 256
    # Cheap iterations: chunks grow to min_chunk_work, never past n.
    assert g(1 << 20, 1 << 20, 2, chunks_per_thread=1024, min_chunk_work=1 << 14) == 1 << 14
    assert g(100, 100, 2, min_chunk_work=1 << 14) == 100
    # A default chunk is never cheaper than MIN_CHUNK_WORK unless it is the whole loop.
    for n, work in [(37, 1 << 20), (1 << 16, 1 << 18), (4096, 1 << 26)]:
        grain = g(n, work, 2)
        assert 1 <= grain <= n
        assert grain == n or grain * work / n >= parallel.MIN_CHUNK_WORK


def test_compile_time_single_thread_emits_plain_loop():
    text = cover_module(1)
    assert "nnjit_parallel" not in text
    lib = target.jit(text)
    fn = lib.function("cover", None, *COVER_ARGS)
    counts, tids = np.zeros(10, np.int32), np.full(10, -1, np.int32)
    fn(counts.ctypes.data, tids.ctypes.data, 10, 4, 0)
    assert np.all(counts == 1) and np.all(tids == 0)


def test_compile_time_threads_forks_team():
    if not parallel.threads_available():
        pytest.skip("no thread pool on this platform")
    text = cover_module(2)
    assert threadpool.called_in(text)
    target.prepare_module(text)


def test_without_a_pool_falls_back_to_one_thread(monkeypatch):
    monkeypatch.setattr(parallel, "threads_available", lambda: False)
    text = cover_module(None)
    assert "nnjit_parallel" not in text
    assert parallel.choose_threads(1 << 30, 8) == 1


def test_num_threads_env_override(monkeypatch):
    monkeypatch.setenv("NNJIT_NUM_THREADS", "3")
    assert parallel.num_threads() == 3
    monkeypatch.delenv("NNJIT_NUM_THREADS")
    import os
    assert parallel.num_threads() == len(os.sched_getaffinity(0))
    monkeypatch.setenv("NNJIT_NUM_THREADS", "zero")
    with pytest.warns(RuntimeWarning, match="NNJIT_NUM_THREADS"):
        assert parallel.num_threads() >= 1


def test_choose_threads_and_link_flags():
    if not parallel.threads_available():
        pytest.skip("no thread pool on this platform")
    assert parallel.choose_threads(10, 4) == 1
    assert parallel.choose_threads(4 * parallel.MIN_PARALLEL_WORK, 2) == 2
    assert parallel.choose_threads(3 * parallel.MIN_PARALLEL_WORK // 2, 4) == 1
    assert parallel.link_flags() == ["-lpthread", "-lm"]


# --- helpers ----------------------------------------------------------------------------------
def test_helpers_loops_masks_transpose():
    """for_range with steps and hints, alloca_once, masked vector tails and a 16x16 transpose."""
    mod = ir.Module(name="helpers")
    v16 = ir.VectorType(F32, 16)
    fn = ir.Function(mod, ir.FunctionType(VOID, [PTR, PTR, I64]), "f")
    src, dst, n = fn.args
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    # dst[0:256] = transpose(src[0:256]) as a 16x16 matrix
    rows = [load_vec(b, gep(b, src, F32, 16 * r), F32, 16) for r in range(16)]
    for r, vec in enumerate(transpose_vectors(b, rows)):
        store_vec(b, vec, gep(b, dst, F32, 16 * r))
    # dst[256 + i] = src[i] * 2 for i < n, 16 lanes at a time with a masked tail
    slot = alloca_once(b, v16, align=64)
    with for_range(b, 0, n, step=16, vectorize=False, unroll=2) as i:
        mask = lane_mask(b, 16, b.sub(n, i))
        x = masked_load_vec(b, gep(b, src, F32, i), F32, 16, mask)
        b.store(b.fadd(x, x), slot)
        masked_store_vec(b, load(b, slot, v16), gep(b, dst, F32, b.add(i, ir.Constant(I64, 256))),
                         mask)
    b.ret_void()
    text = str(mod)
    assert "llvm.loop.unroll.count" in text and "distinct !{" in text.replace("!{ ", "!{")
    lib = target.jit(text)
    f = lib.function("f", None, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64)
    x = np.arange(256, dtype=np.float32)
    for count in (0, 5, 16, 37):
        out = np.full(256 + 48, -1, np.float32)
        f(x.ctypes.data, out.ctypes.data, count)
        np.testing.assert_array_equal(out[:256].reshape(16, 16), x.reshape(16, 16).T)
        np.testing.assert_array_equal(out[256:256 + count], 2 * x[:count])
        assert np.all(out[256 + count:] == -1)


# --- the pool ---------------------------------------------------------------------------------
def _python(code: str, env: dict | None = None, timeout: float = 120) -> str:
    """Run `code` in a fresh interpreter (a hang in the pool fails here, not the suite)."""
    import subprocess
    import sys
    src = os.path.join(os.path.dirname(__file__), "..", "..", "src")
    full = {**os.environ, "PYTHONPATH": os.path.abspath(src), **(env or {})}
    res = subprocess.run([sys.executable, "-c", code], env=full, capture_output=True, text=True,
                         timeout=timeout)
    assert res.returncode == 0, res.stderr[-3000:]
    return res.stdout


_COVER_PRELUDE = f"""
import ctypes, numpy as np
from nnjit.backends.llvm import gemm, target
from tests.backends.test_llvm_parallel import cover_module, COVER_ARGS
gemm.ensure_runtime_loaded(())
lib = target.jit(cover_module(None, grain="runtime"))   # keeps the code loaded
fn = lib.function("cover", None, *COVER_ARGS)
def check(n, nt, grain):
    counts = np.zeros(n + 8, np.int32)
    tids = np.full(n + 8, -1, np.int32)
    fn(counts.ctypes.data, tids.ctypes.data, n, nt, grain)
    assert np.all(counts[:n] == 1) and np.all(counts[n:] == 0), (n, nt, grain)
    assert set(tids[:n].tolist()) <= set(range(nt)), (n, nt, tids)
"""


@pytest.mark.parametrize("spin_us", ["0", "200"])
def test_many_jobs_of_changing_team_sizes_lose_no_wakeup(spin_us):
    """Thousands of jobs back to back, teams of 1-8 on whatever cores there are, the workers
    sleeping between jobs (spin 0: every job goes through the futex) or spinning: a lost wake-up
    hangs the child (and the timeout fails the test), a job run twice or not at all fails the
    cover check."""
    if not parallel.threads_available():
        pytest.skip("no thread pool on this platform")
    out = _python(_COVER_PRELUDE + """
import time
for i in range(3000):
    check([0, 1, 7, 300, 5000][i % 5], 1 + i % 8, 1 + i % 13)
    if i % 500 == 0:
        time.sleep(0.002)      # let spinning workers fall asleep now and then
print("ok")
""", env={"NNJIT_SPIN_US": spin_us}, timeout=180)
    assert out.split()[-1] == "ok"


def test_concurrent_and_nested_callers_each_get_every_chunk():
    """Two Python threads calling parallel code at once (ctypes drops the GIL): one gets the
    pool, the other runs alone; both cover their ranges. Also a loop run inside a worker."""
    if not parallel.threads_available():
        pytest.skip("no thread pool on this platform")
    import threading
    gemm.ensure_runtime_loaded(())
    lib = target.jit(cover_module(None, grain="runtime"))
    fn = lib.function("cover", None, *COVER_ARGS)
    errors = []

    def hammer(seed):
        try:
            for i in range(300):
                counts, tids = _run_cover(fn, 1000 + seed + i, 2 + (i + seed) % 3, 1 + i % 7)
                assert np.all(counts[:1000 + seed + i] == 1)
                assert np.all(counts[1000 + seed + i:] == 0)
        except AssertionError as e:  # reported by the main thread
            errors.append(e)

    threads = [threading.Thread(target=hammer, args=(s,)) for s in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors and not any(t.is_alive() for t in threads)


def test_nested_parallel_loop_runs_on_the_worker_alone():
    """A parallel_for inside a parallel_for's body (the pool is busy): the inner loop runs on
    the thread that reached it, and every (outer, inner) pair is done exactly once."""
    if not parallel.threads_available():
        pytest.skip("no thread pool on this platform")
    mod = ir.Module(name="nested")
    fn = ir.Function(mod, ir.FunctionType(VOID, [PTR, I64, I64]), "nested")
    counts, rows, cols = fn.args
    b = ir.IRBuilder(fn.append_basic_block("entry"))

    def outer(bld, lo, hi, cap):
        cnt, ncols = cap
        with for_range(bld, lo, hi) as r:
            row = gep(bld, cnt, I32, bld.mul(r, ncols))

            def inner(bi, ilo, ihi, icap):
                (rp,) = icap
                with for_range(bi, ilo, ihi) as c:
                    p = gep(bi, rp, I32, c)
                    bi.store(bi.add(load(bi, p, I32), const_i32(1)), p)
            parallel.parallel_for(bld.module, bld, "inner", ncols, [row], inner, 2, grain=3)

    parallel.parallel_for(mod, b, "outer", rows, [counts, cols], outer, 2, grain=1)
    b.ret_void()
    gemm.ensure_runtime_loaded(())
    lib = target.jit(str(mod))
    f = lib.function("nested", None, ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64)
    for r, c in [(1, 1), (5, 17), (64, 100)]:
        counts = np.zeros(r * c + 4, np.int32)
        f(counts.ctypes.data, r, c)
        assert np.all(counts[:r * c] == 1) and np.all(counts[r * c:] == 0)


def test_a_forked_child_and_a_shut_down_pool_start_afresh():
    """The pool's workers do not survive fork(): the child resets it (os.register_at_fork)
    and starts its own. A pool shut down (as at exit) restarts on the next job."""
    if not parallel.threads_available():
        pytest.skip("no thread pool on this platform")
    out = _python(_COVER_PRELUDE + """
import os
check(5000, 2, 7)
pid = os.fork()
if pid == 0:
    try:
        for i in range(50):
            check(3000, 2 + i % 3, 5)
        os._exit(0)
    except BaseException:
        os._exit(3)
_, status = os.waitpid(pid, 0)
assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, status
check(5000, 3, 11)
gemm._loaded["pool"].function("nnjit_pool_shutdown", None)()
check(5000, 3, 11)
print("ok")
""")
    assert out.split()[-1] == "ok"


def test_the_process_exits_cleanly_with_workers_spinning():
    """Interpreter exit right after a job (workers still spinning in the pool's code): the
    atexit shutdown joins them before the code is unloaded; a crash would fail the child."""
    if not parallel.threads_available():
        pytest.skip("no thread pool on this platform")
    out = _python(_COVER_PRELUDE + 'check(100000, 4, 64)\nprint("ok")\n',
                  env={"NNJIT_SPIN_US": "1000000"})
    assert out.split()[-1] == "ok"


def test_spin_time_from_the_environment(monkeypatch):
    monkeypatch.delenv("NNJIT_SPIN_US", raising=False)
    assert parallel.spin_ns() == threadpool.DEFAULT_SPIN_US * 1000
    monkeypatch.setenv("NNJIT_SPIN_US", "12.5")
    assert parallel.spin_ns() == 12500
    monkeypatch.setenv("NNJIT_SPIN_US", "0")
    assert parallel.spin_ns() == 0
    for bad in ("-1", "soon"):
        monkeypatch.setenv("NNJIT_SPIN_US", bad)
        with pytest.warns(RuntimeWarning, match="NNJIT_SPIN_US"):
            assert parallel.spin_ns() == threadpool.DEFAULT_SPIN_US * 1000
