"""nnjit.nn and nnjit.optim against PyTorch itself: our parameters load into the torch modules by
name (`load_state_dict(strict=True)`), the layers give the same outputs, and SGD/Adam give the
same parameters after several steps. Float64 on both sides.

Marked `oracle`: skipped when torch is not installed (it is not a dependency of nnjit).
"""
from __future__ import annotations

import numpy as np
import pytest

import nnjit
from nnjit import nn, optim
from tests.helpers import assert_close, run

torch = pytest.importorskip("torch")

pytestmark = pytest.mark.oracle


def _load_into(module, params):
    state = {k: torch.tensor(v) for k, v in nn.flatten_params(params).items()}
    module = module.double()              # first, so the float64 values load unrounded
    module.load_state_dict(state, strict=True)
    return module


def _rng():
    return np.random.default_rng(0)


def test_sequential_convnet_matches_torch(backend):
    ours = nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(3, 4, 2, stride=1), nn.Tanh(), nn.AvgPool2d(1), nn.Flatten(),
                         nn.Linear(4, 5))
    theirs = torch.nn.Sequential(torch.nn.Conv2d(2, 3, 3, padding=1), torch.nn.ReLU(),
                                 torch.nn.MaxPool2d(2), torch.nn.Conv2d(3, 4, 2),
                                 torch.nn.Tanh(), torch.nn.AvgPool2d(1), torch.nn.Flatten(),
                                 torch.nn.Linear(4, 5))
    p = ours.init(seed=0, dtype=np.float64)
    _load_into(theirs, p)
    x = _rng().standard_normal((2, 2, 4, 4))
    got = run(lambda p, x: ours.apply(p, x), p, x, backend=backend)
    assert_close(got, theirs(torch.tensor(x)).detach().numpy())


@pytest.mark.parametrize("kind", ["RNN", "LSTM"])
def test_recurrent_matches_torch(backend, kind):
    ours = getattr(nn, kind)(3, 4)
    theirs = getattr(torch.nn, kind)(3, 4)
    p = ours.init(seed=0, dtype=np.float64)
    _load_into(theirs, p)
    x = _rng().standard_normal((5, 2, 3))
    ys, state = run(lambda p, x: ours.apply(p, x), p, x, backend=backend)
    t_ys, t_state = theirs(torch.tensor(x))
    assert_close(ys, t_ys.detach().numpy())
    h_t = state[0] if kind == "LSTM" else state
    t_h = t_state[0] if kind == "LSTM" else t_state
    assert_close(h_t, t_h.detach().numpy())             # torch's h_n is (num_layers, B, H)
    if kind == "LSTM":
        assert_close(state[1], t_state[1].detach().numpy())


def test_embedding_and_cross_entropy_match_torch(backend):
    emb = nn.Embedding(7, 5)
    p = emb.init(seed=0, dtype=np.float64)
    idx = np.array([[1, 6, 0], [3, 3, 2]], np.int64)
    labels = np.array([4, 0, 1], np.int64)
    got = run(lambda p: nn.cross_entropy(emb.apply(p, idx)[0], labels), p, backend=backend)
    t_emb = _load_into(torch.nn.Embedding(7, 5), p)
    want = torch.nn.functional.cross_entropy(t_emb(torch.tensor(idx))[0], torch.tensor(labels))
    assert_close(got, want.detach().numpy())


