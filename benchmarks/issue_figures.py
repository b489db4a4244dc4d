"""The figures the LLVM-backend and fusion issues ask for, measured side by side in one run.

    python benchmarks/issue_figures.py [--repeats 9] [--json]

1. MLP 784-512-512-10 training step (SGD, batch 128): nnjit llvm (fused) vs the reference
   interpreter vs a hand-written numpy step; compile time of the step (disk cache off).
2. 8-op elementwise chain over 16M float32: fused vs unfused, and its bandwidth (one read and
   one write of 16M floats) against np.copyto on the same arrays.
3. The MLP training step fused vs unfused, and its memory plan: peak arena against the liveness
   lower bound and the no-reuse total.
Medians of alternating repeats; the machine (2 cores) may be shared, so compare ratios.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import numpy as np

os.environ.setdefault("NNJIT_CACHE", "0")   # compile times are real compiles

import nnjit  # noqa: E402
from nnjit.backends.llvm.parallel import num_threads  # noqa: E402
from nnjit.bench import mlp_step_workload, numpy_mlp_step  # noqa: E402


def timeit(fn, repeats: int, inner: int) -> float:
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(inner):
            fn()
        out.append((time.perf_counter() - t0) / inner)
    return statistics.median(out)


def side_by_side(fns: dict, repeats: int, inner: int) -> dict:
    """Median seconds per call, taking turns so load hits every contender alike."""
    for f in fns.values():
        f()
    samples: dict = {k: [] for k in fns}
    for _ in range(repeats):
        for k, f in fns.items():
            samples[k].append(timeit(f, 1, inner))
    return {k: statistics.median(v) for k, v in samples.items()}


def mlp_figures(repeats: int) -> dict:
    w = mlp_step_workload(128)
    params, x, y = w.make_args()
    t0 = time.perf_counter()
    fused = nnjit.jit(w.fn, backend="llvm").lower(params, x, y)
    compile_s = time.perf_counter() - t0
    unfused = nnjit.jit(w.fn, backend="llvm", fuse=False).lower(params, x, y)
    interp = nnjit.jit(w.fn, backend="interp").lower(params, x, y)
    t = side_by_side({"fused": lambda: fused(params, x, y),
                      "unfused": lambda: unfused(params, x, y),
                      "numpy": lambda: numpy_mlp_step(params, x, y)}, repeats, 10)
    t["interp"] = timeit(lambda: interp(params, x, y), 3, 2)
    plan = fused.memory_plan()
    uplan = unfused.memory_plan()
    return {"compile_s": compile_s, "ms": {k: v * 1e3 for k, v in t.items()},
            "fused_vs_unfused": t["unfused"] / t["fused"],
            "fused_vs_numpy": t["numpy"] / t["fused"],
            "fused_vs_interp": t["interp"] / t["fused"],
            "arena": {"fused": [plan.arena_bytes, plan.lower_bound_bytes, plan.no_reuse_bytes],
                      "unfused": [uplan.arena_bytes, uplan.lower_bound_bytes,
                                  uplan.no_reuse_bytes]}}


def chain_figures(repeats: int) -> dict:
    def chain(x):
        return nnjit.tanh(x * 1.5 + 0.5) * nnjit.sigmoid(x) + nnjit.relu(x - 0.25)

    x = np.random.default_rng(0).standard_normal(1 << 24, np.float32)
    fused = nnjit.jit(chain, backend="llvm").lower(x)
    unfused = nnjit.jit(chain, backend="llvm", fuse=False).lower(x)
    out = np.empty_like(x)
    dst = np.empty_like(x)
    exe = fused.executable
    t = side_by_side({"fused_reused_out": lambda: exe([x], outs=[out]),
                      "fused": lambda: fused(x),
                      "unfused": lambda: unfused(x),
                      "copyto": lambda: np.copyto(dst, x)}, repeats, 3)
    gbs = {k: 2 * x.nbytes / v / 1e9 for k, v in t.items()}
    return {"ms": {k: v * 1e3 for k, v in t.items()}, "GB/s": gbs,
            "fused_vs_unfused": t["unfused"] / t["fused"],
            "bandwidth_vs_copyto": gbs["fused_reused_out"] / gbs["copyto"],
            "fused_kernels": len(fused.lowered().program.kernels),
            "unfused_kernels": len(unfused.lowered().program.kernels)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=9)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    res = {"threads": num_threads(), "mlp": mlp_figures(a.repeats),
           "chain": chain_figures(a.repeats)}
    if a.json:
        print(json.dumps(res, indent=2))
        return
    m, c = res["mlp"], res["chain"]
    print(f"threads: {res['threads']}")
    print("MLP 784-512-512-10 SGD step, batch 128 (ms, medians):")
    for k, v in m["ms"].items():
        print(f"  {k:<10} {v:9.3f}")
    print(f"  fused vs unfused {m['fused_vs_unfused']:.2f}x, vs hand numpy "
          f"{m['fused_vs_numpy']:.2f}x, vs interpreter {m['fused_vs_interp']:.1f}x; "
          f"compile {m['compile_s']:.2f} s")
    for k, (arena, lb, nr) in m["arena"].items():
        print(f"  arena {k}: {arena} B = {arena / lb:.2f}x lower bound ({lb} B), "
              f"{arena / nr:.2f} of no-reuse ({nr} B)")
    print("elementwise chain over 16M float32:")
    for k in c["ms"]:
        print(f"  {k:<17} {c['ms'][k]:8.2f} ms  {c['GB/s'][k]:6.1f} GB/s")
    print(f"  fused vs unfused {c['fused_vs_unfused']:.2f}x ({c['fused_kernels']} vs "
          f"{c['unfused_kernels']} kernels); fused bandwidth {c['bandwidth_vs_copyto']:.0%} of "
          f"np.copyto")


if __name__ == "__main__":
    main()
