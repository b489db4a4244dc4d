"""Recurrent layers with torch's names, shapes, gate order and return conventions: `RNN`, `LSTM`
and `GRU` (stacked, bidirectional, batch-first; each layer and direction one `scan`, never
unrolled, whose gradient is a reverse scan) and the single-step cells `RNNCell`, `LSTMCell`,
`GRUCell`.

    >>> lstm = nn.LSTM(8, 16, num_layers=2, bidirectional=True)
    >>> out, (h_n, c_n) = lstm.apply(params, x)    # x (T, B, 8): out (T, B, 32), h_n (4, B, 16)
"""
from __future__ import annotations

import zlib

import numpy as np

from ..ir import NnjitError, ShapeError, Sym, user_loc
from ..ir import prims as P
from . import dsl
from .dsl import linear, relu, sigmoid, tanh
from .module import Module, as_traced, fan_in_bound, uniform

_ACTIVATIONS = {"tanh": tanh, "relu": relu}


# -- one step of each cell: the gate math, shared by the cells and the layers ---------------------
# `xw` is x W_ih^T + b_ih (for RNN and LSTM also + b_hh, folded in ahead of the loop);
# the slices follow torch's gate order.

def _rnn_step(xw, h, w_hh, b_hh, act):
    return act(xw + linear(h, w_hh, b_hh))


def _lstm_step(xw, h, c, w_hh, b_hh):
    """Gates i, f, g, o: c' = sig(f) c + sig(i) tanh(g), h' = sig(o) tanh(c')."""
    z = xw + linear(h, w_hh, b_hh)
    hs = h.shape[-1]
    i, f, g, o = (z[..., k * hs:(k + 1) * hs] for k in range(4))
    c = sigmoid(f) * c + sigmoid(i) * tanh(g)
    return sigmoid(o) * tanh(c), c


def _gru_step(xw, h, w_hh, b_hh):
    """Gates r, z, n with torch's n = tanh(W_in x + b_in + r * (W_hn h + b_hn)), so b_hh
    stays inside the loop; h' = (1 - z) n + z h."""
    hw = linear(h, w_hh, b_hh)
    hs = h.shape[-1]
    xr, xz, xn = (xw[..., k * hs:(k + 1) * hs] for k in range(3))
    hr, hz, hn = (hw[..., k * hs:(k + 1) * hs] for k in range(3))
    r, z = sigmoid(xr + hr), sigmoid(xz + hz)
    n = tanh(xn + r * hn)
    return (1.0 - z) * n + z * h


# -- stacked layers -------------------------------------------------------------------------------

