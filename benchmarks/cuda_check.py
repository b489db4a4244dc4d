"""On a machine with a GPU: the op suite on the cuda backend, matmul GFLOP/s and training-step
times, against PyTorch (and CuPy) on the same GPU where they are installed, and the MLP step's
compile time cold, cached in the process and from the disk cache, and a small RNN scan looped
in one launch against the host loop. One table, under 4 minutes (a global time budget: what
does not fit is skipped with a note).

    PYTHONPATH=src python benchmarks/cuda_check.py            # full sizes
    PYTHONPATH=src python benchmarks/cuda_check.py --quick    # fewer cases, smaller sizes
    PYTHONPATH=src python benchmarks/cuda_check.py --quick --sim   # tiny, Numba's simulator

Timings synchronize the device around each measured call; nnjit's arguments are device arrays
(parameters donated, so a step updates them in place) and its results stay on the device.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class Budget:
    def __init__(self, seconds: float):
        self.end = time.perf_counter() + seconds

    def left(self) -> float:
        return self.end - time.perf_counter()


def timeit(fn, sync, repeats: int, budget: Budget) -> float:
    """Median seconds per call of fn() after one warm-up call (compilation included there)."""
    fn()
    sync()
    out = []
    for _ in range(repeats):
        if out and budget.left() < 5:
            break
        t0 = time.perf_counter()
        fn()
        sync()
        out.append(time.perf_counter() - t0)
    return statistics.median(out)


# -- the op suite -------------------------------------------------------------------------------
def op_suite(budget: Budget, share: float, quick: bool) -> tuple[list[str], str]:
    import numpy as np

    sys.path.insert(0, ROOT)
    from tests.op_cases import CASES, check_case

    stop = time.perf_counter() + budget.left() * share
    passed, failed, skipped = 0, [], 0
    todo = [(c, d) for c in CASES for d in c.dtypes]
    if quick:
        todo = [(c, c.dtypes[0]) for c in CASES]
    for case, dtype in todo:
        if time.perf_counter() > stop:
            skipped += 1
            continue
        try:
            check_case(case, case.make_inputs(np.random.default_rng(0), dtype), "cuda")
            passed += 1
        except Exception as e:  # noqa: BLE001  (a report, not a test runner)
            failed.append(f"{case.name}-{np.dtype(dtype).name}: {type(e).__name__}: "
                          f"{str(e).splitlines()[0][:100] if str(e) else ''}")
    line = f"op suite on cuda: {passed} passed, {len(failed)} failed"
    if skipped:
        line += f", {skipped} skipped (time budget)"
    return failed, line


# -- matmul -------------------------------------------------------------------------------------
def matmul_rows(sizes, budget: Budget, repeats: int, torch, cupy) -> list[tuple]:
    import numpy as np
    from numba import cuda

    import nnjit

    rows = []
    f = nnjit.jit(lambda a, b: a @ b, backend="cuda")
    for n in sizes:
        if budget.left() < 20:
            rows.append((f"matmul {n}", "skipped (time budget)", "", ""))
            continue
        rng = np.random.default_rng(0)
        a, b = (rng.standard_normal((n, n), np.float32) for _ in range(2))
        da, db = cuda.to_device(a), cuda.to_device(b)
        flop = 2.0 * n ** 3
        t = timeit(lambda: f(da, db), cuda.synchronize, repeats, budget)
        ours = f"{flop / t / 1e9:10.1f}"
        theirs = other = "-"
        if torch is not None:
            ta, tb = torch.from_numpy(a).cuda(), torch.from_numpy(b).cuda()
            tt = timeit(lambda: ta @ tb, torch.cuda.synchronize, repeats, budget)
            theirs = f"{flop / tt / 1e9:10.1f}"
        if cupy is not None:
            ca, cb = cupy.asarray(a), cupy.asarray(b)
            tc = timeit(lambda: ca @ cb, cupy.cuda.Device().synchronize, repeats, budget)
            other = f"{flop / tc / 1e9:10.1f}"
        rows.append((f"matmul {n} f32 GFLOP/s", ours, theirs, other))
    return rows


# -- a scan: looped in one launch vs stepped from the host ------------------------------------
def scan_rows(steps: int, hidden: int, batch: int, budget: Budget, repeats: int) -> list[tuple]:
    """ms per call of a small RNN scan (tanh(h @ w + x)) run as one launch that loops over the
    steps (what small bodies get) and as the host loop launching its body every step."""
    import dataclasses

    import numpy as np
    from numba import cuda

    import nnjit
    from nnjit.backends import cuda as backend
    from nnjit.backends.signature import ArgSpec
    from nnjit.codegen import lower_graph

    if budget.left() < 30:
        return [(f"RNN scan T={steps}", "skipped (time budget)", "", "")]
    rng = np.random.default_rng(0)
    args = [rng.standard_normal((batch, hidden), np.float32),
            rng.standard_normal((steps, batch, hidden), np.float32),
            (rng.standard_normal((hidden, hidden)) / np.sqrt(hidden)).astype(np.float32)]

    def rnn(h, xs, w):
        return nnjit.scan(lambda h, x: (nnjit.tanh(h @ w + x), h.sum()), h, xs)

    graph = nnjit.compile(rnn, *args, backend="interp").graph
    program = lower_graph(graph).program
    ins = [ArgSpec(f"a{i}", a.shape, a.dtype) for i, a in enumerate(args)]
    outs = [ArgSpec(f"r{i}", t.shape, t.dtype.np) for i, t in enumerate(graph.output_types)]
    dargs = [cuda.to_device(a) for a in args]
    rows = []
    for label, work in [("one launch", None), ("host loop", 0)]:
        tgt = backend.target()
        tgt = tgt if work is None else dataclasses.replace(tgt, scan_loop_work=work)
        exe = backend.compile_program(program, ins, outs, tgt=tgt)
        t = timeit(lambda: exe(dargs), cuda.synchronize, repeats, budget)
        rows.append((f"RNN scan T={steps} h={hidden} b={batch}, {label}: ms", f"{t * 1e3:10.3f}",
                     "-", "-"))
    return rows


# -- training steps -----------------------------------------------------------------------------
def _to_device(tree):
    from numba import cuda

    from nnjit.frontend.pytree import tree_map

    return tree_map(lambda x: cuda.to_device(x) if hasattr(x, "shape") else x, tree)


def mlp(widths, batch):
    import numpy as np

    import nnjit
    from nnjit import nn

    layers = []
    for i in range(len(widths) - 1):
        layers.append(nn.Linear(widths[i], widths[i + 1]))
        if i < len(widths) - 2:
            layers.append(nn.ReLU())
    model = nn.Sequential(*layers)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((batch, widths[0]), np.float32)
    y = rng.integers(0, widths[-1], batch)
    return model, x, y, nnjit


def lenet(batch, size=32):
    import numpy as np

    from nnjit import nn

    side = ((size - 4) // 2 - 4) // 2
    flat = 16 * side * side
    model = nn.Sequential(nn.Conv2d(1, 6, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(6, 16, 5),
                          nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(flat, 120),
                          nn.ReLU(), nn.Linear(120, 84), nn.ReLU(), nn.Linear(84, 10))
    rng = np.random.default_rng(0)
    return model, rng.standard_normal((batch, 1, size, size), np.float32), \
        rng.integers(0, 10, batch)


def sgd_step(model):
    import nnjit
    from nnjit import nn
    from nnjit.frontend.pytree import tree_map

    def step(params, x, y):
        value, grads = nnjit.value_and_grad(
            lambda p: nn.cross_entropy(model.apply(p, x), y))(params)
        return tree_map(lambda w, g: w - 0.01 * g, params, grads), value
    return step


def compile_rows(name, model, x, y, budget: Budget) -> list[tuple]:
    """Seconds from `jit` to the first step's result: cold (NNJIT_CACHE=0), again in the same
    process (the loaded kernels reused), and from the disk cache alone (what a new process
    sees: cubins, real GPUs only)."""
    import tempfile

    from numba import cuda

    import nnjit
    from nnjit.backends.cuda import kernel_cache, simulating

    if budget.left() < 20:
        return [(f"compile {name}", "skipped (time budget)", "", "")]
    params = model.init(seed=0)

    def first() -> float:
        t0 = time.perf_counter()
        nnjit.jit(sgd_step(model), backend="cuda")(params, x, y)
        cuda.synchronize()
        return time.perf_counter() - t0

    saved = {k: os.environ.get(k) for k in ("NNJIT_CACHE", "NNJIT_CACHE_DIR")}
    rows = []
    with tempfile.TemporaryDirectory() as d:
        try:
            os.environ["NNJIT_CACHE_DIR"] = d
            os.environ["NNJIT_CACHE"] = "0"
            rows.append((f"compile {name}: cold, s", f"{first():10.2f}", "-", "-"))
            os.environ["NNJIT_CACHE"] = "1"
            first()                                     # fills both layers
            rows.append((f"compile {name}: same process, s", f"{first():10.2f}", "-", "-"))
            kernel_cache.clear()                        # a new process's view: disk only
            disk = "simulator" if simulating() else f"{first():10.2f}"
            rows.append((f"compile {name}: disk cache, s", disk, "-", "-"))
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
    return rows


def step_row(name, model, x, y, budget: Budget, repeats: int, torch) -> tuple:
    from numba import cuda

    import nnjit

    if budget.left() < 30:
        return (name, "skipped (time budget)", "", "")

    f = nnjit.jit(sgd_step(model), backend="cuda", donate_argnums=(0,))
    state = {"p": _to_device(model.init(seed=0))}
    dx, dy = cuda.to_device(x), cuda.to_device(y)

    def run():
        state["p"], _ = f(state["p"], dx, dy)

    t0 = time.perf_counter()
    ours = timeit(run, cuda.synchronize, repeats, budget)
    first = time.perf_counter() - t0
    theirs = "-"
    if torch is not None:
        theirs = f"{torch_step_ms(model, x, y, torch, repeats, budget):10.3f}"
    return (f"{name} ms/step (compile+first {first:.1f} s)", f"{ours * 1e3:10.3f}", theirs, "-")


def torch_step_ms(model, x, y, torch, repeats, budget) -> float:
    """The same network in PyTorch (SGD, lr 0.01) on the same GPU."""
    from nnjit import nn as nj

    mods = []
    for m in (model[i] for i in range(len(model))):
        if isinstance(m, nj.Linear):
            mods.append(torch.nn.Linear(m.in_features, m.out_features))
        elif isinstance(m, nj.Conv2d):
            mods.append(torch.nn.Conv2d(m.in_channels, m.out_channels, m.kernel_size))
        elif isinstance(m, nj.MaxPool2d):
            mods.append(torch.nn.MaxPool2d(m.kernel_size))
        elif isinstance(m, nj.Flatten):
            mods.append(torch.nn.Flatten())
        else:
            mods.append(torch.nn.ReLU())
    net = torch.nn.Sequential(*mods).cuda()
    opt = torch.optim.SGD(net.parameters(), lr=0.01)
    tx, ty = torch.from_numpy(x).cuda(), torch.from_numpy(y).cuda()

    def run():
        opt.zero_grad(set_to_none=True)
        loss = torch.nn.functional.cross_entropy(net(tx), ty)
        loss.backward()
        opt.step()

    return timeit(run, torch.cuda.synchronize, repeats, budget) * 1e3


# -- main ---------------------------------------------------------------------------------------
def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer op cases, smaller sizes")
    ap.add_argument("--sim", action="store_true", help="Numba's CUDA simulator, tiny sizes")
    ap.add_argument("--budget", type=float, default=220.0, help="seconds for everything")
    a = ap.parse_args(argv)
    if a.sim:
        os.environ["NUMBA_ENABLE_CUDASIM"] = "1"
    budget = Budget(a.budget)
    from numba import cuda

    from nnjit.backends import cuda as backend

    backend.check_available()
    torch = cupy = None
    try:
        import torch as _torch

        torch = _torch if _torch.cuda.is_available() and not a.sim else None
    except ImportError:
        pass
    try:
        import cupy as _cupy

        cupy = None if a.sim else _cupy
    except ImportError:
        pass
    dev = "CUDA simulator" if a.sim else cuda.get_current_device().name
    dev = dev.decode() if isinstance(dev, bytes) else dev
    print(f"nnjit cuda check on {dev}; torch {'yes' if torch else 'no'}, "
          f"cupy {'yes' if cupy else 'no'}; budget {a.budget:.0f} s", flush=True)

    failed, summary = op_suite(budget, 0.02 if a.sim else (0.25 if a.quick else 0.4),
                               a.quick or a.sim)
    print(summary, flush=True)
    for f in failed[:20]:
        print(f"  FAIL {f}")
    repeats = 1 if a.sim else (3 if a.quick else 7)
    sizes = [32, 64] if a.sim else ([1024, 2048] if a.quick else [1024, 2048, 4096])
    rows = matmul_rows(sizes, budget, repeats, torch, cupy)
    if a.sim:
        shapes = [("MLP 16-8-8-4, batch 4", *mlp([16, 8, 8, 4], 4)[:3]),
                  ("LeNet-5 (16x16 input), batch 1", *lenet(1, 16))]
    else:
        shapes = [("MLP 784-512-512-10, batch 128", *mlp([784, 512, 512, 10], 128)[:3]),
                  ("LeNet-5, batch 64", *lenet(64))]
    for name, model, x, y in shapes:
        rows.append(step_row(name, model, x, y, budget, repeats, torch))
    rows += compile_rows(shapes[0][0].split(",")[0], *shapes[0][1:], budget)
    rows += scan_rows(*((4, 3, 2) if a.sim else (256, 64, 8)), budget, repeats)
    head = f"{'':<52} {'nnjit':>10} {'torch':>10} {'cupy':>10}"
    print(head)
    print("-" * len(head))
    for name, ours, theirs, other in rows:
        print(f"{name[:52]:<52} {ours:>10} {theirs:>10} {other:>10}")
    print(f"done in {a.budget - budget.left():.1f} s")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
