"""The values of fuzz programs: awkward floats and ints, index arguments in and out of range,
smooth floats for gradient checks, and how arguments are shown in a failure report."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from nnjit.ir import DType, Graph

F64, BOOL = DType.F64, DType.BOOL


def _specials(dtype: DType) -> list:
    if dtype.is_float:
        fi = np.finfo(dtype.np)
        tiny_sub = float(fi.smallest_subnormal)
        out = [math.inf, -math.inf, math.nan, -0.0, 0.0, 1e30, -1e30, 1e-30, -1e-30,
               tiny_sub, -tiny_sub, tiny_sub * 3, float(fi.tiny), float(fi.max), -float(fi.max),
               1.0, -1.0, 0.5]
        if dtype == F64:
            out += [1e300, -1e300, 1e-310]
        return out
    if dtype == BOOL:
        return [True, False]
    ii = np.iinfo(dtype.np)
    return [int(ii.min), int(ii.max), int(ii.min) + 1, int(ii.max) - 1, -1, 0, 1]


def values(rng: np.random.Generator, dtype: DType, shape, special: float = 0.0
           ) -> np.ndarray:
    """An array of `dtype`: ordinary values (floats ~ N(0, 2), ints in [-5, 5]) with a share
    `special` of awkward ones: +-inf, NaN, -0.0, 1e30, 1e-30, subnormals, float max, int
    extremes."""
    shape = tuple(shape)
    if dtype.is_float:
        a = rng.standard_normal(shape) * 2
    elif dtype == BOOL:
        a = rng.random(shape) < 0.5
    else:
        a = rng.integers(-5, 6, shape)
    a = np.asarray(a, dtype.np)
    if special and a.size:
        mask = rng.random(shape) < special
        pool = np.array(_specials(dtype), dtype.np)
        a = np.where(mask, pool[rng.integers(len(pool), size=shape)], a).astype(dtype.np)
    return np.asarray(a, dtype.np)


def smooth_values(rng: np.random.Generator, dtype: DType, shape) -> np.ndarray:
    """Floats in +-[0.2, 2]: away from the kinks at 0 (relu, abs), with ties of max/maximum
    improbable; for finite-difference gradient checks."""
    shape = tuple(shape)
    a = rng.choice([-1.0, 1.0], shape) * rng.uniform(0.2, 2.0, shape)
    return np.asarray(a, dtype.np)


@dataclass(frozen=True)
class IndexHint:
    """A graph input that holds indices into an axis of length `n`: `valid` is "take"
    ([-n, n)), "class" ([0, n)) or "label" ([0, n) or `ignore`); `strict` inputs (for
    mode="promise_in_bounds" and scatter_add, which do not check) are never out of range."""

    n: int
    valid: str = "take"
    ignore: int | None = None
    strict: bool = False

    def lo(self) -> int:
        return -self.n if self.valid == "take" else 0


def index_values(rng: np.random.Generator, dtype: DType, shape, hint: IndexHint,
                 out_of_range: float) -> np.ndarray:
    """In-range indices for `hint`, each out of range with probability `out_of_range` (unless
    strict): just past either end, far off, the ignore label, the dtype's extremes."""
    shape = tuple(shape)
    lo, hi = hint.lo(), hint.n
    if hi > lo:
        a = rng.integers(lo, hi, shape)
    else:
        a = np.zeros(shape, np.int64)
    if hint.ignore is not None:
        a = np.where(rng.random(shape) < 0.2, hint.ignore, a)
    if not hint.strict and a.size:
        ii = np.iinfo(dtype.np)
        bad = np.array([hi, hi + 1, lo - 1, hi + 7, lo - 9, int(ii.max), int(ii.min)], np.int64)
        mask = rng.random(shape) < out_of_range
        a = np.where(mask, bad[rng.integers(len(bad), size=shape)], a)
    return np.asarray(a).astype(dtype.np)


def make_inputs(rng: np.random.Generator, g: Graph, hints: dict[int, IndexHint], regime: str,
                out_of_range: float = 0.0, special: float = 0.3) -> list[np.ndarray]:
    """Arguments for `g`: index inputs from their hints, smooth floats in gradient cases, and
    otherwise `values` with a share `special` of awkward ones ("special" regime only)."""
    out = []
    for i, t in enumerate(g.input_types):
        if i in hints:
            out.append(index_values(rng, t.dtype, t.shape, hints[i], out_of_range))
        elif regime == "smooth" and t.dtype.is_float:
            out.append(smooth_values(rng, t.dtype, t.shape))
        else:
            out.append(values(rng, t.dtype, t.shape, special if regime == "special" else 0.0))
    return out


def describe_inputs(g: Graph, args) -> str:
    """One line per argument: name, type, and its values (abridged when large)."""
    lines = []
    for name, a in zip(g.input_names, args):
        with np.printoptions(threshold=24, edgeitems=4, precision=6, linewidth=96):
            body = np.array2string(np.asarray(a), separator=", ")
        lines.append(f"  %{name}: {a.dtype}{list(a.shape)} = {body}")
    return "\n".join(lines)