class _RNNBase(Module):
    """Shared by RNN, LSTM and GRU: torch's parameters per layer l and direction
    (weight_ih_l{l}[_reverse] (gates*H, in), weight_hh_l{l}[_reverse] (gates*H, H), bias_ih_...,
    bias_hh_...), every tensor U(-1/sqrt(H), 1/sqrt(H)); inputs (T, B, I), (B, T, I) with
    batch_first, or unbatched (T, I); `dropout` applies between layers while training."""

    gates = 1
    fold_hh_bias = True    # b_hh joins the input projection (not GRU's: it sits inside r*(...))

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1,
                 bias: bool = True, batch_first: bool = False, dropout: float = 0.0,
                 bidirectional: bool = False):
        name = type(self).__name__
        if num_layers < 1 or hidden_size < 1:
            raise ShapeError(f"{name}: num_layers and hidden_size must be >= 1, got "
                             f"{num_layers} and {hidden_size}")
        if not 0.0 <= dropout <= 1.0:
            raise ShapeError(f"{name}: dropout must be in [0, 1], got {dropout}")
        self.input_size, self.hidden_size, self.num_layers = input_size, hidden_size, num_layers
        self.bias, self.batch_first, self.dropout = bias, batch_first, dropout
        self.bidirectional = bidirectional

    @property
    def directions(self) -> tuple[str, ...]:
        return ("", "_reverse") if self.bidirectional else ("",)

    def init_params(self, rng, dtype):
        n, h = self.gates * self.hidden_size, self.hidden_size
        bound = fan_in_bound(h)
        p = {}
        for layer in range(self.num_layers):
            width = self.input_size if layer == 0 else h * len(self.directions)
            for sfx in self.directions:
                p[f"weight_ih_l{layer}{sfx}"] = uniform(rng, (n, width), bound, dtype)
                p[f"weight_hh_l{layer}{sfx}"] = uniform(rng, (n, h), bound, dtype)
                if self.bias:
                    p[f"bias_ih_l{layer}{sfx}"] = uniform(rng, (n,), bound, dtype)
                    p[f"bias_hh_l{layer}{sfx}"] = uniform(rng, (n,), bound, dtype)
        return p

    # -- shapes -----------------------------------------------------------------------------
    def _time_major(self, x: Sym) -> tuple[Sym, bool]:
        """x as (T, B, I), and whether it was unbatched (T, I)."""
        name = type(self).__name__
        layout = "(B, T, {i})" if self.batch_first else "(T, B, {i})"
        if x.ndim not in (2, 3) or x.shape[-1] != self.input_size:
            raise ShapeError(f"expected input {layout.format(i=self.input_size)} or unbatched "
                             f"(T, {self.input_size}), got {x.shape}", name, user_loc())
        unbatched = x.ndim == 2
        if unbatched:
            x = P.reshape(x, (x.shape[0], 1, x.shape[1]))
        elif self.batch_first:
            x = P.transpose(x, (1, 0, 2))
        if x.shape[0] == 0:
            # torch.nn.RNN/LSTM refuse T=0 too ("Expected sequence length to be larger than 0");
            # an empty batch (B=0) is fine and gives empty outputs, as in torch.
            raise ShapeError(f"the input sequence is empty: x has shape {x.shape} (T=0 steps); "
                             f"torch.nn.{name} refuses T=0 too", name, user_loc())
        return x, unbatched

    def _initial(self, h0, x: Sym, unbatched: bool, what: str) -> list:
        """One (B, H) initial state per layer and direction, from h0 (L*D, B, H) or zeros."""
        k, b = self.num_layers * len(self.directions), x.shape[1]
        if h0 is None:
            return [np.zeros((b, self.hidden_size), x.dtype.np)] * k
        h0 = as_traced(h0, x)
        want = (k, self.hidden_size) if unbatched else (k, b, self.hidden_size)
        if h0.shape != want:
            raise ShapeError(f"{what} must be (num_layers * num_directions, "
                             f"{'' if unbatched else 'B, '}hidden_size) = {want}, got "
                             f"{h0.shape}", type(self).__name__, user_loc())
        h0 = P.reshape(h0, (k, b, self.hidden_size))
        return [P.reshape(h0[i], (b, self.hidden_size)) for i in range(k)]

    @staticmethod
    def _stacked(finals: list, unbatched: bool) -> Sym:
        """The final states stacked as (L*D, B, H), or (L*D, H) unbatched."""
        h_n = dsl.stack(finals, 0)
        return P.reshape(h_n, (h_n.shape[0], h_n.shape[2])) if unbatched else h_n

    def _output(self, out: Sym, unbatched: bool) -> Sym:
        """The (T, B, D*H) output back in the caller's layout."""
        if unbatched:
            return P.reshape(out, (out.shape[0], out.shape[2]))
        return P.transpose(out, (1, 0, 2)) if self.batch_first else out

    # -- running ----------------------------------------------------------------------------
    def _project(self, params, x: Sym, key: str) -> Sym:
        """x @ W_ih.T (+ biases) for every step at once: one (T*B, I) x (I, n) GEMM instead of
        T small ones inside the loop."""
        t, b, width = x.shape
        xw = linear(P.reshape(x, (t * b, width)), params[f"weight_ih_{key}"])
        if self.bias:
            bias = params[f"bias_ih_{key}"]
            xw = xw + (bias + params[f"bias_hh_{key}"] if self.fold_hh_bias else bias)
        return P.reshape(xw, (t, b, self.gates * self.hidden_size))

    def _run(self, x: Sym, hx, params, ctx):
        """Every layer and direction: (output (T, B, D*H), final carries per layer*D + d)."""
        finals = []
        inp = x
        for layer in range(self.num_layers):
            outs = []
            for d, sfx in enumerate(self.directions):
                key = f"l{layer}{sfx}"
                w_hh = params[f"weight_hh_{key}"]
                b_hh = None if self.fold_hh_bias or not self.bias else params[f"bias_hh_{key}"]
                carry, ys = dsl.scan(self._step_fn(w_hh, b_hh), hx[layer * len(self.directions)
                                                                   + d],
                                     self._project(params, inp, key), reverse=d == 1)
                outs.append(ys)
                finals.append(carry)
            inp = outs[0] if len(outs) == 1 else dsl.concat(outs, axis=2)
            if layer < self.num_layers - 1:
                inp = self._dropout(inp, layer, ctx)
        return inp, finals

    def _dropout(self, x: Sym, layer: int, ctx) -> Sym:
        if not ctx.training or self.dropout == 0.0:
            return x
        if ctx.seed is None:
            raise NnjitError(f"{type(self).__name__} at '{ctx.path or 'top'}': dropout between "
                             "layers in training needs apply(..., seed=...)")
        salt = (zlib.crc32(f"{ctx.path}/{layer}".encode()) & 0x3FFFFFFF) | 0x40000000
        return dsl.dropout(x, self.dropout, ctx.seed, training=True, salt=salt)

    def extra_repr(self):
        extra = "".join(f", {k}={getattr(self, k)}" for k, default in (
            ("num_layers", 1), ("bias", True), ("batch_first", False), ("dropout", 0.0),
            ("bidirectional", False)) if getattr(self, k) != default)
        return f"{self.input_size}, {self.hidden_size}{extra}"


