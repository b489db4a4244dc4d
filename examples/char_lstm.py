"""Train a character-level LSTM language model on text that ships with Python: the docstrings
of a fixed list of standard-library modules, read at run time (no download).

    python examples/char_lstm.py                       # 300 steps: loss far below the unigram
    python examples/char_lstm.py --steps 1000 --hidden 256 --temperature 0.5

Embedding -> LSTM (one `scan`, never unrolled; its gradient is a reverse scan) -> Linear, with
cross-entropy at every step. Prints the unigram entropy of the text (the loss of the best model
that ignores context), the loss trajectory, the held-out loss, and a few sampled lines generated
with a compiled single-step function.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402
from tqdm import tqdm  # noqa: E402

import nnjit  # noqa: E402
from nnjit import nn, optim  # noqa: E402

import data  # noqa: E402
import models  # noqa: E402
import training  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=training.description(__doc__))
    p.add_argument("--backend", default="llvm", choices=["llvm", "interp", "cuda"],
                   help="nnjit backend (default: llvm)")
    p.add_argument("--steps", type=training.positive_int, default=300,
                   help="training steps (default: 300)")
    p.add_argument("--batch", type=training.positive_int, default=32,
                   help="sequences per step (default: 32)")
    p.add_argument("--seq-len", type=training.positive_int, default=32,
                   help="characters per sequence, backpropagated through (default: 32)")
    p.add_argument("--embed", type=training.positive_int, default=32,
                   help="size of the character embeddings (default: 32)")
    p.add_argument("--hidden", type=training.positive_int, default=128,
                   help="LSTM hidden units (default: 128)")
    p.add_argument("--lr", type=training.positive_float, default=1e-2,
                   help="Adam learning rate (default: 0.01)")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of the weights, batches and sampling (default: 0)")
    p.add_argument("--log-every", type=training.positive_int, default=25,
                   help="steps between printed losses (default: 25)")
    p.add_argument("--sample-chars", type=training.nonnegative_int, default=200,
                   help="characters to sample after training; 0: no sampling (default: 200)")
    p.add_argument("--temperature", type=training.nonnegative_float, default=0.6,
                   help="sampling temperature; 0: greedy decoding (default: 0.6)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p.parse_args(argv)


def sequence_loss(model: models.CharLSTM):
    def loss(params, x, y):
        logits, _ = model.apply(params, x)
        return nn.cross_entropy(logits, y)
    return loss


def sample(model: models.CharLSTM, params, vocab: data.Vocab, prompt: str, n: int,
           temperature: float, rng: np.random.Generator, backend: str, step=None) -> str:
    """Feed `prompt`, then generate `n` characters one compiled step at a time (`step`: a
    jitted `model.apply`, made here when not given)."""
    if step is None:
        step = nnjit.jit(lambda p, ids, state: model.apply(p, ids, state), backend=backend)
    h = np.zeros((1, 1, model.hidden), np.float32)      # (num_layers, batch, hidden), as torch
    state = (h, h.copy())
    out = list(prompt)
    ids = vocab.encode(prompt)
    logits = None
    for i in ids:
        logits, state = step(params, np.array([[i]], np.int64), state)
    for _ in range(n):
        z = np.asarray(logits, np.float64)[0, 0]
        if temperature <= 0:
            nxt = int(z.argmax())
        else:
            p = np.exp((z - z.max()) / temperature)
            nxt = int(rng.choice(len(p), p=p / p.sum()))
        out.append(vocab.chars[nxt])
        logits, state = step(params, np.array([[nxt]], np.int64), state)
    return "".join(out)


def main(argv=None) -> dict:
    args = parse_args(argv)
    text = data.stdlib_text()
    vocab = data.Vocab.of(text)
    ids = vocab.encode(text)
    cut = int(len(ids) * 0.9)
    train_ids, val_ids = ids[:cut], ids[cut:]
    h_unigram = data.unigram_entropy(ids, len(vocab))
    print(f"text: {len(text)} chars of stdlib docstrings, vocabulary {len(vocab)}; "
          f"unigram entropy {h_unigram:.3f} nats/char")

    model = models.CharLSTM(len(vocab), args.embed, args.hidden)
    params = model.init(seed=args.seed)
    opt = optim.Adam(args.lr)
    state = opt.init(params)
    loss_fn = sequence_loss(model)

    def train_step(params, opt_state, x, y):
        loss, grads = nnjit.value_and_grad(loss_fn)(params, x, y)
        params, opt_state = opt.update(params, grads, opt_state)
        return params, opt_state, loss

    rng = np.random.default_rng(args.seed)
    losses, trajectory, t0 = [], [], time.perf_counter()
    print(f"compiling the training step (LSTM scan and its reverse scan, backend "
          f"{args.backend}) ...", end=" ", flush=True)
    x, y = data.char_windows(train_ids, args.batch, args.seq_len, rng)
    step = nnjit.jit(train_step, backend=args.backend, donate_argnums=(0, 1)).lower(
        params, state, x, y)
    print(f"{time.perf_counter() - t0:.1f} s", flush=True)
    with training.blas_threads(1):
        bar = tqdm(total=args.steps, desc="training", unit="step", disable=args.no_progress,
                   mininterval=0.5)
        for i in range(args.steps):
            params, state, loss = step(params, state, x, y)
            losses.append(float(loss))
            bar.set_postfix(loss=f"{losses[-1]:.3f}", refresh=False)
            bar.update()
            if (i + 1) % args.log_every == 0 or i + 1 == args.steps:
                recent = float(np.mean(losses[-args.log_every:]))
                trajectory.append((i + 1, recent))
                bar.write(f"step {i + 1:5d}  loss {recent:.3f} nats/char  "
                          f"({time.perf_counter() - t0:.1f} s)", file=sys.stdout)
            x, y = data.char_windows(train_ids, args.batch, args.seq_len, rng)
        bar.close()
        x, y = data.char_windows(val_ids, 64, args.seq_len, np.random.default_rng(12345))
        val_loss = float(nnjit.jit(loss_fn, backend=args.backend)(params, x, y))
        print(f"held-out loss {val_loss:.3f} nats/char (unigram entropy {h_unigram:.3f})")
        if args.sample_chars:
            print("compiling a one-character step for sampling ...", flush=True)
            one_step = nnjit.jit(lambda p, ids, st: model.apply(p, ids, st),
                                 backend=args.backend)
            for prompt in ("Return ", "The "):
                text_out = sample(model, params, vocab, prompt, args.sample_chars,
                                  args.temperature, rng, args.backend, one_step)
                print("--- sample ---\n" + text_out)
    final = trajectory[-1][1] if trajectory else float("nan")
    seconds = time.perf_counter() - t0
    print(f"char_lstm: loss {final:.3f} nats/char after {args.steps} steps, held-out "
          f"{val_loss:.3f}, unigram entropy {h_unigram:.3f} (backend {args.backend}, "
          f"{seconds:.1f} s)")
    return {"params": params, "losses": losses, "trajectory": trajectory, "final_loss": final,
            "val_loss": val_loss, "unigram_entropy": h_unigram, "seconds": seconds}


if __name__ == "__main__":
    training.run_script(main)
