"""AdamW, RMSprop and Adagrad against hand-written numpy versions of torch's update formulas
over several steps (torch itself: tests/frontend/test_nn_oracle_torch.py), and clip_grad_norm
against torch's clip_grad_norm_ formula, traced into the step."""
from __future__ import annotations

import numpy as np
import pytest

import nnjit
from nnjit import NnjitError, optim
from tests.helpers import assert_close

STEPS = 5


def _run(opt, backend, dtype=np.float32):
    rng = np.random.default_rng(0)
    p = {"w": rng.standard_normal((3, 2)).astype(dtype), "b": rng.standard_normal(2).astype(dtype)}
    grads = [{k: rng.standard_normal(v.shape).astype(dtype) for k, v in p.items()}
             for _ in range(STEPS)]
    state = opt.init(p)
    update = nnjit.jit(opt.update, backend=backend)
    history = [p]
    for g in grads:
        p, state = update(p, g, state)
        history.append(p)
    return history, [g["w"] for g in grads], state


def _adamw_numpy(p, grads, lr, b1, b2, eps, wd):
    p = p.astype(np.float64)
    m = v = np.zeros_like(p)
    for t, g in enumerate(grads, 1):
        p = p * (1 - lr * wd)
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        p = p - lr / (1 - b1 ** t) * m / (np.sqrt(v) / np.sqrt(1 - b2 ** t) + eps)
    return p


def _rmsprop_numpy(p, grads, lr, alpha, eps, weight_decay, momentum, centered):
    wd = weight_decay
    p = p.astype(np.float64)
    v, a, buf = np.zeros_like(p), np.zeros_like(p), np.zeros_like(p)
    for g in grads:
        g = g + wd * p
        v = alpha * v + (1 - alpha) * g * g
        if centered:
            a = alpha * a + (1 - alpha) * g
            d = np.sqrt(v - a * a) + eps
        else:
            d = np.sqrt(v) + eps
        if momentum:
            buf = momentum * buf + g / d
            p = p - lr * buf
        else:
            p = p - lr * g / d
    return p


def _adagrad_numpy(p, grads, lr, lr_decay, wd, init_acc, eps):
    p = p.astype(np.float64)
    acc = np.full_like(p, init_acc)
    for t, g in enumerate(grads, 1):
        g = g + wd * p
        clr = lr / (1 + (t - 1) * lr_decay)
        acc = acc + g * g
        p = p - clr * g / (np.sqrt(acc) + eps)
    return p


@pytest.mark.parametrize("kw", [dict(), dict(lr=0.05, betas=(0.8, 0.99), eps=1e-6,
                                             weight_decay=0.3)])
def test_adamw(backend, kw):
    history, grads, state = _run(optim.AdamW(**kw), backend)
    full = dict(lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2) | kw
    for k in range(1, STEPS + 1):
        want = _adamw_numpy(history[0]["w"], grads[:k], full["lr"], *full["betas"], full["eps"],
                            full["weight_decay"])
        assert_close(history[k]["w"], want.astype(np.float32), atol=1e-6)
    assert sorted(state) == ["exp_avg", "exp_avg_sq", "hyperparams", "step"]


@pytest.mark.parametrize("kw", [dict(), dict(momentum=0.9), dict(centered=True, weight_decay=0.1),
                                dict(lr=0.05, alpha=0.9, eps=1e-4, momentum=0.5,
                                     centered=True)])
def test_rmsprop(backend, kw):
    history, grads, state = _run(optim.RMSprop(**kw), backend)
    full = dict(lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0.0, momentum=0.0,
                centered=False) | kw
    for k in range(1, STEPS + 1):
        want = _rmsprop_numpy(history[0]["w"], grads[:k], **full)
        assert_close(history[k]["w"], want.astype(np.float32), atol=1e-5)
    assert ("momentum_buffer" in state) == bool(full["momentum"])
    assert ("grad_avg" in state) == full["centered"]


@pytest.mark.parametrize("kw", [dict(), dict(lr=0.1, lr_decay=0.5, weight_decay=0.2,
                                             initial_accumulator_value=0.3, eps=1e-6)])
