"""Traced hyperparameters and learning-rate schedules: the state holds the hyperparameters (a new
value takes effect without recompiling), a traced scalar can be passed to an optimizer, assigning
`opt.lr` after init is an error rather than silently ignored, and the schedules match numpy
formulas at several steps, inside a compiled step too."""
from __future__ import annotations

import math

import numpy as np
import pytest

import nnjit
from nnjit import NnjitError, optim
schedules = optim.schedules
from tests.helpers import assert_close


def _problem():
    rng = np.random.default_rng(0)
    return ({"w": rng.standard_normal((3, 2)).astype(np.float32)},
            rng.standard_normal((3, 2)).astype(np.float32))


def _quadratic_step(opt):
    """A step whose gradient is `w - target`: SGD's update is then known in closed form."""
    def step(params, state, target):
        grads = nnjit.grad(lambda p: 0.5 * nnjit.sum((p["w"] - target) ** 2))(params)
        return opt.update(params, grads, state)
    return step


def test_set_hyperparams_takes_effect_without_recompiling(backend):
    opt = optim.SGD(0.1)
    params, target = _problem()
    state = opt.init(params)
    assert state["hyperparams"]["lr"].dtype == np.float64 and state["hyperparams"]["lr"] == 0.1
    step = nnjit.jit(_quadratic_step(opt), backend=backend)
    w = params["w"].astype(np.float64)
    for lr in (0.1, 0.5, 0.0, 0.25):
        state = opt.set_hyperparams(state, lr=lr)
        params, state = step(params, state, target)
        w = w - lr * (w - target)
        assert_close(params["w"], w.astype(np.float32), atol=1e-6)
    assert len(step._cache) == 1 and step.recompiles == []


def test_assigning_a_hyperparameter_after_init_is_an_error():
    opt = optim.Adam(1e-3)
    opt.lr = 1e-2                                      # before init: the initial value
    assert opt.init(_problem()[0])["hyperparams"]["lr"] == 1e-2
    with pytest.raises(NnjitError, match=r"Adam.lr cannot be changed after init\(\).*"
                                         r"set_hyperparams\(state, lr=\.\.\.\)"):
        opt.lr = 1e-4
    assert opt.lr == 1e-2


def test_traced_learning_rate_argument(backend):
    """`optim.Adam(lr=<traced>)` inside the step (it used to raise a "Python control flow"
    error from the constructor's range check)."""
    params, target = _problem()
    state = optim.Adam(0.0, betas=(0.5, 0.9)).init(params)

    def step(params, state, target, lr):
        grads = nnjit.grad(lambda p: 0.5 * nnjit.sum((p["w"] - target) ** 2))(params)
        return optim.Adam(lr=lr).update(params, grads, state)     # betas: the state's

    jf = nnjit.jit(step, backend=backend)
    w = params["w"].astype(np.float64)
    m = v = np.zeros_like(w)
    for t, lr in enumerate((0.1, 0.01, 0.2), 1):
        params, state = jf(params, state, target, np.float32(lr))
        g = w - target
        m, v = 0.5 * m + 0.5 * g, 0.9 * v + 0.1 * g * g
        w = w - np.float32(lr) / (1 - 0.5 ** t) * m / (np.sqrt(v) / np.sqrt(1 - 0.9 ** t) + 1e-8)
        assert_close(params["w"], w.astype(np.float32), atol=1e-5)
    assert len(jf._cache) == 1


def test_traced_momentum_and_weight_decay(backend):
    params, target = _problem()

    def step(params, state, target, hp):
        opt = optim.SGD(hp["lr"], momentum=hp["momentum"], weight_decay=hp["wd"])
        return _quadratic_step(opt)(params, state, target)

    state = optim.SGD(0.0, momentum=0.5).init(params)
    jf = nnjit.jit(step, backend=backend)
    w, buf = params["w"].astype(np.float64), 0.0
    for lr, mom, wd in ((0.1, 0.5, 0.0), (0.2, 0.9, 0.1), (0.05, 0.0, 0.3)):
        hp = {"lr": np.float32(lr), "momentum": np.float32(mom), "wd": np.float32(wd)}
        params, state = jf(params, state, target, hp)
        g = (w - target) + np.float32(wd) * w
        buf = np.float32(mom) * buf + g
        w = w - np.float32(lr) * buf
        assert_close(params["w"], w.astype(np.float32), atol=1e-5)
    assert len(jf._cache) == 1


