"""`make run`: trace the example MLP and ConvNet, print their IR, run them with the reference
interpreter on random input, then train the ConvNet on the digits and report test accuracy."""
from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402

import nnjit  # noqa: E402
from nnjit import optim  # noqa: E402

import data  # noqa: E402
import models  # noqa: E402
import training  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--backend", default="interp", help="nnjit backend (default: interp)")
    p.add_argument("--epochs", type=int, default=8, help="ConvNet training epochs")
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def show(name: str, model, x: np.ndarray, backend: str) -> None:
    params = model.init(seed=0)
    fn = nnjit.jit(lambda p, x: model.apply(p, x), backend=backend, name=name)
    cf = fn.lower(params, x)
    print(f"== {name}: {type(model).__name__} with {sum(v.size for v in nnjit.tree_leaves(params))}"
          f" parameters ==")
    print(cf.ir("input"))
    y = cf(params, x)
    print(f"{name}({x.shape}) -> {y.shape} {y.dtype}, first row {np.round(y[0], 3)}\n")


def main(argv=None) -> dict:
    args = parse_args(argv)
    rng = np.random.default_rng(args.seed)
    show("mlp", models.mlp(), rng.standard_normal((4, 64)).astype(np.float32), args.backend)
    show("convnet", models.convnet(), rng.standard_normal((4, 1, 8, 8)).astype(np.float32),
         args.backend)
    print(f"== training the ConvNet on digits ({args.epochs} epochs, Adam, backend "
          f"{args.backend}) ==")
    with training.blas_threads(1):
        res = training.fit_classifier(models.convnet(), data.digits(images=True),
                                      optim.Adam(1e-2), args.epochs, seed=args.seed,
                                      backend=args.backend)
    print(f"main: ConvNet test accuracy {res['accuracy']:.2%} after {args.epochs} epochs "
          f"({res['seconds']:.1f} s)")
    return res


if __name__ == "__main__":
    main()
