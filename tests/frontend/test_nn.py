"""nnjit.nn: parameter names/shapes/init, every layer against a numpy implementation, Dropout
modes and salts, RNN/LSTM against numpy loops (and their gradients through scan), losses,
purity of apply, and .npz save/load with each error case."""
from __future__ import annotations

import os
import zipfile

import numpy as np
import pytest

import nnjit
from nnjit import NnjitError, ShapeError, nn
from nnjit.ir import Op
from tests.gradcheck import check_grads
from tests.helpers import assert_close, run


def _rng(seed=0):
    return np.random.default_rng(seed)


def _apply(model, backend, **kw):
    return lambda p, *xs: model.apply(p, *xs, **kw)


# -- parameters ---------------------------------------------------------------------------------

def test_param_names_are_torch_state_dict_names():
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                          nn.Dropout(0.5), nn.Linear(4, 3, bias=False))
    flat = nn.flatten_params(model.init(seed=0))
    assert {k: v.shape for k, v in flat.items()} == {
        "0.weight": (4, 1, 3, 3), "0.bias": (4,), "5.weight": (3, 4)}
    lstm = nn.flatten_params(nn.LSTM(3, 5).init())
    assert {k: v.shape for k, v in lstm.items()} == {
        "weight_ih_l0": (20, 3), "weight_hh_l0": (20, 5), "bias_ih_l0": (20,),
        "bias_hh_l0": (20,)}
    rnn = nn.flatten_params(nn.RNN(3, 5, bias=False).init())
    assert {k: v.shape for k, v in rnn.items()} == {"weight_ih_l0": (5, 3),
                                                    "weight_hh_l0": (5, 5)}
    assert nn.flatten_params(nn.Embedding(7, 2).init())["weight"].shape == (7, 2)
    nested = nn.Sequential(nn.Sequential(nn.ReLU(), nn.Linear(2, 2)), nn.Linear(2, 1))
    assert sorted(nn.flatten_params(nested.init())) == ["0.1.bias", "0.1.weight", "1.bias",
                                                        "1.weight"]


def test_init_is_seeded_and_typed():
    model = nn.Sequential(nn.Linear(5, 4), nn.Linear(4, 2))
    a, b, c = model.init(seed=1), model.init(seed=1), model.init(seed=2)
    for k, v in nn.flatten_params(a).items():
        assert v.dtype == np.float32
        np.testing.assert_array_equal(v, nn.flatten_params(b)[k])
        assert not np.array_equal(v, nn.flatten_params(c)[k])
    assert all(v.dtype == np.float64 for v in nn.flatten_params(model.init(dtype=np.float64))
               .values())
    with pytest.raises(ShapeError, match="float32 or float64"):
        model.init(dtype=np.int32)


@pytest.mark.parametrize("layer, fan_in", [(nn.Linear(400, 300), 400),
                                           (nn.Conv2d(16, 32, 5), 16 * 25)])
def test_kaiming_uniform_init_statistics(layer, fan_in):
    # torch: kaiming_uniform_(a=sqrt(5)) == U(-1/sqrt(fan_in), 1/sqrt(fan_in)), bias likewise.
    p = layer.init(seed=0)
    bound = 1 / np.sqrt(fan_in)
    w = p["weight"]
    assert np.abs(w).max() <= bound and np.abs(w).max() > 0.98 * bound
    assert abs(w.mean()) < 0.02 * bound
    assert abs(w.std() - bound / np.sqrt(3)) < 0.02 * bound
    assert np.abs(p["bias"]).max() <= bound


def test_embedding_and_recurrent_init_statistics():
    e = nn.Embedding(1000, 64).init(seed=0)["weight"]
    assert abs(e.mean()) < 0.01 and abs(e.std() - 1) < 0.01
    p = nn.LSTM(10, 50).init(seed=0)
    for v in p.values():
        assert np.abs(v).max() <= 1 / np.sqrt(50)


def test_module_repr():
    text = repr(nn.Sequential(nn.Linear(2, 3), nn.ReLU()))
    assert "(0): Linear(in_features=2, out_features=3, bias=True)" in text
    assert "(1): ReLU()" in text


# -- layers against numpy -------------------------------------------------------------------------

