"""Element types, tensor types and source locations: the vocabulary every IR value is typed in.

Shapes are static tuples of ints. A `Loc` is the user's line that created a value; it travels
with the node through every pass so errors can point back at the model source.
"""
from __future__ import annotations

import enum
import math
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


# NOTE: the one size limit. x86-64 and aarch64 give user space 47 bits of virtual address
# (128 TiB), so no single tensor can be larger. Every element count, byte size, stride and offset
# of a tensor within it also fits int64 with room to spare, which generated code relies on.
MAX_TENSOR_BYTES = 2 ** 47
_INT64_MAX = 2 ** 63 - 1


def _count(n: int) -> str:
    """`n` exactly up to 2**50, else as a power of two (`2**80`, `~2**80.6`) a reader can weigh."""
    if n <= 2 ** 50:
        return str(n)
    return f"2**{n.bit_length() - 1}" if n & (n - 1) == 0 else f"~2**{math.log2(n):.1f}"


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

    def oversize_dim(self) -> int | None:
        """The first dim at which the tensor outgrows `MAX_TENSOR_BYTES`, or None if it fits.
        0-length dims count as 1: an empty tensor's other dims still become loop bounds and
        strides in generated code (numpy refuses such shapes too)."""
        n = self.dtype.itemsize
        for i, d in enumerate(self.shape):
            n *= max(d, 1)
            if n > MAX_TENSOR_BYTES:
                return i
        return None

    def check_size(self) -> None:
        """Raise ShapeError if no machine can hold this tensor (exact Python ints, no wrap):

            >>> TensorType((1 << 62, 4), DType.F32).check_size()
            ShapeError: f32[4611686018427387904,4] has 2**64 elements (2**66 bytes): ...
        """
        if self.oversize_dim() is None:
            return
        from .errors import ShapeError

        n = 1
        for d in self.shape:
            n *= max(d, 1)
        nbytes = n * self.dtype.itemsize
        elems = "elements" if 0 not in self.shape else "elements in its non-zero dims"
        why = (": the element count overflows int64" if n > _INT64_MAX else
               ": the byte size overflows int64" if nbytes > _INT64_MAX else "")
        raise ShapeError(f"{self} has {_count(n)} {elems} ({_count(nbytes)} bytes){why}; a tensor "
                         f"can have at most 2**{MAX_TENSOR_BYTES.bit_length() - 1} bytes "
                         f"({MAX_TENSOR_BYTES >> 40} TiB, the x86-64/aarch64 user address space)")

    def with_shape(self, shape) -> "TensorType":
        return TensorType(tuple(shape), self.dtype)

    def with_dtype(self, dtype: DType) -> "TensorType":
        return TensorType(self.shape, dtype)

    def __str__(self) -> str:
        return f"{self.dtype.value}[{','.join(map(str, self.shape))}]"

    __repr__ = __str__


@dataclass(frozen=True)
class Loc:
    """Where in the user's source a value was created, and inside which module (`scope`: the
    nn.Module path, "features.0.conv", as torch's named_modules names it), printed as
    `loc("model.py":12 in "forward" scope "features.0")`."""

    file: str
    line: int
    func: str
    scope: str = ""

    def __str__(self) -> str:
        at = f"{self.file}:{self.line} in {self.func}"
        return f"{at} [{self.scope}]" if self.scope else at
