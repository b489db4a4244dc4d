"""The output buffer pool: large fresh results reuse the memory of dropped ones, and memory
still visible through any live array (or view of one) is never handed out again."""
from __future__ import annotations

import gc
import threading

import numpy as np
import pytest

import nnjit
from nnjit.backends import buffers
from nnjit.backends.buffers import HUGE_PAGE, BufferPool, size_class

MIB = 1 << 20


def addr(a: np.ndarray) -> int:
    return a.__array_interface__["data"][0]


def test_small_requests_are_plain_numpy_arrays():
    pool = BufferPool(min_bytes=MIB)
    a = pool.empty((100, 10), np.float32)
    assert a.shape == (100, 10) and a.dtype == np.float32 and a.flags.owndata
    assert pool.stats["mapped"] == 0


def test_size_classes_are_whole_huge_pages():
    assert size_class(1) == HUGE_PAGE
    assert size_class(HUGE_PAGE) == HUGE_PAGE
    assert size_class(HUGE_PAGE + 1) == 2 * HUGE_PAGE
    assert size_class(64 * MIB) == 64 * MIB


def test_large_request_is_aligned_writable_and_shaped():
    pool = BufferPool(min_bytes=MIB)
    a = pool.empty((3, 512, 1024), np.float64)
    assert a.shape == (3, 512, 1024) and a.dtype == np.float64
    assert a.flags.c_contiguous and a.flags.writeable and a.flags.aligned
    assert addr(a) % HUGE_PAGE == 0
    a[...] = 7.0
    assert float(a.sum()) == 7.0 * a.size


def test_buffer_is_reused_only_after_the_result_is_dropped():
    pool = BufferPool(min_bytes=MIB)
    a = pool.empty((1 << 20,), np.float32)
    first = addr(a)
    b = pool.empty((1 << 20,), np.float32)      # a is alive: new memory
    assert addr(b) != first
    a[:] = 1.0
    b[:] = 2.0
    assert np.all(a == 1.0) and np.all(b == 2.0)
    del a
    c = pool.empty((1 << 20,), np.float32)      # a's memory, now that a is gone
    assert addr(c) == first and pool.stats["reused"] == 1
    del b, c


@pytest.mark.parametrize("make_view", [
    lambda a: a[1:], lambda a: a.reshape(2, -1), lambda a: a.view(np.int32),
    lambda a: a[::2].T, lambda a: np.asarray(a), lambda a: memoryview(a)])
def test_a_live_view_keeps_the_buffer_out_of_the_pool(make_view):
    pool = BufferPool(min_bytes=MIB)
    a = pool.empty((1 << 20,), np.float32)
    first = addr(a)
    a[:] = 3.0
    view = make_view(a)
    del a
    gc.collect()
    others = [pool.empty((1 << 20,), np.float32) for _ in range(3)]
    assert all(addr(o) != first for o in others)
    for o in others:
        o[:] = -1.0
    assert np.all(np.asarray(view).view(np.float32) == 3.0)
    del view
    assert addr(pool.empty((1 << 20,), np.float32)) == first


def test_idle_memory_is_capped():
    pool = BufferPool(min_bytes=MIB, idle_bytes=HUGE_PAGE)
    held = [pool.empty((HUGE_PAGE // 4,), np.float32) for _ in range(3)]
    del held
    assert pool.idle_bytes() == HUGE_PAGE
    assert pool.stats["returned"] == 3 and pool.stats["unmapped"] == 2
    pool.clear()
    assert pool.idle_bytes() == 0


def test_pool_off_gives_plain_arrays(monkeypatch):
    monkeypatch.setenv("NNJIT_POOL_MIB", "0")
    pool = BufferPool(min_bytes=MIB)
    assert pool.empty((1 << 20,), np.float32).flags.owndata


def test_threads_never_share_live_buffers():
    pool = BufferPool(min_bytes=MIB)
    errors = []

    def work(tid: int) -> None:
        for i in range(30):
            a = pool.empty((MIB // 4 + 1024 * (i % 3),), np.float32)
            a[:] = tid
            b = pool.empty((MIB // 4,), np.float32)
            b[:] = -tid
            if not (np.all(a == tid) and np.all(b == -tid)):
                errors.append((tid, i))

    threads = [threading.Thread(target=work, args=(t,)) for t in range(1, 5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert pool.stats["reused"] > 0


def test_compiled_results_held_together_are_independent():
    """Two consecutive calls' results, both alive: distinct memory, each correct; the next
    call after dropping one reuses its memory."""
    f = nnjit.jit(lambda x: x * 2.0 + 1.0, backend="llvm")
    n = 1 << 19                                  # 2 MiB of float32: pooled
    x = np.arange(n, dtype=np.float32)
    y1 = f(x)
    y2 = f(x + 1.0)
    assert not np.shares_memory(y1, y2)
    np.testing.assert_array_equal(y1, x * 2 + 1)
    np.testing.assert_array_equal(y2, (x + 1) * 2 + 1)
    first = addr(y1)
    del y1
    y3 = f(x - 1.0)
    assert addr(y3) == first and buffers.OUTPUTS.stats["reused"] >= 1
    np.testing.assert_array_equal(y2, (x + 1) * 2 + 1)
    np.testing.assert_array_equal(y3, (x - 1) * 2 + 1)