def test_mlp_matches_numpy(backend):
    model = nn.Sequential(nn.Linear(5, 4), nn.ReLU(), nn.Linear(4, 3), nn.Tanh(), nn.Sigmoid())
    p = model.init(seed=0)
    x = _rng().standard_normal((2, 5)).astype(np.float32)
    h = np.maximum(x @ p["0"]["weight"].T + p["0"]["bias"], 0)
    want = 1 / (1 + np.exp(-np.tanh(h @ p["2"]["weight"].T + p["2"]["bias"])))
    assert_close(run(_apply(model, backend), p, x, backend=backend), want)


def test_conv_pool_flatten_shapes_and_values(backend):
    model = nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), nn.AvgPool2d(2), nn.MaxPool2d(2, 1),
                          nn.Flatten())
    p = model.init(seed=0)
    x = _rng().standard_normal((2, 2, 4, 4)).astype(np.float32)
    w, b = p["0"]["weight"], p["0"]["bias"]
    xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    conv = np.zeros((2, 3, 4, 4), np.float32)
    for i in range(3):
        for j in range(3):
            conv += np.einsum("nchw,oc->nohw", xp[:, :, i:i + 4, j:j + 4], w[:, :, i, j])
    conv += b[None, :, None, None]
    avg = conv.reshape(2, 3, 2, 2, 2, 2).mean(axis=(3, 5))
    mx = np.max([avg[:, :, i:i + 1, j:j + 1] for i in range(2) for j in range(2)], axis=0)
    got = run(_apply(model, backend), p, x, backend=backend)
    assert got.shape == (2, 3)
    assert_close(got, mx.reshape(2, 3), atol=1e-5)


def test_embedding_lookup_and_gradient(backend):
    emb = nn.Embedding(6, 3)
    p = emb.init(seed=0)
    idx = np.array([[0, 5, 2], [2, 2, 1]], np.int64)
    assert_close(run(_apply(emb, backend), p, idx, backend=backend), p["weight"][idx])
    ct = _rng().standard_normal((2, 3, 3)).astype(np.float32)
    g = run(nnjit.grad(lambda p: nnjit.sum(emb.apply(p, idx) * ct)), p, backend=backend)
    want = np.zeros((6, 3), np.float32)
    np.add.at(want, idx.reshape(-1), ct.reshape(-1, 3))
    assert_close(g["weight"], want)


def _sigmoid(z):
    return 1 / (1 + np.exp(-z))


def _rnn_numpy(p, x, h):
    ys = []
    for t in range(x.shape[0]):
        h = np.tanh(x[t] @ p["weight_ih_l0"].T + p["bias_ih_l0"] + h @ p["weight_hh_l0"].T
                    + p["bias_hh_l0"])
        ys.append(h)
    return np.stack(ys), h


def _lstm_numpy(p, x, h, c):
    ys, hs = [], h.shape[1]
    for t in range(x.shape[0]):
        z = x[t] @ p["weight_ih_l0"].T + p["bias_ih_l0"] + h @ p["weight_hh_l0"].T \
            + p["bias_hh_l0"]
        i, f, g, o = (z[:, k * hs:(k + 1) * hs] for k in range(4))
        c = _sigmoid(f) * c + _sigmoid(i) * np.tanh(g)
        h = _sigmoid(o) * np.tanh(c)
        ys.append(h)
    return np.stack(ys), h, c


def test_rnn_matches_numpy_loop(backend):
    rnn = nn.RNN(3, 4)
    p = rnn.init(seed=0)
    x = _rng().standard_normal((5, 2, 3)).astype(np.float32)
    h0 = _rng(1).standard_normal((2, 4)).astype(np.float32)
    ys, h = run(_apply(rnn, backend), p, x, h0[None], backend=backend)  # torch: (layers, B, H)
    want_ys, want_h = _rnn_numpy(p, x, h0)
    assert_close(ys, want_ys)
    assert_close(h, want_h[None])
    ys0, _ = run(_apply(rnn, backend), p, x, backend=backend)       # h0 defaults to zeros
    assert_close(ys0, _rnn_numpy(p, x, np.zeros((2, 4), np.float32))[0])


def test_lstm_matches_numpy_loop(backend):
    lstm = nn.LSTM(3, 4)
    p = lstm.init(seed=0)
    x = _rng().standard_normal((5, 2, 3)).astype(np.float32)
    h0, c0 = (_rng(k).standard_normal((2, 4)).astype(np.float32) for k in (1, 2))
    ys, (h, c) = run(_apply(lstm, backend), p, x, (h0[None], c0[None]), backend=backend)
    want_ys, want_h, want_c = _lstm_numpy(p, x, h0, c0)
    assert_close(ys, want_ys)
    assert_close(h, want_h[None])
    assert_close(c, want_c[None])
    zeros = np.zeros((2, 4), np.float32)
    assert_close(run(_apply(lstm, backend), p, x, backend=backend)[0],
                 _lstm_numpy(p, x, zeros, zeros)[0])


