"""nn.GRU / stacked, bidirectional, batch-first RNN and LSTM and the cells against a numpy
reference loop (torch's equations written out), gradients against finite differences, dropout
between layers, one scan per layer and direction, and the shape errors."""
from __future__ import annotations

import numpy as np
import pytest

import nnjit
from nnjit import NnjitError, ShapeError, nn
from nnjit.ir import Op
from tests.gradcheck import check_grads
from tests.helpers import assert_close, run

T, B, I, H = 4, 2, 3, 5


def _sig(z):
    return 1.0 / (1.0 + np.exp(-z))


def _cell_numpy(kind, p, key, x, h, c=None):
    """One step of torch's cell equations, in numpy; (h', c')."""
    w_ih, w_hh = p[f"weight_ih{key}"], p[f"weight_hh{key}"]
    b_ih = p.get(f"bias_ih{key}", 0.0)
    b_hh = p.get(f"bias_hh{key}", 0.0)
    gx, gh = x @ w_ih.T + b_ih, h @ w_hh.T + b_hh
    if kind == "RNN":
        return np.tanh(gx + gh), None
    if kind == "GRU":
        r = _sig(gx[:, :H] + gh[:, :H])
        z = _sig(gx[:, H:2 * H] + gh[:, H:2 * H])
        n = np.tanh(gx[:, 2 * H:] + r * gh[:, 2 * H:])
        return (1 - z) * n + z * h, None
    i, f, g, o = np.split(gx + gh, 4, axis=1)
    c = _sig(f) * c + _sig(i) * np.tanh(g)
    return _sig(o) * np.tanh(c), c


def _layer_numpy(kind, p, x, layers, bidirectional):
    """The stacked layer on time-major x, zero initial states: (output, h_n, c_n)."""
    dirs = ("", "_reverse") if bidirectional else ("",)
    inp, hs, cs = x, [], []
    for layer in range(layers):
        outs = []
        for d, sfx in enumerate(dirs):
            h = np.zeros((x.shape[1], H))
            c = np.zeros((x.shape[1], H))
            ys = [None] * len(inp)
            for t in (reversed(range(len(inp))) if d else range(len(inp))):
                h, c = _cell_numpy(kind, p, f"_l{layer}{sfx}", inp[t], h, c)
                ys[t] = h
            outs.append(np.stack(ys))
            hs.append(h)
            cs.append(c)
        inp = np.concatenate(outs, axis=2)
    return inp, np.stack(hs), (np.stack(cs) if kind == "LSTM" else None)


@pytest.mark.parametrize("kind", ["RNN", "GRU", "LSTM"])
@pytest.mark.parametrize("layers,bidirectional,batch_first", [(1, False, False), (2, True, False),
                                                              (2, False, True)])
def test_stacked_layers_match_numpy_loop(kind, layers, bidirectional, batch_first):
    model = getattr(nn, kind)(I, H, num_layers=layers, bidirectional=bidirectional,
                              batch_first=batch_first)
    p = model.init(seed=0, dtype=np.float64)
    x = np.random.default_rng(0).standard_normal((T, B, I))
    out, state = run(lambda p, x: model.apply(p, x), p, x.transpose(1, 0, 2) if batch_first
                     else x)
    want, h_n, c_n = _layer_numpy(kind, p, x, layers, bidirectional)
    assert_close(out, want.transpose(1, 0, 2) if batch_first else want)
    assert_close(state[0] if kind == "LSTM" else state, h_n)
    if kind == "LSTM":
        assert_close(state[1], c_n)


def test_gru_on_llvm_matches_numpy_loop():
    gru = nn.GRU(I, H, num_layers=2, bidirectional=True)
    p = gru.init(seed=1)
    x = np.random.default_rng(1).standard_normal((T, B, I)).astype(np.float32)
    out, h_n = run(lambda p, x: gru.apply(p, x), p, x, backend="llvm")
    p64 = {k: v.astype(np.float64) for k, v in p.items()}
    want, want_h, _ = _layer_numpy("GRU", p64, x.astype(np.float64), 2, True)
    assert_close(out, want.astype(np.float32))
    assert_close(h_n, want_h.astype(np.float32))


