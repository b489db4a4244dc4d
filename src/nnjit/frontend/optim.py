"""Optimizers (`nnjit.optim`) as pure functions of (params, grads, state), with PyTorch's exact
update formulas. Traced inside a jitted train step, the update lands in the same graph as the
forward and backward passes, so one compiled call does the whole step:

    >>> opt = optim.Adam(1e-3)
    >>> state = opt.init(params)                                # numpy zeros + a step counter
    >>> params, state = opt.update(params, grads, state)        # traced or eager

State is a pytree of numpy arrays named like torch's optimizer state ("momentum_buffer",
"exp_avg", "exp_avg_sq", "step"). Only float leaves of `params` are updated.
"""
from __future__ import annotations

import abc
from typing import Any

import numpy as np

from ..ir import DType, NnjitError, ShapeError, Sym
from ..ir import prims as P
from . import dsl
from .eager import eager
from .pytree import flatten, unflatten


def _is_float(x) -> bool:
    dt = x.dtype if isinstance(x, Sym) else np.asarray(x).dtype
    return dt.is_float if isinstance(dt, DType) else dt.kind == "f"


def _zeros_like(tree):
    leaves, td = flatten(tree)
    return unflatten(td, [np.zeros(np.shape(x), np.asarray(x).dtype) for x in leaves])


def _leaves_matching(params, other, what: str) -> list:
    p_leaves, p_tree = flatten(params)
    o_leaves, o_tree = flatten(other)
    if o_tree != p_tree:
        raise ShapeError(f"optimizer: {what} has structure {o_tree}, params have {p_tree}")
    for i, (p, o) in enumerate(zip(p_leaves, o_leaves)):
        if np.shape(p) != np.shape(o):
            raise ShapeError(f"optimizer: {what} leaf {i} has shape {np.shape(o)}, its "
                             f"parameter {np.shape(p)}")
    return o_leaves


class Optimizer(abc.ABC):
    """`init(params) -> state`; `update(params, grads, state) -> (params, state)`, pure."""

    @abc.abstractmethod
    def init(self, params) -> dict:
        """The optimizer state for `params` (a pytree of arrays)."""

    def update(self, params, grads, state) -> tuple[Any, dict]:
        """New (params, state). Traced when any argument is a traced tensor (inside jit);
        otherwise compiled once per signature and run with the reference backend."""
        if any(isinstance(x, Sym) for x in flatten((params, grads, state))[0]):
            return self._update(params, grads, state)
        jf = self.__dict__.get("_eager")
        if jf is None:
            jf = self.__dict__["_eager"] = eager(self._update, type(self).__name__.lower())
        return jf(params, grads, state)

    @abc.abstractmethod
    def _update(self, params, grads, state):
        """The traced update rule."""


def _check(cond: bool, msg: str) -> None:
    if not cond:
        raise NnjitError(msg)


class SGD(Optimizer):
    """Stochastic gradient descent with momentum, L2 weight decay and Nesterov momentum, as in
    torch.optim.SGD (dampening 0):

        g = grad + weight_decay * p
        buf = momentum * buf + g                 (buf starts at 0, so its first value is g)
        g = g + momentum * buf if nesterov else buf
        p = p - lr * g
    """

    def __init__(self, lr: float, momentum: float = 0.0, weight_decay: float = 0.0,
                 nesterov: bool = False):
        _check(lr >= 0.0, f"SGD: invalid learning rate {lr}")
        _check(momentum >= 0.0, f"SGD: invalid momentum {momentum}")
        _check(weight_decay >= 0.0, f"SGD: invalid weight_decay {weight_decay}")
        _check(not nesterov or momentum > 0.0, "SGD: nesterov momentum requires momentum > 0")
        self.lr, self.momentum, self.weight_decay, self.nesterov = (lr, momentum, weight_decay,
                                                                     nesterov)

    def init(self, params) -> dict:
        return {"momentum_buffer": _zeros_like(params)} if self.momentum else {}

    def _update(self, params, grads, state):
        p_leaves, tree = flatten(params)
        g_leaves = _leaves_matching(params, grads, "grads")
        bufs = (_leaves_matching(params, state["momentum_buffer"], "momentum_buffer")
                if self.momentum else [None] * len(p_leaves))
        new_p, new_buf = [], []
        for p, g, buf in zip(p_leaves, g_leaves, bufs):
            if not _is_float(p):
                new_p.append(p), new_buf.append(buf)
                continue
            if self.weight_decay:
                g = g + self.weight_decay * p
            if self.momentum:
                buf = self.momentum * buf + g
                g = g + self.momentum * buf if self.nesterov else buf
            new_p.append(p - self.lr * g)
            new_buf.append(buf)
        new_state = {"momentum_buffer": unflatten(tree, new_buf)} if self.momentum else {}
        return unflatten(tree, new_p), new_state

    def __repr__(self):
        return (f"SGD(lr={self.lr}, momentum={self.momentum}, weight_decay={self.weight_decay}, "
                f"nesterov={self.nesterov})")