def test_lstm_runs_as_one_scan_not_unrolled():
    lstm = nn.LSTM(3, 4)
    p = lstm.init()
    sizes = []
    for t in (2, 7):
        g = nnjit.trace(lambda p, x: lstm.apply(p, x), p, np.zeros((t, 2, 3), np.float32))
        assert [n.op for n in g.nodes].count(Op.SCAN) == 1
        sizes.append(len(g.nodes))
    assert sizes[0] == sizes[1]


def test_lstm_gradient_matches_finite_differences(backend):
    lstm = nn.LSTM(2, 3)
    p = lstm.init(seed=0, dtype=np.float64)
    x = _rng().standard_normal((4, 2, 2))

    def out(p, x):
        ys, (h, c) = lstm.apply(p, x)
        return ys, c

    check_grads(out, (p, x), argnums=(0, 1), backend=backend, max_elems=8)


def test_recurrent_rejects_bad_input_shape():
    rnn = nn.RNN(3, 4)
    with pytest.raises(ShapeError, match=r"expected input \(T, B, 3\)"):
        rnn.apply(rnn.init(), np.zeros((2, 5), np.float32))


# -- dropout --------------------------------------------------------------------------------------

def test_dropout_eval_is_identity_and_train_masks(backend):
    drop = nn.Dropout(0.25)
    x = np.ones((40, 50), np.float32)
    assert_close(run(_apply(drop, backend), {}, x, backend=backend), x)

    f = nnjit.jit(lambda x, s: drop.apply({}, x, training=True, seed=s), backend=backend)
    a, b, c = f(x, np.int64(1)), f(x, np.int64(1)), f(x, np.int64(2))
    assert set(np.unique(a)) <= {0.0, np.float32(1 / 0.75)}
    assert abs((a == 0).mean() - 0.25) < 0.03
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


class _TwoDropouts(nn.Module):
    def __init__(self):
        self.a = nn.Dropout(0.5)
        self.b = nn.Dropout(0.5)

    def forward(self, params, x, *, ctx):
        return self.child("a", params, x, ctx=ctx), self.child("b", params, x, ctx=ctx)


def test_each_dropout_layer_draws_its_own_mask(backend):
    m = _TwoDropouts()
    x = np.ones((8, 16), np.float32)
    a, b = run(lambda x, s: m.apply({}, x, training=True, seed=s), x, np.int64(3),
               backend=backend)
    assert not np.array_equal(a, b)


def test_dropout_in_training_needs_a_seed():
    with pytest.raises(NnjitError, match="needs a seed"):
        nn.Sequential(nn.Dropout(0.5)).apply({}, np.ones(3, np.float32), training=True)


# -- losses ---------------------------------------------------------------------------------------

def _log_softmax(z):
    z = z - z.max(-1, keepdims=True)
    return z - np.log(np.exp(z).sum(-1, keepdims=True))


def test_cross_entropy_matches_numpy_and_is_stable(backend):
    logits = _rng().standard_normal((5, 4)).astype(np.float32)
    logits[0] *= 1000.0                            # would overflow a naive softmax
    labels = np.array([0, 3, 1, 1, 2], np.int64)
    want = -_log_softmax(logits.astype(np.float64))[np.arange(5), labels].mean()
    got = run(lambda z, y: nn.cross_entropy(z, y), logits, labels, backend=backend)
    assert_close(got, np.float32(want), atol=1e-4)
    # labels given as a constant array, logits with extra leading dims
    z3 = logits.reshape(1, 5, 4)
    got3 = run(lambda z: nn.cross_entropy(z, labels.reshape(1, 5)), z3, backend=backend)
    assert_close(got3, np.float32(want), atol=1e-4)


def test_cross_entropy_gradient_is_softmax_minus_one_hot(backend):
    logits = _rng().standard_normal((3, 4)).astype(np.float32)
    labels = np.array([2, 0, 3], np.int64)
    g = run(nnjit.grad(lambda z: nn.cross_entropy(z, labels)), logits, backend=backend)
    p = np.exp(_log_softmax(logits))
    assert_close(g, (p - np.eye(4, dtype=np.float32)[labels]) / 3)


