"""The issue-12 layers on every backend, cuda included (this module is in the simulator's
subset, tests/cuda_subset.py: small shapes, a few seconds): each compiled result, forward and
gradient, against the reference interpreter's."""
from __future__ import annotations

import numpy as np
import pytest

import nnjit
from nnjit import nn
from tests.helpers import assert_close


def _same_on(backend, fn, *args, rtol=1e-4, atol=1e-5):
    want = nnjit.jit(fn, backend="interp")(*args)
    got = nnjit.jit(fn, backend=backend)(*args)
    for g, w in zip(nnjit.tree_leaves(got), nnjit.tree_leaves(want)):
        assert_close(g, w, rtol=rtol, atol=atol)


@pytest.mark.parametrize("kind", ["GRU", "LSTM"])
def test_stacked_bidirectional_recurrent_and_gradient(backend, kind):
    model = getattr(nn, kind)(3, 4, num_layers=2, bidirectional=True, batch_first=True)
    p = model.init(seed=0)
    x = np.random.default_rng(0).standard_normal((2, 3, 3)).astype(np.float32)
    _same_on(backend, lambda p, x: model.apply(p, x), p, x)
    _same_on(backend, lambda p, x: nnjit.grad(
        lambda p: (model.apply(p, x)[0] ** 2).sum())(p), p, x)


def test_norm_layers_training_step_state(backend):
    model = nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4), nn.BatchNorm1d(4))
    x = np.random.default_rng(1).standard_normal((5, 4)).astype(np.float32)
    _same_on(backend, lambda p, s, x: model.apply(p, x, training=True, state=s), model.init(),
             model.init_state(), x)


def test_attention_with_a_causal_mask_and_gradient(backend):
    mha = nn.MultiheadAttention(4, 2)
    q = np.random.default_rng(2).standard_normal((3, 2, 4)).astype(np.float32)
    mask = np.triu(np.ones((3, 3), bool), 1)
    _same_on(backend, lambda p, q, m: mha.apply(p, q, q, q, attn_mask=m), mha.init(), q, mask)
    _same_on(backend, lambda p, q: nnjit.grad(
        lambda p: (mha.apply(p, q, q, q)[0] ** 2).sum())(p), mha.init(), q)


def test_losses(backend):
    rng = np.random.default_rng(3)
    x, t = rng.standard_normal((3, 4)).astype(np.float32), rng.random((3, 4)).astype(np.float32)
    for loss in (nn.binary_cross_entropy_with_logits, nn.smooth_l1_loss, nn.huber_loss,
                 nn.l1_loss):
        _same_on(backend, lambda x, t: nnjit.value_and_grad(loss)(x, t), x, t)
