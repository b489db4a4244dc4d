"""ONNX nodes -> nnjit IR, through the same DSL functions users call.

`CONVERTERS` maps an op type to a function of a `NodeContext` returning the node's outputs
(one value or a tuple). A value is a traced `Sym`, or a numpy array when it is known at import
time (initializers, Constant, Shape of a static shape, and any node whose inputs are all
known, which is folded through the ops' numpy references). Shape-determining inputs
(Reshape's shape, Slice's starts) must be such known values: `ctx.const(i)` says so by name.

Adding an operator is one entry: `@converter("Op")` on a function of the context.
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np

from ...ir import Builder, Loc, NnjitError, Sym, evaluate
from ...ir.types import canonical_dtype
from .load import LoadedModel, _label
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


def unsupported_nodes(m: LoadedModel) -> list[str]:
    """Every node whose op type has no converter, as 'name (OpType)'."""
    bad = []
    for n in m.nodes:
        if n.domain not in ("", "ai.onnx") or n.op_type not in CONVERTERS:
            dom = f"{n.domain}." if n.domain not in ("", "ai.onnx") else ""
            bad.append(f"{n.name or '<unnamed>'!r} ({dom}{n.op_type})")
    return bad


def check_supported(m: LoadedModel) -> None:
    bad = unsupported_nodes(m)
    if bad:
        ops = sorted({b.split("(")[-1].rstrip(")") for b in bad})
        raise OnnxError(f"{m.path}: {len(bad)} node(s) use operators nnjit cannot import "
                        f"({', '.join(ops)}): {', '.join(bad)}")


def convert_nodes(m: LoadedModel, env: dict[str, Value], builder: Builder | None
                  ) -> list[Value]:
    """Run every node's converter over `env` (name -> value, holding the graph inputs and
    initializers); returns the graph outputs' values."""
    consumed = frozenset(i for n in m.nodes for i in n.input if i)
    elem_types = {v.name: v.elem_type for v in m.inputs}
    elem_types.update({t.name: t.data_type for t in m.proto.graph.initializer})
    for k, node in enumerate(m.nodes):
        vals = [env[i] if i else None for i in node.input]
        known = not any(isinstance(v, Sym) for v in vals)
        b = Builder("fold") if known or builder is None else builder
        ctx = NodeContext(node, vals, m.opset, b, m.base_dir, elem_types, consumed)
        if node.op_type == "Cast" and node.output:
            for a in node.attribute:
                if a.name == "to":
                    elem_types[node.output[0]] = a.i
        loc = Loc(m.path, k + 1, node.name or node.op_type)
        with b.at(loc):
            outs = _run(ctx)
        if known:
            outs = _fold(b, outs)
        named = [o for o in node.output]
        if len(outs) < len([o for o in named if o]):
            missing = [named[j] for j in range(len(outs), len(named)) if named[j]]
            raise ctx.error(f"outputs {missing} are not supported")
        for name, v in zip(named, outs):
            if name:
                env[name] = v
    return [env[v.name] for v in m.outputs]


def _run(ctx: NodeContext) -> tuple:
    fn = CONVERTERS[ctx.node.op_type]
    try:
        out = fn(ctx)
    except OnnxError:
        raise
    except NnjitError as e:
        raise ctx.error(str(e)) from None
    except (TypeError, ValueError, IndexError, KeyError, ZeroDivisionError, OverflowError) as e:
        raise ctx.error(f"{type(e).__name__}: {e}") from None
    return out if isinstance(out, tuple) else (out,)


def _fold(b: Builder, outs: tuple) -> tuple:
    """Outputs computed from known values only, evaluated now (by the ops' references)."""
    syms = [o for o in outs if isinstance(o, Sym)]
    if not syms:
        return tuple(None if o is None else np.asarray(o) for o in outs)
    results = iter(evaluate(b.build(syms), []))
    return tuple(next(results) if isinstance(o, Sym) else o for o in outs)


def compute_dtype(dt: np.dtype) -> np.dtype:
    """The dtype nnjit computes a value of ONNX dtype `dt` in (float16, float8 -> float32,
    small and unsigned ints -> int64)."""
    return storage_compute_dtype(dt) or canonical_dtype(dt)


# The converters register themselves in CONVERTERS on import.
from . import ops_math, ops_nn, ops_shape, ops_rnn  # noqa: E402,F401
