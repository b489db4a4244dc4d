"""Building graphs: a `Builder` appends typed nodes, and `Sym` is the handle user code holds.

The tracer, the autodiff pass and composite ops all build IR the same way: through `emit`, which
checks arity and attributes, runs the op's shape rule, and stamps the node with the user's source
line (the first stack frame outside nnjit), so errors point at model code.

    >>> b = Builder("f")
    >>> x = b.input(TensorType((3,), DType.F32), "x")
    >>> print(b.build([prims.exp(x) + 1.0]))
    func @f(%x: f32[3]) -> (f32[3]) {
      %0 = exp(%x) : f32[3] loc(...)
      ...
"""
from __future__ import annotations

import dataclasses

import contextlib
import os
import sys
from typing import Any, Iterable, Sequence

import numpy as np

from .errors import ShapeError
from .graph import Graph, Node, Value, make_input
from .opdef import opdef
from .ops import Op
from .types import DType, Loc, TensorType, canonical_dtype

_PKG_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep
_EXCLUDED: list[str] = [_PKG_DIR]


def register_exclusion(path: str) -> None:
    """Frames from files under `path` are skipped when locating the user's line."""
    _EXCLUDED.append(os.path.abspath(path))


def _display_path(filename: str) -> str:
    cwd = os.getcwd() + os.sep
    return filename[len(cwd):] if filename.startswith(cwd) else filename


def user_loc(skip: int = 1) -> Loc | None:
    """The location of the innermost stack frame that is not nnjit's own code."""
    f = sys._getframe(skip)
    while f is not None:
        fn = f.f_code.co_filename
        if not fn.startswith("<frozen") and not any(os.path.abspath(fn).startswith(p)
                                                     for p in _EXCLUDED):
            return Loc(_display_path(fn), f.f_lineno, f.f_code.co_name)
        f = f.f_back
    return None


