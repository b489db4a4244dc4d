"""The workloads of issue 14: their shared data (one seed, nnjit's initializers) and float64
numpy references. Every contender starts from these same arrays.

Training steps are plain SGD (lr 0.01) in every contender: one step's parameter update is
lr * grad, which the check compares leaf by leaf (see common.disagreement)."""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass

import numpy as np

_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.path.dirname(_HERE), os.path.join(os.path.dirname(os.path.dirname(_HERE)),
                                                      "examples")]

LR = 0.01
CHAIN_N = 1 << 24
VOCAB, EMBED, HIDDEN, STEPS, BATCH = 96, 64, 256, 64, 32


@dataclass(frozen=True)
class Workload:
    name: str
    label: str
    kind: str          # step | forward | loss | chain | gemm
    model: str = ""    # mlp | lenet | lstm (steps and forwards)
    batch: int = 0
    chain: str = ""    # A | B
    output: str = ""   # fresh | out | inplace


def _chains():
    out = []
    for c in "AB":
        for mode, what in [("fresh", "fresh outputs"), ("out", "reused output (out=)"),
                           ("inplace", "in place (donated input)")]:
            out.append(Workload(f"chain{c}_{mode}", f"chain {c} 16M f32, {what}", "chain",
                                chain=c, output=mode))
    return out


WORKLOADS = {w.name: w for w in [
    Workload("lstm_step", f"char-LSTM step (V{VOCAB} E{EMBED} H{HIDDEN} T{STEPS} B{BATCH}, BPTT)",
             "step", "lstm", BATCH),
    Workload("softmax_ce", "softmax cross-entropy [4096,1000] fwd+bwd", "loss"),
    Workload("mlp_step_b16", "MLP 784-512-512-10 step, batch 16", "step", "mlp", 16),
    Workload("mlp_step_b128", "MLP 784-512-512-10 step, batch 128", "step", "mlp", 128),
    Workload("lenet_step_b64", "LeNet-5 step, batch 64", "step", "lenet", 64),
    Workload("lenet_fwd_b64", "LeNet-5 forward, batch 64", "forward", "lenet", 64),
    Workload("mlp_fwd_b128", "MLP forward, batch 128", "forward", "mlp", 128),
    *_chains(),
    Workload("gemm_1024", "GEMM 1024x1024x1024 f32", "gemm"),
]}


# -- the chains, written once for numpy-like modules ---------------------------------------------
def chain_a(x, m):
    """Chain A (PERF_NOTES): compute-bound on tanh and exp."""
    return m.tanh(x * 1.5 + 0.5) * _sigmoid(x, m) + m.maximum(x - 0.25, 0.0)


def chain_b(x, m):
    """Chain B: memory-bound, five cheap ops per element (one read, one write). As a map it
    contracts (to 0.4), so the in-place rows can apply it to their own output without drift."""
    return m.maximum(x * 0.5 + 0.25, 0.0) - x * 0.125


def _sigmoid(x, m):
    return 1.0 / (1.0 + m.exp(-x))


CHAINS = {"A": chain_a, "B": chain_b}


# -- data ----------------------------------------------------------------------------------------
def model(name: str):
    """The nnjit model of a workload family (steps.py's MLP and LeNet, the examples' CharLSTM)."""
    if name == "mlp":
        from steps import _mlp
        return _mlp()
    if name == "lenet":
        from steps import _lenet
        return _lenet()
    from models import CharLSTM
    return CharLSTM(VOCAB, EMBED, HIDDEN)


def make_data(w: Workload) -> dict:
    rng = np.random.default_rng(0)
    if w.kind in ("step", "forward"):
        params = model(w.model).init(seed=0)
        if w.model == "lstm":
            return {"params": params,
                    "x": rng.integers(0, VOCAB, (STEPS, BATCH)).astype(np.int64),
                    "y": rng.integers(0, VOCAB, (STEPS, BATCH)).astype(np.int64)}
        shape = (784,) if w.model == "mlp" else (1, 28, 28)
        d = {"params": params, "x": rng.standard_normal((w.batch, *shape), np.float32)}
        if w.kind == "step":
            d["y"] = rng.integers(0, 10, w.batch).astype(np.int64)
        return d
    if w.kind == "loss":
        return {"logits": rng.standard_normal((4096, 1000), np.float32),
                "labels": rng.integers(0, 1000, 4096).astype(np.int64)}
    if w.kind == "chain":
        return {"x": rng.standard_normal(CHAIN_N, np.float32)}
    return {"a": rng.standard_normal((1024, 1024), np.float32),
            "b": rng.standard_normal((1024, 1024), np.float32)}


