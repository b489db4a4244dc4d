"""What the run-time index checks cost: `make run`'s training step (the digits ConvNet, batch
32, Adam, cross-entropy with checked labels) compiled twice in one process, with the checks
and with every `check_index` removed from the graph, timed in alternation (median of rounds).

    python benchmarks/check_cost.py [--rounds 15] [--batch 32]
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "examples"))

import nnjit  # noqa: E402
import models  # noqa: E402
from main import make_train_step  # noqa: E402
from nnjit import optim  # noqa: E402
from nnjit.ir import prims  # noqa: E402


def compile_step(checked: bool, args):
    model, opt = args["model"], args["opt"]
    fn = make_train_step(model, opt)
    real = prims.check_index
    if not checked:          # the same graph without its check kernels
        prims.check_index = lambda indices, *a, **k: indices
    try:
        return nnjit.jit(fn, backend="llvm", donate_argnums=(0, 1)).lower(*args["call"]())
    finally:
        prims.check_index = real


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=15, help="alternating timing rounds")
    ap.add_argument("--batch", type=int, default=32, help="batch size (make run uses 32)")
    ap.add_argument("--steps", type=int, default=50, help="steps per round")
    a = ap.parse_args(argv)
    rng = np.random.default_rng(0)
    model = models.convnet()
    opt = optim.Adam(1e-2)
    params = model.init(seed=0)
    x = rng.standard_normal((a.batch, 1, 8, 8)).astype(np.float32)
    y = rng.integers(0, 10, a.batch)

    def call():
        return (nnjit.tree_map(np.copy, params), opt.init(params), x, y, np.float32(1.0),
                np.int64(0))

    ctx = {"model": model, "opt": opt, "call": call}
    cfs = {True: compile_step(True, ctx), False: compile_step(False, ctx)}
    n_checks = {k: sum(n.op.value == "check_index" for n in cf.graph.nodes)
                for k, cf in cfs.items()}
    times = {True: [], False: []}
    native = {True: [], False: []}
    state = {k: call() for k in cfs}
    flat = {k: cfs[k].flat_args(call()) for k in cfs}
    for r in range(a.rounds):
        for checked in ((True, False) if r % 2 == 0 else (False, True)):
            p, s, xb, yb, lr, seed = state[checked]
            t0 = time.perf_counter()
            for _ in range(a.steps):
                p, s, _, _ = cfs[checked](p, s, xb, yb, lr, seed)
            times[checked].append((time.perf_counter() - t0) / a.steps * 1e3)
            state[checked] = (p, s, xb, yb, lr, seed)
            exe = cfs[checked].executable
            t0 = time.perf_counter()
            for _ in range(a.steps):
                exe(flat[checked])
            native[checked].append((time.perf_counter() - t0) / a.steps * 1e3)
    for label, t in (("step call", times), ("native code alone", native)):
        on, off = statistics.median(t[True]), statistics.median(t[False])
        print(f"{label}: with checks ({n_checks[True]} check kernel) {on:.4f} ms, without "
              f"{off:.4f} ms (medians of {a.rounds}; minima {min(t[True]):.4f} / "
              f"{min(t[False]):.4f}): cost {100 * (on / off - 1):+.1f}%")


if __name__ == "__main__":
    main()
