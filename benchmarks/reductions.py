"""Reduction kernels on the llvm backend, timed (median of repeats, ms), with their error
against math.fsum: the accurate-sum work's speed and accuracy, in one run.

    python benchmarks/reductions.py            # prints a table, then a JSON line
    python benchmarks/compare_trees.py OLD/src NEW/src benchmarks/reductions.py
"""
from __future__ import annotations

import json
import math
import statistics
import sys
import time

import numpy as np

import nnjit
from nnjit import nn

RNG = np.random.default_rng(0)


def _time(fn, args, repeats: int) -> float:
    fn(*args)
    reps = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn(*args)
        reps.append(time.perf_counter() - t)
    return statistics.median(reps) * 1e3


def workloads():
    big = RNG.random(1 << 24).astype(np.float32)
    rows = RNG.standard_normal((4096, 1000)).astype(np.float32)
    cols = RNG.standard_normal((1 << 18, 64)).astype(np.float32)
    mid = RNG.random(1 << 16).astype(np.float32)
    labels = RNG.integers(0, 1000, 4096)
    return {
        "sum f32[2^24]": (lambda x: x.sum(), (big,)),
        "sum f32[2^16]": (lambda x: x.sum(), (mid,)),
        "mean f32[4096,4096]": (lambda x: x.mean(), (big.reshape(4096, 4096),)),
        "row sums f32[4096,1000]": (lambda x: x.sum(axis=1), (rows,)),
        "softmax rows [4096,1000]": (lambda x: nnjit.softmax(x, axis=-1), (rows,)),
        "column sums f32[2^18,64]": (lambda x: x.sum(axis=0), (cols,)),
        "cross-entropy [4096,1000]": (lambda x, y: nn.cross_entropy(x, y), (rows, labels)),
    }


def main() -> None:
    repeats = int(sys.argv[1]) if len(sys.argv) > 1 else 15
    out = {}
    for name, (fn, args) in workloads().items():
        f = nnjit.jit(fn, backend="llvm")
        out[name] = _time(f, args, repeats)
        if name.startswith("sum"):
            got = float(f(*args))
            exact = math.fsum(args[0].astype(np.float64))
            print(f"{name:<30} {out[name]:8.3f} ms  rel. error {abs(got - exact) / exact:.1e}")
        else:
            print(f"{name:<30} {out[name]:8.3f} ms")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