@pytest.mark.parametrize("kind", ["GRU", "LSTM"])
def test_stacked_bidirectional_gradient_matches_finite_differences(kind):
    model = getattr(nn, kind)(2, 3, num_layers=2, bidirectional=True)
    p = model.init(seed=2, dtype=np.float64)
    x = np.random.default_rng(2).standard_normal((3, 2, 2))
    check_grads(lambda p, x: model.apply(p, x), (p, x), argnums=(0, 1), max_elems=6)


@pytest.mark.parametrize("kind", ["RNNCell", "GRUCell", "LSTMCell"])
def test_cells_match_one_numpy_step(kind):
    cell = getattr(nn, kind)(I, H)
    p = cell.init(seed=3, dtype=np.float64)
    rng = np.random.default_rng(3)
    x, h, c = rng.standard_normal((B, I)), rng.standard_normal((B, H)), rng.standard_normal(
        (B, H))
    name = kind[:-4]
    if kind == "LSTMCell":
        got = run(lambda p, x, h, c: cell.apply(p, x, (h, c)), p, x, h, c)
        want = _cell_numpy(name, p, "", x, h, c)
        assert_close(got[0], want[0])
        assert_close(got[1], want[1])
    else:
        assert_close(run(lambda p, x, h: cell.apply(p, x, h), p, x, h),
                     _cell_numpy(name, p, "", x, h)[0])


def test_gru_cell_gradient_matches_finite_differences():
    cell = nn.GRUCell(2, 3)
    p = cell.init(seed=4, dtype=np.float64)
    rng = np.random.default_rng(4)
    check_grads(lambda p, x, h: cell.apply(p, x, h), (p, rng.standard_normal((2, 2)),
                                                      rng.standard_normal((2, 3))),
                argnums=(0, 1, 2), max_elems=8)


def test_one_scan_per_layer_and_direction():
    gru = nn.GRU(I, H, num_layers=3, bidirectional=True)
    g = nnjit.trace(lambda p, x: gru.apply(p, x), gru.init(), np.zeros((7, B, I), np.float32))
    assert [n.op for n in g.nodes].count(Op.SCAN) == 6


def test_dropout_between_layers_only_while_training():
    lstm = nn.LSTM(I, H, num_layers=2, dropout=0.5)
    p = lstm.init(seed=5)
    x = np.random.default_rng(5).standard_normal((T, B, I)).astype(np.float32)
    plain = nn.LSTM(I, H, num_layers=2)
    evald = run(lambda p, x: lstm.apply(p, x)[0], p, x)
    assert_close(evald, run(lambda p, x: plain.apply(p, x)[0], p, x))
    a, b, c = (run(lambda p, x, s: lstm.apply(p, x, training=True, seed=s)[0], p, x,
                   np.int64(s)) for s in (1, 1, 2))
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, evald) and not np.allclose(a, c)
    with pytest.raises(NnjitError, match="dropout between layers in training needs"):
        run(lambda p, x: lstm.apply(p, x, training=True), p, x)


def test_shape_errors_name_the_expected_layout():
    gru = nn.GRU(I, H, num_layers=2, batch_first=True)
    p = gru.init()
    with pytest.raises(ShapeError, match=r"GRU: expected input \(B, T, 3\) or unbatched"):
        run(lambda p, x: gru.apply(p, x), p, np.zeros((2, 4, 4), np.float32))
    with pytest.raises(ShapeError, match=r"h0 must be \(num_layers \* num_directions, B, "
                                         r"hidden_size\) = \(2, 2, 5\), got \(2, 5\)"):
        run(lambda p, x, h: gru.apply(p, x, h), p, np.zeros((2, 4, 3), np.float32),
            np.zeros((2, 5), np.float32))
    with pytest.raises(ShapeError, match="nonlinearity must be 'tanh' or 'relu'"):
        nn.RNN(I, H, nonlinearity="gelu")
    cell = nn.LSTMCell(I, H)
    with pytest.raises(ShapeError, match=r"LSTMCell: expected state \(2, 5\), got \(2, 4\)"):
        run(lambda p, x, h: cell.apply(p, x, (h, h)), cell.init(), np.zeros((2, 3), np.float32),
            np.zeros((2, 4), np.float32))


def test_repr_names_the_options():
    assert repr(nn.GRU(3, 4, num_layers=2, bidirectional=True)) == \
        "GRU(3, 4, num_layers=2, bidirectional=True)"
