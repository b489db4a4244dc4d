"""Train a multilayer perceptron (64-128-10, ReLU, dropout) on scikit-learn's bundled digits.

    python examples/mlp_digits.py                       # reaches >= 95% test accuracy
    python examples/mlp_digits.py --optimizer adam --epochs 10 --save mlp.npz

The whole train step (forward, backward, SGD-with-momentum update) is one compiled graph.
"""
from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from nnjit import nn, optim  # noqa: E402

import data  # noqa: E402
import models  # noqa: E402
import training  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=training.description(__doc__))
    p.add_argument("--backend", default="llvm", choices=["llvm", "interp", "cuda"],
                   help="nnjit backend (default: llvm)")
    p.add_argument("--epochs", type=training.positive_int, default=20,
                   help="passes over the training set (default: 20)")
    p.add_argument("--batch", type=training.positive_int, default=64,
                   help="examples per training step (default: 64)")
    p.add_argument("--hidden", type=training.positive_int, default=128,
                   help="units in the hidden layer (default: 128)")
    p.add_argument("--dropout", type=training.probability, default=0.1,
                   help="dropout rate after the hidden layer, in [0, 1) (default: 0.1)")
    p.add_argument("--optimizer", choices=("sgd", "adam"), default="sgd",
                   help="sgd (with momentum 0.9) or adam (default: sgd)")
    p.add_argument("--lr", type=training.positive_float, default=None,
                   help="learning rate (default: 0.05 for sgd, 0.003 for adam)")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of the initial weights, batches and dropout (default: 0)")
    p.add_argument("--save", default=None, help="write the trained parameters to this .npz")
    args = p.parse_args(argv)
    if args.save and not os.path.isdir(os.path.dirname(os.path.abspath(args.save))):
        p.error(f"--save {args.save}: no such directory")    # before training, not after
    return args


def make_optimizer(name: str, lr: float | None) -> optim.Optimizer:
    if name == "adam":
        return optim.Adam(lr or 3e-3)
    return optim.SGD(lr or 0.05, momentum=0.9, weight_decay=1e-4)


def main(argv=None) -> dict:
    args = parse_args(argv)
    model = models.mlp(args.hidden, dropout=args.dropout)
    opt = make_optimizer(args.optimizer, args.lr)
    print(model)
    print(opt)
    with training.blas_threads(1):
        res = training.fit_classifier(model, data.digits(), opt, args.epochs, args.batch,
                                      args.seed, args.backend)
    if args.save:
        nn.save(args.save, res["params"])
        print(f"saved parameters to {args.save}")
    print(f"mlp_digits: test accuracy {res['accuracy']:.2%} after {args.epochs} epochs "
          f"({args.optimizer}, backend {args.backend}, {res['seconds']:.1f} s)")
    return res


if __name__ == "__main__":
    training.run_script(main)
