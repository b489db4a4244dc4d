"""LayerNorm, BatchNorm1d/2d (training, eval, running statistics), MultiheadAttention (masks,
batch_first, bias, unbatched) and the losses against torch: outputs and gradients, float64.

Marked `oracle`: skipped when torch is not installed."""
from __future__ import annotations

import numpy as np
import pytest

import nnjit
from nnjit import nn
from tests.frontend.oracle_util import compare, load_into
from tests.helpers import assert_close

torch = pytest.importorskip("torch")
F = torch.nn.functional

pytestmark = [pytest.mark.oracle,
              pytest.mark.filterwarnings("ignore:reduction. 'mean' divides the total loss")]


def _rng(seed=0):
    return np.random.default_rng(seed)


# -- normalization --------------------------------------------------------------------------------

@pytest.mark.parametrize("shape,affine", [(6, True), ((4, 6), True), ((4, 6), False)])
def test_layer_norm_matches_torch(shape, affine, backend):
    ours = nn.LayerNorm(shape, eps=1e-4, elementwise_affine=affine)
    theirs = torch.nn.LayerNorm(shape, eps=1e-4, elementwise_affine=affine)
    p = ours.init(dtype=np.float64)
    if affine:      # not the init's ones and zeros, so the affine part is checked too
        p = {k: v + _rng(1).standard_normal(v.shape) for k, v in p.items()}
    compare(torch, ours, theirs, p, (_rng().standard_normal((3, 4, 6)) * 3 + 1,),
            backend=backend, rtol=1e-8, atol=1e-9)


@pytest.mark.parametrize("kind,shape", [("BatchNorm1d", (5, 3)), ("BatchNorm1d", (5, 3, 4)),
                                        ("BatchNorm2d", (4, 3, 2, 5))])
@pytest.mark.parametrize("momentum", [0.1, None])
def test_batch_norm_training_matches_torch(kind, shape, momentum):
    ours = getattr(nn, kind)(3, momentum=momentum)
    theirs = getattr(torch.nn, kind)(3, momentum=momentum).double()
    p = {k: v + _rng(1).standard_normal(v.shape) for k, v in ours.init(dtype=np.float64).items()}
    state = ours.init_state(dtype=np.float64)
    load_into(torch, theirs, p, state)
    step = nnjit.jit(lambda p, s, x: ours.apply(p, x, training=True, state=s))
    for k in range(3):      # the running statistics after each of three steps
        x = _rng(k).standard_normal(shape) * 2 + 0.5
        out, state = step(p, state, x)
        assert_close(out, theirs(torch.tensor(x)).detach().numpy())
        for name in ("running_mean", "running_var", "num_batches_tracked"):
            assert_close(state[name], getattr(theirs, name).numpy())
    # Eval mode uses the running statistics, and returns them unchanged.
    theirs.eval()
    x = _rng(9).standard_normal(shape)
    out, same = nnjit.jit(lambda p, s, x: ours.apply(p, x, state=s))(p, state, x)
    assert_close(out, theirs(torch.tensor(x)).detach().numpy())
    for name, v in state.items():
        np.testing.assert_array_equal(same[name], v)


@pytest.mark.parametrize("training", [True, False])
def test_batch_norm_gradients_match_torch(training):
    ours, theirs = nn.BatchNorm2d(3), torch.nn.BatchNorm2d(3).train(training)
    state = {k: v + (0.5 if k != "num_batches_tracked" else 0) for k, v in
             ours.init_state(dtype=np.float64).items()}
    p = {k: v + _rng(2).standard_normal(v.shape) for k, v in ours.init(dtype=np.float64).items()}
    x = _rng(3).standard_normal((4, 3, 2, 2))

    def call(p, x):
        return ours.apply(p, x, training=training, state=state)[0]

    compare(torch, ours, theirs, p, (x,), call=call, state=state)


def test_batch_norm_without_running_stats_uses_batch_statistics_in_eval():
    ours = nn.BatchNorm1d(3, track_running_stats=False, affine=False)
    theirs = torch.nn.BatchNorm1d(3, track_running_stats=False, affine=False).eval()
    assert ours.init_state() == {} and ours.init() == {}
    compare(torch, ours, theirs, {}, (_rng().standard_normal((6, 3)),))


def test_state_dict_of_a_batch_norm_convnet_loads_into_torch():
    ours = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.ReLU())
    theirs = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.BatchNorm2d(2),
                                 torch.nn.ReLU())
    load_into(torch, theirs, ours.init(dtype=np.float64), ours.init_state(dtype=np.float64))


# -- attention ------------------------------------------------------------------------------------

E, NH, L, S, N = 8, 2, 3, 4, 2


