"""What a converter sees of one ONNX node (`NodeContext`), and the table of converters
(`CONVERTERS`, filled by `@converter` in the ops_* modules)."""
from __future__ import annotations

from typing import Any, Callable

import numpy as np

from ...ir import Builder, Sym
from ...ir.types import canonical_dtype
from .load import _label
from .tensors import (ConstantRequired, OnnxError, numpy_dtype, storage_compute_dtype,
                      to_numpy)

Value = Any            # Sym | np.ndarray
CONVERTERS: dict[str, Callable[["NodeContext"], Any]] = {}


def converter(*op_types: str):
    """Register the decorated function as the converter of `op_types`."""
    def deco(fn):
        for t in op_types:
            CONVERTERS[t] = fn
        return fn
    return deco


# AttributeProto.AttributeType -> the field holding it.
_ATTR_FIELDS = {1: "f", 2: "i", 3: "s", 4: "t", 6: "floats", 7: "ints", 8: "strings"}
_ATTR_KINDS = {1: "float", 2: "int", 3: "string", 4: "tensor", 5: "graph", 6: "floats",
               7: "ints", 8: "strings"}


class NodeContext:
    """What a converter sees of one node: its inputs (None for an omitted optional one), its
    attributes by type, the opset, and the builder to emit into."""

    def __init__(self, node, inputs: list[Value | None], opset: int, builder: Builder,
                 base_dir: str | None, elem_types: dict | None = None,
                 consumed: frozenset = frozenset()):
        self.node, self.inputs, self.opset, self.builder = node, inputs, opset, builder
        self.base_dir = base_dir
        self.elem_types = elem_types or {}      # ONNX element type of the values that have one
        self.consumed = consumed                # values some node reads
        self.attrs = {a.name: a for a in node.attribute}

    @property
    def label(self) -> str:
        return _label(self.node)

    def error(self, msg: str) -> OnnxError:
        return OnnxError(f"node {self.label}: {msg}")

    # -- inputs -----------------------------------------------------------------------------
    def has(self, i: int) -> bool:
        return i < len(self.inputs) and self.inputs[i] is not None

    def input(self, i: int) -> Value:
        if not self.has(i):
            raise self.error(f"input {i} is required")
        return self.inputs[i]

    def tensor(self, i: int) -> Sym:
        """Input `i` as a traced tensor (a known value becomes a constant)."""
        return self.lift(self.input(i))

    def lift(self, v: Value) -> Sym:
        return v if isinstance(v, Sym) else self.builder.const(np.asarray(v))

    def const(self, i: int, what: str) -> np.ndarray:
        """Input `i`, which must be known at import time (it determines a shape)."""
        v = self.input(i)
        if isinstance(v, Sym):
            raise ConstantRequired(
                f"node {self.label}: input {i} ({what}, {self.node.input[i]!r}) must be a "
                "constant or an initializer: it determines a shape, and here it is computed at "
                "run time", self.node.input[i])
        return v

    def const_ints(self, i: int, what: str) -> list[int]:
        v = self.const(i, what)
        if v.dtype.kind not in "iu":
            raise self.error(f"input {i} ({what}) must be integers, got {v.dtype}")
        return [int(a) for a in v.reshape(-1)]

    # -- attributes -------------------------------------------------------------------------
    def _attr(self, name: str, kind: int):
        a = self.attrs.get(name)
        if a is None:
            return None
        if a.type != kind:
            raise self.error(f"attribute {name!r} must be {_ATTR_KINDS[kind]}, got "
                             f"{_ATTR_KINDS.get(a.type, a.type)}")
        return getattr(a, _ATTR_FIELDS[kind])

    def int(self, name: str, default: int | None = None) -> int | None:
        v = self._attr(name, 2)
        return default if v is None else int(v)

    def float(self, name: str, default: float | None = None) -> float | None:
        v = self._attr(name, 1)
        return default if v is None else float(v)

    def str(self, name: str, default: str | None = None) -> str | None:
        v = self._attr(name, 3)
        return default if v is None else v.decode("utf-8", "replace")

    def ints(self, name: str, default=None) -> list[int] | None:
        v = self._attr(name, 7)
        return default if v is None else [int(x) for x in v]

    def floats(self, name: str, default=None) -> list[float] | None:
        v = self._attr(name, 6)
        return default if v is None else [float(x) for x in v]

    def strs(self, name: str, default=None) -> list[str] | None:
        v = self._attr(name, 8)
        return default if v is None else [x.decode("utf-8", "replace") for x in v]

    def tensor_attr(self, name: str) -> np.ndarray | None:
        v = self._attr(name, 4)
        return None if v is None else to_numpy(v, self.base_dir)

    def dtype_attr(self, name: str = "to") -> np.dtype:
        t = self.int(name)
        if t is None:
            raise self.error(f"attribute {name!r} is required")
        return numpy_dtype(t, f"node {self.label}")

    def elem_type(self, i: int) -> int | None:
        """The ONNX element type of input `i`, where the model declares it (graph inputs,
        initializers, Cast results)."""
        return self.elem_types.get(self.node.input[i]) if i < len(self.node.input) else None

    def only_returned(self) -> bool:
        """Whether the node's outputs go to the graph's outputs only (no node reads them)."""
        return not any(o in self.consumed for o in self.node.output)

    def num_outputs(self) -> int:
        return len(self.node.output)

    def wants(self, k: int) -> bool:
        """Whether output `k` is requested (named, not omitted)."""
        return k < len(self.node.output) and bool(self.node.output[k])


def compute_dtype(dt: np.dtype) -> np.dtype:
    """The dtype nnjit computes a value of ONNX dtype `dt` in (float16, float8 -> float32,
    small and unsigned ints -> int64)."""
    return storage_compute_dtype(dt) or canonical_dtype(dt)
