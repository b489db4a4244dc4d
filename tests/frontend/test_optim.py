"""nnjit.optim: SGD (momentum, weight decay, Nesterov) and Adam against hand-written numpy versions
of torch's update formulas over several steps, and a train step traced into ONE graph holding
forward, backward and update."""
from __future__ import annotations

import numpy as np
import pytest

import nnjit
from nnjit import NnjitError, ShapeError, nn, optim
from nnjit.ir import Op
from tests.helpers import assert_close

STEPS = 4


def _params(rng):
    return {"w": rng.standard_normal((3, 2)).astype(np.float32),
            "b": {"x": rng.standard_normal(2).astype(np.float32)}}


def _grads(rng, params):
    return nnjit.tree_map(lambda p: rng.standard_normal(p.shape).astype(np.float32), params)


def _run(opt, backend, steps=STEPS):
    """Run `steps` jitted updates with random grads; returns (params, state, grads per step)."""
    rng = np.random.default_rng(0)
    params = _params(rng)
    state = opt.init(params)
    update = nnjit.jit(opt.update, backend=backend)
    history = [params]
    grads = []
    for _ in range(steps):
        g = _grads(rng, params)
        params, state = update(params, g, state)
        grads.append(g)
        history.append(params)
    return history, state, grads


def _sgd_numpy(p, grads, lr, momentum=0.0, wd=0.0, nesterov=False):
    p, buf = p.astype(np.float64), None
    for g in grads:
        g = g + wd * p
        if momentum:
            buf = g if buf is None else momentum * buf + g       # torch: first buf = g
            g = g + momentum * buf if nesterov else buf
        p = p - lr * g
    return p


def _adam_numpy(p, grads, lr, b1, b2, eps, wd=0.0):
    p = p.astype(np.float64)
    m = v = np.zeros_like(p)
    for t, g in enumerate(grads, 1):
        g = g + wd * p
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        denom = np.sqrt(v) / np.sqrt(1 - b2 ** t) + eps
        p = p - lr / (1 - b1 ** t) * m / denom
    return p


@pytest.mark.parametrize("kw", [dict(), dict(momentum=0.9), dict(momentum=0.9, weight_decay=0.1),
                                dict(momentum=0.8, nesterov=True, weight_decay=0.01)])
def test_sgd_matches_torch_formula(backend, kw):
    opt = optim.SGD(0.1, **kw)
    history, state, grads = _run(opt, backend)
    for path in (("w",), ("b", "x")):
        def get(t):
            for k in path:
                t = t[k]
            return t
        want = _sgd_numpy(get(history[0]), [get(g) for g in grads], 0.1, kw.get("momentum", 0),
                          kw.get("weight_decay", 0), kw.get("nesterov", False))
        assert_close(get(history[-1]), want.astype(np.float32), atol=1e-5)
    assert ("momentum_buffer" in state) == bool(kw.get("momentum"))


@pytest.mark.parametrize("kw", [dict(lr=0.01), dict(lr=0.05, betas=(0.8, 0.99), eps=1e-6,
                                                    weight_decay=0.1)])
def test_adam_matches_torch_formula(backend, kw):
    opt = optim.Adam(**kw)
    history, state, grads = _run(opt, backend, steps=5)
    b1, b2 = kw.get("betas", (0.9, 0.999))
    for k in range(1, 6):
        want = _adam_numpy(history[0]["w"], [g["w"] for g in grads[:k]], kw["lr"], b1, b2,
                           kw.get("eps", 1e-8), kw.get("weight_decay", 0.0))
        assert_close(history[k]["w"], want.astype(np.float32), atol=1e-5)
    assert state["step"] == 5 and state["step"].dtype == np.int64
    assert state["exp_avg"]["b"]["x"].shape == (2,)


def test_eager_update_matches_jitted():
    opt = optim.Adam(0.1)
    rng = np.random.default_rng(1)
    p = _params(rng)
    g = _grads(rng, p)
    s = opt.init(p)
    eager = opt.update(p, g, s)                     # numpy in: compiled and run on interp
    jitted = nnjit.jit(opt.update, backend="interp")(p, g, s)
    for a, b in zip(nnjit.tree_leaves(eager), nnjit.tree_leaves(jitted)):
        np.testing.assert_array_equal(a, b)


def test_mismatched_trees_and_bad_hyperparameters():
    opt = optim.SGD(0.1, momentum=0.9)
    p = {"w": np.zeros(2, np.float32)}
    with pytest.raises(ShapeError, match="grads has structure"):
        opt.update(p, {"v": np.zeros(2, np.float32)}, opt.init(p))
    with pytest.raises(ShapeError, match="shape"):
        opt.update(p, {"w": np.zeros(3, np.float32)}, opt.init(p))
    with pytest.raises(NnjitError, match="nesterov"):
        optim.SGD(0.1, nesterov=True)
    with pytest.raises(NnjitError, match="betas"):
        optim.Adam(betas=(0.9, 1.0))
    with pytest.raises(NnjitError, match="learning rate"):
        optim.SGD(-1.0)


# -- the whole step in one graph -------------------------------------------------------------

def _train_step(model, opt):
    def train_step(params, opt_state, x, y, seed):
        def loss_fn(p):
            return nn.cross_entropy(model.apply(p, x, training=True, seed=seed), y)
        loss, grads = nnjit.value_and_grad(loss_fn)(params)
        params, opt_state = opt.update(params, grads, opt_state)
        return params, opt_state, loss
    return train_step


def _batch():
    rng = np.random.default_rng(0)
    return (rng.standard_normal((8, 4)).astype(np.float32),
            rng.integers(0, 3, size=8).astype(np.int64))


def test_train_step_traces_into_one_graph():
    model = nn.Sequential(nn.Linear(4, 5), nn.ReLU(), nn.Dropout(0.2), nn.Linear(5, 3))
    opt = optim.Adam(0.01)
    p = model.init()
    s = opt.init(p)
    x, y = _batch()
    g = nnjit.trace(_train_step(model, opt), p, s, x, y, np.int64(0))
    ops = [n.op for n in g.nodes]
    assert ops.count(Op.MATMUL) == 2 + 4                   # forward 2, backward 2 per layer
    assert Op.RANDOM_UNIFORM in ops                         # dropout
    assert Op.SQRT in ops and Op.POW in ops                 # Adam's update and bias correction
    assert Op.SCAN not in ops
    # outputs: 4 new params + (4 exp_avg, 4 exp_avg_sq, 5 hyperparameters: lr, betas, eps,
    # weight_decay, step) + loss, typed like the inputs
    assert len(g.outputs) == 4 + 14 + 1
    in_types = [v.type for v in g.inputs]
    assert [v.type for v in g.outputs[:18]] == in_types[:18]
    for v in g.outputs[:4]:                                  # params: p - step_size * ...
        assert v.node.op == Op.SUB


def test_train_step_learns(backend):
    model = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 3))
    opt = optim.SGD(0.2, momentum=0.9)
    p = model.init(seed=0)
    s = opt.init(p)
    x, y = _batch()
    step = nnjit.jit(_train_step(model, opt), backend=backend, donate_argnums=(0, 1))
    losses = []
    for i in range(30):
        p, s, loss = step(p, s, x, y, np.int64(i))
        losses.append(float(loss))
    assert losses[-1] < 0.1 * losses[0]
    assert len(step._cache) == 1                              # compiled once
