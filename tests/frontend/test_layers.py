"""LayerNorm, BatchNorm (state through apply and a compiled training step), MultiheadAttention,
the losses and nn.summary against numpy, with their errors."""
from __future__ import annotations

import numpy as np
import pytest

import nnjit
from nnjit import NnjitError, ShapeError, nn, optim
from tests.gradcheck import check_grads
from tests.helpers import assert_close, run


def _rng(seed=0):
    return np.random.default_rng(seed)


# -- normalization --------------------------------------------------------------------------------

def test_layer_norm_matches_numpy(backend):
    ln = nn.LayerNorm((3, 4))
    p = {k: v + _rng(1).standard_normal(v.shape).astype(np.float32) for k, v in ln.init().items()}
    x = (_rng().standard_normal((2, 3, 4)) * 5 + 2).astype(np.float32)
    mu = x.mean((1, 2), keepdims=True)
    want = (x - mu) / np.sqrt(((x - mu) ** 2).mean((1, 2), keepdims=True) + 1e-5)
    assert_close(run(lambda p, x: ln.apply(p, x), p, x, backend=backend),
                 want * p["weight"] + p["bias"])


def test_layer_norm_gradient_matches_finite_differences():
    ln = nn.LayerNorm(4)
    p = {k: v + _rng(2).standard_normal(v.shape) for k, v in ln.init(dtype=np.float64).items()}
    check_grads(lambda p, x: ln.apply(p, x), (p, _rng(3).standard_normal((3, 4))), (0, 1))


def test_batch_norm_training_step_returns_running_statistics(backend):
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4, momentum=0.5), nn.ReLU(),
                          nn.Linear(4, 2))
    params, state = model.init(seed=0), model.init_state()
    assert sorted(nn.flatten_params(state)) == ["1.num_batches_tracked", "1.running_mean",
                                                "1.running_var"]
    opt = optim.SGD(0.1)
    opt_state = opt.init(params)

    def step(params, state, opt_state, x, y):
        def loss_fn(p):
            out, new_state = model.apply(p, x, training=True, state=state)
            return nn.mse(out, y), new_state
        (loss, state), grads = nnjit.value_and_grad(loss_fn, has_aux=True)(params)
        params, opt_state = opt.update(params, grads, opt_state)
        return params, state, opt_state, loss

    step = nnjit.jit(step, backend=backend)
    x = _rng().standard_normal((8, 3)).astype(np.float32)
    y = _rng(1).standard_normal((8, 2)).astype(np.float32)
    h = x @ params["0"]["weight"].T + params["0"]["bias"]
    new_params, new_state, _, _ = step(params, state, opt_state, x, y)
    assert_close(new_state["1"]["running_mean"], 0.5 * h.mean(0))
    assert_close(new_state["1"]["running_var"], 0.5 + 0.5 * h.var(0, ddof=1))
    assert int(new_state["1"]["num_batches_tracked"]) == 1
    # Eval mode normalizes with the running statistics.
    out, same = run(lambda p, s, x: model.apply(p, x, state=s), new_params, new_state, x,
                    backend=backend)
    st, p = new_state["1"], new_params
    z = x @ p["0"]["weight"].T + p["0"]["bias"]
    z = (z - st["running_mean"]) / np.sqrt(st["running_var"] + 1e-5)
    z = np.maximum(z * p["1"]["weight"] + p["1"]["bias"], 0)
    assert_close(out, z @ p["3"]["weight"].T + p["3"]["bias"], rtol=1e-4, atol=1e-5)


def test_batch_norm_eager_apply_with_state():
    bn = nn.BatchNorm2d(2)
    x = _rng().standard_normal((3, 2, 2, 2)).astype(np.float32)
    out, state = bn.apply(bn.init(), x, training=True, state=bn.init_state())
    assert_close(out.mean((0, 2, 3)), np.zeros(2, np.float32), atol=1e-6)
    assert_close(state["running_mean"], 0.1 * x.mean((0, 2, 3)))


def test_batch_norm_errors():
    bn = nn.BatchNorm1d(3)
    p = bn.init()
    x = np.zeros((4, 3), np.float32)
    with pytest.raises(NnjitError, match="eval mode uses its running statistics: pass "
                                         r"state=model.init_state\(\)"):
        run(lambda p, x: bn.apply(p, x), p, x)
    with pytest.raises(NnjitError, match="training updates its running statistics"):
        run(lambda p, x: bn.apply(p, x, training=True), p, x)
    with pytest.raises(ShapeError, match=r"BatchNorm1d: expected input \(N, 3\) or \(N, 3, L\), "
                                         r"got \(4, 2\)"):
        run(lambda p, x: bn.apply(p, x, state=bn.init_state()), p, np.zeros((4, 2), np.float32))
    with pytest.raises(ShapeError, match="more than 1 value per channel"):
        run(lambda p, x: bn.apply(p, x, training=True, state=bn.init_state()), p,
            np.zeros((1, 3), np.float32))


