"""Large host buffers without page faults: huge-page hinted mappings, and a pool of them that
fresh outputs are carved from and return to when the caller drops them.

    >>> y = OUTPUTS.empty((4096, 4096), np.float32)   # 64 MiB: a pooled, 2 MiB aligned mapping
    >>> del y                                         # back in the pool (no views left)
    >>> z = OUTPUTS.empty((4096, 4096), np.float32)   # the same memory, already faulted in

Why: the first write to a fresh 4 KiB page costs a page fault (about 2 GB/s here), so a fresh
64 MiB result costs 20-35 ms, ten times a fused elementwise kernel over it (PERF_NOTES.md).
A reused buffer is already mapped; a new mapping is advised onto transparent huge pages (one
fault per 2 MiB, the kernel's `madvise` mode), so even the first call faults far less.

Safety: a buffer goes back to the pool only when the object owning the memory of the array
handed out is garbage (`weakref.finalize` on a per-loan ctypes view of the mapping). Every
numpy view of the result (slices, reshapes, `.view`) keeps that object alive through its
`.base` chain, which always ends at the exported buffer, so memory is never handed out twice
while anything can still see it. The finalizer only appends to a deque (atomic, lock-free:
it may run in any thread, at any allocation that triggers the garbage collector, including
one inside `empty` itself); `empty` takes the lock to move returned buffers to the free lists.
"""
from __future__ import annotations

import collections
import ctypes
import mmap
import os
import threading
import weakref

import numpy as np

#: Outputs at least this large come from the pool (below it, malloc reuses memory itself).
POOL_MIN_BYTES = 1 << 20

#: Transparent huge pages are 2 MiB here: mappings are aligned and sized in these units.
HUGE_PAGE = 2 << 20

#: Idle pooled bytes kept for reuse at most (more is unmapped when returned); override with
#: NNJIT_POOL_MIB, 0 turns the pool off.
DEFAULT_IDLE_BYTES = 1 << 30


def huge_mapping(nbytes: int) -> tuple[mmap.mmap, int]:
    """An anonymous private mapping holding `nbytes` from a 2 MiB aligned offset (returned),
    advised onto transparent huge pages where the kernel offers them. Untouched pages cost
    nothing, so the alignment slack is only address space."""
    mm = mmap.mmap(-1, nbytes + HUGE_PAGE)
    base = ctypes.addressof(ctypes.c_char.from_buffer(mm))
    offset = (-base) % HUGE_PAGE
    if hasattr(mm, "madvise") and hasattr(mmap, "MADV_HUGEPAGE"):
        try:
            mm.madvise(mmap.MADV_HUGEPAGE)
        except OSError:  # a kernel without THP: plain pages still work
            pass
    return mm, offset


def size_class(nbytes: int) -> int:
    """The pooled size serving a request of `nbytes`: the next multiple of 2 MiB (one huge
    page of waste at most, and steps asking for the same shapes share one class)."""
    return max(HUGE_PAGE, -(-nbytes // HUGE_PAGE) * HUGE_PAGE)


def _idle_limit() -> int:
    env = os.environ.get("NNJIT_POOL_MIB", "").strip()
    try:
        return max(0, int(env)) << 20 if env else DEFAULT_IDLE_BYTES
    except ValueError:
        return DEFAULT_IDLE_BYTES


class BufferPool:
    """Size-classed free lists of huge-page mappings, lent out as numpy arrays.

    `empty(shape, dtype)` is `np.empty` for small requests and a loan from the pool for large
    ones; the loan ends when the array (and every view of it) is gone. Thread-safe."""

    def __init__(self, min_bytes: int = POOL_MIN_BYTES, idle_bytes: int | None = None):
        self.min_bytes = min_bytes
        self.idle_limit = _idle_limit() if idle_bytes is None else idle_bytes
        self._free: dict[int, list[tuple[mmap.mmap, int]]] = {}
        self._returned: collections.deque = collections.deque()
        self._idle = 0          # bytes in _free (under _lock)
        self._lock = threading.Lock()
        self.stats = {"mapped": 0, "reused": 0, "returned": 0, "unmapped": 0}

    def empty(self, shape, dtype) -> np.ndarray:
        dtype = np.dtype(dtype)
        shape = tuple(int(s) for s in (shape if isinstance(shape, (tuple, list)) else (shape,)))
        nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        if nbytes < self.min_bytes or self.idle_limit <= 0:
            return np.empty(shape, dtype)
        cls = size_class(nbytes)
        mm, offset = self._take(cls)
        # The loan: a ctypes view of the mapping (it holds `mm`); numpy's buffer export of it
        # is the base every view of the result keeps alive.
        loan = (ctypes.c_char * nbytes).from_buffer(mm, offset)
        weakref.finalize(loan, self._returned.append, (cls, mm, offset)).atexit = False
        return np.frombuffer(loan, dtype, nbytes // dtype.itemsize).reshape(shape)

    def _take(self, cls: int) -> tuple[mmap.mmap, int]:
        with self._lock:
            self._drain()
            free = self._free.get(cls)
            if free:
                self._idle -= cls
                self.stats["reused"] += 1
                return free.pop()
            self.stats["mapped"] += 1
        return huge_mapping(cls)

    def _drain(self) -> None:
        """Move buffers whose loans ended onto the free lists, unmapping past the idle limit
        (under `_lock`)."""
        while self._returned:
            cls, mm, offset = self._returned.popleft()
            self.stats["returned"] += 1
            if self._idle + cls > self.idle_limit:
                self.stats["unmapped"] += 1
                continue  # dropped: the mapping is unmapped when `mm` is collected
            self._free.setdefault(cls, []).append((mm, offset))
            self._idle += cls

    def idle_bytes(self) -> int:
        with self._lock:
            self._drain()
            return self._idle

    def clear(self) -> None:
        """Unmap every idle buffer (loans still out return later as usual)."""
        with self._lock:
            self._drain()
            self._free.clear()
            self._idle = 0


#: The process-wide pool that executables draw fresh outputs from.
OUTPUTS = BufferPool()
