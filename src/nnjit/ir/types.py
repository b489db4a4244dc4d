"""Element types, tensor types and source locations: the vocabulary every IR value is typed in.

Shapes are static tuples of ints. A `Loc` is the user's line that created a value; it travels
with the node through every pass so errors can point back at the model source.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass

import numpy as np


class DType(enum.Enum):
    """Element types. The value is the short name used in the IR text (`f32[3,4]`)."""

    F32 = "f32"
    F64 = "f64"
    I32 = "i32"
    I64 = "i64"
    BOOL = "bool"

    @property
    def np(self) -> np.dtype:
        return _TO_NUMPY[self]

    @property
    def itemsize(self) -> int:
        return self.np.itemsize

    @property
    def is_float(self) -> bool:
        return self in (DType.F32, DType.F64)

    @property
    def is_int(self) -> bool:
        return self in (DType.I32, DType.I64)

    @staticmethod
    def from_numpy(dt) -> "DType":
        """The DType of a numpy dtype (or anything `np.dtype` accepts); TypeError if unsupported."""
        dt = np.dtype(dt)
        try:
            return _FROM_NUMPY[dt]
        except KeyError:
            supported = ", ".join(d.np.name for d in DType)
            raise TypeError(f"unsupported dtype {dt.name} (supported: {supported})") from None

    def __repr__(self) -> str:
        return f"DType.{self.name}"

    def __str__(self) -> str:
        return self.value


_TO_NUMPY = {
    DType.F32: np.dtype(np.float32),
    DType.F64: np.dtype(np.float64),
    DType.I32: np.dtype(np.int32),
    DType.I64: np.dtype(np.int64),
    DType.BOOL: np.dtype(np.bool_),
}
_FROM_NUMPY = {v: k for k, v in _TO_NUMPY.items()}

def canonical_dtype(dt) -> np.dtype:
    """The supported numpy dtype a value of dtype `dt` is traced as: other float widths become
    float32, other integer widths int64 (bool and the supported types stay)."""
    dt = np.dtype(dt)
    if dt.kind == "f" and dt != np.float64:
        return np.dtype(np.float32)
    if dt.kind in "iu" and dt not in (np.int32, np.int64):
        return np.dtype(np.int64)
    return dt


# Promotion order for mixed-dtype arithmetic in the DSL (the IR itself never promotes).
_RANK = {DType.BOOL: 0, DType.I32: 1, DType.I64: 2, DType.F32: 3, DType.F64: 4}


def promote(a: DType, b: DType) -> DType:
    """The dtype both operands are cast to before a binary op (bool < i32 < i64 < f32 < f64)."""
    return a if _RANK[a] >= _RANK[b] else b


@dataclass(frozen=True)
class TensorType:
    """A statically shaped tensor type, printed as `f32[128,784]` (a scalar is `f32[]`)."""

    shape: tuple[int, ...]
    dtype: DType

    def __post_init__(self):
        if not all(isinstance(d, (int, np.integer)) and d >= 0 for d in self.shape):
            raise ValueError(f"bad shape {self.shape}: dimensions are non-negative ints")
        object.__setattr__(self, "shape", tuple(int(d) for d in self.shape))

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def size(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n

    @property
    def nbytes(self) -> int:
        return self.size * self.dtype.itemsize

    def with_shape(self, shape) -> "TensorType":
        return TensorType(tuple(shape), self.dtype)

    def with_dtype(self, dtype: DType) -> "TensorType":
        return TensorType(self.shape, dtype)

    def __str__(self) -> str:
        return f"{self.dtype.value}[{','.join(map(str, self.shape))}]"

    __repr__ = __str__


@dataclass(frozen=True)
class Loc:
    """Where in the user's source a value was created: printed as `loc("model.py":12 in "forward")`."""

    file: str
    line: int
    func: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line} in {self.func}"
