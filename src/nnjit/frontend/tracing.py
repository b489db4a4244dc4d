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

from ..ir import ArgumentError, Builder, DType, Graph, NnjitError, ShapeError, Sym, TensorType
from ..ir.types import canonical_dtype
from .pytree import TreeDef, flatten, flatten_with_paths, is_namedtuple, unflatten


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
    remat: tuple = ()      # checkpointed blocks: frozensets of graph nodes (nnjit.checkpoint)


def arg_names(fn: Callable, n: int) -> list[str]:
    """Names for the first `n` positional parameters of `fn` (arg0.. where unknown)."""
    try:
        params = [p.name for p in inspect.signature(fn).parameters.values()
                  if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    except (TypeError, ValueError):
        params = []
    return [params[i] if i < len(params) else f"arg{i}" for i in range(n)]


# -- lists of numbers passed where an array was meant --------------------------------------------
#
# A list is a pytree, so f([[1.0, 2.0], [3.0, 4.0]]) would trace four f32 scalars, not a 2x2
# array, and fail later with a Python error far from the cause. The rule, kept narrow because
# lists of arrays (parameter lists) and of a few numbers (hyperparameters) are valid pytrees:
#   * a list/tuple nest (no namedtuples) at least two deep, with at least one leaf and only
#     Python numbers as leaves (bool, int, float; not numpy scalars, which are 0-d arrays), is
#     an ArgumentError (`nested_number_lists`): [[1.0, 2.0]], ((0, 1), (2, 3)), [[1], [2, 3]];
#   * a flat list/tuple of Python numbers is allowed, but when tracing the function raises a
#     TypeError, a note on that error names the argument (`_note_number_lists`).

def _number_nest(x) -> tuple[int, int] | None:
    """(depth, count of numbers) when `x` is a list/tuple nest whose leaves are all Python
    numbers ([] has depth 1), or None."""
    if isinstance(x, (bool, int, float)) and not isinstance(x, np.generic):
        return 0, 1
    if not isinstance(x, (list, tuple)) or is_namedtuple(x):
        return None
    depth, count = 1, 0
    for c in x:
        sub = _number_nest(c)
        if sub is None:
            return None
        depth, count = max(depth, sub[0] + 1), count + sub[1]
    return depth, count


def _number_lists(args: Sequence[Any], names: Sequence[str], min_depth: int):
    """(label, value, depth, count) of each outermost number nest at least `min_depth` deep in
    the arguments, labelled like `x`, `params['w']`, `xs[0]`."""
    out = []

    def go(x, label: str) -> None:
        nest = _number_nest(x)
        if nest is not None and nest[0] >= min_depth and nest[1] > 0:
            out.append((label, x) + nest)
        elif isinstance(x, dict):
            for k, v in x.items():
                go(v, f"{label}[{k!r}]")
        elif is_namedtuple(x):
            for f, v in zip(type(x)._fields, x):
                go(v, f"{label}.{f}")
        elif isinstance(x, (list, tuple)):
            for i, v in enumerate(x):
                go(v, f"{label}[{i}]")

    for a, name in zip(args, names):
        go(a, name)
    return out


def nested_number_lists(fn_name: str, args: Sequence[Any], names: Sequence[str]) -> str | None:
    """The ArgumentError message for a nested list of Python numbers among `args`, or None."""
    found = _number_lists(args, names, 2)
    if not found:
        return None
    label, x, depth, count = found[0]
    try:
        shape = f"np.asarray gives an array of shape {np.asarray(x).shape}"
    except ValueError:
        shape = "its rows differ in length"
    kind = "list" if isinstance(x, list) else "tuple"
    return (f"{fn_name}: argument {label} is a {kind} of {kind}s of Python numbers ({shape}); "
            f"jit takes arrays, and would trace this as {count} separate scalars: pass "
            f"np.asarray({label}) (with a dtype, e.g. np.float32) instead")


def _note_number_lists(e: BaseException, args: Sequence[Any], names: Sequence[str]) -> None:
    for label, x, _, count in _number_lists(args, names, 1):
        kind = "list" if isinstance(x, list) else "tuple"
        e.add_note(f"nnjit: argument {label} is a {kind} of {count} Python numbers, traced as "
                   f"{count} separate scalars, not an array; pass np.asarray({label}) if you "
                   "meant an array")


def trace_flat(fn: Callable, args: Sequence[Any], name: str | None = None,
               parent: Builder | None = None) -> Traced:
    """Trace `fn(*args)`; leaves of `args` become graph inputs (in flatten order)."""
    names = arg_names(fn, len(args))
    bad = nested_number_lists(name or _fn_name(fn), args, names)
    if bad:
        raise ArgumentError(bad)
    path_leaves, in_tree = flatten_with_paths(tuple(args))
    paths = []
    for p, _ in path_leaves:
        head, _, rest = p.partition("/")
        paths.append(names[int(head)] + ("_" + rest.replace("/", "_") if rest else ""))
    b = Builder(_symbol(name) if name else _fn_name(fn), parent=parent)
    syms = [b.input(leaf_type(x, p), p) for p, (_, x) in zip(paths, path_leaves)]
    try:
        out = fn(*unflatten(in_tree, syms))
    except TypeError as e:
        if not isinstance(e, NnjitError):     # Python's own "can't multiply sequence ..."
            _note_number_lists(e, args, names)
        raise
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
                  tuple(outer for outer, _ in b.captures), tuple(names), tuple(b.remat_regions))


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
