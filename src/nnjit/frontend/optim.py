"""Optimizers (`nnjit.optim`) as pure functions of (params, grads, state), with PyTorch's exact
update formulas. Traced inside a jitted train step, the update lands in the same graph as the
forward and backward passes, so one compiled call does the whole step:

    >>> opt = optim.Adam(1e-3)
    >>> state = opt.init(params)            # numpy zeros, a step counter, the hyperparameters
    >>> params, state = opt.update(params, grads, state)        # traced or eager
    >>> state = opt.set_hyperparams(state, lr=1e-4)             # no recompile

State is a pytree of numpy arrays named like torch's optimizer state ("momentum_buffer",
"exp_avg", "exp_avg_sq", "step"). Only float leaves of `params` are updated.

Hyperparameters are traced (as optax's `inject_hyperparams`): `init` stores the numeric ones in
`state["hyperparams"]` (float64 scalars), and the update reads them from there, so a new value
takes effect without recompiling. The constructor's numbers are only their initial values:
assigning `opt.lr` after `init` is an error (it would be ignored), use `set_hyperparams`. A
hyperparameter may also be a traced scalar (an argument of the jitted step), and `lr` may be a
schedule (`optim.schedules`), a function of the step counter evaluated inside the step.
"""
from __future__ import annotations

import abc
import functools
import numbers
from typing import Any, Callable

import numpy as np

from ..ir import DType, NnjitError, ShapeError, Sym
from ..ir import prims as P
from . import dsl
from . import schedules  # noqa: F401  (optim.schedules)
from .eager import eager
from .pytree import flatten, unflatten


def _is_float(x) -> bool:
    dt = x.dtype if isinstance(x, Sym) else np.asarray(x).dtype
    return dt.is_float if isinstance(dt, DType) else dt.kind == "f"


def _zeros_like(tree):
    leaves, td = flatten(tree)
    return unflatten(td, [np.zeros(np.shape(x), np.asarray(x).dtype) for x in leaves])


def _full_like(tree, value: float):
    leaves, td = flatten(tree)
    return unflatten(td, [np.full(np.shape(x), value, np.asarray(x).dtype) for x in leaves])


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


def _is_number(v) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool) or \
        isinstance(v, np.ndarray) and v.shape == () and v.dtype.kind in "fiu"


def _check(cond: bool, msg: str) -> None:
    if not cond:
        raise NnjitError(msg)


