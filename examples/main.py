"""`make run`: train a ConvNet on the digits with one compiled training step, then show what the
compiler did.

    python examples/main.py                        # LLVM backend, 15 epochs, >= 97% test accuracy
    python examples/main.py --epochs 3 --out /tmp/nnjit-out

1. The whole training step (forward, cross-entropy, backward, Adam update) is traced into one
   graph and compiled with the LLVM backend: `nnjit.jit(train_step, backend="llvm", ...)`.
2. It trains on scikit-learn's bundled 8x8 digits (no download), a progress bar per epoch, and
   prints the test accuracy.
3. The same step is compiled again with fusion off; both are timed side by side (median of
   alternating rounds) and compared: step time, speed-up, kernels, peak memory.
4. The IR after every stage, the kernel IR, the LLVM IR, the fusion decisions, the memory plan
   (table and picture) and the graph (DOT; SVG and an interactive HTML page when Graphviz is
   installed) go to --out.
"""
from __future__ import annotations

import argparse
import math
import os
import shutil
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402
from tqdm import tqdm  # noqa: E402

import nnjit  # noqa: E402
from nnjit import nn, optim  # noqa: E402
from nnjit.bench import bytes_moved  # noqa: E402
from nnjit.passes.manager import write_stage  # noqa: E402

import data  # noqa: E402
import models  # noqa: E402
import training  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=training.description(__doc__),
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--backend", default="llvm", choices=["llvm", "interp", "cuda"],
                   help="nnjit backend")
    p.add_argument("--epochs", type=training.positive_int, default=15,
                   help="passes over the training set")
    p.add_argument("--batch", type=training.positive_int, default=32,
                   help="examples per training step")
    p.add_argument("--lr", type=training.positive_float, default=1e-2,
                   help="peak Adam learning rate (cosine decay)")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of the weights, batch order and dropout masks")
    p.add_argument("--repeats", type=training.positive_int, default=7,
                   help="timing rounds (fused/unfused)")
    p.add_argument("--out", default="nnjit-out", help="where the IR dumps and pictures go")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p.parse_args(argv)


def make_train_step(model: nn.Module, opt: optim.Optimizer):
    """One training step as a pure function; `lr_scale` (an f32 scalar input, so the step
    compiles once) scales Adam's step for the learning-rate schedule. Returns the new params
    and optimizer state, the loss and the number of correct predictions in the batch."""

    def train_step(params, opt_state, x, y, lr_scale, seed):
        def loss_fn(p):
            logits = model.apply(p, x, training=True, seed=seed)
            correct = (nnjit.argmax(logits, axis=-1) == y).astype(nnjit.int64).sum()
            return nn.cross_entropy(logits, y), correct

        (loss, correct), grads = nnjit.value_and_grad(loss_fn, has_aux=True)(params)
        new, opt_state = opt.update(params, grads, opt_state)
        params = nnjit.tree_map(lambda p, q: p + lr_scale * (q - p), params, new)
        return params, opt_state, loss, correct

    return train_step


def compile_step(fn, args, backend: str, fuse: bool):
    label = "fused" if fuse else "unfused"
    print(f"compiling the training step ({label}, backend {backend}) ...", end=" ", flush=True)
    t0 = time.perf_counter()
    step = nnjit.jit(fn, backend=backend, fuse=fuse, donate_argnums=(0, 1), name="train_step")
    cf = step.lower(*args)
    n = len(cf.lowered().program.kernels)
    print(f"{time.perf_counter() - t0:.1f} s, {n} kernels", flush=True)
    return cf


