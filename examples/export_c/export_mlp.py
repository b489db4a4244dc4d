"""Export the trained digits MLP as a shared library with a C header, for a C program that
classifies digits without Python.

    python examples/export_c/export_mlp.py                 # trains 20 epochs (a second or two)
    python examples/mlp_digits.py --save mlp.npz && \\
        python examples/export_c/export_mlp.py --params mlp.npz
    make -C examples/export_c                              # export, build main.c, run it

Writes into --out (default: examples/export_c/build):
  libmlp.so, libmlp.h   `mlp_predict(pixels[1,64], class[1], probs[1,10], arena)`; the trained
                        weights and the pixel scaling are constants compiled into the library,
                        so it takes the raw 8x8 pixels (0..16) of one digit
  digits.txt            test digits the Python side never trained on, one per line:
                        the label, then the 64 raw pixels
  expected.txt          the class Python's compiled function predicts for each of them
"""
from __future__ import annotations

import argparse
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

import numpy as np  # noqa: E402

import nnjit  # noqa: E402
from nnjit import nn, optim  # noqa: E402

import data  # noqa: E402
import models  # noqa: E402
import training  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=training.description(__doc__),
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--out", default=os.path.join(HERE, "build"), help="output directory")
    p.add_argument("--params", default=None,
                   help="load trained parameters from this .npz (mlp_digits.py --save) "
                        "instead of training")
    p.add_argument("--hidden", type=training.positive_int, default=128,
                   help="units in the MLP's hidden layer")
    p.add_argument("--epochs", type=training.positive_int, default=20,
                   help="training epochs (without --params)")
    p.add_argument("--digits", type=training.positive_int, default=20,
                   help="test digits to write for the C side")
    p.add_argument("--backend", default="llvm", choices=["llvm"],
                   help="export needs the llvm backend")
    p.add_argument("--seed", type=int, default=0, help="seed of the weights and batches")
    return p.parse_args(argv)


def trained_params(model: nn.Module, split: data.Split, args) -> dict:
    if args.params:
        print(f"loading parameters from {args.params}")
        return nn.load(args.params, like=model)
    print(f"training the MLP for {args.epochs} epochs ...", flush=True)
    with training.blas_threads(1):
        res = training.fit_classifier(model, split, optim.SGD(0.05, momentum=0.9,
                                                               weight_decay=1e-4),
                                      args.epochs, seed=args.seed, backend=args.backend,
                                      log=None)
    print(f"test accuracy {res['accuracy']:.2%}")
    return res["params"]


def make_predict(model: nn.Module, params: dict, pixel_mean: np.ndarray):
    """The function to export: raw pixels in, (class, probabilities) out. `params` and
    `pixel_mean` are numpy arrays captured by the closure, so tracing makes them constants."""
    def mlp_predict(pixels):
        x = pixels / 16.0 - pixel_mean
        logits = model.apply(params, x)
        return nnjit.argmax(logits, axis=-1), nnjit.softmax(logits)
    return mlp_predict


def main(argv=None) -> dict:
    args = parse_args(argv)
    split = data.digits()
    model = models.mlp(args.hidden)
    params = trained_params(model, split, args)

    predict = nnjit.jit(make_predict(model, params, split.pixel_mean), backend=args.backend,
                        name="mlp_predict")
    cf = predict.lower(np.zeros((1, 64), np.float32))
    os.makedirs(args.out, exist_ok=True)
    written = cf.export(os.path.join(args.out, "libmlp.so"))

    # Test digits as raw pixels 0..16 (undoing the scaling data.digits applied).
    raw = np.rint((split.x_test[:args.digits] + split.pixel_mean) * 16.0).astype(np.int64)
    labels = split.y_test[:args.digits]
    expected = [int(cf(r[None].astype(np.float32))[0][0]) for r in raw]
    with open(os.path.join(args.out, "digits.txt"), "w") as f:
        for label, r in zip(labels, raw):
            f.write(" ".join(map(str, [int(label), *r])) + "\n")
    with open(os.path.join(args.out, "expected.txt"), "w") as f:
        f.write("\n".join(map(str, expected)) + "\n")
    written += [os.path.join(args.out, n) for n in ("digits.txt", "expected.txt")]
    for w in written:
        print(f"wrote {w}")
    right = sum(int(e == lab) for e, lab in zip(expected, labels))
    print(f"python: {right}/{len(labels)} of the exported digits classified correctly")
    return {"written": written, "expected": expected, "labels": labels.tolist()}


if __name__ == "__main__":
    training.run_script(main)