def test_cross_entropy_ignored_rows_add_nothing_even_when_not_finite(backend):
    logits = _rng().standard_normal((4, 3)).astype(np.float32)
    logits[1] = [np.inf, np.nan, -np.inf]         # ignored: may hold anything (torch's rule)
    labels = np.array([2, -100, 0, 1], np.int64)
    keep = labels != -100
    want = -_log_softmax(logits[keep].astype(np.float64))[np.arange(3), labels[keep]].mean()
    loss, g = run(nnjit.value_and_grad(lambda z: nn.cross_entropy(z, labels)), logits,
                  backend=backend)
    assert_close(loss, np.float32(want), atol=1e-5)
    p = np.exp(_log_softmax(logits[keep]))
    assert_close(g[keep], (p - np.eye(3, dtype=np.float32)[labels[keep]]) / 3)
    assert np.array_equal(g[1], np.zeros(3, np.float32))


def test_a_minus_inf_logit_of_another_class_leaves_the_losses_finite(backend):
    """Masked vocabularies and log(0) probabilities: the label pick selects, it never
    multiplies 0 by -inf (that gave NaN)."""
    logits = _rng().standard_normal((3, 4)).astype(np.float32)
    logits[:, 1] = -np.inf
    labels = np.array([0, 2, 3], np.int64)
    want = -_log_softmax(logits.astype(np.float64))[np.arange(3), labels].mean()
    loss, g = run(nnjit.value_and_grad(lambda z: nn.cross_entropy(z, labels)), logits,
                  backend=backend)
    assert_close(loss, np.float32(want), atol=1e-5)
    assert np.isfinite(g).all() and np.array_equal(g[:, 1], np.zeros(3, np.float32))
    logp = np.log(np.array([[0.5, 0.0, 0.5], [0.0, 1.0, 0.0]], np.float32))
    w = np.array([1.0, 2.0, 3.0], np.float32)
    got = run(lambda lp: nn.nll_loss(lp, np.array([2, 1]), weight=w), logp, backend=backend)
    assert_close(got, np.float32(-(3 * np.log(0.5) + 2 * 0.0) / 5))


def test_cross_entropy_errors():
    z = np.zeros((3, 4), np.float32)
    with pytest.raises(ShapeError, match="labels must be integers"):
        nnjit.trace(lambda z, y: nn.cross_entropy(z, y), z, np.zeros(3, np.float32))
    with pytest.raises(ShapeError, match="without the class dim"):
        nnjit.trace(lambda z, y: nn.cross_entropy(z, y), z, np.zeros(4, np.int64))


def test_mse(backend):
    a, b = (_rng(k).standard_normal((3, 4)).astype(np.float32) for k in (0, 1))
    assert_close(run(nn.mse, a, b, backend=backend), np.float32(((a - b) ** 2).mean()))


# -- purity ---------------------------------------------------------------------------------------

def test_apply_is_pure_and_eager_matches_traced(backend):
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Dropout(0.5), nn.Linear(4, 2))
    p = model.init(seed=0)
    before = {k: v.copy() for k, v in nn.flatten_params(p).items()}
    x = _rng().standard_normal((2, 3)).astype(np.float32)
    eager = model.apply(p, x)                       # compiled with the reference backend
    assert isinstance(eager, np.ndarray) and eager.shape == (2, 2)
    assert_close(model(p, x), eager)
    assert_close(run(_apply(model, backend), p, x, backend=backend), eager)
    t1 = model.apply(p, x, training=True, seed=5)
    t2 = model.apply(p, x, training=True, seed=5)
    np.testing.assert_array_equal(t1, t2)
    for k, v in nn.flatten_params(p).items():
        np.testing.assert_array_equal(v, before[k])


# -- save / load ----------------------------------------------------------------------------------

def _model():
    return nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))


def test_save_load_roundtrip(tmp_path):
    model = _model()
    p = model.init(seed=3)
    path = tmp_path / "params.npz"
    nn.save(path, p)
    assert os.listdir(tmp_path) == ["params.npz"]          # no temporary left behind
    with np.load(path, allow_pickle=False) as z:
        assert sorted(z.files) == ["0.bias", "0.weight", "2.bias", "2.weight",
                                   "nnjit-tree.json"]   # the arrays, and the tree they form
    for like in (model, model.init(seed=9)):
        q = nn.load(path, like=like)
        assert nnjit.tree_map(lambda a, b: a.dtype == b.dtype and np.array_equal(a, b), p, q) \
            == {"0": {"bias": True, "weight": True}, "2": {"bias": True, "weight": True}}
    p64 = model.init(dtype=np.float64)
    nn.save(path, p64)                                     # overwrites atomically
    assert nn.load(path, like=model, dtype=np.float64)["0"]["weight"].dtype == np.float64


