"""Steps at the default thread count against NNJIT_NUM_THREADS=1, with and without a busy core.

    python benchmarks/contention.py [--repeats 7] [--busy] [--only make_run_step,...] [--json]

`--busy` starts a pure-Python busy loop pinned to the last CPU this process may use (the
situation issue 14 names: another process owning one core) for the whole run. Each workload is
compiled twice in this process, once per thread count (NNJIT_NUM_THREADS is read at compile
time), and the two are timed in alternating rounds of consecutive calls; the figure is the
median round's milliseconds per call. The last line of output is one JSON object
{workload_tN: ms, workload_ratio: default/one-thread}.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import time

import numpy as np

os.environ.setdefault("NNJIT_CACHE", "0")
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "examples"))
sys.path.insert(0, HERE)

import nnjit  # noqa: E402
from nnjit import nn, optim  # noqa: E402


def _make_run_step():
    """`make run`'s training step (examples/main.py) on a batch of 32 digits."""
    import data  # noqa: PLC0415
    import main  # noqa: PLC0415
    import models  # noqa: PLC0415

    split = data.digits(images=True)
    model = models.convnet(channels=(16, 32), dropout=0.2)
    opt = optim.Adam(1e-2, weight_decay=1e-4)
    params = model.init(seed=0)
    args = (params, opt.init(params), split.x_train[:32], split.y_train[:32], np.float32(1.0),
            np.int64(0))
    step = main.make_train_step(model, opt)
    return lambda: nnjit.jit(step, backend="llvm", name="train_step"), args


def _mlp_step(batch: int):
    model = nn.Sequential(nn.Linear(784, 512), nn.ReLU(), nn.Linear(512, 512), nn.ReLU(),
                          nn.Linear(512, 10))
    params = model.init(seed=0)
    opt = optim.SGD(lr=0.01, momentum=0.9)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((batch, 784)).astype(np.float32)
    y = rng.integers(0, 10, batch).astype(np.int64)

    def step(p, s, x, y):
        value, grads = nnjit.value_and_grad(lambda q: nn.cross_entropy(model.apply(q, x), y))(p)
        p, s = opt.update(p, grads, s)
        return p, s, value
    return lambda: nnjit.jit(step, backend="llvm"), (params, opt.init(params), x, y)


def workloads() -> dict:
    import steps  # noqa: PLC0415

    out = {"make_run_step": _make_run_step(), "mlp_step_b16": _mlp_step(16)}
    for name, (make, args) in steps.workloads(np.random.default_rng(0)).items():
        if name in ("mlp_step_b128", "lenet_step_b64", "lstm_step_t32_b16"):
            out[name] = (lambda m=make: m("llvm"), args)
    return out


@contextlib.contextmanager
def busy_core(on: bool):
    if not on:
        yield
        return
    cpu = max(os.sched_getaffinity(0))
    proc = subprocess.Popen([sys.executable, "-c",
                             f"import os; os.sched_setaffinity(0, {{{cpu}}})\nwhile True: pass"])
    try:
        time.sleep(0.5)
        yield
    finally:
        proc.kill()
        proc.wait()


def compile_at(make, threads: str):
    saved = os.environ.get("NNJIT_NUM_THREADS")
    os.environ["NNJIT_NUM_THREADS"] = threads
    try:
        return make()
    finally:
        if saved is None:
            del os.environ["NNJIT_NUM_THREADS"]
        else:
            os.environ["NNJIT_NUM_THREADS"] = saved


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=7, help="alternating rounds per workload")
    ap.add_argument("--round-s", type=float, default=0.15, help="seconds per round")
    ap.add_argument("--busy", action="store_true", help="keep one core busy meanwhile")
    ap.add_argument("--only", default="", help="comma-separated workload names (default all)")
    ap.add_argument("--json", action="store_true", help="print only the JSON line")
    a = ap.parse_args(argv)
    default = str(len(os.sched_getaffinity(0)))
    res = {}
    for name, (make, args) in workloads().items():
        if a.only and name not in a.only.split(","):
            continue
        fns = {t: compile_at(make, t) for t in (default, "1")}
        for fn in fns.values():
            fn(*args)
        with busy_core(a.busy):
            def once(fn, calls):
                t0 = time.perf_counter()
                for _ in range(calls):
                    fn(*args)
                return (time.perf_counter() - t0) / calls
            calls = {t: max(2, min(500, int(a.round_s / once(fn, 2)))) for t, fn in fns.items()}
            samples = {t: [] for t in fns}
            for r in range(a.repeats):
                order = list(fns) if r % 2 == 0 else list(fns)[::-1]
                for t in order:
                    samples[t].append(once(fns[t], calls[t]))
        for t in fns:
            res[f"{name}_t{t}"] = round(1e3 * statistics.median(samples[t]), 4)
        res[f"{name}_ratio"] = round(res[f"{name}_t{default}"] / res[f"{name}_t1"], 3)
        if not a.json:
            print(f"{name:22s} {default} threads {res[f'{name}_t{default}']:9.3f} ms   "
                  f"1 thread {res[f'{name}_t1']:9.3f} ms   ratio {res[f'{name}_ratio']:.2f}"
                  f"{'   (one core busy)' if a.busy else ''}", flush=True)
    print(json.dumps(res))


if __name__ == "__main__":
    main()