def test_adagrad(backend, kw):
    history, grads, state = _run(optim.Adagrad(**kw), backend)
    full = dict(lr=1e-2, lr_decay=0.0, weight_decay=0.0, initial_accumulator_value=0.0,
                eps=1e-10) | kw
    for k in range(1, STEPS + 1):
        want = _adagrad_numpy(history[0]["w"], grads[:k], full["lr"], full["lr_decay"],
                              full["weight_decay"], full["initial_accumulator_value"],
                              full["eps"])
        assert_close(history[k]["w"], want.astype(np.float32), atol=1e-6)
    assert state["step"] == STEPS


def test_new_optimizers_validate_and_trace_hyperparameters():
    with pytest.raises(NnjitError, match="RMSprop: invalid alpha value -0.5"):
        optim.RMSprop(alpha=-0.5)
    with pytest.raises(NnjitError, match="Adagrad: invalid initial_accumulator_value -1"):
        optim.Adagrad(initial_accumulator_value=-1)
    assert repr(optim.AdamW()) == ("AdamW(lr=0.001, betas=(0.9, 0.999), eps=1e-08, "
                                   "weight_decay=0.01)")
    opt = optim.RMSprop(0.1)
    p = {"w": np.ones(2, np.float32)}
    s = opt.set_hyperparams(opt.init(p), lr=0.0)
    new, _ = opt.update(p, {"w": np.ones(2, np.float32)}, s)
    np.testing.assert_array_equal(new["w"], p["w"])          # lr 0 from the state: no change


# -- clip_grad_norm -------------------------------------------------------------------------------

def _clip_numpy(grads, max_norm, norm_type=2.0, eps=1e-6):
    flat = np.concatenate([g.ravel().astype(np.float64) for g in grads])
    norm = np.abs(flat).max() if norm_type == np.inf else np.sqrt(np.sum(flat * flat))
    coef = min(max_norm / (norm + eps), 1.0)
    return [g * coef for g in grads], norm


@pytest.mark.parametrize("max_norm,norm_type", [(0.5, 2.0), (100.0, 2.0), (0.3, np.inf)])
def test_clip_grad_norm_matches_torch_formula(backend, max_norm, norm_type):
    rng = np.random.default_rng(3)
    grads = {"a": rng.standard_normal((4, 3)), "b": [rng.standard_normal(5)]}
    f = nnjit.jit(lambda g, m: optim.clip_grad_norm(g, m, norm_type=norm_type), backend=backend)
    clipped, norm = f(grads, np.float64(max_norm))
    (wa, wb), wnorm = _clip_numpy([grads["a"], grads["b"][0]], max_norm, norm_type)
    assert_close(norm, wnorm)
    assert_close(clipped["a"], wa)
    assert_close(clipped["b"][0], wb)
    assert clipped["a"].dtype == np.float64
    if max_norm == 100.0:                              # under the limit: unchanged
        np.testing.assert_array_equal(clipped["a"], grads["a"])


def test_clip_grad_norm_in_a_train_step_and_eager(backend):
    rng = np.random.default_rng(4)
    p = {"w": rng.standard_normal((3, 2)).astype(np.float32)}
    x = rng.standard_normal((5, 3)).astype(np.float32)
    opt = optim.SGD(0.1)

    def step(params, state, x):
        grads = nnjit.grad(lambda q: nnjit.sum((x @ q["w"]) ** 2))(params)
        grads, norm = optim.clip_grad_norm(grads, 1.0)
        params, state = opt.update(params, grads, state)
        return params, state, norm

    new, _, norm = nnjit.jit(step, backend=backend)(p, opt.init(p), x)
    g = 2 * x.T.astype(np.float64) @ (x @ p["w"])
    assert_close(norm, np.float32(np.linalg.norm(g)), rtol=1e-5)
    assert_close(new["w"], (p["w"] - 0.1 * g / (np.linalg.norm(g) + 1e-6)).astype(np.float32),
                 atol=1e-6)
    eager, eager_norm = optim.clip_grad_norm({"w": g.astype(np.float32)}, 1.0)   # numpy in
    assert_close(eager_norm, np.float32(np.linalg.norm(g)), rtol=1e-5)
    with pytest.raises(NnjitError, match="norm_type must be 2 or inf"):
        optim.clip_grad_norm({"w": g}, 1.0, norm_type=1.0)