@pytest.mark.parametrize("change, message", [
    (lambda p: p["2"].pop("bias"), r"missing keys: 2\.bias"),
    (lambda p: p.setdefault("9", {"weight": np.zeros(2, np.float32)}),
     r"unexpected keys: 9\.weight"),
    (lambda p: p["0"].__setitem__("weight", np.zeros((3, 4), np.float32)),
     r"'0\.weight' is float32\[3, 4\] in the file, expected float32\[4, 3\]"),
    (lambda p: p["0"].__setitem__("bias", np.zeros(4, np.float64)),
     r"'0\.bias' is float64\[4\] in the file, expected float32\[4\]"),
])
def test_load_reports_mismatches(tmp_path, change, message):
    model = _model()
    p = model.init()
    change(p)
    nn.save(tmp_path / "p.npz", p)
    with pytest.raises(NnjitError, match=message):
        nn.load(tmp_path / "p.npz", like=model)


def test_load_refuses_pickles_and_non_npz(tmp_path):
    bad = tmp_path / "pickled.npz"
    np.savez(bad, **{"0.weight": np.array([{"a": 1}], dtype=object)})
    with pytest.raises(NnjitError, match="cannot read"):
        nn.load(bad, like={"0": {"weight": np.zeros(1)}})
    junk = tmp_path / "junk.npz"
    junk.write_text("not a zip")
    with pytest.raises(NnjitError, match="cannot read"):
        nn.load(junk, like=_model())
    with pytest.raises(FileNotFoundError):
        nn.load(tmp_path / "absent.npz", like=_model())


def test_failed_save_keeps_the_old_file(tmp_path):
    path = tmp_path / "p.npz"
    nn.save(path, {"w": np.ones(2, np.float32)})
    with pytest.raises(NnjitError, match="not a numeric array"):
        nn.save(path, {"w": np.array(["x"], dtype=object)})
    with zipfile.ZipFile(path) as z:
        assert z.namelist() == ["nnjit-tree.json", "w.npy"]
    assert os.listdir(tmp_path) == ["p.npz"]
    np.testing.assert_array_equal(nn.load(path, like={"w": np.zeros(2, np.float32)})["w"],
                                  np.ones(2, np.float32))


# -- convolution family (issue 12) --

def test_conv_family_parameter_names_and_shapes_follow_torch():
    shapes = {name: {k: v.shape for k, v in nn.flatten_params(m.init(seed=0)).items()}
              for name, m in [("c1", nn.Conv1d(4, 6, 3, groups=2)),
                              ("c2", nn.Conv2d(4, 8, 3, groups=4, bias=False)),
                              ("ct", nn.ConvTranspose2d(4, 6, (2, 3), groups=2))]}
    assert shapes == {"c1": {"weight": (6, 2, 3), "bias": (6,)},
                      "c2": {"weight": (8, 1, 3, 3)},
                      "ct": {"weight": (4, 3, 2, 3), "bias": (6,)}}
    for m in (nn.Upsample(scale_factor=2), nn.AdaptiveAvgPool2d(1), nn.AdaptiveMaxPool2d(1)):
        assert m.init(seed=0) == {}


@pytest.mark.parametrize("make", [lambda: nn.Conv2d(4, 6, 3, groups=3),
                                  lambda: nn.Conv1d(3, 4, 3, groups=2),
                                  lambda: nn.ConvTranspose2d(6, 3, 3, groups=2)])
def test_conv_layers_reject_groups_that_do_not_divide_the_channels(make):
    with pytest.raises(nnjit.ShapeError, match="must both be divisible by groups"):
        make()


def test_global_pools_keep_nchw_dims():
    x = np.arange(2 * 3 * 4 * 5, dtype=np.float32).reshape(2, 3, 4, 5)
    avg = nn.AdaptiveAvgPool2d(1).apply({}, x)
    mx = nn.AdaptiveMaxPool2d(1).apply({}, x)
    assert avg.shape == mx.shape == (2, 3, 1, 1)
    np.testing.assert_allclose(avg, x.mean((2, 3), keepdims=True), rtol=1e-6)
    np.testing.assert_array_equal(mx, x.max((2, 3), keepdims=True))
