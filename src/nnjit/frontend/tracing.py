"""Tracing: run a Python function on symbolic tensors and record the Graph it builds.

    >>> g = nnjit.trace(lambda x, w: nnjit.relu(x @ w), np.ones((2, 3), np.float32),
    ...                 np.ones((3, 4), np.float32))
    >>> print(g)
    func @<lambda>... (%x: f32[2,3], %w: f32[3,4]) -> (f32[2,4]) { ... }

Arguments are pytrees; each leaf becomes a typed graph input named after its path. Python
scalars and numpy arrays the function captures become constants.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

from ..ir import Builder, DType, Graph, ShapeError, Sym, TensorType
from ..ir.types import canonical_dtype
from .pytree import TreeDef, flatten, flatten_with_paths, unflatten


def leaf_type(x: Any, path: str = "argument") -> TensorType:
    """The TensorType a leaf is traced as: arrays keep shape and dtype (other float widths become
    f32, other int widths i64), and so do numpy scalars; Python floats are f32, ints i64, bools
    bool."""
    if isinstance(x, Sym):
        return x.type
    if isinstance(x, np.generic):   # numpy scalars keep their dtype (np.float64 is a float)
        return TensorType((), DType.from_numpy(canonical_dtype(x.dtype)))
    if isinstance(x, bool):
        return TensorType((), DType.BOOL)
    if isinstance(x, int):
        return TensorType((), DType.I64)
    if isinstance(x, float):
        return TensorType((), DType.F32)
    if hasattr(x, "shape") and hasattr(x, "dtype"):
        try:
            return TensorType(tuple(x.shape), DType.from_numpy(canonical_dtype(x.dtype)))
        except TypeError as e:
            raise TypeError(f"{path}: {e}") from None
    raise TypeError(f"{path}: expected an array, a number or a pytree of them, got "
                    f"{type(x).__name__}")


def to_array(x: Any, t: TensorType) -> np.ndarray:
    """`x` as a C-contiguous numpy array of type `t` (no copy when it already is one). GPU device arrays
    (numba's, or anything with the CUDA array interface) of type `t` pass through unchanged, so
    the cuda backend uses them in place instead of copying them to the host."""
    if isinstance(x, np.ndarray) and x.dtype == t.dtype.np:
        # Native code reads dense row-major memory: a strided view is copied once here.
        return x if x.flags.c_contiguous else np.ascontiguousarray(x)
    if (getattr(x, "__cuda_ndarray__", False) or hasattr(x, "__cuda_array_interface__")) and \
            np.dtype(x.dtype) == t.dtype.np and tuple(x.shape) == t.shape:
        return x
    return np.asarray(x, dtype=t.dtype.np)


@dataclass(frozen=True)
class Traced:
    """A traced function: its graph and how its arguments/results map to graph inputs/outputs."""

    graph: Graph
    in_tree: TreeDef
    out_tree: TreeDef
    in_paths: tuple[str, ...]
    captures: tuple = ()   # outer-trace Syms the function closed over (extra trailing inputs)
    arg_names: tuple[str, ...] = ()   # the function's positional parameter names


def arg_names(fn: Callable, n: int) -> list[str]:
    """Names for the first `n` positional parameters of `fn` (arg0.. where unknown)."""
    try:
        params = [p.name for p in inspect.signature(fn).parameters.values()
                  if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    except (TypeError, ValueError):
        params = []
    return [params[i] if i < len(params) else f"arg{i}" for i in range(n)]


def trace_flat(fn: Callable, args: Sequence[Any], name: str | None = None,
               parent: Builder | None = None) -> Traced:
    """Trace `fn(*args)`; leaves of `args` become graph inputs (in flatten order)."""
    names = arg_names(fn, len(args))
    path_leaves, in_tree = flatten_with_paths(tuple(args))
    paths = []
    for p, _ in path_leaves:
        head, _, rest = p.partition("/")
        paths.append(names[int(head)] + ("_" + rest.replace("/", "_") if rest else ""))
    b = Builder(_symbol(name) if name else _fn_name(fn), parent=parent)
    syms = [b.input(leaf_type(x, p), p) for p, (_, x) in zip(paths, path_leaves)]
    out = fn(*unflatten(in_tree, syms))
    out_leaves, out_tree = flatten(out)
    outs = []
    for k, o in enumerate(out_leaves):
        if isinstance(o, Sym):
            outs.append(o)
        elif isinstance(o, (int, float, bool)):      # Python scalars: as if passed in
            outs.append(b.const(np.asarray(o, dtype=leaf_type(o).dtype.np)))
        elif isinstance(o, (np.ndarray, np.number, np.bool_)):
            outs.append(b.const(np.asarray(o, dtype=canonical_dtype(np.asarray(o).dtype))))
        else:
            raise ShapeError(f"{b.name}: output {k} is a {type(o).__name__}, not a tensor")
    names_ = tuple(b.inputs[i].node.attrs["name"] for i in range(len(syms)))
    return Traced(b.build(outs), in_tree, out_tree, names_,
                  tuple(outer for outer, _ in b.captures), tuple(names))


def _fn_name(fn: Callable) -> str:
    return _symbol(getattr(fn, "__name__", None) or type(fn).__name__)


def _symbol(name: str) -> str:
    """`name` as a graph name the IR text can print (`@<lambda>` would not parse back)."""
    name = "".join(c if c.isascii() and (c.isalnum() or c == "_") else "_" for c in name)
    name = name.strip("_") or "main"
    return "f_" + name if name[0].isdigit() else name


def trace(fn: Callable, *example_args, name: str | None = None) -> Graph:
    """The Graph of `fn` traced on arguments shaped like `example_args` (arrays or pytrees)."""
    return trace_flat(fn, example_args, name).graph
