"""Learning-rate schedules (`nnjit.optim.schedules`): functions of the step counter computed
inside the compiled step, so the learning rate changes every step without recompiling.

    >>> sched = schedules.warmup_cosine_decay(0.1, warmup_steps=100, decay_steps=1000)
    >>> opt = optim.SGD(lr=sched, momentum=0.9)    # the state gets a "step" counter
    >>> float(sched(100))                          # concrete steps give a number: 0.1

A schedule takes the number of updates done so far (0 on the first update, as optax's
schedules and torch's LR schedulers count) and returns a float64 scalar. Called on a traced
i64 counter it adds graph nodes; called on a Python or numpy integer it compiles that same
graph once and returns a numpy float64.
"""
from __future__ import annotations

import math
from typing import Callable, Sequence

import numpy as np

from ..ir import DType, NnjitError, Sym
from ..ir import prims as P
from . import dsl
from .eager import eager


class Schedule:
    """A named schedule `fn(step: f64 Sym) -> f64 Sym`, callable on traced or concrete steps."""

    def __init__(self, name: str, fn: Callable[[Sym], Sym], describe: str):
        self.name, self._fn, self._describe = name, fn, describe
        self._eager = None

    def __call__(self, step):
        if isinstance(step, Sym):
            if step.shape != () or step.dtype.is_float or step.dtype == DType.BOOL:
                raise NnjitError(f"{self.name}: the step must be an integer scalar, got "
                                 f"{step.type}")
            return self._fn(P.cast(step, DType.F64))
        if self._eager is None:
            self._eager = eager(self.__call__, self.name)
        return self._eager(np.asarray(step, np.int64))

    def __repr__(self) -> str:
        return f"{self.name}({self._describe})"


def _check(cond: bool, msg: str) -> None:
    if not cond:
        raise NnjitError(msg)


def _positive_int(name: str, what: str, v) -> int:
    _check(isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v > 0,
           f"{name}: {what} must be a positive integer, got {v!r}")
    return int(v)


def constant(value: float) -> Schedule:
    """`value` at every step."""
    return Schedule("constant", lambda t: P.builder_of(t).const(np.float64(value)), f"{value}")


def step_decay(init_value: float, step_size: int, gamma: float = 0.1) -> Schedule:
    """torch's StepLR: `init_value * gamma ** (step // step_size)`."""
    step_size = _positive_int("step_decay", "step_size", step_size)

    def fn(t):
        k = (t - dsl.remainder(t, float(step_size))) / float(step_size)   # exact below 2**53
        return init_value * dsl.power(gamma, k)
    return Schedule("step_decay", fn, f"{init_value}, step_size={step_size}, gamma={gamma}")


def cosine_decay(init_value: float, decay_steps: int, alpha: float = 0.0) -> Schedule:
    """optax's cosine_decay_schedule (torch's CosineAnnealingLR without restarts):
    `init_value * ((1 - alpha) * (1 + cos(pi * min(step, decay_steps) / decay_steps)) / 2 +
    alpha)`, so it ends at `alpha * init_value` and stays there."""
    decay_steps = _positive_int("cosine_decay", "decay_steps", decay_steps)

    def fn(t):
        frac = dsl.minimum(t, float(decay_steps)) / float(decay_steps)
        cosine = 0.5 * (1.0 + _cos_0_to_pi(math.pi * frac))
        return init_value * ((1.0 - alpha) * cosine + alpha)
    return Schedule("cosine_decay", fn, f"{init_value}, decay_steps={decay_steps}, "
                                        f"alpha={alpha}")


def linear_warmup(peak_value: float, warmup_steps: int, init_value: float = 0.0) -> Schedule:
    """From `init_value` at step 0 linearly to `peak_value` at `warmup_steps`, then constant."""
    warmup_steps = _positive_int("linear_warmup", "warmup_steps", warmup_steps)

    def fn(t):
        frac = dsl.minimum(t, float(warmup_steps)) / float(warmup_steps)
        return init_value + (peak_value - init_value) * frac
    return Schedule("linear_warmup", fn, f"{peak_value}, warmup_steps={warmup_steps}, "
                                         f"init_value={init_value}")


def join_schedules(schedules: Sequence[Schedule], boundaries: Sequence[int]) -> Schedule:
    """optax's join_schedules: `schedules[i]` runs from `boundaries[i-1]`, restarted at its own
    step 0 there (`schedules[i](step - boundaries[i-1])`)."""
    schedules, boundaries = list(schedules), [int(b) for b in boundaries]
    _check(len(schedules) == len(boundaries) + 1 and schedules,
           f"join_schedules: {len(schedules)} schedules need {len(schedules) - 1} boundaries, "
           f"got {len(boundaries)}")
    _check(all(a < b for a, b in zip([-1] + boundaries, boundaries)),
           f"join_schedules: boundaries must be increasing non-negative steps, got {boundaries}")

    def fn(t):
        out = schedules[0]._fn(t)
        for start, s in zip(boundaries, schedules[1:]):
            out = dsl.where(t >= float(start), s._fn(t - float(start)), out)
        return out
    return Schedule("join_schedules", fn, f"{schedules}, boundaries={boundaries}")


def warmup_cosine_decay(peak_value: float, warmup_steps: int, decay_steps: int,
                        init_value: float = 0.0, end_value: float = 0.0) -> Schedule:
    """Linear warm-up to `peak_value` over `warmup_steps`, then a cosine decay to `end_value`
    reached at step `decay_steps` (the total, warm-up included, as optax's
    warmup_cosine_decay_schedule)."""
    _check(decay_steps > warmup_steps, f"warmup_cosine_decay: decay_steps ({decay_steps}) must "
                                       f"exceed warmup_steps ({warmup_steps})")
    _check(peak_value != 0.0, "warmup_cosine_decay: peak_value must be nonzero")
    return join_schedules([linear_warmup(peak_value, warmup_steps, init_value),
                           cosine_decay(peak_value, decay_steps - warmup_steps,
                                        alpha=end_value / peak_value)], [warmup_steps])


def _cos_0_to_pi(x: Sym) -> Sym:
    """cos(x) for float64 x in [0, pi], as -sin(x - pi/2) by its Taylor series to degree 21
    (|x - pi/2| <= pi/2, so the truncation error is below 2e-18).
    TODO(train): use the cos op once the elementwise sin/cos family is merged."""
    y = x - math.pi / 2
    y2 = y * y
    # Horner in y^2 from degree 21 down; negating at each level gives the alternating signs
    # (-1)^j / (2j+1)! and, after the 10 levels, the series with its own signs.
    acc = P.builder_of(y).const(np.float64(1.0 / math.factorial(21)))
    for k in range(19, 0, -2):
        acc = -(acc * y2) + 1.0 / math.factorial(k)
    return -(y * acc)


__all__ = ["Schedule", "constant", "cosine_decay", "join_schedules", "linear_warmup",
           "step_decay", "warmup_cosine_decay"]