def _mha_inputs(batch_first: bool, unbatched: bool = False):
    rng = _rng(4)

    def t(length):
        if unbatched:
            return rng.standard_normal((length, E))
        return rng.standard_normal((N, length, E) if batch_first else (length, N, E))
    return t(L), t(S), t(S)


@pytest.mark.parametrize("batch_first,bias", [(False, True), (True, False)])
@pytest.mark.parametrize("average", [True, False])
def test_multihead_attention_matches_torch(batch_first, bias, average):
    ours = nn.MultiheadAttention(E, NH, bias=bias, batch_first=batch_first)
    theirs = torch.nn.MultiheadAttention(E, NH, bias=bias, batch_first=batch_first)
    p = ours.init(seed=1, dtype=np.float64)
    if bias:
        p["in_proj_bias"] = _rng(5).standard_normal(3 * E)
    compare(torch, ours, theirs, p, _mha_inputs(batch_first),
            call=lambda p, q, k, v: ours.apply(p, q, k, v, average_attn_weights=average),
            torch_call=lambda m, q, k, v: m(q, k, v, average_attn_weights=average))


def test_multihead_attention_on_each_backend(backend):
    ours, theirs = nn.MultiheadAttention(E, NH), torch.nn.MultiheadAttention(E, NH)
    compare(torch, ours, theirs, ours.init(seed=2, dtype=np.float64), _mha_inputs(False),
            call=lambda p, q, k, v: ours.apply(p, q, k, v), backend=backend, rtol=1e-8,
            atol=1e-9)


def _masks():
    rng = _rng(6)
    causal = np.triu(np.ones((L, S), bool), 1)
    padding = np.zeros((N, S), bool)
    padding[1, -2:] = True
    per_head = rng.random((N * NH, L, S)) < 0.3
    per_head[..., 0] = False            # no fully masked rows (torch gives NaN there too)
    return {"bool attn_mask": ({"attn_mask": causal}, {}),
            "float attn_mask": ({"attn_mask": rng.standard_normal((L, S))}, {}),
            "per-head attn_mask": ({"attn_mask": per_head}, {}),
            "key_padding_mask": ({}, {"key_padding_mask": padding}),
            "float key_padding_mask": ({}, {"key_padding_mask": rng.standard_normal((N, S))}),
            "both": ({"attn_mask": causal}, {"key_padding_mask": padding})}


@pytest.mark.parametrize("which", list(_masks()))
def test_multihead_attention_masks_match_torch(which):
    ours, theirs = nn.MultiheadAttention(E, NH), torch.nn.MultiheadAttention(E, NH)
    attn, pad = _masks()[which]
    masks = {**attn, **pad}
    names = sorted(masks)
    compare(torch, ours, theirs, ours.init(seed=3, dtype=np.float64),
            _mha_inputs(False) + tuple(masks[n] for n in names),
            call=lambda p, q, k, v, *ms: ours.apply(p, q, k, v, **dict(zip(names, ms))),
            torch_call=lambda m, q, k, v, *ms: m(q, k, v, **dict(zip(names, ms))))


def test_unbatched_attention_matches_torch():
    ours, theirs = nn.MultiheadAttention(E, NH), torch.nn.MultiheadAttention(E, NH)
    out = compare(torch, ours, theirs, ours.init(seed=4, dtype=np.float64),
                  _mha_inputs(False, unbatched=True),
                  call=lambda p, q, k, v: ours.apply(p, q, k, v))
    assert out[0].shape == (L, E) and out[1].shape == (L, S)


def test_attention_init_matches_torchs_distribution():
    p = nn.MultiheadAttention(64, 4).init(seed=0)
    assert np.all(p["out_proj"]["bias"] == 0) and np.all(p["in_proj_bias"] == 0)
    bound = np.sqrt(6.0 / (64 + 3 * 64))             # xavier_uniform_ on (3E, E)
    assert np.abs(p["in_proj_weight"]).max() <= bound
    assert np.abs(p["in_proj_weight"]).max() > 0.95 * bound


# -- losses ---------------------------------------------------------------------------------------