# -- float64 references --------------------------------------------------------------------------
def _f64(tree):
    if isinstance(tree, dict):
        return {k: _f64(v) for k, v in tree.items()}
    return tree.astype(np.float64) if tree.dtype == np.float32 else tree


def reference(w: Workload, data: dict):
    d = _f64(data)
    if w.kind == "step":
        loss, grads = {"mlp": mlp_grads, "lenet": lenet_grads, "lstm": lstm_grads}[w.model](
            d["params"], d["x"], d["y"])
        new = {k: {n: p - LR * grads[k][n] for n, p in v.items()} for k, v in d["params"].items()}
        return {"loss": np.float64(loss), "params": new}
    if w.kind == "forward":
        return (mlp_forward if w.model == "mlp" else lenet_forward)(d["params"], d["x"])
    if w.kind == "loss":
        loss, grad = softmax_ce(d["logits"], d["labels"])
        return {"loss": np.float64(loss), "grad": grad}
    if w.kind == "chain":
        return CHAINS[w.chain](d["x"], np)
    return d["a"] @ d["b"]


def softmax_ce(z, labels):
    """Mean cross-entropy and its gradient w.r.t. the logits, by hand (no one-hot)."""
    m = z.max(axis=1, keepdims=True)
    e = np.exp(z - m)
    s = e.sum(axis=1, keepdims=True)
    n = z.shape[0]
    rows = np.arange(n)
    loss = (np.log(s[:, 0]) + m[:, 0] - z[rows, labels]).mean()
    grad = e / s
    grad[rows, labels] -= 1.0
    grad /= n
    return loss, grad


def mlp_forward(p, x):
    h = np.maximum(x @ p["0"]["weight"].T + p["0"]["bias"], 0)
    h = np.maximum(h @ p["2"]["weight"].T + p["2"]["bias"], 0)
    return h @ p["4"]["weight"].T + p["4"]["bias"]


def mlp_grads(p, x, y):
    from nnjit.bench import numpy_mlp_step
    new, loss = numpy_mlp_step(p, x, y, lr=1.0)        # lr 1: new = p - grad
    return loss, {k: {n: p[k][n] - new[k][n] for n in p[k]} for k in p}


# LeNet: conv(1->6, 5, pad 2) relu pool, conv(6->16, 5) relu pool, flatten, 400-120-84-10.
def _conv(x, w, b, pad):
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    win = np.lib.stride_tricks.sliding_window_view(xp, w.shape[2:], axis=(2, 3))
    return np.einsum("nchwij,ocij->nohw", win, w, optimize=True) + b[:, None, None], win


def _conv_back(dy, win, w, pad, x_shape):
    dw = np.einsum("nchwij,nohw->ocij", win, dy, optimize=True)
    n, c, h, wd = x_shape
    dxp = np.zeros((n, c, h + 2 * pad, wd + 2 * pad))
    ho, wo = dy.shape[2:]
    for i in range(w.shape[2]):
        for j in range(w.shape[3]):
            dxp[:, :, i:i + ho, j:j + wo] += np.einsum("nohw,oc->nchw", dy, w[:, :, i, j])
    return dxp[:, :, pad:pad + h, pad:pad + wd], dw, dy.sum((0, 2, 3))


