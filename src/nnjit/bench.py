"""`nnjit bench`: fused against unfused (and against numpy), side by side in one run.

Each workload is compiled twice with the same backend — with the fusion pass and without — and
both are timed in alternation (median of repeats after a warm-up). The table reports median
time, speed-up, kernel count, bytes moved (each kernel's reads and writes) and peak memory
(arena + results).
"""
from __future__ import annotations

import json
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Callable

import numpy as np

from .api import JitFunction
from .codegen.analysis import kernel_bytes


@dataclass
class Workload:
    name: str
    fn: Callable
    make_args: Callable[[], tuple]
    baseline: Callable | None = None       # a numpy implementation to compare with
    donate: tuple[int, ...] = ()
    note: str = ""


@dataclass
class Row:
    name: str
    fused_ms: float
    unfused_ms: float
    speedup: float
    fused_kernels: int
    unfused_kernels: int
    fused_bytes: int
    unfused_bytes: int
    fused_peak: int
    unfused_peak: int
    numpy_ms: float | None = None
    compile_s: dict = field(default_factory=dict)


def bytes_moved(program) -> int:
    """Bytes each kernel reads and writes (whole buffers; a rough traffic measure)."""
    return sum(kernel_bytes(program, k) for k in program.kernels)


def _time(fn, args, repeats: int, min_time: float = 0.05) -> list[float]:
    """Seconds per call: each sample runs enough calls to last `min_time`."""
    fn(*args)
    t0 = time.perf_counter()
    fn(*args)
    once = max(time.perf_counter() - t0, 1e-7)
    inner = max(1, int(min_time / once))
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(inner):
            fn(*args)
        out.append((time.perf_counter() - t0) / inner)
    return out


