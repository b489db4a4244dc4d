"""Random numbers, `nnjit.random.uniform` and `nnjit.random.normal`, with the key/seed
convention of `nnjit.dropout`: Philox-4x32-10 keyed by `seed` (an int, or a traced i64 scalar
to pass a new one each step), counter = (element index, salt). The same seed and salt give the
same numbers on every backend.

    >>> @nnjit.jit
    ... def noisy(x, seed):
    ...     return x + 0.1 * nnjit.random.normal(seed, x.shape)

Inside a trace `salt` defaults to the number of random ops already traced (as dropout's), so
two draws in one function differ; with a plain int seed and no traced tensor the numbers are
computed here, once, as a numpy constant (salt 0 unless given).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from ..ir import DType, Op, ShapeError, Sym, opdef, user_loc
from ..ir import prims as P
from .dsl import _creation_dtype, _shape_arg, sum_random_nodes


def uniform(seed, shape: Sequence[int], dtype=None, salt: int | None = None):
    """Uniform [0, 1) numbers of `shape` (f32 by default, or f64)."""
    return _uniforms(seed, _shape_arg(shape), _float_dtype(dtype, "uniform"), salt, 1)[0]


def normal(seed, shape: Sequence[int], dtype=None, salt: int | None = None):
    """Standard normal numbers of `shape` (f32 by default, or f64), by Box-Muller from two
    uniforms (salts `salt` and `salt + 1`): sqrt(-2 log(1 - u1)) * cos(2 pi u2); 1 - u1 is in
    (0, 1], so the log is finite."""
    dt = _float_dtype(dtype, "normal")
    u1, u2 = _uniforms(seed, _shape_arg(shape), dt, salt, 2)
    if isinstance(u1, Sym):
        return P.sqrt(P.log(1.0 - u1) * -2.0) * P.cos(u2 * (2 * np.pi))
    with np.errstate(all="ignore"):
        out = np.sqrt(-2.0 * np.log(1.0 - u1.astype(np.float64))) * np.cos(
            2 * np.pi * u2.astype(np.float64))
    return out.astype(dt.np)


def _float_dtype(dtype, op: str) -> DType:
    dt = _creation_dtype(dtype)
    if not dt.is_float:
        raise ShapeError(f"dtype must be float32 or float64, got {dt.value}", op, user_loc())
    return dt


def _uniforms(seed, shape, dt: DType, salt: int | None, count: int) -> list:
    """`count` uniform tensors with consecutive salts: traced if `seed` is, else numpy."""
    if isinstance(seed, Sym):
        if seed.ndim != 0 or not seed.dtype.is_int:
            raise ShapeError(f"a traced seed must be an integer scalar, got {seed.type}",
                             "random", user_loc())
        salt = sum_random_nodes(seed.builder) if salt is None else salt
        return [P.random_uniform(seed, shape, salt + i, dt) for i in range(count)]
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise ShapeError(f"seed must be an int or a traced integer scalar, got "
                         f"{type(seed).__name__}", "random", user_loc())
    ref = opdef(Op.RANDOM_UNIFORM).ref
    salt = 0 if salt is None else salt
    return [ref([np.int64(seed)], {"shape": shape, "salt": salt + i, "dtype": dt})
            for i in range(count)]
