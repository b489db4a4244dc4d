"""The training loop the examples share: one jitted step (forward, backward and optimizer update
in a single graph) and a classifier fit/evaluate loop over the digits split."""
from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
from typing import Callable

import numpy as np

import nnjit
from nnjit import nn, optim

import data


# -- command-line values: a bad one is one clear line from argparse, not a traceback ----------

def positive_int(text: str) -> int:
    """An argparse type: an int >= 1."""
    return _checked(int, text, lambda v: v >= 1, "a whole number >= 1")


def nonnegative_int(text: str) -> int:
    return _checked(int, text, lambda v: v >= 0, "a whole number >= 0")


def positive_float(text: str) -> float:
    return _checked(float, text, lambda v: v > 0 and v == v and v != float("inf"),
                    "a finite number > 0")


def nonnegative_float(text: str) -> float:
    return _checked(float, text, lambda v: v >= 0 and v != float("inf"), "a finite number >= 0")


def probability(text: str) -> float:
    return _checked(float, text, lambda v: 0 <= v < 1, "a number in [0, 1)")


def description(doc: str) -> str:
    """A script's --help description: its docstring's first paragraph, whole."""
    return " ".join(doc.strip().split("\n\n")[0].split())


def _checked(kind, text: str, ok, what: str):
    try:
        v = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not {what}") from None
    if not ok(v):
        raise argparse.ArgumentTypeError(f"{text!r} is not {what}")
    return v


def blas_threads(n: int = 1):
    """A context limiting numpy's BLAS to `n` threads (a no-op without threadpoolctl).

    NOTE: the reference interpreter runs one small GEMM per node; with BLAS threads on a loaded
    machine those GEMMs wait on each other (measured 40x slower on 2 busy cores), so the
    examples and tests run them single-threaded."""
    try:
        from threadpoolctl import ThreadpoolController
    except ImportError:
        return contextlib.nullcontext()
    return ThreadpoolController().limit(limits=n, user_api="blas")


def make_train_step(model: nn.Module, opt: optim.Optimizer, backend: str | None = None,
                    loss: Callable = nn.cross_entropy) -> nnjit.JitFunction:
    """`step(params, opt_state, x, y, seed) -> (params, opt_state, loss)`, compiled as one graph.
    `seed` (an i64 scalar array) keys the dropout masks; pass a new one every step."""

    def train_step(params, opt_state, x, y, seed):
        def loss_fn(p):
            return loss(model.apply(p, x, training=True, seed=seed), y)

        value, grads = nnjit.value_and_grad(loss_fn)(params)
        params, opt_state = opt.update(params, grads, opt_state)
        return params, opt_state, value

    return nnjit.jit(train_step, backend=backend, donate_argnums=(0, 1))


def make_predict(model: nn.Module, backend: str | None = None) -> nnjit.JitFunction:
    """`predict(params, x) -> class indices` (eval mode: no dropout)."""
    return nnjit.jit(lambda params, x: nnjit.argmax(model.apply(params, x), axis=-1),
                     backend=backend)


def fit_classifier(model: nn.Module, split: data.Split, opt: optim.Optimizer, epochs: int,
                   batch: int = 64, seed: int = 0, backend: str | None = None,
                   log: Callable[[str], None] | None = print) -> dict:
    """Train `model` on `split` for `epochs` and return {"params", "accuracy", "losses",
    "seconds"}; `accuracy` is measured on the test set after the last epoch."""
    params = model.init(seed=seed)
    state = opt.init(params)
    step = make_train_step(model, opt, backend)
    predict = make_predict(model, backend)
    rng = np.random.default_rng(seed)
    losses, acc, t0 = [], float("nan"), time.perf_counter()
    n_step = 0
    for epoch in range(epochs):
        epoch_losses = []
        for xb, yb in data.minibatches(split.x_train, split.y_train, batch, rng):
            params, state, loss = step(params, state, xb, yb, np.int64(seed * 1_000_003 + n_step))
            epoch_losses.append(float(loss))
            n_step += 1
        losses.append(float(np.mean(epoch_losses)))
        acc = float(np.mean(predict(params, split.x_test) == split.y_test))
        if log:
            log(f"epoch {epoch + 1:3d}  train loss {losses[-1]:.4f}  test accuracy {acc:.2%}  "
                f"({time.perf_counter() - t0:.1f} s)")
    return {"params": params, "accuracy": acc, "losses": losses,
            "seconds": time.perf_counter() - t0}


def run_script(main: Callable[[], object]) -> None:
    """Run an example's `main()` as a script: an nnjit error or a bad file path is a user error,
    printed as one line (no traceback) with exit status 1."""
    name = os.path.basename(sys.argv[0])
    try:
        main()
    except nnjit.NnjitError as e:
        sys.exit(f"{name}: error: {e}")
    except OSError as e:
        sys.exit(f"{name}: error: {e.strerror or e}: {e.filename or ''}".rstrip(": "))
    except KeyboardInterrupt:
        sys.exit(130)