class Optimizer(abc.ABC):
    """`init(params) -> state`; `update(params, grads, state) -> (params, state)`, pure.

    Subclasses list their numeric hyperparameters in `_hyper` with a validity check each in
    `_valid` (checked for Python numbers only: a traced value has no value to check), and say
    whether their state counts steps (`_counts_steps`; always when `lr` is a schedule)."""

    _hyper: tuple[str, ...] = ()
    _valid: dict[str, tuple[Callable[[float], bool], str]] = {}
    _counts_steps = False

    def __init__(self, **hyper):
        for k, v in hyper.items():
            self._check_value(k, v)
            object.__setattr__(self, k, v)

    def __setattr__(self, name: str, value) -> None:
        if name in self._hyper and self.__dict__.get("_initialized"):
            raise NnjitError(
                f"{type(self).__name__}.{name} cannot be changed after init(): the value lives "
                f"in the optimizer state (state['hyperparams']['{name}']) as a traced input, "
                f"so this assignment would be ignored; use state = opt.set_hyperparams(state, "
                f"{name}=...) (takes effect without recompiling), or an lr schedule")
        if name in self._hyper:
            self._check_value(name, value)
        object.__setattr__(self, name, value)

    def _check_value(self, name: str, v) -> None:
        if name not in self._valid:
            return
        ok, what = self._valid[name]
        if isinstance(v, tuple):
            vals = v
        elif name == "lr" and callable(v) and not isinstance(v, Sym):
            return                                    # a schedule
        else:
            vals = (v,)
        for x in vals:
            if isinstance(x, Sym):
                if x.shape != () or not x.dtype.is_float:
                    raise NnjitError(f"{type(self).__name__}: {name} must be a float scalar, "
                                     f"got a traced {x.type}")
                continue
            _check(_is_number(x) and ok(float(x)),
                   f"{type(self).__name__}: invalid {what} {v!r}")

    # -- state ------------------------------------------------------------------------------
    def init(self, params) -> dict:
        """The optimizer state for `params` (a pytree of arrays): the per-parameter slots, the
        step counter where the update needs one, and the numeric hyperparameters."""
        state = self._init_slots(params)
        if self._needs_step():
            state["step"] = np.zeros((), np.int64)
        stored = {k: _stored(getattr(self, k)) for k in self._hyper
                  if _storable(getattr(self, k))}
        if stored:
            state["hyperparams"] = stored
        self.__dict__["_initialized"] = True
        return state

    def set_hyperparams(self, state: dict, **values) -> dict:
        """A copy of `state` with new hyperparameter values (checked like the constructor's);
        a compiled step takes them without recompiling."""
        stored = dict(state.get("hyperparams", {}))
        for k, v in values.items():
            if k not in stored:
                raise NnjitError(f"{type(self).__name__}.set_hyperparams: {k!r} is not a "
                                 f"hyperparameter in this state (it has {sorted(stored)})")
            self._check_value(k, v)
            stored[k] = _stored(v)
        self._check_structure(stored)
        return {**state, "hyperparams": stored}

    def _check_structure(self, stored: dict) -> None:
        """Values the state's layout cannot follow (momentum switched on without a buffer)."""

    def _needs_step(self) -> bool:
        return self._counts_steps or _is_schedule(getattr(self, "lr", None))

    @abc.abstractmethod
    def _init_slots(self, params) -> dict:
        """The per-parameter state (moment estimates, buffers)."""

    # -- update -----------------------------------------------------------------------------
    def update(self, params, grads, state) -> tuple[Any, dict]:
        """New (params, state). Traced when any argument is a traced tensor (inside jit);
        otherwise compiled once per signature and run with the reference backend."""
        if any(isinstance(x, Sym) for x in
               flatten((params, grads, state, [getattr(self, k) for k in self._hyper]))[0]):
            return self._traced_update(params, grads, state)
        jf = self.__dict__.get("_eager")
        if jf is None:
            jf = self.__dict__["_eager"] = eager(self._traced_update, type(self).__name__.lower())
        return jf(params, grads, state)

    def _traced_update(self, params, grads, state):
        syms = [x for x in flatten((params, grads, state))[0] if isinstance(x, Sym)]
        b = P.builder_of(*syms, *[v for k in self._hyper for v in flatten(getattr(self, k))[0]
                                  if isinstance(v, Sym)])
        state = dict(state)
        count = None
        if self._needs_step():
            count = state["step"] if isinstance(state["step"], Sym) else \
                P.lift(b, np.asarray(state["step"], np.int64))[0]
            state["step"] = count + 1
        hp = _Hyper(b, self, state.get("hyperparams", {}), count)
        t = P.cast(state["step"], DType.F64) if count is not None else None
        hp.values.update(self._derived(hp.values, t))
        p_leaves, tree = flatten(params)
        g_leaves = _leaves_matching(params, grads, "grads")
        slots = {k: _leaves_matching(params, state[k], k) for k in self._slot_names()}
        new_p, new_slots = [], {k: [] for k in slots}
        for i, (p, g) in enumerate(zip(p_leaves, g_leaves)):
            s = {k: v[i] for k, v in slots.items()}
            if _is_float(p):
                p, s = self._step(hp.typed(p.dtype) if isinstance(p, Sym) else
                                  hp.typed(DType.from_numpy(np.asarray(p).dtype)), p, g, s)
            new_p.append(p)
            for k in slots:
                new_slots[k].append(s[k])
        for k, v in new_slots.items():
            state[k] = unflatten(tree, v)
        return unflatten(tree, new_p), state

    def _derived(self, hp: dict, t) -> dict:
        """Scalars computed once per step from the float64 hyperparameters and the new step
        count `t` (float64; None without a counter), e.g. Adam's bias corrections."""
        return {}

    def _slot_names(self) -> tuple[str, ...]:
        return tuple(k for k in self._init_slots({}) if k != "step")

    @abc.abstractmethod
    def _step(self, hp: dict, p, g, s: dict):
        """One parameter's update: (hyperparameters cast to p's dtype, p, grad, its slots) ->
        (new p, new slots)."""

    def __repr__(self):
        kv = ", ".join(f"{k}={getattr(self, k)!r}" for k in self._hyper + self._flags())
        return f"{type(self).__name__}({kv})"

    def _flags(self) -> tuple[str, ...]:
        return ()


def _is_schedule(v) -> bool:
    return callable(v) and not isinstance(v, Sym)


def _storable(v) -> bool:
    if isinstance(v, tuple):
        return all(_storable(x) for x in v)
    return _is_number(v)


def _stored(v):
    if isinstance(v, tuple):
        return tuple(_stored(x) for x in v)
    return v if isinstance(v, Sym) else np.asarray(v, np.float64)


