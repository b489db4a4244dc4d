"""Compiled training steps and forward passes of the example model families, timed on llvm.

    python benchmarks/steps.py [--repeats 21] [--json]

Written against the public API only (nn.Sequential, nn.LSTM, optim, jit), so the same script
times any source tree: `benchmarks/compare_trees.py OLD/src NEW/src benchmarks/steps.py` puts
two commits side by side. Each workload is compiled once (the disk cache is off, so the compile
time is real), checked against the interpreter, then called `--repeats` times; the figure is the
median call in milliseconds. The last line of output is one JSON object {workload: ms}.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import numpy as np

os.environ.setdefault("NNJIT_CACHE", "0")

import nnjit  # noqa: E402
from nnjit import nn, optim  # noqa: E402


def _step(model, loss, opt, backend):
    def train_step(params, state, x, y):
        value, grads = nnjit.value_and_grad(lambda p: loss(model.apply(p, x), y))(params)
        params, state = opt.update(params, grads, state)
        return params, state, value
    return nnjit.jit(train_step, backend=backend)


def _mlp():
    return nn.Sequential(nn.Linear(784, 512), nn.ReLU(), nn.Linear(512, 512), nn.ReLU(),
                         nn.Linear(512, 10))


def _lenet():
    return nn.Sequential(nn.Conv2d(1, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                         nn.Linear(16 * 5 * 5, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(),
                         nn.Linear(84, 10))


def _char_lstm_step(rng, steps, batch):
    """A char-LSTM training step (vocab 96, embedding 64, hidden 256, BPTT over `steps`, Adam)
    on embedded inputs: (jit factory, arguments)."""
    lstm = nn.LSTM(64, 256)
    head = nn.Linear(256, 96)
    params = {"lstm": lstm.init(seed=0), "head": head.init(seed=1)}
    opt = optim.Adam(lr=1e-3)
    xs = rng.standard_normal((steps, batch, 64)).astype(np.float32)      # T, B, E
    ys = rng.integers(0, 96, (steps, batch)).astype(np.int64)

    def lstm_loss(p, xs, ys):
        hs, _ = lstm.apply(p["lstm"], xs)
        return nn.cross_entropy(head.apply(p["head"], hs).reshape(-1, 96), ys.reshape(-1))

    def lstm_step(b):
        def step(p, s, xs, ys):
            value, grads = nnjit.value_and_grad(lambda q: lstm_loss(q, xs, ys))(p)
            p, s = opt.update(p, grads, s)
            return p, s, value
        return nnjit.jit(step, backend=b)
    return lstm_step, (params, opt.init(params), xs, ys)


def workloads(rng):
    """name -> (jit function factory taking a backend, argument tuple)."""
    out = {}
    for name, model, shape, batch in [("mlp_step_b128", _mlp(), (784,), 128),
                                      ("lenet_step_b64", _lenet(), (1, 28, 28), 64)]:
        params = model.init(seed=0)
        opt = optim.SGD(lr=0.01, momentum=0.9)
        x = rng.standard_normal((batch, *shape)).astype(np.float32)
        y = rng.integers(0, 10, batch).astype(np.int64)
        out[name] = (lambda b, m=model, o=opt: _step(m, nn.cross_entropy, o, b),
                     (params, opt.init(params), x, y))
        out[name.replace("step", "forward")] = (
            lambda b, m=model: nnjit.jit(lambda p, x: m.apply(p, x), backend=b), (params, x))

    for t, b in ((32, 16), (64, 32)):     # (64, 32): issue 14's char-LSTM size
        out[f"lstm_step_t{t}_b{b}"] = _char_lstm_step(rng, t, b)

    logits = rng.standard_normal((4096, 1000)).astype(np.float32)
    labels = rng.integers(0, 1000, 4096).astype(np.int64)
    out["softmax_ce_fwd_bwd"] = (
        lambda b: nnjit.jit(nnjit.value_and_grad(lambda z, y: nn.cross_entropy(z, y)),
                            backend=b), (logits, labels))
    big = rng.standard_normal(1 << 22).astype(np.float32)
    out["elementwise_chain_4M"] = (
        lambda b: nnjit.jit(lambda x: nnjit.tanh(nnjit.exp(-x * x) * 0.5 + x).sum() * 2.0,
                            backend=b), (big,))
    return out


def _close(a, b) -> bool:
    fa, fb = nnjit.tree_leaves(a), nnjit.tree_leaves(b)
    return len(fa) == len(fb) and all(np.allclose(np.asarray(x), np.asarray(y), rtol=2e-3, atol=2e-4)
               for x, y in zip(fa, fb))


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=21, help="timed calls per workload")
    ap.add_argument("--only", default="", help="comma-separated workload names (default all)")
    ap.add_argument("--json", action="store_true", help="print only the JSON line")
    a = ap.parse_args(argv)
    rng = np.random.default_rng(0)
    res = {}
    for name, (make, args) in workloads(rng).items():
        if a.only and name not in a.only.split(","):
            continue
        t = time.perf_counter()
        fn = make("llvm")
        got = fn(*args)
        res[f"{name}_compile_s"] = round(time.perf_counter() - t, 3)
        if not _close(got, make("interp")(*args)):
            raise SystemExit(f"{name}: llvm and the interpreter disagree")
        times = []
        for _ in range(a.repeats):
            t = time.perf_counter()
            fn(*args)
            times.append(time.perf_counter() - t)
        res[name] = round(1e3 * statistics.median(times), 4)
        if not a.json:
            print(f"{name:24s} {res[name]:10.3f} ms   compile {res[name + '_compile_s']:.2f} s")
    print(json.dumps(res))


if __name__ == "__main__":
    main()