def test_bad_hyperparameters_name_the_problem():
    p = _problem()[0]
    with pytest.raises(NnjitError, match="must be a float scalar"):
        nnjit.jit(lambda lr: optim.SGD(lr).init(p))(np.zeros(2, np.float32))
    opt = optim.SGD(0.1)
    state = opt.init(p)
    with pytest.raises(NnjitError, match=r"'betas' is not a hyperparameter in this state"):
        opt.set_hyperparams(state, betas=(0.9, 0.99))
    with pytest.raises(NnjitError, match="no momentum buffer"):
        opt.set_hyperparams(state, momentum=0.9)
    with pytest.raises(NnjitError, match="invalid learning rate -1"):
        opt.set_hyperparams(state, lr=-1.0)
    with pytest.raises(NnjitError, match="invalid betas"):
        optim.Adam().set_hyperparams(optim.Adam().init(p), betas=(0.9, 1.5))


def test_the_state_carries_its_hyperparameters(backend):
    """A state saved mid-run and updated by a new optimizer object (a resumed run) keeps the
    values it holds: here the lr set with set_hyperparams, not the new object's 0.1."""
    params, target = _problem()
    state = optim.SGD(0.1).set_hyperparams(optim.SGD(0.1).init(params), lr=0.5)
    new, _ = nnjit.jit(_quadratic_step(optim.SGD(0.1)), backend=backend)(params, state, target)
    assert_close(new["w"], params["w"] - 0.5 * (params["w"] - target))


def test_eager_update_reads_the_state_hyperparameters():
    opt = optim.SGD(0.1)
    params, target = _problem()
    state = opt.set_hyperparams(opt.init(params), lr=0.5)
    new, _ = opt.update(params, {"w": np.ones((3, 2), np.float32)}, state)
    assert_close(new["w"], params["w"] - 0.5)


# -- schedules --------------------------------------------------------------------------------

def _cosine(init, steps, alpha, k):
    return init * ((1 - alpha) * 0.5 * (1 + math.cos(math.pi * min(k, steps) / steps)) + alpha)


SCHEDULES = [
    (schedules.constant(0.3), lambda k: 0.3),
    (schedules.step_decay(0.1, step_size=3, gamma=0.5), lambda k: 0.1 * 0.5 ** (k // 3)),
    (schedules.cosine_decay(0.2, decay_steps=7, alpha=0.1), lambda k: _cosine(0.2, 7, 0.1, k)),
    (schedules.linear_warmup(0.4, warmup_steps=4, init_value=0.1),
     lambda k: 0.1 + 0.3 * min(k, 4) / 4),
    (schedules.warmup_cosine_decay(0.5, warmup_steps=3, decay_steps=10, end_value=0.05),
     lambda k: 0.5 * k / 3 if k < 3 else _cosine(0.5, 7, 0.1, k - 3)),
    (schedules.join_schedules([schedules.constant(1.0), schedules.linear_warmup(2.0, 2)], [5]),
     lambda k: 1.0 if k < 5 else 2.0 * min(k - 5, 2) / 2),
]


@pytest.mark.parametrize("sched,want", SCHEDULES, ids=[repr(s)[:20] for s, _ in SCHEDULES])
def test_schedule_values_match_numpy(sched, want):
    for k in (0, 1, 2, 3, 4, 5, 6, 7, 9, 10, 11, 50):
        got = sched(k)
        assert got.dtype == np.float64
        np.testing.assert_allclose(got, want(k), rtol=1e-13, atol=1e-15, err_msg=f"step {k}")


def test_schedule_drives_sgd_inside_the_step(backend):
    sched = schedules.warmup_cosine_decay(0.5, warmup_steps=2, decay_steps=6)
    opt = optim.SGD(lr=sched)
    params, target = _problem()
    state = opt.init(params)
    assert state["step"] == 0 and "lr" not in state["hyperparams"]
    step = nnjit.jit(_quadratic_step(opt), backend=backend)
    w = params["w"].astype(np.float64)
    for k in range(8):
        params, state = step(params, state, target)
        w = w - np.float32(float(sched(k))) * (w - target)
        assert_close(params["w"], w.astype(np.float32), atol=1e-6)
    assert state["step"] == 8 and len(step._cache) == 1


def test_schedule_argument_checks():
    with pytest.raises(NnjitError, match="decay_steps must be a positive integer"):
        schedules.cosine_decay(0.1, decay_steps=0)
    with pytest.raises(NnjitError, match="2 schedules need 1 boundaries"):
        schedules.join_schedules([schedules.constant(1.0)] * 2, [])
    with pytest.raises(NnjitError, match="the step must be an integer scalar"):
        nnjit.jit(lambda t: schedules.constant(1.0)(t))(np.float32(1))