@pytest.mark.parametrize("make", [
    (lambda: optim.SGD(0.1, momentum=0.9, weight_decay=0.01, nesterov=True),
     lambda ps: torch.optim.SGD(ps, 0.1, momentum=0.9, weight_decay=0.01, nesterov=True)),
    (lambda: optim.Adam(0.05, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.1),
     lambda ps: torch.optim.Adam(ps, 0.05, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.1)),
    # -- AdamW, RMSprop, Adagrad (issue 12): torch's defaults, then every option
    (lambda: optim.AdamW(), lambda ps: torch.optim.AdamW(ps)),
    (lambda: optim.AdamW(0.05, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.3),
     lambda ps: torch.optim.AdamW(ps, 0.05, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.3)),
    (lambda: optim.RMSprop(), lambda ps: torch.optim.RMSprop(ps)),
    (lambda: optim.RMSprop(0.05, alpha=0.9, eps=1e-4, weight_decay=0.1, momentum=0.5,
                           centered=True),
     lambda ps: torch.optim.RMSprop(ps, 0.05, alpha=0.9, eps=1e-4, weight_decay=0.1,
                                    momentum=0.5, centered=True)),
    (lambda: optim.Adagrad(), lambda ps: torch.optim.Adagrad(ps)),
    (lambda: optim.Adagrad(0.1, lr_decay=0.5, weight_decay=0.2, initial_accumulator_value=0.3,
                           eps=1e-6),
     lambda ps: torch.optim.Adagrad(ps, 0.1, lr_decay=0.5, weight_decay=0.2,
                                    initial_accumulator_value=0.3, eps=1e-6)),
])
def test_optimizers_match_torch(backend, make):
    ours, theirs = make
    rng = _rng()
    p = {"w": rng.standard_normal((3, 2)), "b": rng.standard_normal(2)}
    t_params = [torch.tensor(p["b"], requires_grad=True), torch.tensor(p["w"],
                                                                       requires_grad=True)]
    opt, t_opt = ours(), theirs(t_params)
    state = opt.init(p)
    update = nnjit.jit(opt.update, backend=backend)
    for _ in range(5):
        g = {"w": rng.standard_normal((3, 2)), "b": rng.standard_normal(2)}
        p, state = update(p, g, state)
        t_params[0].grad, t_params[1].grad = torch.tensor(g["b"]), torch.tensor(g["w"])
        t_opt.step()
    assert_close(p["b"], t_params[0].detach().numpy(), rtol=1e-7, atol=1e-9)
    assert_close(p["w"], t_params[1].detach().numpy(), rtol=1e-7, atol=1e-9)


# -- convolution family (issue 12) --
# Each layer's forward and its gradients (input and every parameter) against torch autograd,
# with our parameters loaded into the torch module by name.

CONV_FAMILY = {
    "Conv1d": (lambda: nn.Conv1d(4, 6, 3, stride=2, padding=1, dilation=2, groups=2),
               lambda: torch.nn.Conv1d(4, 6, 3, stride=2, padding=1, dilation=2, groups=2),
               (2, 4, 9)),
    "Conv2d_groups": (lambda: nn.Conv2d(4, 6, 3, padding=1, groups=2),
                      lambda: torch.nn.Conv2d(4, 6, 3, padding=1, groups=2), (2, 4, 5, 5)),
    "Conv2d_depthwise": (lambda: nn.Conv2d(3, 6, (3, 2), stride=2, groups=3, bias=False),
                         lambda: torch.nn.Conv2d(3, 6, (3, 2), stride=2, groups=3, bias=False),
                         (1, 3, 6, 5)),
    "ConvTranspose2d": (lambda: nn.ConvTranspose2d(4, 6, 3, stride=2, padding=1,
                                                   output_padding=1, groups=2),
                        lambda: torch.nn.ConvTranspose2d(4, 6, 3, stride=2, padding=1,
                                                         output_padding=1, groups=2),
                        (2, 4, 3, 4)),
    "ConvTranspose2d_dilated": (lambda: nn.ConvTranspose2d(2, 3, (2, 3), stride=(1, 2),
                                                           output_padding=(1, 1),
                                                           dilation=(2, 1)),
                                lambda: torch.nn.ConvTranspose2d(2, 3, (2, 3), stride=(1, 2),
                                                                 output_padding=(1, 1),
                                                                 dilation=(2, 1)),
                                (1, 2, 3, 3)),
    "Upsample_nearest": (lambda: nn.Upsample(scale_factor=2),
                         lambda: torch.nn.Upsample(scale_factor=2), (2, 3, 3, 4)),
    "Upsample_nearest_size": (lambda: nn.Upsample(size=(5, 7)),
                              lambda: torch.nn.Upsample(size=(5, 7)), (1, 2, 3, 4)),
    "Upsample_bilinear": (lambda: nn.Upsample(scale_factor=1.5, mode="bilinear"),
                          lambda: torch.nn.Upsample(scale_factor=1.5, mode="bilinear"),
                          (1, 2, 4, 3)),
    "Upsample_bilinear_align": (
        lambda: nn.Upsample(size=(6, 5), mode="bilinear", align_corners=True),
        lambda: torch.nn.Upsample(size=(6, 5), mode="bilinear", align_corners=True),
        (2, 1, 3, 4)),
    "AdaptiveAvgPool2d": (lambda: nn.AdaptiveAvgPool2d(1), lambda: torch.nn.AdaptiveAvgPool2d(1),
                          (2, 3, 4, 5)),
    "AdaptiveMaxPool2d": (lambda: nn.AdaptiveMaxPool2d((1, 1)),
                          lambda: torch.nn.AdaptiveMaxPool2d((1, 1)), (2, 3, 4, 5)),
}