class Builder:
    """Accumulates the nodes of one graph. Values of an enclosing builder (`parent`) used here are
    captured as extra inputs, so a scan body can close over the outer trace's values."""

    def __init__(self, name: str = "main", parent: "Builder | None" = None, sym_cls=None):
        self.name = name
        self.parent = parent
        self.sym_cls = sym_cls or (parent.sym_cls if parent else Sym)
        self.inputs: list[Value] = []
        self.nodes: list[Node] = []
        self.captures: list[tuple[Sym, Value]] = []   # (outer sym, inner input) pairs
        self._loc_override: Loc | None = None
        self.scope = parent.scope if parent else ""   # the nn.Module path being traced
        self._scalar_consts: dict[tuple, Sym] = {}
        # Checkpointed blocks (nnjit.checkpoint): sets of this builder's nodes whose values
        # autodiff recomputes in the backward pass instead of keeping them from the forward.
        self.remat_regions: list[frozenset[Node]] = []

    # -- values ---------------------------------------------------------------------------
    def input(self, type_: TensorType, name: str | None = None, loc: Loc | None = None) -> "Sym":
        name = self._unique_name(name or f"arg{len(self.inputs)}")
        try:
            type_.check_size()
        except ShapeError as e:
            raise e.at(f"input %{name}", loc or self._loc_override or user_loc()) from None
        v = make_input(name, type_, len(self.inputs), loc)
        self.inputs.append(v)
        return self.wrap(v)

    def _unique_name(self, name: str) -> str:
        # ASCII only: the IR text's value names are [A-Za-z0-9_]+.
        name = "".join(c if c.isascii() and (c.isalnum() or c == "_") else "_"
                       for c in name) or "arg"
        if name[0].isdigit():
            name = "_" + name
        taken = {v.node.attrs["name"] for v in self.inputs}
        base, k = name, 1
        while name in taken:
            name, k = f"{base}_{k}", k + 1
        return name

    def wrap(self, v: Value) -> "Sym":
        return self.sym_cls(self, v)

    def value_of(self, s: Any) -> Value:
        """The Value of `s` inside this builder (capturing it if it belongs to an outer one)."""
        if not isinstance(s, Sym):
            raise TypeError(f"expected a traced tensor, got {type(s).__name__}")
        if s.builder is self:
            return s.value
        if not self._is_ancestor(s.builder):
            raise ShapeError("a traced value from another trace was used here (a value leaked "
                             "out of a finished jit/grad/scan trace?)")
        for outer, inner in self.captures:
            if outer.value == s.value and outer.builder is s.builder:
                return inner
        inner = self.input(s.type, "capture").value
        self.captures.append((s, inner))
        return inner

    def _is_ancestor(self, b: "Builder") -> bool:
        p = self.parent
        while p is not None:
            if p is b:
                return True
            p = p.parent
        return False

    def const(self, value: Any, dtype: DType | None = None) -> "Sym":
        """A constant node holding `value` (a Python scalar or numpy array)."""
        arr = np.asarray(value, dtype=dtype.np if dtype else None)
        arr = arr.astype(canonical_dtype(arr.dtype), copy=False)
        key = None
        if arr.ndim == 0:
            key = (arr.dtype.str, arr.tobytes())
            if key in self._scalar_consts:
                return self._scalar_consts[key]
        s = self.emit(Op.CONST, (), {"value": arr})
        if key is not None:
            self._scalar_consts[key] = s
        return s

    # -- nodes ----------------------------------------------------------------------------
    def emit(self, op: Op, srcs: Sequence[Any], attrs: dict | None = None,
             loc: Loc | None = None):
        """Append `op(srcs) {attrs}`; returns a Sym, or a tuple of Syms for multi-result ops."""
        d = opdef(op)
        loc = loc or self._loc_override or user_loc(2)
        if self.scope and loc is not None and not loc.scope:
            loc = dataclasses.replace(loc, scope=self.scope)
        try:
            vals = [self.value_of(s) for s in srcs]
            if d.arity is not None and len(vals) != d.arity:
                raise ShapeError(f"takes {d.arity} operands, got {len(vals)}")
            attrs = d.normalize_attrs(attrs or {})
            out = d.shape([v.type for v in vals], attrs)
            for t in out if isinstance(out, tuple) else (out,):
                t.check_size()      # every value of every graph fits in memory and in int64
        except ShapeError as e:
            raise e.at(d.name, loc) from None
        types = out if isinstance(out, tuple) else (out,)
        node = Node(op, tuple(vals), attrs, types, loc)
        self.nodes.append(node)
        if isinstance(out, tuple):
            return tuple(self.wrap(v) for v in node.outs)
        return self.wrap(node.out)

    @contextlib.contextmanager
    def in_scope(self, path: str):
        """Nodes emitted inside the block belong to module `path` (their loc's scope)."""
        prev, self.scope = self.scope, path
        try:
            yield
        finally:
            self.scope = prev

    @contextlib.contextmanager
    def at(self, loc: Loc | None):
        """Stamp nodes emitted inside the block with `loc` (passes keep the forward op's line)."""
        prev, self._loc_override = self._loc_override, loc
        try:
            yield
        finally:
            self._loc_override = prev

    def add_node(self, node: Node) -> Node:
        """Append an already-built node whose sources belong to this builder."""
        self.nodes.append(node)
        return node

    def inline(self, graph: Graph, args: Sequence[Any]) -> list["Sym"]:
        """Copy `graph`'s nodes into this builder with its inputs bound to `args`; returns the
        outputs. Nodes keep their source locations."""
        if len(args) != len(graph.inputs):
            raise ShapeError(f"@{graph.name} takes {len(graph.inputs)} inputs, got {len(args)}")
        env: dict[Value, Value] = {}
        for v, a in zip(graph.inputs, args):
            av = self.value_of(a)
            if av.type != v.type:
                raise ShapeError(f"@{graph.name}: input {v.node.attrs['name']} is {v.type}, "
                                 f"got {av.type}")
            env[v] = av
        for n in graph.nodes:
            new = n.replace(srcs=tuple(env[s] for s in n.srcs))
            self.nodes.append(new)
            env.update(zip(n.outs, new.outs))
        return [self.wrap(env[v]) for v in graph.outputs]

    def build(self, outputs: Iterable[Any], meta: dict | None = None) -> Graph:
        outs = tuple(self.value_of(s) if isinstance(s, Sym) else s for s in outputs)
        return Graph(self.name, tuple(self.inputs), tuple(self.nodes), outs, meta or {})


