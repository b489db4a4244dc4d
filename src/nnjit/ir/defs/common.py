"""Shape-rule helpers shared by the op definitions."""
from __future__ import annotations

from typing import Sequence

from ..errors import ShapeError
from ..types import DType, TensorType


def broadcast_shapes(*shapes: tuple[int, ...]) -> tuple[int, ...]:
    """numpy broadcasting of `shapes`; ShapeError naming all of them when incompatible."""
    ndim = max((len(s) for s in shapes), default=0)
    out = []
    for i in range(ndim):
        dims = {s[len(s) - ndim + i] for s in shapes if len(s) - ndim + i >= 0}
        dims.discard(1)
        if len(dims) > 1:
            raise ShapeError("shapes do not broadcast: " + " vs ".join(map(str, shapes)))
        out.append(dims.pop() if dims else 1)
    return tuple(out)


def same_dtype(types: Sequence[TensorType]) -> DType:
    dts = {t.dtype for t in types}
    if len(dts) > 1:
        raise ShapeError("operand dtypes differ: " + ", ".join(str(t) for t in types))
    return types[0].dtype


def require(cond: bool, msg: str) -> None:
    if not cond:
        raise ShapeError(msg)


def require_float(t: TensorType, what: str = "operand") -> None:
    require(t.dtype.is_float, f"{what} must be f32 or f64, got {t}")


def require_numeric(t: TensorType, what: str = "operand") -> None:
    require(t.dtype != DType.BOOL, f"{what} must be numeric, got {t}")


def window_out(size: int, lo: int, hi: int, kernel: int, stride: int, dilation: int = 1
               ) -> int:
    """Output length of a sliding window (no ceil mode), as in torch."""
    require(stride >= 1 and dilation >= 1 and kernel >= 1, f"kernel, stride and "
            f"dilation must be >= 1, got kernel={kernel} stride={stride} dilation={dilation}")
    require(lo >= 0 and hi >= 0, f"padding must be non-negative, got ({lo}, {hi})")
    span = dilation * (kernel - 1) + 1
    require(size + lo + hi >= span, f"kernel extent {span} is larger than the padded "
            f"input size {size + lo + hi}")
    return (size + lo + hi - span) // stride + 1


def check_dims(name: str, shape: Sequence[int]) -> None:
    """A shape given as an attribute has non-negative dims (else TensorType would raise)."""
    require(all(d >= 0 for d in shape), f"attribute '{name}' has a negative dim: {tuple(shape)}")


def check_len(name: str, v: Sequence, n: int) -> None:
    require(len(v) == n, f"attribute '{name}' must have {n} entries, got {tuple(v)}")