# -- attention ------------------------------------------------------------------------------------

def _mha_numpy(p, q, k, v, heads, mask=None):
    """Time-major (L, N, E) multi-head attention in numpy; (output, averaged weights)."""
    e = q.shape[-1]
    w, b = p["in_proj_weight"], p["in_proj_bias"]
    proj = [t.transpose(1, 0, 2) @ w[i * e:(i + 1) * e].T + b[i * e:(i + 1) * e]
            for i, t in enumerate((q, k, v))]
    n, d = q.shape[1], e // heads
    qh, kh, vh = (t.reshape(n, -1, heads, d).transpose(0, 2, 1, 3) for t in proj)
    s = qh @ kh.transpose(0, 1, 3, 2) / np.sqrt(d)
    if mask is not None:
        s = np.where(mask, -np.inf, s)
    a = np.exp(s - s.max(-1, keepdims=True))
    a /= a.sum(-1, keepdims=True)
    o = (a @ vh).transpose(0, 2, 1, 3).reshape(n, -1, e)
    o = o @ p["out_proj"]["weight"].T + p["out_proj"]["bias"]
    return o.transpose(1, 0, 2), a.mean(1)


def test_multihead_attention_matches_numpy(backend):
    mha = nn.MultiheadAttention(8, 2)
    p = mha.init(seed=0, dtype=np.float64)
    p["in_proj_bias"] = _rng(1).standard_normal(24)
    q, k, v = (_rng(i).standard_normal((n, 2, 8)) for i, n in ((2, 3), (3, 4), (4, 4)))
    causal = np.triu(np.ones((3, 4), bool), 1)
    out, weights = run(lambda p, q, k, v, m: mha.apply(p, q, k, v, attn_mask=m), p, q, k, v,
                       causal, backend=backend)
    want, want_w = _mha_numpy(p, q, k, v, 2, causal)
    assert_close(out, want, rtol=1e-8, atol=1e-10)
    assert_close(weights, want_w, rtol=1e-8, atol=1e-10)
    assert np.all(weights[:, causal] == 0)


def test_multihead_attention_gradient_and_options():
    mha = nn.MultiheadAttention(4, 2, batch_first=True)
    p = mha.init(seed=1, dtype=np.float64)
    x = _rng(5).standard_normal((2, 3, 4))
    check_grads(lambda p, x: mha.apply(p, x, x, x)[0], (p, x), (0, 1), max_elems=10)
    out, none = run(lambda p, x: mha.apply(p, x, x, x, need_weights=False), p, x)
    assert none is None and out.shape == (2, 3, 4)
    eager_out, _ = mha.apply(p, x, x, x, key_padding_mask=np.array([[False, False, True]] * 2))
    traced_out, _ = run(lambda p, x, m: mha.apply(p, x, x, x, key_padding_mask=m), p, x,
                        np.array([[False, False, True]] * 2))
    assert_close(eager_out, traced_out)
    with pytest.raises(ShapeError, match=r"attn_mask must be \(3, 3\) or \(4, 3, 3\)"):
        run(lambda p, x: mha.apply(p, x, x, x, attn_mask=np.zeros((2, 2), bool)), p, x)
    with pytest.raises(ShapeError, match="embed_dim 5 must be divisible by num_heads 2"):
        nn.MultiheadAttention(5, 2)


# -- losses ---------------------------------------------------------------------------------------

def _losses_numpy(x, t):
    d = x - t
    a = np.abs(d)
    p = 1 / (1 + np.exp(-x))
    return {
        "l1_loss": (nn.l1_loss, {}, a),
        "smooth_l1_loss": (nn.smooth_l1_loss, {"beta": 0.5},
                           np.where(a < 0.5, d * d, a - 0.25)),
        "huber_loss": (nn.huber_loss, {"delta": 2.0},
                       np.where(a <= 2.0, 0.5 * d * d, 2.0 * (a - 1.0))),
        "binary_cross_entropy_with_logits": (
            nn.binary_cross_entropy_with_logits, {},
            -(t * np.log(p) + (1 - t) * np.log(1 - p))),
    }


@pytest.mark.parametrize("name", list(_losses_numpy(np.zeros(1), np.zeros(1))))
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_losses_match_numpy(name, reduction, backend):
    x = _rng().standard_normal((3, 4)) * 2
    t = _rng(1).random((3, 4))
    fn, kw, want = _losses_numpy(x, t)[name]
    want = {"mean": want.mean(), "sum": want.sum(), "none": want}[reduction]
    assert_close(run(lambda x, t: fn(x, t, reduction=reduction, **kw), x, t, backend=backend),
                 want, rtol=1e-8, atol=1e-10)


