"""Inference time of PyTorch-exported ONNX models: nnjit (llvm) next to onnxruntime (CPU, all
threads) on this machine, with torch's own eager time, and the largest relative difference to
torch's output. nnjit and onnxruntime are timed in a child process without torch.

    python benchmarks/onnx_models.py [--repeats 20]
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import warnings

import numpy as np


def models(torch):
    nn = torch.nn

    class LM(nn.Module):
        def __init__(self, cell):
            super().__init__()
            self.emb, self.rnn = nn.Embedding(1000, 64), cell(64, 128, batch_first=True)
            self.out = nn.Linear(128, 1000)

        def forward(self, tok):
            return self.out(self.rnn(self.emb(tok))[0])

    return {
        "mlp": (nn.Sequential(nn.Linear(784, 512), nn.ReLU(), nn.Linear(512, 512), nn.ReLU(),
                              nn.Linear(512, 10)), torch.randn(128, 784)),
        "lenet5": (nn.Sequential(nn.Conv2d(1, 6, 5, padding=2), nn.Tanh(), nn.AvgPool2d(2),
                                 nn.Conv2d(6, 16, 5), nn.Tanh(), nn.AvgPool2d(2), nn.Flatten(),
                                 nn.Linear(400, 120), nn.Tanh(), nn.Linear(120, 84), nn.Tanh(),
                                 nn.Linear(84, 10)), torch.randn(64, 1, 28, 28)),
        "convnet_bn": (nn.Sequential(nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(),
                                     nn.BatchNorm2d(32), nn.MaxPool2d(2),
                                     nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(),
                                     nn.BatchNorm2d(64), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                                     nn.Linear(64, 10)), torch.randn(32, 3, 32, 32)),
        "lstm_lm": (LM(nn.LSTM), torch.randint(0, 1000, (16, 32))),
        "gru_lm": (LM(nn.GRU), torch.randint(0, 1000, (16, 32))),
    }


def median_time(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return float(np.median(times))


def time_exported(d: str, names: list[str], repeats: int) -> None:
    """nnjit and onnxruntime on the models exported to `d`, in a process without torch (torch's
    OpenMP pool and nnjit's (then libgomp) workers in one process slow each other down: the GRU LM
    took 9 ms alone and 38-1250 ms beside torch's threads on 2 cores)."""
    import onnxruntime as ort

    import nnjit.onnx

    for name in names:
        path = os.path.join(d, name + ".onnx")
        data = np.load(os.path.join(d, name + ".npz"))
        xn, want = data["x"], data["want"]
        fn = nnjit.onnx.load(path, backend="llvm")
        sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
        (got,) = fn(xn)
        err = float(np.max(np.abs(got - want)) / (np.max(np.abs(want)) or 1.0))
        t_nn = median_time(lambda: fn(xn), repeats)
        t_ort = median_time(lambda: sess.run(None, {"x": xn}), repeats)
        t_torch = float(data["t_torch"])
        print(f"{name:12} {t_nn * 1e3:9.3f} {t_ort * 1e3:8.3f} {t_torch * 1e3:9.3f} "
              f"{t_nn / t_ort:9.2f} {err:12.2e}", flush=True)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--time-dir", help=argparse.SUPPRESS)     # the child process's models
    p.add_argument("--names", nargs="*", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.time_dir:
        time_exported(a.time_dir, a.names, a.repeats)
        return 0
    import subprocess

    import torch

    torch.manual_seed(0)
    print(f"{'model':12} {'nnjit ms':>9} {'ort ms':>8} {'torch ms':>9} {'nnjit/ort':>9} "
          f"{'max rel err':>12}  (cores: {os.cpu_count()})", flush=True)
    with tempfile.TemporaryDirectory() as d:
        names = []
        for name, (model, x) in models(torch).items():
            model.eval()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                torch.onnx.export(model, (x,), os.path.join(d, name + ".onnx"), dynamo=False,
                                  input_names=["x"])
            with torch.no_grad():
                want = model(x).numpy()
                t_torch = median_time(lambda: model(x), a.repeats)
            np.savez(os.path.join(d, name + ".npz"), x=x.numpy(), want=want, t_torch=t_torch)
            names.append(name)
        subprocess.run([sys.executable, os.path.abspath(__file__), "--repeats", str(a.repeats),
                        "--time-dir", d, "--names", *names], check=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
