"""The activation modules and functions of issue 12 against PyTorch (forward and gradients,
float64): nn.GELU (both forms), nn.LeakyReLU, nn.ELU, nn.Identity, and the functional selu,
hard_sigmoid, clip (torch.clamp), erf, sin, cos. Marked `oracle` (skipped without torch)."""
from __future__ import annotations

import numpy as np
import pytest

import nnjit
from nnjit import nn
from tests.helpers import assert_close, run

torch = pytest.importorskip("torch")

pytestmark = pytest.mark.oracle

X = np.concatenate([np.linspace(-6, 6, 49), [-3.0 + 1e-3, 3.0 - 1e-3, -1e-4, 2e-4]])

MODULES = [
    (lambda: nn.GELU(), lambda: torch.nn.GELU()),
    (lambda: nn.GELU("tanh"), lambda: torch.nn.GELU(approximate="tanh")),
    (lambda: nn.LeakyReLU(0.2), lambda: torch.nn.LeakyReLU(0.2)),
    (lambda: nn.ELU(0.7), lambda: torch.nn.ELU(0.7)),
    (lambda: nn.Identity(3, foo=1), lambda: torch.nn.Identity(3, foo=1)),
]
FUNCTIONS = [
    (nnjit.selu, torch.nn.functional.selu),
    (nnjit.hard_sigmoid, torch.nn.functional.hardsigmoid),
    (lambda x: nnjit.clip(x, -1.5, 2.0), lambda x: torch.clamp(x, -1.5, 2.0)),
    (nnjit.erf, torch.erf), (nnjit.sin, torch.sin), (nnjit.cos, torch.cos),
]


def _against_torch(ours, theirs, backend, rtol=None):
    got, grad = run(lambda x: (ours(x), nnjit.grad(lambda v: nnjit.sum(ours(v) * v))(x)), X,
                    backend=backend)
    t = torch.tensor(X, requires_grad=True)
    out = theirs(t)
    (out * t).sum().backward()
    assert_close(got, out.detach().numpy(), rtol=rtol, atol=rtol)
    assert_close(grad, t.grad.numpy(), rtol=rtol, atol=rtol)


@pytest.mark.parametrize("i", range(len(MODULES)))
def test_module_matches_torch(i, backend):
    make_ours, make_theirs = MODULES[i]
    module = make_ours()
    params = module.init(seed=0, dtype=np.float64)
    _against_torch(lambda x: module.apply(params, x), make_theirs(), backend)


@pytest.mark.parametrize("i", range(len(FUNCTIONS)))
def test_function_matches_torch(i, backend):
    # NOTE: torch's float64 hardsigmoid scales by a float32 1/6 (errors ~1e-8); ours is exact.
    _against_torch(*FUNCTIONS[i], backend, rtol=1e-7 if i == 1 else None)


def test_gelu_rejects_unknown_forms():
    with pytest.raises(nnjit.ShapeError, match="approximate must be 'none' or 'tanh'"):
        nn.GELU("erf")
