"""Training works end to end: the digits MLP and ConvNet reach a (looser than the examples')
accuracy bar in a few epochs, and the character LSTM's loss falls clearly below the unigram
entropy of its text. Same models, data and loop as the examples."""
from __future__ import annotations

import os
import sys

import numpy as np
import pytest

import nnjit
from nnjit import nn, optim

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "examples"))

import data  # noqa: E402
import models  # noqa: E402
import training  # noqa: E402


@pytest.fixture(autouse=True)
def _single_threaded_blas():
    with training.blas_threads(1):      # see training.blas_threads: avoids 40x slowdowns
        yield


def test_mlp_learns_digits(backend):
    split = data.digits()
    model = models.mlp(dropout=0.1)
    untrained = np.mean(training.make_predict(model, backend)(model.init(seed=0), split.x_test)
                        == split.y_test)
    res = training.fit_classifier(model, split, optim.SGD(0.05, momentum=0.9), epochs=5,
                                  backend=backend, log=None)
    assert untrained < 0.3
    assert res["accuracy"] >= 0.92, res
    assert res["losses"][-1] < 0.3 * res["losses"][0]


def test_convnet_learns_digits(backend):
    res = training.fit_classifier(models.convnet(), data.digits(images=True), optim.Adam(1e-2),
                                  epochs=5, backend=backend, log=None)
    assert res["accuracy"] >= 0.90, res
    assert res["losses"][-1] < 0.2 * res["losses"][0]


def test_char_lstm_beats_the_unigram_entropy(backend):
    text = data.stdlib_text()
    vocab = data.Vocab.of(text)
    ids = vocab.encode(text)
    h_unigram = data.unigram_entropy(ids, len(vocab))
    assert 2.5 < h_unigram < 4.0, h_unigram

    model = models.CharLSTM(len(vocab), embed=16, hidden=64)
    opt = optim.Adam(2e-2)

    def train_step(params, state, x, y):
        def loss_fn(p):
            logits, _ = model.apply(p, x)
            return nn.cross_entropy(logits, y)
        loss, grads = nnjit.value_and_grad(loss_fn)(params)
        params, state = opt.update(params, grads, state)
        return params, state, loss

    step = nnjit.jit(train_step, backend=backend, donate_argnums=(0, 1))
    params = model.init(seed=0)
    state = opt.init(params)
    rng = np.random.default_rng(0)
    losses = []
    for _ in range(80):
        x, y = data.char_windows(ids, 32, 16, rng)
        params, state, loss = step(params, state, x, y)
        losses.append(float(loss))
    first, last = np.mean(losses[:5]), np.mean(losses[-10:])
    assert first > h_unigram                    # starts near log(vocab), above the unigram
    assert last < 0.85 * h_unigram, (last, h_unigram)
    print(f"char-LSTM loss {first:.3f} -> {last:.3f} nats/char, unigram {h_unigram:.3f}")
