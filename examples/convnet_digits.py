"""Train a small ConvNet (conv-relu-pool, conv-relu-pool, linear) on the 8x8 digits.

    python examples/convnet_digits.py                   # reaches >= 95% test accuracy
    python examples/convnet_digits.py --epochs 5 --lr 0.005

Convolution, pooling and their gradients run as conv2d / max_pool2d primitives; the Adam update
is traced into the same graph as the forward and backward passes.
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
    p.add_argument("--epochs", type=training.positive_int, default=15,
                   help="passes over the training set (default: 15)")
    p.add_argument("--batch", type=training.positive_int, default=64,
                   help="examples per training step (default: 64)")
    p.add_argument("--lr", type=training.positive_float, default=1e-2,
                   help="Adam learning rate (default: 0.01)")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of the initial weights and the batch order (default: 0)")
    p.add_argument("--save", default=None, help="write the trained parameters to this .npz")
    args = p.parse_args(argv)
    if args.save and not os.path.isdir(os.path.dirname(os.path.abspath(args.save))):
        p.error(f"--save {args.save}: no such directory")    # before training, not after
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    model = models.convnet()
    opt = optim.Adam(args.lr)
    print(model)
    with training.blas_threads(1):
        res = training.fit_classifier(model, data.digits(images=True), opt, args.epochs,
                                      args.batch, args.seed, args.backend)
    if args.save:
        nn.save(args.save, res["params"])
        print(f"saved parameters to {args.save}")
    print(f"convnet_digits: test accuracy {res['accuracy']:.2%} after {args.epochs} epochs "
          f"(backend {args.backend}, {res['seconds']:.1f} s)")
    return res


if __name__ == "__main__":
    training.run_script(main)