class RNN(_RNNBase):
    """Elman RNN, h_t = tanh(x_t W_ih^T + b_ih + h_{t-1} W_hh^T + b_hh) (or relu with
    nonlinearity="relu"), each layer and direction one `scan`.

    `apply(params, x, h0=None)` with x (T, B, input_size) and h0 (num_layers * directions, B, H)
    returns (output (T, B, directions * H), h_n (num_layers * directions, B, H)), as torch.
    """

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1,
                 nonlinearity: str = "tanh", bias: bool = True, batch_first: bool = False,
                 dropout: float = 0.0, bidirectional: bool = False):
        if nonlinearity not in _ACTIVATIONS:
            raise ShapeError(f"RNN: nonlinearity must be 'tanh' or 'relu', got {nonlinearity!r}")
        super().__init__(input_size, hidden_size, num_layers, bias, batch_first, dropout,
                         bidirectional)
        self.nonlinearity = nonlinearity

    def _step_fn(self, w_hh, b_hh):
        act = _ACTIVATIONS[self.nonlinearity]

        def step(h, xw_t):
            h = _rnn_step(xw_t, h, w_hh, b_hh, act)
            return h, h
        return step

    def forward(self, params, x, h0=None, *, ctx):
        x, unbatched = self._time_major(as_traced(x, params))
        out, finals = self._run(x, self._initial(h0, x, unbatched, "h0"), params, ctx)
        return self._output(out, unbatched), self._stacked(finals, unbatched)


class GRU(_RNNBase):
    """Gated recurrent unit, torch's gate order (reset, update, new):

        r = sig(W_ir x + b_ir + W_hr h + b_hr),  z = sig(W_iz x + b_iz + W_hz h + b_hz)
        n = tanh(W_in x + b_in + r * (W_hn h + b_hn)),  h' = (1 - z) * n + z * h

    `apply(params, x, h0=None)`: the same shapes and returns as `RNN`.
    """

    gates = 3
    fold_hh_bias = False

    def _step_fn(self, w_hh, b_hh):
        def step(h, xw_t):
            h = _gru_step(xw_t, h, w_hh, b_hh)
            return h, h
        return step

    forward = RNN.forward


class LSTM(_RNNBase):
    """Long short-term memory, torch's gate order (input, forget, cell, output):

        i, f, g, o = split(x_t W_ih^T + b_ih + h W_hh^T + b_hh)
        c' = sigmoid(f) * c + sigmoid(i) * tanh(g);   h' = sigmoid(o) * tanh(c')

    `apply(params, x, state=None)` with x (T, B, input_size) and state (h0, c0), each
    (num_layers * directions, B, H), returns (output (T, B, directions * H), (h_n, c_n)).
    """

    gates = 4

    def _step_fn(self, w_hh, b_hh):
        def step(carry, xw_t):
            h, c = _lstm_step(xw_t, *carry, w_hh, b_hh)
            return (h, c), h
        return step

    def forward(self, params, x, state=None, *, ctx):
        x, unbatched = self._time_major(as_traced(x, params))
        if state is not None and not (isinstance(state, (tuple, list)) and len(state) == 2):
            raise ShapeError("LSTM: state must be a pair (h0, c0)", "LSTM", user_loc())
        h0, c0 = (None, None) if state is None else state
        hs = self._initial(h0, x, unbatched, "h0")
        cs = self._initial(c0, x, unbatched, "c0")
        out, finals = self._run(x, list(zip(hs, cs)), params, ctx)
        return self._output(out, unbatched), (self._stacked([h for h, _ in finals], unbatched),
                                              self._stacked([c for _, c in finals], unbatched))


