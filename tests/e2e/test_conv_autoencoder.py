"""A small convolutional autoencoder (issue 12's convolution family end to end): strided
Conv2d encoders, a ConvTranspose2d and an Upsample decoder, trained on the bundled digits with
Adam on llvm; the reconstruction loss falls well below where it starts, and below the loss of
predicting the (zero) mean image."""
from __future__ import annotations

import os
import sys

import numpy as np
import pytest

import nnjit
from nnjit import nn, optim

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "examples"))

import data  # noqa: E402
import training  # noqa: E402


def autoencoder() -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, stride=2, padding=1), nn.ReLU(),                # 8 x 4 x 4
        nn.Conv2d(8, 16, 3, stride=2, padding=1, groups=2), nn.ReLU(),     # 16 x 2 x 2
        nn.ConvTranspose2d(16, 8, 3, stride=2, padding=1, output_padding=1), nn.ReLU(),  # 4x4
        nn.Upsample(scale_factor=2, mode="bilinear"),                      # 8 x 8 x 8
        nn.Conv2d(8, 1, 3, padding=1))                                     # 1 x 8 x 8


@pytest.mark.parametrize("backend", ["llvm"])
def test_conv_autoencoder_reconstructs_digits(backend):
    split = data.digits(images=True)
    model, opt = autoencoder(), optim.Adam(1e-2)

    def train_step(params, state, x):
        loss, grads = nnjit.value_and_grad(lambda p: nn.mse(model.apply(p, x), x))(params)
        params, state = opt.update(params, grads, state)
        return params, state, loss

    step = nnjit.jit(train_step, backend=backend, donate_argnums=(0, 1))
    params = model.init(seed=0)
    state = opt.init(params)
    rng = np.random.default_rng(0)
    losses = []
    with training.blas_threads(1):
        for _ in range(3):
            for x, _ in data.minibatches(split.x_train, split.y_train, 64, rng):
                params, state, loss = step(params, state, x)
                losses.append(float(loss))
    baseline = float(np.mean(split.x_train ** 2))     # predicting the mean image (all zeros)
    first, last = np.mean(losses[:3]), np.mean(losses[-5:])
    print(f"autoencoder loss {first:.4f} -> {last:.4f}, mean-image baseline {baseline:.4f}")
    assert np.isfinite(losses).all()
    assert last < 0.6 * first, (first, last)
    assert last < 0.6 * baseline, (last, baseline)
    test_loss = nnjit.jit(lambda p, x: nn.mse(model.apply(p, x), x), backend=backend)(
        params, split.x_test)
    assert test_loss < 0.6 * baseline, (float(test_loss), baseline)
