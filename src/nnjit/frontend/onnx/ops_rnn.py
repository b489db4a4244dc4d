"""RNN, LSTM and GRU as one `scan` per direction: the input projection of every time step is
one matmul before the loop, the body does the recurrent matmul and the gates. Sequence lengths
mask the carry (it stops changing, and the output is 0, past each batch entry's length)."""
from __future__ import annotations

import numpy as np

from .. import dsl
from ...ir import Sym
from .context import NodeContext, converter

# name -> (function of (x, alpha, beta), default alpha, default beta); the defaults are ONNX's.
ACTIVATIONS = {
    "relu": (lambda x, a, b: dsl.relu(x), None, None),
    "tanh": (lambda x, a, b: dsl.tanh(x), None, None),
    "sigmoid": (lambda x, a, b: dsl.sigmoid(x), None, None),
    "affine": (lambda x, a, b: x * a + b, 1.0, 0.0),
    "leakyrelu": (lambda x, a, b: dsl.where(x >= 0, x, x * a), 0.01, None),
    "thresholdedrelu": (lambda x, a, b: dsl.where(x > a, x, 0.0), 1.0, None),
    "scaledtanh": (lambda x, a, b: dsl.tanh(x * b) * a, 1.0, 1.0),
    "hardsigmoid": (lambda x, a, b: dsl.maximum(dsl.minimum(x * a + b, 1.0), 0.0), 0.2, 0.5),
    "elu": (lambda x, a, b: dsl.where(x >= 0, x, (dsl.exp(x) - 1.0) * a), 1.0, None),
    "softsign": (lambda x, a, b: x / (dsl.abs(x) + 1.0), None, None),
    "softplus": (lambda x, a, b: dsl.softplus(x), None, None),
}
# op -> (number of gates, default activations per direction)
CELLS = {"RNN": (1, ["Tanh"]), "GRU": (3, ["Sigmoid", "Tanh"]),
         "LSTM": (4, ["Sigmoid", "Tanh", "Tanh"])}


def _activations(ctx: NodeContext, num_dirs: int):
    """One list of activation functions per direction (alpha/beta consumed in order)."""
    names = ctx.strs("activations")
    default = CELLS[ctx.node.op_type][1]
    names = names or default * num_dirs
    if len(names) != len(default) * num_dirs:
        raise ctx.error(f"activations {names} must name {len(default)} per direction")
    alphas, betas = list(ctx.floats("activation_alpha", [])), list(ctx.floats(
        "activation_beta", []))
    fns = []
    for name in names:
        key = name.lower()
        if key not in ACTIVATIONS:
            raise ctx.error(f"activation {name!r} is not supported")
        f, da, db = ACTIVATIONS[key]
        a = alphas.pop(0) if da is not None and alphas else da
        b = betas.pop(0) if db is not None and betas else db
        fns.append(lambda x, f=f, a=a, b=b: f(x, a, b))
    k = len(default)
    return [fns[d * k:(d + 1) * k] for d in range(num_dirs)]


@converter("RNN", "GRU", "LSTM")
def _recurrent(ctx: NodeContext):
    op = ctx.node.op_type
    gates, _ = CELLS[op]
    x, w, r = ctx.tensor(0), ctx.tensor(1), ctx.tensor(2)
    layout = ctx.int("layout", 0)
    if layout:
        x = dsl.transpose(x, (1, 0, 2))
    direction = ctx.str("direction", "forward")
    if direction not in ("forward", "reverse", "bidirectional"):
        raise ctx.error(f"direction {direction!r} is not forward, reverse or bidirectional")
    num_dirs = 2 if direction == "bidirectional" else 1
    seq, batch, _ = x.shape
    hidden = ctx.int("hidden_size", r.shape[-1])
    if w.shape[:2] != (num_dirs, gates * hidden) or r.shape != (num_dirs, gates * hidden, hidden):
        raise ctx.error(f"W {w.shape} / R {r.shape} do not match {num_dirs} direction(s) of "
                        f"{gates} gates of hidden size {hidden}")
    if op == "LSTM" and ctx.int("input_forget", 0):
        raise ctx.error("input_forget=1 is not supported")
    zeros = np.zeros((num_dirs, 2 * gates * hidden), x.dtype.np)
    bias = ctx.tensor(3) if ctx.has(3) else ctx.lift(zeros)
    h0 = _state(ctx, 5, layout, (num_dirs, batch, hidden), x)
    c0 = _state(ctx, 6, layout, (num_dirs, batch, hidden), x) if op == "LSTM" else None
    peep = ctx.tensor(7) if op == "LSTM" and ctx.has(7) else None
    mask = _length_mask(ctx, seq, batch)
    clip = ctx.float("clip")
    acts = _activations(ctx, num_dirs)
    ys, hs, cs = [], [], []
    for d in range(num_dirs):
        reverse = direction == "reverse" or d == 1
        wb, rb = bias[d, :gates * hidden], bias[d, gates * hidden:]
        xw = dsl.matmul(x, dsl.transpose(w[d])) + wb              # (seq, batch, G*H)
        cell = Cell(op, acts[d], r[d], rb, hidden, clip, ctx.int("linear_before_reset", 0),
                    peep[d] if peep is not None else None)
        carry = (h0[d], c0[d]) if op == "LSTM" else (h0[d],)
        final, y = dsl.scan(cell.step, carry, (xw, mask) if mask is not None else (xw,),
                            reverse=reverse)
        ys.append(y)
        hs.append(final[0])
        if op == "LSTM":
            cs.append(final[1])
    y = dsl.stack(ys, axis=1)                                      # (seq, dirs, batch, H)
    y_h = dsl.stack(hs, axis=0)
    outs = [y, y_h] + ([dsl.stack(cs, axis=0)] if op == "LSTM" else [])
    if layout:
        outs = [dsl.transpose(outs[0], (2, 0, 1, 3))] + [dsl.transpose(o, (1, 0, 2))
                                                         for o in outs[1:]]
    return tuple(outs)


