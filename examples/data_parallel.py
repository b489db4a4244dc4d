"""Data-parallel training of the digits ConvNet over MPI: every rank runs the same compiled step
on its shard of the global batch, and the gradients are averaged across ranks inside the step.

    mpiexec -n 2 python examples/data_parallel.py             # as root: --allow-run-as-root
    mpiexec -n 2 python examples/data_parallel.py --epochs 3 --save /tmp/convnet.npz
    python examples/data_parallel.py                          # one process: a group of one

Rank 0's initial parameters are broadcast to every rank; each step takes rank r's contiguous
share of the global batch, `nnjit.distributed.pmean` averages the gradients (bucketed into a
few large all-reduces that start while the backward pass still runs) and the loss; the Adam
update then runs on every rank with identical gradients, so the parameters stay identical.
Rank 0 prints progress and writes the checkpoint. The result equals one process training on
the global batch (up to float32 rounding of the averaged gradients).
"""
from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402

import nnjit  # noqa: E402
import nnjit.distributed as dist  # noqa: E402
from nnjit import nn, optim  # noqa: E402

import data  # noqa: E402
import models  # noqa: E402
import training  # noqa: E402


def make_step(model: nn.Module, opt: optim.Optimizer, backend: str) -> nnjit.JitFunction:
    """`step(params, opt_state, x_shard, y_shard) -> (params, opt_state, mean loss)`: one
    graph with the forward and backward passes, the gradient all-reduce and the update."""

    def step(params, opt_state, x, y):
        def loss_fn(p):
            return nn.cross_entropy(model.apply(p, x), y)

        loss, grads = nnjit.value_and_grad(loss_fn)(params)
        grads = dist.pmean(grads, axis_name="batch")
        params, opt_state = opt.update(params, grads, opt_state)
        return params, opt_state, dist.pmean(loss, axis_name="batch")

    return nnjit.jit(step, backend=backend, donate_argnums=(0, 1))


def train(model: nn.Module, x: np.ndarray, y: np.ndarray, steps_per_epoch: int | None,
          epochs: int, batch: int, lr: float, seed: int, backend: str, log=None) -> dict:
    """Train on (x, y) with global batches of `batch` rows (each rank takes its share);
    returns {"params", "losses", "seconds"}. The same code runs in one process."""
    if batch % dist.size():
        raise nnjit.NnjitError(f"the global batch {batch} is not divisible by the "
                               f"{dist.size()} ranks")
    # Each rank draws its own initial parameters; rank 0's are the ones everybody uses.
    params = dist.broadcast(model.init(seed=seed + dist.rank()), root=0)
    opt = optim.Adam(lr)
    state = opt.init(params)
    step = make_step(model, opt, backend)
    rng = np.random.default_rng(seed)        # the same batch order on every rank
    losses, t0 = [], time.perf_counter()
    for epoch in range(epochs):
        epoch_losses = []
        for i, (xb, yb) in enumerate(data.minibatches(x, y, batch, rng)):
            if steps_per_epoch is not None and i == steps_per_epoch:
                break
            params, state, loss = step(params, state, dist.shard(xb), dist.shard(yb))
            epoch_losses.append(float(loss))
        losses.append(float(np.mean(epoch_losses)))
        if log:
            log(epoch, losses[-1], params, time.perf_counter() - t0)
    return {"params": params, "losses": losses, "seconds": time.perf_counter() - t0}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=training.description(__doc__))
    p.add_argument("--backend", default="llvm", choices=["llvm", "interp"],
                   help="nnjit backend (default: llvm)")
    p.add_argument("--epochs", type=training.positive_int, default=10,
                   help="passes over the training set (default: 10)")
    p.add_argument("--batch", type=training.positive_int, default=64,
                   help="global batch: examples per step over all ranks (default: 64)")
    p.add_argument("--lr", type=training.positive_float, default=1e-2,
                   help="Adam learning rate (default: 0.01)")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of the initial weights and the batch order (default: 0)")
    p.add_argument("--save", default=None, help="rank 0 writes the trained parameters here")
    return p.parse_args(argv)


def main(argv=None) -> dict:
    args = parse_args(argv)
    split = data.digits(images=True)
    model = models.convnet()
    predict = training.make_predict(model, args.backend)
    lead = dist.rank() == 0

    def log(epoch, loss, params, seconds):
        if lead:
            acc = float(np.mean(predict(params, split.x_test) == split.y_test))
            print(f"epoch {epoch + 1:3d}  train loss {loss:.4f}  test accuracy {acc:.2%}  "
                  f"({seconds:.1f} s)", flush=True)

    if lead:
        print(f"data_parallel: {dist.size()} rank(s), global batch {args.batch} "
              f"({args.batch // max(dist.size(), 1)} per rank), backend {args.backend}")
    with training.blas_threads(1):
        res = train(model, split.x_train, split.y_train, None, args.epochs, args.batch,
                    args.lr, args.seed, args.backend, log)
    if lead and args.save:
        nn.save(args.save, res["params"])
        print(f"saved parameters to {args.save}")
    return res


if __name__ == "__main__":
    training.run_script(main)
