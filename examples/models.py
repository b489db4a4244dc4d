"""The example models, shared by the examples, `make run`, the tests and the benchmarks."""
from __future__ import annotations

from nnjit import nn


def mlp(hidden: int = 128, n_in: int = 64, n_out: int = 10, dropout: float = 0.0
        ) -> nn.Sequential:
    """A one-hidden-layer perceptron for flattened 8x8 digits: Linear, ReLU, (Dropout,) Linear."""
    layers = [nn.Linear(n_in, hidden), nn.ReLU()]
    if dropout:
        layers.append(nn.Dropout(dropout))
    return nn.Sequential(*layers, nn.Linear(hidden, n_out))


def convnet(n_out: int = 10, channels: tuple[int, int] = (8, 16), dropout: float = 0.0
            ) -> nn.Sequential:
    """LeNet in miniature for 1x8x8 images: two conv-relu-maxpool stages, then (Dropout and) a
    linear layer. `make run` uses `channels=(16, 32), dropout=0.2`."""
    c1, c2 = channels
    layers = [nn.Conv2d(1, c1, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),     # c1 x 4 x 4
              nn.Conv2d(c1, c2, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),    # c2 x 2 x 2
              nn.Flatten()]
    if dropout:
        layers.append(nn.Dropout(dropout))
    return nn.Sequential(*layers, nn.Linear(c2 * 2 * 2, n_out))


class CharLSTM(nn.Module):
    """Character-level language model: Embedding -> LSTM -> Linear, logits at every step.

    `apply(params, ids (T, B), state=None)` returns (logits (T, B, vocab), (h, c))."""

    def __init__(self, vocab: int, embed: int = 32, hidden: int = 128):
        self.vocab, self.embed_dim, self.hidden = vocab, embed, hidden
        self.embed = nn.Embedding(vocab, embed)
        self.lstm = nn.LSTM(embed, hidden)
        self.head = nn.Linear(hidden, vocab)

    def forward(self, params, ids, state=None, *, ctx):
        x = self.child("embed", params, ids, ctx=ctx)
        ys, state = self.child("lstm", params, x, state, ctx=ctx)
        return self.child("head", params, ys, ctx=ctx), state

    def extra_repr(self) -> str:
        return f"vocab={self.vocab}"