class Sym:
    """A symbolic tensor during tracing: operators emit graph nodes into its builder."""

    __slots__ = ("builder", "value")
    __array_ufunc__ = None        # numpy defers to our reflected operators
    __array_priority__ = 1000

    def __init__(self, builder: Builder, value: Value):
        self.builder = builder
        self.value = value

    # -- type ----------------------------------------------------------------------------
    @property
    def type(self) -> TensorType:
        return self.value.type

    @property
    def shape(self) -> tuple[int, ...]:
        return self.value.type.shape

    @property
    def dtype(self) -> DType:
        return self.value.type.dtype

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def size(self) -> int:
        return self.value.type.size

    def __len__(self) -> int:
        if not self.shape:
            raise TypeError("len() of a 0-d tensor")
        return self.shape[0]

    def __repr__(self) -> str:
        return f"Traced<{self.type}>"

    def __bool__(self):
        raise ShapeError("a traced tensor has no concrete value, so it cannot be used in Python "
                         "control flow (if/while/and/or); use nnjit.where or nnjit.scan",
                         loc=user_loc(2))

    def __iter__(self):
        if not self.shape:
            raise TypeError("iteration over a 0-d tensor")
        return (self[i] for i in range(self.shape[0]))

    __hash__ = object.__hash__

    # -- arithmetic (numpy broadcasting, Python scalars take the tensor's dtype) ------------
    def __add__(self, o): return prims.add(self, o)
    def __radd__(self, o): return prims.add(o, self)
    def __sub__(self, o): return prims.sub(self, o)
    def __rsub__(self, o): return prims.sub(o, self)
    def __mul__(self, o): return prims.mul(self, o)
    def __rmul__(self, o): return prims.mul(o, self)
    def __truediv__(self, o): return prims.div(self, o)
    def __rtruediv__(self, o): return prims.div(o, self)
    def __pow__(self, o): return prims.pow(self, o)
    def __mod__(self, o): return prims.remainder(self, o)
    def __rmod__(self, o): return prims.remainder(o, self)
    def __rpow__(self, o): return prims.pow(o, self)
    def __matmul__(self, o): return prims.matmul(self, o)
    def __rmatmul__(self, o): return prims.matmul(o, self)
    def __neg__(self): return prims.neg(self)
    def __pos__(self): return self
    def __abs__(self): return prims.abs(self)
    def __lt__(self, o): return prims.lt(self, o)
    def __le__(self, o): return prims.le(self, o)
    def __gt__(self, o): return prims.gt(self, o)
    def __ge__(self, o): return prims.ge(self, o)
    def __eq__(self, o): return prims.eq(self, o)    # type: ignore[override]
    def __ne__(self, o): return prims.ne(self, o)    # type: ignore[override]
    def __and__(self, o): return prims.logical_and(self, o)
    def __rand__(self, o): return prims.logical_and(o, self)
    def __or__(self, o): return prims.logical_or(self, o)
    def __ror__(self, o): return prims.logical_or(o, self)
    def __invert__(self): return prims.logical_not(self)

    # -- methods numpy users expect ---------------------------------------------------------
    @property
    def T(self) -> "Sym":
        return prims.transpose(self, tuple(reversed(range(self.ndim))))

    def reshape(self, *shape) -> "Sym":
        if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
            shape = tuple(shape[0])
        return prims.reshape(self, shape)

    def transpose(self, *perm) -> "Sym":
        if len(perm) == 1 and isinstance(perm[0], (tuple, list)):
            perm = tuple(perm[0])
        return prims.transpose(self, perm or tuple(reversed(range(self.ndim))))

    def astype(self, dtype) -> "Sym":
        return prims.cast(self, dtype)

    def sum(self, axis=None, keepdims: bool = False) -> "Sym":
        return prims.reduce_sum(self, axis, keepdims)

    def mean(self, axis=None, keepdims: bool = False) -> "Sym":
        return prims.mean(self, axis, keepdims)

    def max(self, axis=None, keepdims: bool = False) -> "Sym":
        return prims.reduce_max(self, axis, keepdims)

    def min(self, axis=None, keepdims: bool = False) -> "Sym":
        if self.dtype == DType.BOOL:
            return composites.all(self, axis, keepdims)
        if self.dtype.is_float:
            return prims.neg(prims.reduce_max(prims.neg(self), axis, keepdims))
        # NOTE: -max(-x) is wrong for integers (-INT_MIN wraps to INT_MIN); ~v = -v - 1 (wrapping)
        # reverses the order and maps the integer range onto itself, so min = ~max(~x). An empty
        # min gives INT_MAX, the identity, as an empty max gives INT_MIN.
        return prims.neg(prims.reduce_max(prims.neg(self) - 1, axis, keepdims)) - 1

    def argmax(self, axis: int = -1, keepdims: bool = False) -> "Sym":
        return prims.argmax(self, axis, keepdims)

    def flatten(self, start_dim: int = 0) -> "Sym":
        start_dim = start_dim % max(self.ndim, 1)
        return prims.reshape(self, self.shape[:start_dim] + (-1,))

    def __getitem__(self, idx) -> "Sym":
        return prims.getitem(self, idx)

    # -- math, reductions (issue 12) ----------------------------------------------------------
    def __floordiv__(self, o): return prims.floor_divide(self, o)
    def __rfloordiv__(self, o): return prims.floor_divide(o, self)

    def round(self, decimals: int = 0) -> "Sym":
        return prims.round(self, decimals)

    def clip(self, a_min=None, a_max=None) -> "Sym":
        return composites.clip(self, a_min, a_max)

    def prod(self, axis=None, keepdims: bool = False) -> "Sym":
        return prims.reduce_prod(self, axis, keepdims)

    def var(self, axis=None, ddof: int = 0, keepdims: bool = False) -> "Sym":
        return composites.var(self, axis, ddof, keepdims)

    def std(self, axis=None, ddof: int = 0, keepdims: bool = False) -> "Sym":
        return composites.std(self, axis, ddof, keepdims)

    def argmin(self, axis=None, keepdims: bool = False) -> "Sym":
        return composites.argmin(self, axis, keepdims)

    def any(self, axis=None, keepdims: bool = False) -> "Sym":
        return composites.any(self, axis, keepdims)

    def all(self, axis=None, keepdims: bool = False) -> "Sym":
        return composites.all(self, axis, keepdims)

    def cumsum(self, axis=None) -> "Sym":
        return composites.cumsum(self, axis)


from . import prims  # noqa: E402  (prims builds on Sym and Builder)
from . import composites  # noqa: E402