def _pool(x):
    n, c, h, w = x.shape
    blocks = x.reshape(n, c, h // 2, 2, w // 2, 2).transpose(0, 1, 2, 4, 3, 5).reshape(
        n, c, h // 2, w // 2, 4)
    arg = blocks.argmax(-1)                          # the first maximum, as torch
    return np.take_along_axis(blocks, arg[..., None], -1)[..., 0], arg


def _pool_back(dy, arg, shape):
    n, c, h, w = shape
    blocks = np.zeros((*dy.shape, 4))
    np.put_along_axis(blocks, arg[..., None], dy[..., None], -1)
    return blocks.reshape(n, c, h // 2, w // 2, 2, 2).transpose(0, 1, 2, 4, 3, 5).reshape(shape)


def _lenet_forward(p, x):
    a1, win1 = _conv(x, p["0"]["weight"], p["0"]["bias"], 2)
    r1 = np.maximum(a1, 0)
    q1, arg1 = _pool(r1)
    a2, win2 = _conv(q1, p["3"]["weight"], p["3"]["bias"], 0)
    r2 = np.maximum(a2, 0)
    q2, arg2 = _pool(r2)
    f = q2.reshape(len(x), -1)
    h1 = np.maximum(f @ p["7"]["weight"].T + p["7"]["bias"], 0)
    h2 = np.maximum(h1 @ p["9"]["weight"].T + p["9"]["bias"], 0)
    z = h2 @ p["11"]["weight"].T + p["11"]["bias"]
    return z, locals()


def lenet_forward(p, x):
    return _lenet_forward(p, x)[0]


def lenet_grads(p, x, y):
    z, s = _lenet_forward(p, x)
    loss, dz = softmax_ce(z, y)
    g = {}

    def dense(k, dout, inp):
        g[k] = {"weight": dout.T @ inp, "bias": dout.sum(0)}
        return dout @ p[k]["weight"]

    dh2 = dense("11", dz, s["h2"]) * (s["h2"] > 0)
    dh1 = dense("9", dh2, s["h1"]) * (s["h1"] > 0)
    dq2 = dense("7", dh1, s["f"]).reshape(s["q2"].shape)
    da2 = _pool_back(dq2, s["arg2"], s["r2"].shape) * (s["a2"] > 0)
    dq1, dw, db = _conv_back(da2, s["win2"], p["3"]["weight"], 0, s["q1"].shape)
    g["3"] = {"weight": dw, "bias": db}
    da1 = _pool_back(dq1, s["arg1"], s["r1"].shape) * (s["a1"] > 0)
    _, dw, db = _conv_back(da1, s["win1"], p["0"]["weight"], 2, x.shape)
    g["0"] = {"weight": dw, "bias": db}
    return loss, g


def _sig(v):
    return 1.0 / (1.0 + np.exp(-v))


def lstm_grads(p, ids, targets):
    """Embedding -> one-layer LSTM (torch's gate order i, f, g, o; zero initial state) ->
    linear head -> mean cross-entropy over T*B, with backpropagation through time."""
    E, L, Hd = p["embed"]["weight"], p["lstm"], p["head"]
    wih, whh = L["weight_ih_l0"], L["weight_hh_l0"]
    b = L["bias_ih_l0"] + L["bias_hh_l0"]
    T, B = ids.shape
    H = whh.shape[1]
    xs = E[ids]
    h, c = np.zeros((B, H)), np.zeros((B, H))
    hs, cs, gates = [h], [c], []
    for t in range(T):
        a = xs[t] @ wih.T + h @ whh.T + b
        i, f, gg, o = _sig(a[:, :H]), _sig(a[:, H:2 * H]), np.tanh(a[:, 2 * H:3 * H]), \
            _sig(a[:, 3 * H:])
        c = f * c + i * gg
        h = o * np.tanh(c)
        hs.append(h)
        cs.append(c)
        gates.append((i, f, gg, o))
    hflat = np.stack(hs[1:]).reshape(T * B, H)
    z = hflat @ Hd["weight"].T + Hd["bias"]
    loss, dz = softmax_ce(z, targets.reshape(-1))
    g = {"head": {"weight": dz.T @ hflat, "bias": dz.sum(0)}}
    dhs = (dz @ Hd["weight"]).reshape(T, B, H)
    dwih, dwhh, db = np.zeros_like(wih), np.zeros_like(whh), np.zeros_like(b)
    dxs = np.zeros_like(xs)
    dh_next, dc_next = np.zeros((B, H)), np.zeros((B, H))
    for t in reversed(range(T)):
        i, f, gg, o = gates[t]
        tc = np.tanh(cs[t + 1])
        dh = dhs[t] + dh_next
        dc = dh * o * (1 - tc * tc) + dc_next
        da = np.concatenate([dc * gg * i * (1 - i), dc * cs[t] * f * (1 - f),
                             dc * i * (1 - gg * gg), dh * tc * o * (1 - o)], axis=1)
        dwih += da.T @ xs[t]
        dwhh += da.T @ hs[t]
        db += da.sum(0)
        dxs[t] = da @ wih
        dh_next, dc_next = da @ whh, dc * f
    dE = np.zeros_like(E)
    np.add.at(dE, ids, dxs)
    g["embed"] = {"weight": dE}
    g["lstm"] = {"weight_ih_l0": dwih, "weight_hh_l0": dwhh, "bias_ih_l0": db, "bias_hh_l0": db}
    return loss, g
