"""Train an end-to-end memory network (Sukhbaatar et al., 2015) on a story question-answering
task it generates: stories of "X went to the Y" facts, questions "where is X", answered by the
place X went to last. Each hop attends over the story's sentences (softmax of the question's
match with embedding A, reading embedding C, both with learned temporal encodings), so the
answer needs the right fact picked out of up to --memory sentences.

    python examples/memory_network.py                  # reaches >= 95% test accuracy
    python examples/memory_network.py --hops 3 --memory 20 --epochs 30

Stories, questions and answers are generated from --seed alone, so every run sees the same data.
"""
from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402

import nnjit  # noqa: E402
from nnjit import nn, optim  # noqa: E402

import data  # noqa: E402
import training  # noqa: E402

PEOPLE = ("mary", "john", "sandra", "daniel", "fred", "bill", "julie", "emma")
PLACES = ("kitchen", "garden", "office", "bedroom", "hallway", "bathroom", "park", "cellar")
VOCAB = ("<pad>", "went", "to", "the", "where", "is") + PEOPLE + PLACES
WORDS = 5                                   # "X went to the Y"; questions "where is X" padded


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=training.description(__doc__))
    p.add_argument("--backend", default="llvm", choices=["llvm", "interp", "cuda"],
                   help="nnjit backend (default: llvm)")
    p.add_argument("--epochs", type=training.positive_int, default=15,
                   help="passes over the training stories (default: 15)")
    p.add_argument("--batch", type=training.positive_int, default=32,
                   help="stories per training step (default: 32)")
    p.add_argument("--train", type=training.positive_int, default=2000,
                   help="training stories (default: 2000)")
    p.add_argument("--test", type=training.positive_int, default=500,
                   help="test stories (default: 500)")
    p.add_argument("--memory", type=training.positive_int, default=10,
                   help="memory slots: the most sentences a story has (default: 10)")
    p.add_argument("--hops", type=training.positive_int, default=2,
                   help="attention hops over the memory (default: 2)")
    p.add_argument("--dim", type=training.positive_int, default=32,
                   help="embedding width (default: 32)")
    p.add_argument("--lr", type=training.positive_float, default=1e-2,
                   help="Adam learning rate (default: 0.01)")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of the stories, the initial weights and the batch order "
                        "(default: 0)")
    return p.parse_args(argv)


# -- the task ---------------------------------------------------------------------------------------

def make_stories(n: int, memory: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """`n` stories as word ids (n, memory + 1, WORDS): `memory` sentence slots (the first ones
    empty when the story is shorter), then the question; answers are place word ids (n,)."""
    ids = {w: i for i, w in enumerate(VOCAB)}
    x = np.zeros((n, memory + 1, WORDS), np.int64)
    y = np.zeros(n, np.int64)
    for k in range(n):
        length = int(rng.integers(2, memory + 1))
        where = {}
        for slot in range(memory - length, memory):
            who, place = PEOPLE[rng.integers(len(PEOPLE))], PLACES[rng.integers(len(PLACES))]
            x[k, slot] = [ids[who], ids["went"], ids["to"], ids["the"], ids[place]]
            where[who] = place
        asked = sorted(where)[rng.integers(len(where))]
        x[k, memory, :3] = [ids["where"], ids["is"], ids[asked]]
        y[k] = ids[where[asked]]
    return x, y


def story_split(train: int, test: int, memory: int, seed: int) -> data.Split:
    rng = np.random.default_rng(seed)
    x_tr, y_tr = make_stories(train, memory, rng)
    x_te, y_te = make_stories(test, memory, rng)
    return data.Split(x_tr, y_tr, x_te, y_te)


def show(x: np.ndarray, y: int) -> str:
    lines = [" ".join(VOCAB[w] for w in s if w) for s in x[:-1] if s.any()]
    return "\n".join(lines + [" ".join(VOCAB[w] for w in x[-1] if w) + f"?  {VOCAB[y]}"])


# -- the model --------------------------------------------------------------------------------------

class MemN2N(nn.Module):
    """`apply(params, x)` with x (B, memory + 1, WORDS) word ids (sentences, then the question)
    returns answer logits (B, vocab). Sentences are bags of words; hop k reads memories
    m_i = sum_j A_k[x_ij] + TA_k[i] and c_i = sum_j C_k[x_ij] + TC_k[i], attends with
    p = softmax(u . m) over the non-empty slots and updates u <- u + sum_i p_i c_i."""

    def __init__(self, vocab: int, dim: int, memory: int, hops: int):
        self.vocab, self.dim, self.memory, self.hops = vocab, dim, memory, hops
        self.question = nn.Embedding(vocab, dim)
        for k in range(hops):
            setattr(self, f"A{k}", nn.Embedding(vocab, dim))
            setattr(self, f"C{k}", nn.Embedding(vocab, dim))
        self.answer = nn.Linear(dim, vocab, bias=False)

    def init_params(self, rng, dtype):
        # Temporal encodings, one row per memory slot and hop (input and output side).
        return {f"T{side}{k}": (0.1 * rng.standard_normal((self.memory, self.dim))).astype(dtype)
                for k in range(self.hops) for side in "AC"}

    def _init_tree(self, rng, dtype):
        # Small embeddings (N(0, 0.1) as in the paper) keep the first softmaxes soft.
        return nnjit.tree_map(lambda w: (0.1 * w).astype(dtype), super()._init_tree(rng, dtype))

    def forward(self, params, x, *, ctx):
        story, question = x[:, :self.memory, :], x[:, self.memory, :]
        u = nnjit.sum(self.child("question", params, question, ctx=ctx), axis=1)   # (B, D)
        filled = nnjit.sum(nnjit.cast(story > 0, np.float32), axis=2)               # (B, M)
        empty = nnjit.where(filled > 0, 0.0, -1e9)
        for k in range(self.hops):
            m = nnjit.sum(self.child(f"A{k}", params, story, ctx=ctx), axis=2) + params[f"TA{k}"]
            c = nnjit.sum(self.child(f"C{k}", params, story, ctx=ctx), axis=2) + params[f"TC{k}"]
            scores = nnjit.sum(m * u.reshape(u.shape[0], 1, self.dim), axis=2) + empty
            p = nnjit.softmax(scores, axis=-1)                                       # (B, M)
            u = u + nnjit.sum(c * p.reshape(p.shape[0], self.memory, 1), axis=1)
        return self.child("answer", params, u, ctx=ctx)

    def extra_repr(self) -> str:
        return f"vocab={self.vocab}, dim={self.dim}, memory={self.memory}, hops={self.hops}"


def main(argv=None) -> dict:
    args = parse_args(argv)
    split = story_split(args.train, args.test, args.memory, args.seed)
    print(f"{args.train} training and {args.test} test stories of up to {args.memory} "
          f"sentences, e.g.\n{show(split.x_train[0], int(split.y_train[0]))}")
    model = MemN2N(len(VOCAB), args.dim, args.memory, args.hops)
    print(model)
    with training.blas_threads(1):
        res = training.fit_classifier(model, split, optim.Adam(args.lr), args.epochs,
                                      min(args.batch, args.train), args.seed, args.backend)
    print(f"memory_network: test accuracy {res['accuracy']:.2%} after {args.epochs} epochs "
          f"({args.hops} hops, backend {args.backend}, {res['seconds']:.1f} s)")
    return res


if __name__ == "__main__":
    training.run_script(main)
