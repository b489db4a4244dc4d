"""Inference with constant weights: issue 14's forward rows (steps.py's MLP 784-512-512-10 at
batch 128 and LeNet-5 at batch 64), nnjit with the params as an argument, nnjit with
`constants=params` (pre-packed weights) and without pre-packing (NNJIT_PREPACK=0 at compile
time), next to onnxruntime on the same model (exported with nnjit.onnx.export). One process,
contenders taking turns, median of the rounds; every result checked against the interpreter.

    NNJIT_NUM_THREADS=1 python benchmarks/inference.py [--rounds 15] [--calls 20] [--cpu]

onnxruntime (intra_op_num_threads = NNJIT_NUM_THREADS, default 2) is skipped if not installed.
`--cpu` times the process's CPU time instead of the wall clock: on a loaded machine, with one
thread, a steadier figure (with two threads it also counts time spent waiting in spin loops).
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

import numpy as np

os.environ.setdefault("NNJIT_CACHE", "0")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import nnjit  # noqa: E402
from steps import _lenet, _mlp  # noqa: E402


def contenders(model, x, threads: int, d: str, name: str) -> dict:
    params = model.init(seed=0)
    want = nnjit.jit(model.apply, constants=params, backend="interp")(x)
    as_arg = nnjit.jit(lambda p, x: model.apply(p, x))
    const = nnjit.jit(model.apply, constants=params)
    os.environ["NNJIT_PREPACK"] = "0"
    unpacked = nnjit.jit(model.apply, constants=params).lower(x)     # compiled without prepack
    del os.environ["NNJIT_PREPACK"]
    out = {"params as argument": lambda: as_arg(params, x),
           "constants": lambda: const(x),
           "constants, no prepack": lambda: unpacked(x)}
    try:
        import onnxruntime as ort

        from nnjit import onnx as nnjit_onnx
    except ImportError:
        ort = None
    if ort is not None:
        path = os.path.join(d, name + ".onnx")
        nnjit_onnx.export(lambda x: model.apply(params, x), x, path=path)
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
        feed = {sess.get_inputs()[0].name: x}
        out["onnxruntime"] = lambda: sess.run(None, feed)[0]
    for label, fn in out.items():
        got = np.asarray(fn())
        err = float(np.max(np.abs(got - want)) / (np.max(np.abs(want)) or 1.0))
        if err > 1e-4:
            raise SystemExit(f"{name}: {label} differs from the interpreter by {err:.2e}")
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--rounds", type=int, default=15)
    p.add_argument("--calls", type=int, default=20)
    p.add_argument("--cpu", action="store_true", help="process CPU time, not wall time")
    a = p.parse_args(argv)
    clock = time.process_time if a.cpu else time.perf_counter
    threads = int(os.environ.get("NNJIT_NUM_THREADS", "2"))
    rng = np.random.default_rng(0)
    work = {"mlp_fwd_b128": (_mlp(), rng.standard_normal((128, 784)).astype(np.float32)),
            "lenet_fwd_b64": (_lenet(), rng.standard_normal((64, 1, 28, 28)).astype(np.float32))}
    print(f"threads {threads}; median of {a.rounds} rounds of {a.calls} calls, ms per call "
          f"({'CPU' if a.cpu else 'wall'} time)")
    with tempfile.TemporaryDirectory() as d:
        for name, (model, x) in work.items():
            cs = contenders(model, x, threads, d, name)
            times = {k: [] for k in cs}
            for _ in range(a.rounds):
                for k, fn in cs.items():
                    fn()
                    t = clock()
                    for _ in range(a.calls):
                        fn()
                    times[k].append((clock() - t) / a.calls)
            med = {k: statistics.median(v) for k, v in times.items()}
            ort = med.get("onnxruntime")
            for k, t in med.items():
                ratio = f"  nnjit/ort {t / ort:.2f}" if ort and k != "onnxruntime" else ""
                print(f"{name:14} {k:22} {t * 1e3:8.3f}{ratio}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