def _loss_cases():
    rng = _rng(7)
    x, t = rng.standard_normal((4, 5)), rng.standard_normal((4, 5))
    probs = 1 / (1 + np.exp(-x))
    labels01 = (rng.random((4, 5)) < 0.5).astype(np.float64)
    logp = x - np.log(np.exp(x).sum(1, keepdims=True))
    q = np.exp(t) / np.exp(t).sum(1, keepdims=True)
    q[0, 1] = 0.0                                     # a zero target probability
    pw = rng.random(5) + 0.5
    w = rng.random((4, 5))
    return {
        "l1_loss": (nn.l1_loss, F.l1_loss, x, t, {}),
        "mse_loss": (nn.mse_loss, F.mse_loss, x, t, {}),
        "smooth_l1_loss": (nn.smooth_l1_loss, F.smooth_l1_loss, x * 2, t, {"beta": 0.7}),
        "smooth_l1_loss beta=0": (nn.smooth_l1_loss, F.smooth_l1_loss, x, t, {"beta": 0.0}),
        "huber_loss": (nn.huber_loss, F.huber_loss, x * 2, t, {"delta": 1.5}),
        "binary_cross_entropy": (nn.binary_cross_entropy, F.binary_cross_entropy, probs,
                                 labels01, {}),
        "binary_cross_entropy weight": (nn.binary_cross_entropy, F.binary_cross_entropy, probs,
                                        labels01, {"weight": w}),
        "bce_with_logits": (nn.binary_cross_entropy_with_logits,
                            F.binary_cross_entropy_with_logits, x * 5, labels01, {}),
        "bce_with_logits pos_weight": (nn.binary_cross_entropy_with_logits,
                                       F.binary_cross_entropy_with_logits, x * 5, labels01,
                                       {"pos_weight": pw, "weight": w}),
        "kl_div": (nn.kl_div, F.kl_div, logp, q, {}),
        "kl_div log_target": (nn.kl_div, F.kl_div, logp, np.log(q + 0.1), {"log_target": True}),
    }


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("case", list(_loss_cases()))
def test_losses_match_torch(case, reduction):
    ours, theirs, x, t, kw = _loss_cases()[case]
    t_kw = {k: torch.tensor(v) if isinstance(v, np.ndarray) else v for k, v in kw.items()}
    grad_target = case.startswith(("l1", "mse", "smooth", "huber", "kl", "bce_with"))
    want = theirs(*(torch.tensor(a, requires_grad=True) for a in (x, t)),
                  reduction=reduction, **t_kw)
    got = nnjit.jit(lambda x, t: ours(x, t, reduction=reduction, **kw))(x, t)
    assert_close(got, want.detach().numpy())
    cot = _rng(8).standard_normal(np.shape(got))

    def scalar(x, t):
        return (ours(x, t, reduction=reduction, **kw) * cot).sum()

    gx, gt = nnjit.jit(nnjit.grad(scalar, (0, 1)))(x, t)
    tx, tt = torch.tensor(x, requires_grad=True), torch.tensor(t, requires_grad=True)
    (theirs(tx, tt, reduction=reduction, **t_kw) * torch.tensor(cot)).sum().backward()
    assert_close(gx, tx.grad.numpy(), rtol=1e-8, atol=1e-10)
    if grad_target:
        want_gt = tt.grad.numpy()
        if case == "kl_div":
            # At target 0 torch's xlogy gradient is NaN; ours leaves out the (infinite)
            # d(t log t)/dt there and gives the finite -input.
            assert np.isnan(want_gt[0, 1])
            dloss = {"none": cot[0, 1] if cot.ndim else 0, "sum": cot, "mean": cot / x.size}
            want_gt[0, 1] = -x[0, 1] * dloss[reduction]
        assert_close(gt, want_gt, rtol=1e-8, atol=1e-10)


def test_kl_div_batchmean_matches_torch():
    _, _, logp, q, _ = _loss_cases()["kl_div"]
    got = nnjit.jit(lambda a, b: nn.kl_div(a, b, reduction="batchmean"))(logp, q)
    assert_close(got, F.kl_div(torch.tensor(logp), torch.tensor(q), reduction="batchmean")
                 .numpy())


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("shape", [(6, 4), (3, 4, 2)])
def test_nll_loss_matches_torch(reduction, shape):
    rng = _rng(9)
    x = rng.standard_normal(shape)
    y = rng.integers(0, 4, (shape[0],) + shape[2:])
    y.flat[0] = -100                                  # ignored
    w = rng.random(4) + 0.5
    for weight in (None, w):
        got = nnjit.jit(lambda x, y: nn.nll_loss(x, y, weight=weight, reduction=reduction))(x, y)
        tx = torch.tensor(x, requires_grad=True)
        want = F.nll_loss(tx, torch.tensor(y), weight=None if weight is None else
                          torch.tensor(weight), reduction=reduction)
        assert_close(got, want.detach().numpy())
        cot = rng.standard_normal(np.shape(got))
        g = nnjit.jit(nnjit.grad(lambda x: (nn.nll_loss(x, y, weight=weight,
                                                        reduction=reduction) * cot).sum()))(x)
        (want * torch.tensor(cot)).sum().backward()
        assert_close(g, tx.grad.numpy())