class _Hyper:
    """The hyperparameters of one traced update as float64 scalars, cast per parameter dtype.

    Precedence: a traced value or a schedule given to the constructor, then the state's value,
    then the constructor's Python number (for a state without hyperparameters). So the state
    carries its hyperparameters: a run resumed from a checkpoint continues with the values it
    was saved with, whatever numbers the new optimizer object was built with."""

    def __init__(self, b, opt: Optimizer, stored: dict, count):
        self.b = b
        self.values: dict[str, Any] = {}
        for k in opt._hyper:
            v = getattr(opt, k)
            if _is_schedule(v):
                v = v(count)
            elif not _has_sym(v) and k in stored:
                v = stored[k]
            self.values[k] = self._f64(v)
        self._by_dtype: dict[DType, dict] = {}

    def _f64(self, v):
        if isinstance(v, tuple):
            return tuple(self._f64(x) for x in v)
        if isinstance(v, Sym):
            return v if v.dtype == DType.F64 else P.cast(v, DType.F64)
        return self.b.const(np.asarray(v, np.float64))

    def typed(self, dtype: DType) -> dict:
        if dtype not in self._by_dtype:
            def cast(v):
                if isinstance(v, tuple):
                    return tuple(cast(x) for x in v)
                return v if dtype == DType.F64 else P.cast(v, dtype)
            self._by_dtype[dtype] = {k: cast(v) for k, v in self.values.items()}
        return self._by_dtype[dtype]


def _has_sym(v) -> bool:
    return any(isinstance(x, Sym) for x in (v if isinstance(v, tuple) else (v,)))


_NONNEG = (lambda v: v >= 0.0)


class SGD(Optimizer):
    """Stochastic gradient descent with momentum, L2 weight decay and Nesterov momentum, as in
    torch.optim.SGD (dampening 0):

        g = grad + weight_decay * p
        buf = momentum * buf + g                 (buf starts at 0, so its first value is g)
        g = g + momentum * buf if nesterov else buf
        p = p - lr * g

    The momentum buffer exists when momentum is nonzero (or traced) at construction."""

    _hyper = ("lr", "momentum", "weight_decay")
    _valid = {"lr": (_NONNEG, "learning rate"), "momentum": (_NONNEG, "momentum"),
              "weight_decay": (_NONNEG, "weight_decay")}

    def __init__(self, lr, momentum=0.0, weight_decay=0.0, nesterov: bool = False):
        super().__init__(lr=lr, momentum=momentum, weight_decay=weight_decay)
        self._momentum_on = _has_sym(momentum) or float(momentum) != 0.0
        _check(not nesterov or self._momentum_on, "SGD: nesterov momentum requires momentum > 0")
        object.__setattr__(self, "nesterov", nesterov)

    def _init_slots(self, params) -> dict:
        return {"momentum_buffer": _zeros_like(params)} if self._momentum_on else {}

    def _check_structure(self, stored: dict) -> None:
        if not self._momentum_on and float(stored.get("momentum", 0.0)) != 0.0:
            raise NnjitError("SGD.set_hyperparams: this optimizer was built with momentum=0, "
                             "so its state has no momentum buffer; build it with momentum > 0")

    def _step(self, hp, p, g, s):
        g = g + hp["weight_decay"] * p
        if self._momentum_on:
            buf = hp["momentum"] * s["momentum_buffer"] + g
            g = g + hp["momentum"] * buf if self.nesterov else buf
            s = {"momentum_buffer": buf}
        return p - hp["lr"] * g, s

    def _flags(self):
        return ("nesterov",)