def train(cf, params, state, split: data.Split, args) -> tuple:
    rng = np.random.default_rng(args.seed)
    per_epoch = len(split.x_train) // args.batch
    total, k = per_epoch * args.epochs, 0
    for epoch in range(args.epochs):
        bar = tqdm(total=per_epoch, desc=f"epoch {epoch + 1:2d}/{args.epochs}", unit="step",
                   disable=args.no_progress, leave=True, mininterval=0.25,
                   bar_format="{desc} {bar:20} {n_fmt}/{total_fmt} [{elapsed}{postfix}]")
        losses, correct, seen, t0 = [], 0, 0, time.perf_counter()
        for xb, yb in data.minibatches(split.x_train, split.y_train, args.batch, rng):
            lr_scale = np.float32(0.5 * (1.0 + math.cos(math.pi * k / total)))  # cosine decay
            seed = np.int64(args.seed * 1_000_003 + k)                        # dropout masks
            params, state, loss, c = cf(params, state, xb, yb, lr_scale, seed)
            losses.append(float(loss))
            correct, seen, k = correct + int(c), seen + len(yb), k + 1
            bar.set_postfix_str(f"loss={np.mean(losses[-per_epoch:]):.3f}, "
                                f"acc={correct / seen:.1%}, "
                                f"steps/s={len(losses) / (time.perf_counter() - t0):.0f}",
                                refresh=False)
            bar.update()
        bar.close()
    return params, state


def time_side_by_side(compiled: dict, params, state, split: data.Split, args,
                      round_s: float = 0.1) -> dict:
    """Median seconds per step of each compiled step, timed in alternating rounds (so machine
    noise hits both alike); a round is a run of consecutive steps (params fed back in) lasting
    about `round_s`."""
    xb, yb = split.x_train[:args.batch], split.y_train[:args.batch]
    live = {k: (nnjit.tree_map(np.copy, params), nnjit.tree_map(np.copy, state))
            for k in compiled}

    def run(key: str, steps: int) -> float:
        p, s = live[key]
        t0 = time.perf_counter()
        for i in range(steps):
            p, s, _, _ = compiled[key](p, s, xb, yb, np.float32(0.0), np.int64(i))
        live[key] = (p, s)
        return (time.perf_counter() - t0) / steps

    steps = {k: max(3, min(200, int(round_s / run(k, 3)))) for k in compiled}   # + warm-up
    samples: dict = {k: [] for k in compiled}
    for _ in tqdm(range(args.repeats), desc="timing fused vs unfused", unit="round",
                  disable=args.no_progress, bar_format="{desc} {bar:20} {n_fmt}/{total_fmt}"):
        for key in compiled:
            samples[key].append(run(key, steps[key]))
    return {k: (statistics.median(v), min(v), max(v)) for k, v in samples.items()}


def peak_bytes(cf) -> int:
    """Peak memory of one call: the arena (all intermediates, after reuse) plus the results."""
    low = cf.lowered()
    outs = sum(b.nbytes for b in low.program.buffers if b.kind.value == "output")
    return low.plan.arena_bytes + outs


def write_outputs(cf, unfused, out: str) -> list[str]:
    """Dump the fused step's stages, kernels, decisions and pictures into `out`."""
    os.makedirs(os.path.join(out, "ir"), exist_ok=True)
    written = []
    for i, st in enumerate(cf.stages_):
        written.append(write_stage(st, i, None, os.path.join(out, "ir")))

    def put(name: str, text: str) -> None:
        path = os.path.join(out, name)
        with open(path, "w") as f:
            f.write(text if text.endswith("\n") else text + "\n")
        written.append(path)

    put("kernels.txt", str(cf.lowered().program))
    put("kernels-unfused.txt", str(unfused.lowered().program))
    if cf.options.backend == "llvm":
        put("train_step.ll", cf.llvm_ir())
    put("fusion.txt", str(cf.explain_fusion()))
    put("memory.txt", cf.memory_plan().table())
    put("memory.svg", cf.memory_svg())
    put("graph.dot", cf.to_dot())
    if shutil.which("dot"):
        from nnjit.runtime.viz import render_svg

        put("graph.svg", render_svg(cf.to_dot()))
        put("graph.html", cf.to_html())
    return written


def threads_note() -> str:
    n = os.environ.get("NNJIT_NUM_THREADS") or str(len(os.sched_getaffinity(0))
                                                   if hasattr(os, "sched_getaffinity")
                                                   else os.cpu_count())
    return f"{n} thread{'s' if n != '1' else ''}"


def mib(n: int) -> str:
    return f"{n / (1 << 20):.2f} MiB" if n >= 1 << 20 else f"{n / 1024:.1f} KiB"


