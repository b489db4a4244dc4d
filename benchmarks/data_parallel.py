"""Data-parallel scaling on this machine: the digits ConvNet's training step (forward, backward,
gradient all-reduce, Adam) with 1 and 2 MPI ranks, one thread each (NNJIT_NUM_THREADS=1).

    python benchmarks/data_parallel.py                 # launches mpiexec -n 1 and -n 2 itself
    python benchmarks/data_parallel.py --batch 512 --steps 30

The global batch is fixed (strong scaling): with 2 ranks each computes half of it, so the ideal
step time halves. Reported per rank count: median step time (the slowest rank's), payload bytes
all-reduced per step, and scaling efficiency t1 / (n * tn).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "examples"))


def worker(batch: int, steps: int, channels: tuple[int, int]) -> None:
    import numpy as np

    import nnjit.distributed as dist
    from nnjit import optim
    from nnjit.backends.collective import world

    import data_parallel
    import models

    model = models.convnet(channels=channels)
    opt = optim.Adam(1e-2)
    params = dist.broadcast(model.init(seed=0), root=0)
    state = opt.init(params)
    step = data_parallel.make_step(model, opt, "llvm")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(batch, 1, 8, 8)).astype(np.float32)
    y = rng.integers(0, 10, batch)
    xs, ys = dist.shard(x), dist.shard(y)
    for _ in range(3):                                   # compile and warm up
        params, state, _ = step(params, state, xs, ys)
    before = getattr(world(), "bytes_reduced", 0)
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        params, state, _ = step(params, state, xs, ys)
        times.append(time.perf_counter() - t0)
    reduced = (getattr(world(), "bytes_reduced", 0) - before) // steps
    slowest = float(dist.pmax(np.array(np.median(times))))
    if dist.rank() == 0:
        print("RESULT " + json.dumps({"ranks": dist.size(), "step_s": slowest,
                                      "bytes": int(reduced)}), flush=True)


def launch(n: int, args) -> dict:
    mpiexec = shutil.which("mpiexec", path=os.path.dirname(sys.executable) + os.pathsep
                           + os.environ.get("PATH", ""))
    if mpiexec is None:
        sys.exit("data_parallel.py: no mpiexec; install the 'mpi' extra (pip install -e '.[mpi]')")
    env = dict(os.environ, NNJIT_NUM_THREADS="1", OMPI_ALLOW_RUN_AS_ROOT="1",
               OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1", OMPI_MCA_rmaps_base_oversubscribe="1",
               PYTHONPATH=os.path.join(ROOT, "src") + os.pathsep + os.environ.get("PYTHONPATH", ""))
    cmd = [mpiexec, "-n", str(n), sys.executable, os.path.abspath(__file__), "--worker",
           "--batch", str(args.batch), "--steps", str(args.steps),
           "--channels", f"{args.channels[0]},{args.channels[1]}"]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True)
    lines = [ln for ln in r.stdout.splitlines() if ln.startswith("RESULT ")]
    if r.returncode or not lines:
        sys.exit(f"mpiexec -n {n} failed:\n{r.stdout}\n{r.stderr}")
    return json.loads(lines[-1][len("RESULT "):])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batch", type=int, default=256, help="global batch (default: 256)")
    p.add_argument("--steps", type=int, default=20, help="timed steps (default: 20)")
    p.add_argument("--channels", default="16,32", help="ConvNet channels (default: 16,32)")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    args.channels = tuple(int(c) for c in args.channels.split(","))
    if args.worker:
        worker(args.batch, args.steps, args.channels)
        return
    rows = [launch(n, args) for n in (1, 2)]
    t1 = rows[0]["step_s"]
    print(f"digits ConvNet {args.channels}, global batch {args.batch}, 1 thread per rank, "
          f"median of {args.steps} steps")
    print(f"{'ranks':>5}  {'step (ms)':>9}  {'all-reduced/step':>16}  {'speedup':>7}  "
          f"{'efficiency':>10}")
    for r in rows:
        n, t = r["ranks"], r["step_s"]
        print(f"{n:>5}  {t * 1e3:>9.2f}  {r['bytes'] / 1024:>13.1f} KiB  {t1 / t:>7.2f}  "
              f"{t1 / (n * t):>10.0%}")


if __name__ == "__main__":
    main()
