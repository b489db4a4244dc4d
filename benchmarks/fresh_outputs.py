"""Elementwise chains over 16M float32 that return a fresh 64 MiB result on every call (the
caller drops the previous one), the case the output buffer pool is for.

    python benchmarks/fresh_outputs.py [--repeats 21] [--json]
    python benchmarks/fresh_outputs.py --pool-ab      # pool against no pool, in one process

Compare trees with `benchmarks/compare_trees.py OLD/src NEW/src benchmarks/fresh_outputs.py`.
The last line of output is one JSON object {workload: median ms per call, workload_cpu: CPU
ms per call (all threads, user + system: steadier than wall time on a loaded machine),
workload_faults: minor page faults per call}.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import time

import numpy as np

os.environ.setdefault("NNJIT_CACHE", "0")

import nnjit  # noqa: E402


def workloads():
    n = 1 << 24
    x = np.random.default_rng(0).standard_normal(n).astype(np.float32)
    return {
        "axpb_16M": (lambda v: v * 2.0 + 1.0, lambda v: v * 2.0 + 1.0, x),
        "chain_a_16M": (
            lambda v: nnjit.tanh(v * 1.5 + 0.5) * nnjit.sigmoid(v) + nnjit.relu(v - 0.25),
            lambda v: np.tanh(v * 1.5 + 0.5) / (1 + np.exp(-v)) + np.maximum(v - 0.25, 0), x),
    }


def pool_ab(rounds: int) -> None:
    """The same executables with the output pool and without it (a pool keeping nothing idle),
    alternating rounds of 3 calls; medians of wall and CPU milliseconds per call."""
    from nnjit.backends.buffers import BufferPool  # noqa: PLC0415
    from nnjit.backends.llvm import executable  # noqa: PLC0415

    pools = {"pool": BufferPool(), "no_pool": BufferPool(idle_bytes=0)}
    res = {}
    for name, (fn, _, x) in workloads().items():
        f = nnjit.jit(fn, backend="llvm")
        f(x)
        wall = {k: [] for k in pools}
        cpu = {k: [] for k in pools}
        for r in range(rounds):
            for k in (list(pools) if r % 2 else list(pools)[::-1]):
                executable.OUTPUTS = pools[k]
                f(x)                                   # the pool's first loan: not timed
                t, r0 = time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF)
                for _ in range(3):
                    y = f(x)
                    del y
                r1 = resource.getrusage(resource.RUSAGE_SELF)
                wall[k].append((time.perf_counter() - t) / 3 * 1e3)
                cpu[k].append((r1.ru_utime + r1.ru_stime - r0.ru_utime - r0.ru_stime) / 3 * 1e3)
        for k in pools:
            res[f"{name}_{k}"] = round(statistics.median(wall[k]), 3)
            res[f"{name}_{k}_cpu"] = round(statistics.median(cpu[k]), 3)
        print(f"{name:16s} wall {res[f'{name}_pool']:8.2f} ms pooled, "
              f"{res[f'{name}_no_pool']:8.2f} ms fresh; cpu {res[f'{name}_pool_cpu']:8.2f} / "
              f"{res[f'{name}_no_pool_cpu']:8.2f} ms", flush=True)
    print(json.dumps(res))


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=21)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--pool-ab", action="store_true",
                    help="time with and without the output pool side by side instead")
    a = ap.parse_args(argv)
    if a.pool_ab:
        pool_ab(a.repeats)
        return
    res = {}
    for name, (fn, ref, x) in workloads().items():
        f = nnjit.jit(fn, backend="llvm")
        if not np.allclose(f(x), ref(x.astype(np.float64)), rtol=1e-4, atol=1e-5):
            raise SystemExit(f"{name}: wrong result")
        times = []
        r0 = resource.getrusage(resource.RUSAGE_SELF)
        for _ in range(a.repeats):
            t = time.perf_counter()
            y = f(x)
            times.append(time.perf_counter() - t)
            del y
        r1 = resource.getrusage(resource.RUSAGE_SELF)
        res[name] = round(1e3 * statistics.median(times), 3)
        cpu = (r1.ru_utime + r1.ru_stime) - (r0.ru_utime + r0.ru_stime)
        res[f"{name}_cpu"] = round(1e3 * cpu / a.repeats, 3)
        res[f"{name}_faults"] = round((r1.ru_minflt - r0.ru_minflt) / a.repeats, 1)
        if not a.json:
            print(f"{name:16s} {res[name]:9.3f} ms   cpu {res[f'{name}_cpu']:9.3f} ms   "
                  f"{res[f'{name}_faults']:8.1f} page faults per call")
    print(json.dumps(res))


if __name__ == "__main__":
    main()