def run_workload(w: Workload, backend: str = "llvm", repeats: int = 7,
                 progress=None) -> Row:
    args = w.make_args()
    compiled, compile_s = {}, {}
    for fuse in (True, False):
        t0 = time.perf_counter()
        jf = JitFunction(w.fn, backend=backend, fuse=fuse, donate_argnums=w.donate)
        cf = jf.lower(*args)
        compile_s["fused" if fuse else "unfused"] = round(time.perf_counter() - t0, 3)
        compiled[fuse] = cf
        if progress:
            progress(f"{w.name}: compiled {'fused' if fuse else 'unfused'} in "
                     f"{compile_s['fused' if fuse else 'unfused']:.2f} s")
    # Alternate the two so machine noise hits both alike.
    samples: dict = {True: [], False: []}
    for _ in range(max(1, repeats // 3)):
        for fuse in (True, False):
            samples[fuse] += _time(compiled[fuse], args, 3)
    med = {k: statistics.median(v) for k, v in samples.items()}
    numpy_ms = None
    if w.baseline is not None:
        numpy_ms = statistics.median(_time(w.baseline, args, repeats)) * 1e3
    low = {k: cf.lowered() for k, cf in compiled.items()}
    peak = {k: cf.memory_plan().total_bytes + cf.memory_plan().results_bytes
            for k, cf in compiled.items()}
    return Row(w.name, med[True] * 1e3, med[False] * 1e3, med[False] / med[True],
               len(low[True].program.kernels), len(low[False].program.kernels),
               bytes_moved(low[True].program), bytes_moved(low[False].program),
               peak[True], peak[False], numpy_ms, compile_s)


# -- the built-in suite ---------------------------------------------------------------------

def _elementwise_chain(n: int = 1 << 24) -> Workload:
    import nnjit

    def chain(x):
        return nnjit.tanh(x * 1.5 + 0.5) * nnjit.sigmoid(x) + nnjit.relu(x - 0.25)

    def numpy_chain(x):
        return np.tanh(x * 1.5 + 0.5) * (1 / (1 + np.exp(-x))) + np.maximum(x - 0.25, 0)

    label = f"{n >> 20}M" if n >= 1 << 20 else str(n)
    return Workload(f"elementwise chain {label}", chain,
                    lambda: (np.random.default_rng(0).standard_normal(n, np.float32),),
                    numpy_chain)


def _softmax_xent() -> Workload:
    import nnjit

    def loss(logits, labels):
        return -(nnjit.one_hot(labels, logits.shape[1]) * nnjit.log_softmax(logits)).sum() \
            / logits.shape[0]

    def step(logits, labels):
        return nnjit.value_and_grad(loss)(logits, labels)

    def numpy_step(logits, labels):
        m = logits.max(axis=1, keepdims=True)
        e = np.exp(logits - m)
        s = e.sum(axis=1, keepdims=True)
        logp = logits - m - np.log(s)
        n = logits.shape[0]
        value = -logp[np.arange(n), labels].sum() / n
        g = e / s
        g[np.arange(n), labels] -= 1.0
        return value, g / n

    rng = np.random.default_rng(0)
    return Workload("softmax cross-entropy 4096x1000 fwd+bwd", step,
                    lambda: (rng.standard_normal((4096, 1000), np.float32),
                             rng.integers(0, 1000, 4096)), numpy_step)


def classifier_step(name: str, model, input_shape: tuple[int, ...], batch: int,
                    baseline: Callable | None = None) -> Workload:
    """An SGD training step (cross-entropy, lr 0.01) of `model` on random inputs and labels."""
    import nnjit

    from . import nn

    def step(params, x, y):
        value, grads = nnjit.value_and_grad(
            lambda p: nn.cross_entropy(model.apply(p, x), y))(params)
        return _sgd(params, grads, 0.01), value

    def make():
        rng = np.random.default_rng(0)
        return (model.init(seed=0), rng.standard_normal((batch,) + input_shape, np.float32),
                rng.integers(0, 10, batch))

    return Workload(f"{name} training step, batch {batch}", step, make, baseline, donate=(0,))


def mlp_step_workload(batch: int = 128) -> Workload:
    from . import nn

    model = nn.Sequential(nn.Linear(784, 512), nn.ReLU(), nn.Linear(512, 512), nn.ReLU(),
                          nn.Linear(512, 10))
    return classifier_step("MLP 784-512-512-10", model, (784,), batch, numpy_mlp_step)


def _sgd(params, grads, lr):
    from .frontend.pytree import tree_map

    return tree_map(lambda p, g: p - lr * g, params, grads)


def numpy_mlp_step(params, x, y, lr: float = 0.01):
    """The same SGD step written by hand in numpy (the baseline the issue compares against)."""
    w = [params[k]["weight"] for k in ("0", "2", "4")]
    b = [params[k]["bias"] for k in ("0", "2", "4")]
    h1 = np.maximum(x @ w[0].T + b[0], 0)
    h2 = np.maximum(h1 @ w[1].T + b[1], 0)
    z = h2 @ w[2].T + b[2]
    m = z.max(axis=1, keepdims=True)
    e = np.exp(z - m)
    p = e / e.sum(axis=1, keepdims=True)
    n = x.shape[0]
    loss = -np.log(p[np.arange(n), y]).mean()
    dz = p
    dz[np.arange(n), y] -= 1
    dz /= n
    dw2, db2 = dz.T @ h2, dz.sum(0)
    dh2 = (dz @ w[2]) * (h2 > 0)
    dw1, db1 = dh2.T @ h1, dh2.sum(0)
    dh1 = (dh2 @ w[1]) * (h1 > 0)
    dw0, db0 = dh1.T @ x, dh1.sum(0)
    new = {}
    for k, wi, bi, dw, db in zip(("0", "2", "4"), w, b, (dw0, dw1, dw2), (db0, db1, db2)):
        new[k] = {"weight": wi - lr * dw, "bias": bi - lr * db}
    return new, loss


def _convnet_step(batch: int = 64) -> Workload:
    from . import nn

    model = nn.Sequential(nn.Conv2d(1, 6, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(6, 16, 5),
                          nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(400, 120),
                          nn.ReLU(), nn.Linear(120, 84), nn.ReLU(), nn.Linear(84, 10))
    return classifier_step("LeNet-5", model, (1, 32, 32), batch)


def _lstm_step(vocab=96, embed=64, hidden=256, steps=64, batch=32) -> Workload:
    import nnjit

    from . import nn

    emb, lstm, head = nn.Embedding(vocab, embed), nn.LSTM(embed, hidden), nn.Linear(hidden, vocab)

    def loss(p, ids, targets):
        x = emb.apply(p["emb"], ids)
        ys, _ = lstm.apply(p["lstm"], x)
        logits = head.apply(p["head"], ys)
        return nn.cross_entropy(logits.reshape(-1, vocab), targets.reshape(-1))

    def step(params, ids, targets):
        value, grads = nnjit.value_and_grad(loss)(params, ids, targets)
        return _sgd(params, grads, 0.1), value

    def make():
        rng = np.random.default_rng(0)
        params = {"emb": emb.init(seed=0), "lstm": lstm.init(seed=1), "head": head.init(seed=2)}
        ids = rng.integers(0, vocab, (steps, batch))
        return params, ids, np.roll(ids, -1, axis=0)

    return Workload(f"char-LSTM step (V{vocab} E{embed} H{hidden} T{steps} B{batch})", step,
                    make, donate=(0,))


SUITE: dict[str, Callable[[], Workload]] = {
    "elementwise": _elementwise_chain,
    "softmax_xent": _softmax_xent,
    "mlp": mlp_step_workload,
    "convnet": _convnet_step,
    "lstm": _lstm_step,
}


def format_table(rows: list[Row], backend: str) -> str:
    head = (f"{'workload':<48} {'fused ms':>9} {'unfused':>9} {'speedup':>8} {'numpy':>8} "
            f"{'kernels':>9} {'MB moved':>13} {'peak MB':>13}")
    lines = [f"nnjit bench (backend {backend}; medians; fused vs unfused side by side)", head,
             "-" * len(head)]
    for r in rows:
        np_ms = f"{r.numpy_ms:8.2f}" if r.numpy_ms is not None else f"{'-':>8}"
        lines.append(
            f"{r.name[:48]:<48} {r.fused_ms:9.2f} {r.unfused_ms:9.2f} {r.speedup:7.2f}x "
            f"{np_ms} {r.fused_kernels:>4}/{r.unfused_kernels:<4} "
            f"{r.fused_bytes / 1e6:6.1f}/{r.unfused_bytes / 1e6:<6.1f} "
            f"{r.fused_peak / 1e6:6.1f}/{r.unfused_peak / 1e6:<6.1f}")
    lines.append("(kernels, MB moved and peak MB are fused/unfused)")
    return "\n".join(lines)


#: `--small` sizes (for the CUDA simulator or a quick look), where a workload has them.
SMALL: dict[str, dict] = {"elementwise": {"n": 4096}, "mlp": {"batch": 2},
                          "convnet": {"batch": 1}}


def main(names: list[str] | None = None, backend: str = "llvm", repeats: int = 7,
         as_json: bool = False, workloads: list[Workload] | None = None,
         small: bool = False) -> list[Row]:
    todo = workloads if workloads is not None else [
        SUITE[n](**(SMALL.get(n, {}) if small else {})) for n in (names or list(SUITE))]
    rows = []

    def progress(msg: str) -> None:
        print(f"  .. {msg}", file=sys.stderr, flush=True)

    for w in todo:
        progress(f"{w.name}: compiling fused and unfused")
        rows.append(run_workload(w, backend, repeats, progress))
    if as_json:
        print(json.dumps({"backend": backend, "rows": [asdict(r) for r in rows]}, indent=2))
    else:
        print(format_table(rows, backend))
    return rows