# -- cells: one step, no scan ------------------------------------------------------------------------

class _CellBase(Module):
    """torch's cell parameters: weight_ih (gates*H, I), weight_hh (gates*H, H), bias_ih, bias_hh,
    all U(-1/sqrt(H), 1/sqrt(H)); x is (B, I) or unbatched (I,), the state (B, H) or (H,)."""

    gates = 1

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True):
        self.input_size, self.hidden_size, self.bias = input_size, hidden_size, bias

    def init_params(self, rng, dtype):
        n, h = self.gates * self.hidden_size, self.hidden_size
        bound = fan_in_bound(h)
        p = {"weight_ih": uniform(rng, (n, self.input_size), bound, dtype),
             "weight_hh": uniform(rng, (n, h), bound, dtype)}
        if self.bias:
            p["bias_ih"] = uniform(rng, (n,), bound, dtype)
            p["bias_hh"] = uniform(rng, (n,), bound, dtype)
        return p

    def _inputs(self, params, x, states: list):
        """(xw (B, gates*H), states as (B, H), unbatched?)."""
        x = as_traced(x, params)
        name = type(self).__name__
        if x.ndim not in (1, 2) or x.shape[-1] != self.input_size:
            raise ShapeError(f"expected input (B, {self.input_size}) or ({self.input_size},), "
                             f"got {x.shape}", name, user_loc())
        unbatched = x.ndim == 1
        if unbatched:
            x = P.reshape(x, (1, self.input_size))
        want = (x.shape[0], self.hidden_size)
        out = []
        for s in states:
            if s is None:
                out.append(np.zeros(want, x.dtype.np))
                continue
            s = as_traced(s, x)
            if s.shape != (want[1:] if unbatched else want):
                raise ShapeError(f"expected state {want[1:] if unbatched else want}, got "
                                 f"{s.shape}", name, user_loc())
            out.append(P.reshape(s, want))
        xw = linear(x, params["weight_ih"], params.get("bias_ih"))
        return xw, out, unbatched

    def _out(self, h: Sym, unbatched: bool) -> Sym:
        return P.reshape(h, (self.hidden_size,)) if unbatched else h

    def extra_repr(self):
        return f"{self.input_size}, {self.hidden_size}"


class RNNCell(_CellBase):
    """h' = tanh(x W_ih^T + b_ih + h W_hh^T + b_hh); `apply(params, x, h=None) -> h'`."""

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True,
                 nonlinearity: str = "tanh"):
        if nonlinearity not in _ACTIVATIONS:
            raise ShapeError(f"RNNCell: nonlinearity must be 'tanh' or 'relu', got "
                             f"{nonlinearity!r}")
        super().__init__(input_size, hidden_size, bias)
        self.nonlinearity = nonlinearity

    def forward(self, params, x, h=None, *, ctx):
        xw, (h,), unbatched = self._inputs(params, x, [h])
        return self._out(_rnn_step(xw, h, params["weight_hh"], params.get("bias_hh"),
                                   _ACTIVATIONS[self.nonlinearity]), unbatched)


class GRUCell(_CellBase):
    """One GRU step (the gates of `GRU`); `apply(params, x, h=None) -> h'`."""

    gates = 3

    def forward(self, params, x, h=None, *, ctx):
        xw, (h,), unbatched = self._inputs(params, x, [h])
        return self._out(_gru_step(xw, h, params["weight_hh"], params.get("bias_hh")),
                         unbatched)


class LSTMCell(_CellBase):
    """One LSTM step (the gates of `LSTM`); `apply(params, x, state=None) -> (h', c')` with
    state (h, c)."""

    gates = 4

    def forward(self, params, x, state=None, *, ctx):
        h, c = (None, None) if state is None else state
        xw, (h, c), unbatched = self._inputs(params, x, [h, c])
        h, c = _lstm_step(xw, h, c, params["weight_hh"], params.get("bias_hh"))
        return self._out(h, unbatched), self._out(c, unbatched)


__all__ = ["GRU", "GRUCell", "LSTM", "LSTMCell", "RNN", "RNNCell"]