class Adam(Optimizer):
    """Adam (Kingma & Ba) with L2 weight decay, as torch.optim.Adam (amsgrad off):

        t += 1;  g = grad + weight_decay * p
        m = b1 * m + (1 - b1) * g;   v = b2 * v + (1 - b2) * g * g
        p = p - lr / (1 - b1**t) * m / (sqrt(v) / sqrt(1 - b2**t) + eps)

    The step counter t is part of the state (an i64 scalar), so the bias corrections are
    computed in the graph (in float64, then rounded to the parameters' dtype)."""

    def __init__(self, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0.0):
        _check(lr >= 0.0, f"Adam: invalid learning rate {lr}")
        _check(eps >= 0.0, f"Adam: invalid epsilon {eps}")
        _check(all(0.0 <= b < 1.0 for b in betas), f"Adam: invalid betas {betas}")
        _check(weight_decay >= 0.0, f"Adam: invalid weight_decay {weight_decay}")
        self.lr, self.betas, self.eps, self.weight_decay = lr, tuple(betas), eps, weight_decay

    def init(self, params) -> dict:
        return {"step": np.zeros((), np.int64), "exp_avg": _zeros_like(params),
                "exp_avg_sq": _zeros_like(params)}

    def _update(self, params, grads, state):
        b1, b2 = self.betas
        p_leaves, tree = flatten(params)
        g_leaves = _leaves_matching(params, grads, "grads")
        ms = _leaves_matching(params, state["exp_avg"], "exp_avg")
        vs = _leaves_matching(params, state["exp_avg_sq"], "exp_avg_sq")
        step = state["step"]
        if not isinstance(step, Sym):     # a concrete counter with traced params
            step = P.lift(P.builder_of(*[x for x in p_leaves if isinstance(x, Sym)]),
                          np.asarray(step, np.int64))[0]
        step = step + 1
        t = P.cast(step, DType.F64)
        bc1 = 1.0 - dsl.power(b1, t)
        bc2_sqrt = dsl.sqrt(1.0 - dsl.power(b2, t))
        scale = {}                     # (step_size, sqrt(bc2)) per parameter dtype
        new_p, new_m, new_v = [], [], []
        for p, g, m, v in zip(p_leaves, g_leaves, ms, vs):
            if not _is_float(p):
                new_p.append(p), new_m.append(m), new_v.append(v)
                continue
            if p.dtype not in scale:
                scale[p.dtype] = (P.cast(self.lr / bc1, p.dtype), P.cast(bc2_sqrt, p.dtype))
            step_size, bc2s = scale[p.dtype]
            if self.weight_decay:
                g = g + self.weight_decay * p
            m = b1 * m + (1.0 - b1) * g
            v = b2 * v + (1.0 - b2) * (g * g)
            new_p.append(p - step_size * (m / (dsl.sqrt(v) / bc2s + self.eps)))
            new_m.append(m), new_v.append(v)
        return unflatten(tree, new_p), {"step": step, "exp_avg": unflatten(tree, new_m),
                                        "exp_avg_sq": unflatten(tree, new_v)}

    def __repr__(self):
        return (f"Adam(lr={self.lr}, betas={self.betas}, eps={self.eps}, "
                f"weight_decay={self.weight_decay})")


__all__ = ["Adam", "Optimizer", "SGD"]