class Adam(Optimizer):
    """Adam (Kingma & Ba) with L2 weight decay, as torch.optim.Adam (amsgrad off):

        t += 1;  g = grad + weight_decay * p
        m = b1 * m + (1 - b1) * g;   v = b2 * v + (1 - b2) * g * g
        p = p - lr / (1 - b1**t) * m / (sqrt(v) / sqrt(1 - b2**t) + eps)

    The step counter t is part of the state (an i64 scalar), so the bias corrections are
    computed in the graph (in float64, then rounded to the parameters' dtype)."""

    _hyper = ("lr", "betas", "eps", "weight_decay")
    _valid = {"lr": (_NONNEG, "learning rate"), "eps": (_NONNEG, "epsilon"),
              "betas": ((lambda b: 0.0 <= b < 1.0), "betas"),
              "weight_decay": (_NONNEG, "weight_decay")}
    _counts_steps = True

    def __init__(self, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
        _check(isinstance(betas, (tuple, list)) and len(betas) == 2,
               f"{type(self).__name__}: invalid betas {betas!r}: expected (beta1, beta2)")
        super().__init__(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay)

    def _init_slots(self, params) -> dict:
        return {"exp_avg": _zeros_like(params), "exp_avg_sq": _zeros_like(params)}

    def _decay(self, hp, p, g):
        """Adam's L2 penalty is added to the gradient (AdamW overrides: decoupled)."""
        return p, g + hp["weight_decay"] * p

    def _step(self, hp, p, g, s):
        b1, b2 = hp["betas"]
        p, g = self._decay(hp, p, g)
        m = b1 * s["exp_avg"] + (1.0 - b1) * g
        v = b2 * s["exp_avg_sq"] + (1.0 - b2) * (g * g)
        p = p - hp["step_size"] * (m / (dsl.sqrt(v) / hp["bc2_sqrt"] + hp["eps"]))
        return p, {"exp_avg": m, "exp_avg_sq": v}

    def _derived(self, hp, t):
        b1, b2 = hp["betas"]
        return {"step_size": hp["lr"] / (1.0 - dsl.power(b1, t)),
                "bc2_sqrt": dsl.sqrt(1.0 - dsl.power(b2, t))}


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov & Hutter), as torch.optim.AdamW:

        p = p * (1 - lr * weight_decay)      (before the Adam step; grad is left alone)

    Defaults are torch's: lr 1e-3, betas (0.9, 0.999), eps 1e-8, weight_decay 1e-2."""

    def __init__(self, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2):
        super().__init__(lr, betas, eps, weight_decay)

    def _decay(self, hp, p, g):
        return p * (1.0 - hp["lr"] * hp["weight_decay"]), g


class RMSprop(Optimizer):
    """RMSprop as torch.optim.RMSprop (defaults lr 1e-2, alpha 0.99, eps 1e-8):

        g = grad + weight_decay * p
        v = alpha * v + (1 - alpha) * g * g                     ("square_avg")
        if centered: a = alpha * a + (1 - alpha) * g;  d = sqrt(v - a * a) + eps
        else: d = sqrt(v) + eps
        if momentum: buf = momentum * buf + g / d;  p = p - lr * buf
        else: p = p - lr * g / d
    """

    _hyper = ("lr", "alpha", "eps", "weight_decay", "momentum")
    _valid = {"lr": (_NONNEG, "learning rate"), "alpha": (_NONNEG, "alpha value"),
              "eps": (_NONNEG, "epsilon"), "weight_decay": (_NONNEG, "weight_decay"),
              "momentum": (_NONNEG, "momentum")}
    _counts_steps = True              # torch keeps one; here it also feeds an lr schedule

    def __init__(self, lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0.0, momentum=0.0,
                 centered: bool = False):
        super().__init__(lr=lr, alpha=alpha, eps=eps, weight_decay=weight_decay,
                         momentum=momentum)
        self._momentum_on = _has_sym(momentum) or float(momentum) != 0.0
        object.__setattr__(self, "centered", centered)

    def _init_slots(self, params) -> dict:
        slots = {"square_avg": _zeros_like(params)}
        if self._momentum_on:
            slots["momentum_buffer"] = _zeros_like(params)
        if self.centered:
            slots["grad_avg"] = _zeros_like(params)
        return slots

    def _check_structure(self, stored: dict) -> None:
        if not self._momentum_on and float(stored.get("momentum", 0.0)) != 0.0:
            raise NnjitError("RMSprop.set_hyperparams: this optimizer was built with "
                             "momentum=0, so its state has no momentum buffer; build it with "
                             "momentum > 0")

    def _step(self, hp, p, g, s):
        alpha = hp["alpha"]
        g = g + hp["weight_decay"] * p
        v = alpha * s["square_avg"] + (1.0 - alpha) * (g * g)
        new = {"square_avg": v}
        if self.centered:
            a = alpha * s["grad_avg"] + (1.0 - alpha) * g
            new["grad_avg"] = a
            d = dsl.sqrt(v - a * a) + hp["eps"]
        else:
            d = dsl.sqrt(v) + hp["eps"]
        if self._momentum_on:
            buf = hp["momentum"] * s["momentum_buffer"] + g / d
            new["momentum_buffer"] = buf
            return p - hp["lr"] * buf, new
        return p - hp["lr"] * (g / d), new

    def _flags(self):
        return ("centered",)