def test_bce_with_logits_is_stable_for_large_logits():
    x = np.array([-1000.0, -50.0, 50.0, 1000.0])
    t = np.array([1.0, 0.0, 1.0, 0.0])
    got = run(lambda x, t: nn.binary_cross_entropy_with_logits(x, t, reduction="none"), x, t)
    assert_close(got, np.array([1000.0, 0.0, 0.0, 1000.0]), atol=1e-12)
    g = run(nnjit.grad(lambda x: nn.binary_cross_entropy_with_logits(x, t, reduction="sum")), x)
    assert_close(g, np.array([-1.0, 0.0, 0.0, 1.0]), atol=1e-12)
    probs = np.array([0.0, 1.0])
    assert_close(run(lambda p: nn.binary_cross_entropy(p, np.array([1.0, 0.0]),
                                                       reduction="none"), probs),
                 np.array([100.0, 100.0]))        # torch clamps each log at -100


def test_kl_div_and_nll_loss_match_numpy():
    logq = np.log(np.array([[0.2, 0.3, 0.5], [0.1, 0.1, 0.8]]))
    p = np.array([[0.0, 0.5, 0.5], [0.2, 0.2, 0.6]])
    pointwise = np.where(p > 0, p * (np.log(np.where(p > 0, p, 1)) - logq), 0)
    assert_close(run(lambda a, b: nn.kl_div(a, b, reduction="batchmean"), logq, p),
                 pointwise.sum() / 2)
    labels = np.array([2, -100])
    assert_close(run(lambda a: nn.nll_loss(a, labels), logq), -logq[0, 2])


def test_loss_errors():
    x = np.zeros((2, 3))
    with pytest.raises(ShapeError, match=r"l1_loss: target \(3, 2\) must have the input's shape "
                                         r"\(2, 3\)"):
        run(lambda a: nn.l1_loss(a, np.zeros((3, 2))), x)
    with pytest.raises(ShapeError, match="reduction must be one of 'mean', 'sum', 'none', got "
                                         "'avg'"):
        run(lambda a: nn.huber_loss(a, x, reduction="avg"), x)
    with pytest.raises(ShapeError, match="nll_loss: target must be integers"):
        run(lambda a: nn.nll_loss(a, np.zeros(2)), x)


# -- summary --------------------------------------------------------------------------------------

def test_summary_of_a_small_convnet():
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                          nn.MaxPool2d(2), nn.Flatten(), nn.Linear(64, 10))
    printed = []
    text = nn.summary(model, np.zeros((2, 1, 8, 8), np.float32), print_fn=printed.append)
    assert printed == [text]
    lines = text.splitlines()
    assert lines[1].split() == ["Layer", "(type)", "Output", "shape", "Param", "#"]
    rows = [line.split() for line in lines[3:9]]
    assert rows == [
        ["Sequential", "[2,", "10]", "698"],
        ["0:", "Conv2d", "[2,", "4,", "8,", "8]", "40"],
        ["1:", "BatchNorm2d", "[2,", "4,", "8,", "8]", "8"],
        ["2:", "ReLU", "[2,", "4,", "8,", "8]", "0"],
        ["3:", "MaxPool2d", "[2,", "4,", "4,", "4]", "0"],
        ["4:", "Flatten", "[2,", "64]", "0"],
    ] and lines[9].split() == ["5:", "Linear", "[2,", "10]", "650"]
    assert "Total params: 698" in text and "State (running statistics): 9" in text


def test_summary_of_nested_modules_and_tuple_outputs():
    class Net(nn.Module):
        def __init__(self):
            self.rnn = nn.GRU(3, 4, num_layers=2)
            self.head = nn.Sequential(nn.Linear(4, 2))

        def forward(self, params, x, *, ctx):
            ys, _ = self.child("rnn", params, x, ctx=ctx)
            return self.child("head", params, ys, ctx=ctx)

    text = nn.summary(Net(), np.zeros((5, 2, 3), np.float32), print_fn=None)
    assert "  rnn: GRU" in text and "[5, 2, 4], [2, 2, 4]" in text
    assert "    0: Linear" in text and f"Total params: {nn.num_params(Net().init()):,}" in text


def test_attention_dropout_only_while_training():
    mha = nn.MultiheadAttention(4, 2, dropout=0.5)
    p = mha.init(seed=2)
    x = _rng(6).standard_normal((3, 2, 4)).astype(np.float32)
    evald = run(lambda p, x: mha.apply(p, x, x, x)[0], p, x)
    plain = nn.MultiheadAttention(4, 2)
    assert_close(evald, run(lambda p, x: plain.apply(p, x, x, x)[0], p, x))
    a, b = (run(lambda p, x, s: mha.apply(p, x, x, x, training=True, seed=s)[0], p, x,
                np.int64(s)) for s in (1, 2))
    assert not np.allclose(a, evald) and not np.allclose(a, b)
    with pytest.raises(NnjitError, match="dropout in training needs"):
        run(lambda p, x: mha.apply(p, x, x, x, training=True), p, x)
