"""Classify the 8x8 digits with a GRU that reads each image row by row: a sequence of 8 steps
of 8 pixels, the class read from the last layer's final hidden state (both directions' with
--bidirectional).

    python examples/gru_classifier.py                   # reaches >= 95% test accuracy
    python examples/gru_classifier.py --layers 2 --bidirectional --epochs 20

Each layer and direction is one `scan` over the rows (never unrolled); its gradient is a
reverse scan, and the Adam update is traced into the same compiled step.
"""
from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import nnjit  # noqa: E402
from nnjit import nn, optim  # noqa: E402

import data  # noqa: E402
import training  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=training.description(__doc__))
    p.add_argument("--backend", default="llvm", choices=["llvm", "interp", "cuda"],
                   help="nnjit backend (default: llvm)")
    p.add_argument("--epochs", type=training.positive_int, default=15,
                   help="passes over the training set (default: 15)")
    p.add_argument("--batch", type=training.positive_int, default=64,
                   help="images per training step (default: 64)")
    p.add_argument("--hidden", type=training.positive_int, default=64,
                   help="GRU hidden units per direction (default: 64)")
    p.add_argument("--layers", type=training.positive_int, default=1,
                   help="stacked GRU layers (default: 1)")
    p.add_argument("--bidirectional", action="store_true",
                   help="also read the rows bottom to top")
    p.add_argument("--dropout", type=training.probability, default=0.0,
                   help="dropout between stacked layers, in [0, 1) (default: 0)")
    p.add_argument("--lr", type=training.positive_float, default=1e-2,
                   help="Adam learning rate (default: 0.01)")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of the initial weights, batches and dropout (default: 0)")
    return p.parse_args(argv)


class RowGRU(nn.Module):
    """`apply(params, x)` with x (B, 64) pixels returns logits (B, 10): a GRU over the 8 rows
    (batch_first), then a linear layer on the last layer's final state."""

    def __init__(self, hidden: int, layers: int, bidirectional: bool, dropout: float):
        self.directions = 2 if bidirectional else 1
        self.gru = nn.GRU(8, hidden, num_layers=layers, batch_first=True,
                          bidirectional=bidirectional, dropout=dropout)
        self.head = nn.Linear(self.directions * hidden, 10)

    def forward(self, params, x, *, ctx):
        b = x.shape[0]
        _, h_n = self.child("gru", params, x.reshape(b, 8, 8), ctx=ctx)   # (L*D, B, H)
        last = [h_n[h_n.shape[0] - self.directions + d] for d in range(self.directions)]
        return self.child("head", params, nnjit.concat(last, axis=1), ctx=ctx)


def main(argv=None) -> dict:
    args = parse_args(argv)
    model = RowGRU(args.hidden, args.layers, args.bidirectional, args.dropout)
    print(model)
    with training.blas_threads(1):
        res = training.fit_classifier(model, data.digits(), optim.Adam(args.lr), args.epochs,
                                      args.batch, args.seed, args.backend)
    print(f"gru_classifier: test accuracy {res['accuracy']:.2%} after {args.epochs} epochs "
          f"(backend {args.backend}, {res['seconds']:.1f} s)")
    return res


if __name__ == "__main__":
    training.run_script(main)