class Adagrad(Optimizer):
    """Adagrad as torch.optim.Adagrad (defaults lr 1e-2, lr_decay 0, eps 1e-10):

        t += 1;  g = grad + weight_decay * p
        clr = lr / (1 + (t - 1) * lr_decay)
        sum = sum + g * g                       (starts at initial_accumulator_value)
        p = p - clr * g / (sqrt(sum) + eps)
    """

    _hyper = ("lr", "lr_decay", "weight_decay", "eps")
    _valid = {"lr": (_NONNEG, "learning rate"), "lr_decay": (_NONNEG, "lr_decay value"),
              "weight_decay": (_NONNEG, "weight_decay value"), "eps": (_NONNEG, "epsilon")}
    _counts_steps = True

    def __init__(self, lr=1e-2, lr_decay=0.0, weight_decay=0.0,
                 initial_accumulator_value: float = 0.0, eps=1e-10):
        super().__init__(lr=lr, lr_decay=lr_decay, weight_decay=weight_decay, eps=eps)
        _check(_is_number(initial_accumulator_value) and initial_accumulator_value >= 0.0,
               f"Adagrad: invalid initial_accumulator_value {initial_accumulator_value!r}")
        object.__setattr__(self, "initial_accumulator_value", float(initial_accumulator_value))

    def _init_slots(self, params) -> dict:
        return {"sum": _full_like(params, self.initial_accumulator_value)}

    def _derived(self, hp, t):
        return {"clr": hp["lr"] / (1.0 + (t - 1.0) * hp["lr_decay"])}

    def _step(self, hp, p, g, s):
        g = g + hp["weight_decay"] * p
        acc = s["sum"] + g * g
        return p - hp["clr"] * (g / (dsl.sqrt(acc) + hp["eps"])), {"sum": acc}

    def _flags(self):
        return ("initial_accumulator_value",)


# -- gradient clipping ----------------------------------------------------------------------------

def clip_grad_norm(grads, max_norm, norm_type: float = 2.0, eps: float = 1e-6):
    """`(clipped grads, total norm)`, as torch.nn.utils.clip_grad_norm_: the norm is taken over
    all float leaves of the pytree together (`norm_type` 2 or inf), and when it exceeds
    `max_norm` every gradient is scaled by `max_norm / (norm + eps)`:

        >>> grads, norm = optim.clip_grad_norm(grads, max_norm=1.0)      # inside the step

    `max_norm` may be a traced scalar. The norm is computed in float64 when any gradient is
    float64, else in float32; each gradient keeps its dtype."""
    leaves, tree = flatten(grads)
    if not any(isinstance(x, Sym) for x in leaves + [max_norm]):
        return _eager_clip(norm_type, eps)(grads, np.asarray(max_norm, np.float64))
    _check(norm_type in (2.0, float("inf")),
           f"clip_grad_norm: norm_type must be 2 or inf, got {norm_type!r}")
    if _is_number(max_norm):
        _check(float(max_norm) >= 0.0, f"clip_grad_norm: max_norm must be >= 0, got {max_norm}")
    b = P.builder_of(*[x for x in leaves + [max_norm] if isinstance(x, Sym)])
    floats = [x if isinstance(x, Sym) else P.lift(b, np.asarray(x))[0]
              for x in leaves if _is_float(x)]
    _check(bool(floats), "clip_grad_norm: the gradients have no float leaves")
    acc = DType.F64 if any(x.dtype == DType.F64 for x in floats) else DType.F32

    def wide(x):
        return x if x.dtype == acc else P.cast(x, acc)

    if norm_type == 2.0:
        total = None
        for x in floats:
            part = dsl.sum(wide(x) * wide(x))
            total = part if total is None else total + part
        norm = dsl.sqrt(total)
    else:
        norm = None
        for x in floats:
            part = dsl.max(dsl.abs(wide(x))) if x.size else b.const(np.zeros((), acc.np))
            norm = part if norm is None else dsl.maximum(norm, part)
    limit = max_norm if isinstance(max_norm, Sym) else b.const(np.asarray(max_norm, acc.np))
    coef = dsl.minimum(wide(limit) / (norm + eps), 1.0)
    out = [(x * (coef if x.dtype == acc else P.cast(coef, x.dtype))) if _is_float(x) else x
           for x in leaves]
    return unflatten(tree, out), norm


@functools.lru_cache(maxsize=16)
def _eager_clip(norm_type: float, eps: float):
    return eager(lambda g, m: clip_grad_norm(g, m, norm_type, eps), "clip_grad_norm")


__all__ = ["Adagrad", "Adam", "AdamW", "Optimizer", "RMSprop", "SGD", "clip_grad_norm",
           "schedules"]
