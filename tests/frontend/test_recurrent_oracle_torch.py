"""nn.RNN / LSTM / GRU and the cells against torch: every option combination (num_layers,
batch_first, bidirectional, bias, initial states, unbatched input), outputs and gradients
w.r.t. every parameter, the input and the initial states. Float64 on both sides.

Marked `oracle`: skipped when torch is not installed."""
from __future__ import annotations

import numpy as np
import pytest

from nnjit import nn
from tests.frontend.oracle_util import compare

torch = pytest.importorskip("torch")

pytestmark = pytest.mark.oracle

T, B, I, H = 4, 3, 5, 6

COMBOS = [  # (num_layers, batch_first, bidirectional, bias)
    (1, False, False, True),
    (2, False, True, True),
    (2, True, False, False),
    (3, True, True, True),
]


def _x(batch_first: bool, unbatched: bool = False, seed: int = 0):
    rng = np.random.default_rng(seed)
    if unbatched:
        return rng.standard_normal((T, I))
    return rng.standard_normal((B, T, I) if batch_first else (T, B, I))


@pytest.mark.parametrize("kind", ["RNN", "GRU", "LSTM"])
@pytest.mark.parametrize("layers,batch_first,bidirectional,bias", COMBOS)
@pytest.mark.parametrize("with_state", [False, True])
def test_recurrent_layer_matches_torch(kind, layers, batch_first, bidirectional, bias,
                                       with_state):
    kw = dict(num_layers=layers, bias=bias, batch_first=batch_first, bidirectional=bidirectional)
    ours, theirs = getattr(nn, kind)(I, H, **kw), getattr(torch.nn, kind)(I, H, **kw)
    p = ours.init(seed=1, dtype=np.float64)
    x = _x(batch_first)
    if not with_state:
        compare(torch, ours, theirs, p, (x,))
        return
    rng = np.random.default_rng(2)
    d = 2 if bidirectional else 1
    h0, c0 = (rng.standard_normal((layers * d, B, H)) for _ in range(2))
    if kind == "LSTM":
        compare(torch, ours, theirs, p, (x, h0, c0),
                call=lambda p, x, h, c: ours.apply(p, x, (h, c)),
                torch_call=lambda m, x, h, c: m(x, (h, c)))
    else:
        compare(torch, ours, theirs, p, (x, h0))


@pytest.mark.parametrize("kind", ["RNN", "GRU", "LSTM"])
def test_recurrent_layer_matches_torch_on_each_backend(backend, kind):
    kw = dict(num_layers=2, bidirectional=True)
    ours, theirs = getattr(nn, kind)(I, H, **kw), getattr(torch.nn, kind)(I, H, **kw)
    compare(torch, ours, theirs, ours.init(seed=3, dtype=np.float64), (_x(False),),
            backend=backend, rtol=1e-8, atol=1e-9)


@pytest.mark.parametrize("kind", ["RNN", "GRU", "LSTM"])
def test_unbatched_input_matches_torch(kind):
    ours, theirs = getattr(nn, kind)(I, H, num_layers=2), getattr(torch.nn, kind)(I, H,
                                                                                num_layers=2)
    out = compare(torch, ours, theirs, ours.init(seed=4, dtype=np.float64),
                  (_x(False, unbatched=True),))
    assert out[0].shape == (T, H)


def test_relu_rnn_matches_torch():
    ours = nn.RNN(I, H, num_layers=2, nonlinearity="relu", bidirectional=True)
    theirs = torch.nn.RNN(I, H, num_layers=2, nonlinearity="relu", bidirectional=True)
    compare(torch, ours, theirs, ours.init(seed=5, dtype=np.float64), (_x(False),))


def test_dropout_between_layers_in_eval_mode_matches_torch():
    ours, theirs = nn.GRU(I, H, num_layers=2, dropout=0.5), torch.nn.GRU(I, H, num_layers=2,
                                                                       dropout=0.5)
    compare(torch, ours, theirs.eval(), ours.init(seed=6, dtype=np.float64), (_x(False),))


@pytest.mark.parametrize("kind", ["RNNCell", "GRUCell", "LSTMCell"])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("with_state", [False, True])
def test_cells_match_torch(kind, bias, with_state):
    ours, theirs = getattr(nn, kind)(I, H, bias=bias), getattr(torch.nn, kind)(I, H, bias=bias)
    p = ours.init(seed=7, dtype=np.float64)
    rng = np.random.default_rng(8)
    x = rng.standard_normal((B, I))
    if not with_state:
        compare(torch, ours, theirs, p, (x,))
    elif kind == "LSTMCell":
        h, c = rng.standard_normal((B, H)), rng.standard_normal((B, H))
        compare(torch, ours, theirs, p, (x, h, c),
                call=lambda p, x, h, c: ours.apply(p, x, (h, c)),
                torch_call=lambda m, x, h, c: m(x, (h, c)))
    else:
        compare(torch, ours, theirs, p, (x, rng.standard_normal((B, H))))


@pytest.mark.parametrize("kind", ["RNNCell", "GRUCell", "LSTMCell"])
def test_unbatched_cells_match_torch(kind):
    ours, theirs = getattr(nn, kind)(I, H), getattr(torch.nn, kind)(I, H)
    out = compare(torch, ours, theirs, ours.init(seed=9, dtype=np.float64),
                  (np.random.default_rng(10).standard_normal(I),))
    assert np.shape(out[0] if kind == "LSTMCell" else out) == (H,)


def test_parameter_names_and_shapes_are_torchs():
    for kind in ("RNN", "GRU", "LSTM"):
        kw = dict(num_layers=2, bidirectional=True, bias=True)
        ours = nn.flatten_params(getattr(nn, kind)(I, H, **kw).init())
        theirs = getattr(torch.nn, kind)(I, H, **kw).state_dict()
        assert {k: v.shape for k, v in ours.items()} == {k: tuple(v.shape)
                                                         for k, v in theirs.items()}
