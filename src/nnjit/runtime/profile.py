"""`cf.profile(*args)`: where a compiled function's time goes, kernel by kernel.

    >>> p = step.lower(*args).profile(*args, repeats=7, trace="trace.json")
    >>> print(p)        # per kernel: median time, share, bytes, GFLOP/s, % of peak, user lines

The native backends run an instrumented build for this (llvm: a timestamp at every kernel
boundary, compiled on first use; the build that `cf(...)` runs has no timing code at all);
cuda synchronizes after every launch; the interpreter times each graph node. The dispatch
overhead is the median call time minus the median time inside the kernels. `trace=` writes a
Chrome trace (chrome://tracing or https://ui.perfetto.dev).

Peaks (for "% of peak") default to this machine's measured figures (PERF_NOTES: 115 GFLOP/s of
f32 FMAs and about 28 GB/s per core, 38 GB/s on two); NNJIT_PEAK_GFLOPS and NNJIT_PEAK_GBS
override them. The bandwidth is main memory's: a kernel whose data sit in cache can pass 100%.
"""
from __future__ import annotations

import json
import os
import statistics
import time
from dataclasses import dataclass

from ..codegen.analysis import kernel_bytes, kernel_flops

GFLOPS_PER_CORE = 115.0
GBS_BY_THREADS = {1: 28.0, 2: 38.0}


@dataclass(frozen=True)
class KernelTime:
    name: str
    kind: str
    seconds: float             # median over the repeats
    bytes: int
    flops: int
    where: str                 # the user's source lines it came from

    @property
    def gbs(self) -> float:
        return self.bytes / self.seconds / 1e9 if self.seconds > 0 else 0.0

    @property
    def gflops(self) -> float:
        return self.flops / self.seconds / 1e9 if self.seconds > 0 else 0.0


@dataclass(frozen=True)
class Profile:
    function: str
    backend: str
    kernels: tuple[KernelTime, ...]
    call_seconds: float        # median time of a whole call from Python
    threads: int

    @property
    def kernel_seconds(self) -> float:
        return sum(k.seconds for k in self.kernels)

    @property
    def dispatch_seconds(self) -> float:
        """Python's share of a call: flattening and checking arguments, results, the ctypes
        call itself."""
        return max(0.0, self.call_seconds - self.kernel_seconds)

    def peak_fraction(self, k: KernelTime) -> float:
        """The larger of bandwidth and FMA-throughput use, as a fraction of this machine's."""
        gflops = float(os.environ.get("NNJIT_PEAK_GFLOPS", GFLOPS_PER_CORE * self.threads))
        gbs = float(os.environ.get("NNJIT_PEAK_GBS",
                                   GBS_BY_THREADS.get(self.threads, 38.0)))
        return max(k.gbs / gbs, k.gflops / gflops)

    def __str__(self) -> str:
        total = self.kernel_seconds or 1.0
        rows = [f"profile of @{self.function} on {self.backend} ({self.threads} thread(s)): "
                f"{self.call_seconds * 1e3:.3f} ms a call, {self.kernel_seconds * 1e3:.3f} ms in "
                f"kernels, dispatch {self.dispatch_seconds * 1e6:.1f} us",
                f"{'kernel':<28} {'ms':>9} {'share':>6} {'bytes':>11} {'GB/s':>7} "
                f"{'GFLOP/s':>8} {'peak':>5}  source"]
        for k in sorted(self.kernels, key=lambda k: -k.seconds):
            rows.append(f"{k.name:<28} {k.seconds * 1e3:>9.4f} {k.seconds / total:>6.1%} "
                        f"{k.bytes:>11} {k.gbs:>7.2f} {k.gflops:>8.2f} "
                        f"{self.peak_fraction(k):>5.0%}  {k.where}")
        return "\n".join(rows)

    def chrome_trace(self) -> dict:
        """One call as Chrome trace events (microseconds), kernels in program order."""
        events, t = [], 0.0
        for k in self.kernels:
            events.append({"name": k.name, "cat": k.kind, "ph": "X", "ts": t * 1e6,
                           "dur": k.seconds * 1e6, "pid": 0, "tid": 0,
                           "args": {"bytes": k.bytes, "flops": k.flops, "source": k.where}})
            t += k.seconds
        events.append({"name": "dispatch (Python)", "cat": "runtime", "ph": "X",
                       "ts": t * 1e6, "dur": self.dispatch_seconds * 1e6, "pid": 0, "tid": 0})
        return {"traceEvents": events, "displayTimeUnit": "ms"}

    def write_trace(self, path: str) -> None:
        tmp = f"{path}.tmp{os.getpid()}"
        with open(tmp, "w") as f:
            json.dump(self.chrome_trace(), f, indent=1)
        os.replace(tmp, path)


def profile(cf, args, repeats: int = 7, trace: str | None = None) -> Profile:
    """Profile `cf` (a CompiledFunction) on `args`: see the module docstring."""
    flat = cf.flat_args(args)
    exe = cf.executable
    exe.timed(flat)                                   # compiles the instrumented build, warms
    runs = [exe.timed(flat)[1] for _ in range(repeats)]
    calls = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        cf(*args)
        calls.append(time.perf_counter() - t0)
    med = [statistics.median(col) for col in zip(*runs)]
    rows = _rows(cf, med)
    from ..backends.llvm import parallel   # llvmlite loads with the llvm backend, not nnjit

    threads = parallel.num_threads() if cf.options.backend == "llvm" else 1
    p = Profile(cf.graph.name, cf.options.backend, tuple(rows), statistics.median(calls),
                threads)
    if trace:
        p.write_trace(trace)
    return p


def _rows(cf, seconds: list[float]) -> list[KernelTime]:
    program = cf.program
    if program is None:          # the interpreter: one row per graph node
        return [KernelTime(f"%{i} {n.op.value}", "node", s, sum(v.type.nbytes for v in n.outs),
                           0, str(n.loc) if n.loc else "")
                for i, (n, s) in enumerate(zip(cf.graph.nodes, seconds))]
    return [KernelTime(k.name, type(k).__name__.replace("Kernel", "").lower(), s,
                       kernel_bytes(program, k), kernel_flops(k), _where(k.src))
            for k, s in zip(program.kernels, seconds)]


def _where(src: str) -> str:
    """The user lines of a kernel's `src` ("fusion at a.py:3 in f, a.py:4 in f")."""
    return src.split(" at ", 1)[1] if " at " in src else src


__all__ = ["KernelTime", "Profile", "profile"]