def _state(ctx: NodeContext, i: int, layout: int, shape, x: Sym) -> Sym:
    if not ctx.has(i):
        return ctx.lift(np.zeros(shape, x.dtype.np))
    s = ctx.tensor(i)
    return dsl.transpose(s, (1, 0, 2)) if layout else s


def _length_mask(ctx: NodeContext, seq: int, batch: int) -> Sym | None:
    """(seq, batch, 1) booleans, True while t < sequence_lens[b]; None when every length is
    the full sequence."""
    if not ctx.has(4):
        return None
    lens = ctx.input(4)
    if not isinstance(lens, Sym) and np.all(np.asarray(lens) == seq):
        return None
    lens = dsl.cast(ctx.lift(lens), np.int64)
    t = ctx.lift(np.arange(seq, dtype=np.int64).reshape(seq, 1))
    return dsl.reshape(t < dsl.reshape(lens, (1, batch)), (seq, batch, 1))


class Cell:
    """One time step of an RNN, GRU or LSTM (ONNX gate orders: GRU z r h, LSTM i o f c)."""

    def __init__(self, op, acts, r, rb, hidden, clip, linear_before_reset, peep):
        self.op, self.acts, self.r_t, self.rb, self.h = op, acts, dsl.transpose(r), rb, hidden
        self.clip, self.lbr, self.peep = clip, linear_before_reset, peep

    def _gate(self, v):
        if self.clip is not None:
            v = dsl.maximum(dsl.minimum(v, self.clip), -self.clip)
        return v

    def _part(self, v, k):
        return v[..., k * self.h:(k + 1) * self.h]

    def step(self, carry, xs):
        xw = xs[0]
        new = getattr(self, "_" + self.op.lower())(carry, xw)
        if len(xs) > 1:          # past this entry's length: keep the carry, output zeros
            m = xs[1]
            out = new[0]
            new = tuple(dsl.where(m, n, c) for n, c in zip(new, carry))
            return new, dsl.where(m, out, 0.0)
        return new, new[0]

    def _rnn(self, carry, xw):
        (h,) = carry
        f = self.acts[0]
        return (f(self._gate(xw + dsl.matmul(h, self.r_t) + self.rb)),)

    def _gru(self, carry, xw):
        (h,) = carry
        f, g = self.acts
        # The recurrent matmul with its bias as one epilogue, over the gates that use h
        # directly (all three with linear_before_reset, else z and r), then sliced.
        k = 3 if self.lbr else 2
        hr = dsl.matmul(h, self.r_t[:, :k * self.h]) + self.rb[:k * self.h]
        z = f(self._gate(self._part(xw, 0) + self._part(hr, 0)))
        r = f(self._gate(self._part(xw, 1) + self._part(hr, 1)))
        if self.lbr:
            cand = self._part(xw, 2) + r * self._part(hr, 2)
        else:
            cand = (self._part(xw, 2) + dsl.matmul(r * h, self.r_t[:, 2 * self.h:]) +
                    self._part(self.rb, 2))
        hn = g(self._gate(cand))
        return ((1.0 - z) * hn + z * h,)

    def _lstm(self, carry, xw):
        h, c = carry
        f, g, hf = self.acts
        v = xw + dsl.matmul(h, self.r_t) + self.rb
        pi, po, pf = ((self.peep[k * self.h:(k + 1) * self.h] for k in range(3))
                      if self.peep is not None else (None, None, None))
        i_pre, o_pre, f_pre = self._part(v, 0), self._part(v, 1), self._part(v, 2)
        if pi is not None:
            i_pre, f_pre = i_pre + pi * c, f_pre + pf * c
        i, fg = f(self._gate(i_pre)), f(self._gate(f_pre))
        cn = fg * c + i * g(self._gate(self._part(v, 3)))
        if po is not None:
            o_pre = o_pre + po * cn
        o = f(self._gate(o_pre))
        return (o * hf(cn), cn)