@pytest.mark.parametrize("name", sorted(CONV_FAMILY))
def test_conv_family_layers_match_torch(backend, name):
    make_ours, make_theirs, x_shape = CONV_FAMILY[name]
    ours = make_ours()
    p = ours.init(seed=1, dtype=np.float64)
    theirs = _load_into(make_theirs(), p)
    x = _rng().standard_normal(x_shape)
    t_x = torch.tensor(x, requires_grad=True)
    t_y = theirs(t_x)
    r = _rng().standard_normal(tuple(t_y.shape))          # a random cotangent
    (t_y * torch.tensor(r)).sum().backward()

    def loss(p, x):
        return (ours.apply(p, x) * r).sum()

    y = run(lambda p, x: ours.apply(p, x), p, x, backend=backend)
    assert_close(y, t_y.detach().numpy())
    g_p, g_x = run(nnjit.grad(loss, argnums=(0, 1)), p, x, backend=backend)
    assert_close(g_x, t_x.grad.numpy())
    t_grads = {k: v.grad.numpy() for k, v in theirs.named_parameters()}
    assert set(nn.flatten_params(g_p)) == set(t_grads)
    for k, g in nn.flatten_params(g_p).items():
        assert_close(g, t_grads[k])


def test_adaptive_pool_rejects_uneven_output_sizes():
    with pytest.raises(nnjit.ShapeError, match="must be 1 or divide the input size"):
        nn.AdaptiveAvgPool2d(3).apply({}, np.ones((1, 1, 4, 4), np.float32))


@pytest.mark.parametrize("max_norm,norm_type", [(0.5, 2.0), (100.0, 2.0), (0.3, float("inf"))])
def test_clip_grad_norm_matches_torch(backend, max_norm, norm_type):
    rng = _rng()
    grads = {"a": rng.standard_normal((4, 3)), "b": rng.standard_normal(5)}
    clipped, norm = nnjit.jit(lambda g: optim.clip_grad_norm(g, max_norm, norm_type),
                              backend=backend)(grads)
    ts = [torch.zeros(4, 3, dtype=torch.float64, requires_grad=True),
          torch.zeros(5, dtype=torch.float64, requires_grad=True)]
    ts[0].grad, ts[1].grad = torch.tensor(grads["a"]), torch.tensor(grads["b"])
    t_norm = torch.nn.utils.clip_grad_norm_(ts, max_norm, norm_type=norm_type)
    assert_close(norm, t_norm.numpy(), rtol=1e-12)
    assert_close(clipped["a"], ts[0].grad.numpy(), rtol=1e-12)
    assert_close(clipped["b"], ts[1].grad.numpy(), rtol=1e-12)