def main(argv=None) -> dict:
    args = parse_args(argv)
    t_start = time.perf_counter()
    split = data.digits(images=True)
    model = models.convnet(channels=(16, 32), dropout=0.2)
    opt = optim.Adam(args.lr, weight_decay=1e-4)
    params = model.init(seed=args.seed)
    state = opt.init(params)
    print(f"nnjit {nnjit.__version__}: a ConvNet ({nn.num_params(params)} parameters) on the "
          f"digits ({len(split.x_train)} train / {len(split.x_test)} test images, 8x8)")
    step_fn = make_train_step(model, opt)
    example = (params, state, split.x_train[:args.batch], split.y_train[:args.batch],
               np.float32(1.0), np.int64(0))
    with training.blas_threads(1):
        fused = compile_step(step_fn, example, args.backend, fuse=True)
        t0 = time.perf_counter()
        params, state = train(fused, params, state, split, args)
        train_s = time.perf_counter() - t0
        predict = training.make_predict(model, args.backend)
        acc = float(np.mean(predict(params, split.x_test) == split.y_test))
        print(f"test accuracy {acc:.2%} after {args.epochs} epochs ({train_s:.1f} s of training)")

        unfused = compile_step(step_fn, example, args.backend, fuse=False)
        med = time_side_by_side({"fused": fused, "unfused": unfused}, params, state, split, args)
    speedup = med["unfused"][0] / med["fused"][0]
    kernels = {k: len(c.lowered().program.kernels) for k, c in (("fused", fused),
                                                                 ("unfused", unfused))}
    peaks = {"fused": peak_bytes(fused), "unfused": peak_bytes(unfused)}
    print(f"\n{'training step':<14}{'time/step':>12}{'(range over rounds)':>22}{'kernels':>9}"
          f"{'peak memory':>14}")
    for k in ("fused", "unfused"):
        m, lo, hi = (t * 1e3 for t in med[k])
        print(f"{k:<14}{m:>9.3f} ms{f'({lo:.3f}-{hi:.3f} ms)':>22}{kernels[k]:>9}"
              f"{mib(peaks[k]):>14}")
    traffic = {k: bytes_moved(c.lowered().program) for k, c in (("fused", fused),
                                                                ("unfused", unfused))}
    print(f"speed-up of fused over unfused: {speedup:.2f}x; fusion: "
          f"{kernels['unfused'] / kernels['fused']:.1f}x fewer kernels, "
          f"{traffic['unfused'] / traffic['fused']:.1f}x less memory traffic "
          f"({mib(traffic['unfused'])} -> {mib(traffic['fused'])} per step), "
          f"{peaks['unfused'] / peaks['fused']:.2f}x less peak memory\n(batch {args.batch}, "
          f"backend {args.backend}, {threads_note()}, medians of {args.repeats} alternating "
          "rounds)")
    if speedup < 1.1:
        print("(at this size the step's time is in its small convolutions, which fusion does "
              "not change; `nnjit bench` shows where fusion pays: elementwise chains, softmax "
              "cross-entropy, MLP and LSTM steps)")

    written = write_outputs(fused, unfused, args.out)
    where = os.path.abspath(args.out)
    print(f"\nwrote {len(written)} files to {where}/:")
    print(f"  ir/*.nnir         the IR after each stage ({', '.join(fused.stages())})")
    print("  kernels.txt       kernel IR (fused; kernels-unfused.txt without fusion)"
          + ("\n  train_step.ll     LLVM IR" if args.backend == "llvm" else ""))
    print("  fusion.txt        every kernel and fusion decision")
    print("  memory.txt        the memory plan; memory.svg draws it (open in a browser)")
    print("  graph.dot         the fused graph, one box per kernel" +
          (" (graph.svg rendered; graph.html: click a kernel for its IR)"
           if shutil.which("dot") else " (install Graphviz for graph.svg and graph.html)"))
    total = time.perf_counter() - t_start
    print(f"done in {total:.1f} s")
    return {"accuracy": acc, "params": params, "speedup": speedup,
            "step_s": {k: v[0] for k, v in med.items()},
            "kernels": kernels, "peak_bytes": peaks, "written": written, "seconds": total}


if __name__ == "__main__":
    training.run_script(main)
