"""Sources: constants, `iota` (index coordinates) and `random_uniform` (Philox-4x32-10 counter-based
random numbers, the same bits on every backend; dropout is a composite over it)."""
from __future__ import annotations

import numpy as np

from ..opdef import AttrSpec, OpDef, register
from ..ops import Kind, Op
from ..philox import uniform
from ..types import DType, TensorType
from .common import require


def _const_shape(ts, attrs):
    v = attrs["value"]
    return TensorType(v.shape, DType.from_numpy(v.dtype))


def _iota_shape(ts, attrs):
    shape, ax = attrs["shape"], attrs["axis"]
    require(all(d >= 0 for d in shape), f"bad shape {shape}")
    require(0 <= ax < len(shape), f"axis {ax} out of range for shape {shape}")
    require(attrs["dtype"] != DType.BOOL, "iota dtype must be numeric")
    return TensorType(shape, attrs["dtype"])


def _iota_ref(xs, attrs):
    shape, ax = attrs["shape"], attrs["axis"]
    idx = np.arange(shape[ax], dtype=attrs["dtype"].np)
    idx = idx.reshape((-1,) + (1,) * (len(shape) - ax - 1))
    return np.ascontiguousarray(np.broadcast_to(idx, shape))


def _random_uniform_shape(ts, attrs):
    (seed,) = ts
    require(seed == TensorType((), DType.I64), f"seed must be an i64 scalar, got {seed}")
    require(attrs["dtype"].is_float, f"dtype must be f32 or f64, got {attrs['dtype']}")
    require(all(d >= 0 for d in attrs["shape"]), f"bad shape {attrs['shape']}")
    return TensorType(attrs["shape"], attrs["dtype"])


def _random_uniform_ref(xs, attrs):
    return uniform(int(xs[0]), attrs["shape"], attrs["salt"], attrs["dtype"].np)


register(
    OpDef(Op.CONST, Kind.ELEMENTWISE, 0, _const_shape, lambda xs, a: a["value"],
          attrs=(AttrSpec("value", "array"),)),
    OpDef(Op.IOTA, Kind.ELEMENTWISE, 0, _iota_shape, _iota_ref,
          attrs=(AttrSpec("shape", "ints"), AttrSpec("axis", "int"),
                 AttrSpec("dtype", "dtype", DType.I64)),
          doc="out[i0, ..., in] = i_axis"),
    OpDef(Op.RANDOM_UNIFORM, Kind.ELEMENTWISE, 1, _random_uniform_shape, _random_uniform_ref,
          attrs=(AttrSpec("shape", "ints"), AttrSpec("salt", "int", 0),
                 AttrSpec("dtype", "dtype", DType.F32)),
          nondiff_inputs=frozenset({0}), expensive=True,
          doc="uniform [0, 1) from Philox-4x32-10: key = seed, counter = (flat index, salt)"),
)
