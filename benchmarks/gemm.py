"""GFLOP/s of nnjit's packed GEMM vs numpy's matmul (OpenBLAS), side by side in one run.

    python benchmarks/gemm.py [--json] [--repeats 7] [--sizes 256,512,1024,2048]

numpy runs in a helper subprocess per thread count (OPENBLAS_NUM_THREADS / OMP_NUM_THREADS set
there), ours in this process; the two alternate repeat by repeat, with a short pause between
sides so neither runtime's spinning idle threads steal cycles from the other. Reported figures
are medians. The machines are shared and noisy: compare the ratio column, not absolute values.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np

PAUSE_S = 0.2  # lets spinning idle worker threads go to sleep (OpenBLAS spins ~0.1 s)

WORKER = r"""
import json, sys, time
import numpy as np
arrays = {}
for line in sys.stdin:
    n, dtype, reps = line.split()
    n, reps = int(n), int(reps)
    key = (n, dtype)
    if key not in arrays:
        rng = np.random.default_rng(0)
        arrays = {key: [rng.standard_normal((n, n)).astype(dtype) for _ in range(3)]}
        np.matmul(*arrays[key][:2], out=arrays[key][2])
    a, b, c = arrays[key]
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        np.matmul(a, b, out=c)
        times.append(time.perf_counter() - t)
    print(json.dumps(times), flush=True)
"""


class NumpySide:
    """A subprocess running numpy.matmul with a fixed BLAS thread count."""

    def __init__(self, nthreads: int):
        env = dict(os.environ, OPENBLAS_NUM_THREADS=str(nthreads), OMP_NUM_THREADS=str(nthreads),
                   MKL_NUM_THREADS=str(nthreads))
        self.proc = subprocess.Popen([sys.executable, "-c", WORKER], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True, env=env)

    def times(self, n: int, dtype: str, reps: int) -> list[float]:
        self.proc.stdin.write(f"{n} {dtype} {reps}\n")
        self.proc.stdin.flush()
        return json.loads(self.proc.stdout.readline())

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait()


class OurSide:
    def __init__(self):
        from nnjit.backends.llvm import gemm
        self.gemm = gemm
        t = time.perf_counter()
        gemm.ensure_runtime_loaded()
        self.compile_s = time.perf_counter() - t
        self.key = None

    def times(self, n: int, dtype: str, nthreads: int, reps: int) -> list[float]:
        if self.key != (n, dtype, nthreads):
            rng = np.random.default_rng(0)
            self.a, self.b = (rng.standard_normal((n, n)).astype(dtype) for _ in range(2))
            self.c = np.empty((n, n), dtype)
            self.ws = self.gemm.workspace(dtype, nthreads)
            self.call(nthreads)
            ref = self.a.astype(np.float64) @ self.b.astype(np.float64)
            assert np.allclose(self.c, ref, rtol=1e-3, atol=1e-3 * np.sqrt(n)), "wrong result"
            self.key = (n, dtype, nthreads)
        out = []
        for _ in range(reps):
            t = time.perf_counter()
            self.call(nthreads)
            out.append(time.perf_counter() - t)
        return out

    def call(self, nthreads: int) -> None:
        self.gemm.matmul(self.a, self.b, out=self.c, nthreads=nthreads, ws=self.ws)


def measure(cases, repeats: int) -> list[dict]:
    ours = OurSide()
    sides = {t: NumpySide(t) for t in sorted({t for _, _, t in cases})}
    rows = []
    try:
        for n, dtype, nthreads in cases:
            reps = max(1, min(5, int(2e9 / (2 * n ** 3))))  # calls per sample: ~>= 10 ms
            mine, theirs = [], []
            ours.times(n, dtype, nthreads, 1)  # warm-up (and correctness check)
            time.sleep(PAUSE_S)
            sides[nthreads].times(n, dtype, 1)
            time.sleep(PAUSE_S)
            for _ in range(repeats):
                mine.append(min(ours.times(n, dtype, nthreads, reps)))
                time.sleep(PAUSE_S)
                theirs.append(min(sides[nthreads].times(n, dtype, reps)))
                time.sleep(PAUSE_S)
            flop = 2.0 * n ** 3
            g_ours, g_np = flop / np.median(mine) / 1e9, flop / np.median(theirs) / 1e9
            rows.append({"n": n, "dtype": dtype, "threads": nthreads,
                         "nnjit_gflops": round(g_ours, 1), "numpy_gflops": round(g_np, 1),
                         "ratio": round(g_ours / g_np, 3),
                         "nnjit_best_gflops": round(flop / min(mine) / 1e9, 1),
                         "numpy_best_gflops": round(flop / min(theirs) / 1e9, 1)})
    finally:
        for side in sides.values():
            side.close()
    return rows, ours.compile_s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--repeats", type=int, default=9, help="samples per side (median)")
    parser.add_argument("--sizes", default="256,512,1024,2048")
    parser.add_argument("--threads", default="1,2")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    threads = [int(t) for t in args.threads.split(",")]
    cases = [(n, "float32", t) for t in threads for n in sizes]
    cases += [(1024, "float64", t) for t in threads]
    rows, compile_s = measure(cases, args.repeats)
    if args.json:
        print(json.dumps({"runtime_load_s": round(compile_s, 3), "rows": rows}, indent=1))
        return
    print(f"runtime library compile+load: {compile_s:.2f} s;  medians of {args.repeats}")
    print(f"{'n':>6} {'dtype':>8} {'thr':>4} {'nnjit GF/s':>11} {'numpy GF/s':>11} {'ratio':>7}"
          f"   (best: nnjit / numpy)")
    for r in rows:
        print(f"{r['n']:>6} {r['dtype']:>8} {r['threads']:>4} {r['nnjit_gflops']:>11.1f} "
              f"{r['numpy_gflops']:>11.1f} {r['ratio']:>7.2f}   "
              f"({r['nnjit_best_gflops']:.0f} / {r['numpy_best_gflops']:.0f})")


if __name__ == "__main__":
    main()
