"""`jit(fn, constants=params)`: fn's first argument bound to a pytree of arrays that become
constants of the compiled function (inference weights), so the backend can fold, re-lay-out
and pre-pack them once instead of on every call.

The function is traced exactly as if the constants were arguments (same dtypes, same graph),
and then those graph inputs are replaced by `const` nodes (`bind_constant_inputs`): results
are the ones the argument version computes.

    >>> infer = nnjit.jit(model.apply, constants=params)    # params: a pytree of arrays
    >>> infer(x)                                            # model.apply(params, x)
"""
from __future__ import annotations

import contextlib
import contextvars
import inspect
from typing import Any, Callable

import numpy as np

from ..ir import ArgumentError, Graph, Node, Op, Value, make_input

from .pytree import flatten_with_paths, unflatten
from .tracing import Traced, leaf_type, to_array


def _label(fn: Callable) -> str:
    return getattr(fn, "__name__", None) or type(fn).__name__


def _path_label(path: str) -> str:
    """A leaf path ("0/w1/0") as it is written in Python: constants['w1'][0]."""
    parts = path.split("/")[1:] if path else []
    return "constants" + "".join(f"[{p}]" if p.isdigit() else f"[{p!r}]" for p in parts)


def check_constants(fn: Callable, constants: Any) -> Any:
    """`constants` as a pytree of private C-contiguous numpy arrays (copied now: later changes
    to the caller's arrays do not reach compiled code), each leaf of the type it would be
    traced as when passed as an argument. A leaf that is not an array or a number (a string,
    a list of lists, a device array, an object array) is an ArgumentError naming it."""
    leaves, tree = flatten_with_paths((constants,))
    out = []
    for path, x in leaves:
        label = _path_label(path)
        ok = isinstance(x, (np.ndarray, np.generic, bool, int, float))
        if not ok:
            raise ArgumentError(f"jit({_label(fn)}): {label} is a {type(x).__name__}; constants "
                                "must be numpy arrays or numbers")
        try:
            t = leaf_type(x, label)
        except TypeError as e:
            raise ArgumentError(f"jit({_label(fn)}): {e}") from None
        a = np.array(to_array(x, t), copy=True, order="C")
        a.flags.writeable = False
        out.append(a)
    return unflatten(tree, out)[0]


_ACTIVE: contextvars.ContextVar = contextvars.ContextVar("nnjit_constants")


class BoundConstants:
    """`fn` with its first positional argument bound to `values`: calling it with the other
    arguments calls `fn(values, ...)`. While jit traces it (`tracing_with`), the first
    argument is the traced stand-in of the constants instead."""

    def __init__(self, fn: Callable, values: Any):
        self.fn, self.values = fn, values
        self.__name__ = self.__qualname__ = _label(fn)
        self.__doc__ = getattr(fn, "__doc__", None)
        try:
            sig = inspect.signature(fn)
        except (TypeError, ValueError):
            return
        params = list(sig.parameters.values())
        first = next((i for i, p in enumerate(params)
                      if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)), None)
        if first is None and not any(p.kind == p.VAR_POSITIONAL for p in params):
            raise ArgumentError(f"jit({_label(fn)}): constants are passed as the first "
                                f"positional argument, but {_label(fn)} takes none")
        if first is not None:
            self.first_name = params[first].name
            self.__signature__ = sig.replace(parameters=params[:first] + params[first + 1:])

    def __call__(self, *args, **kwargs):
        return self.fn(_ACTIVE.get(self.values), *args, **kwargs)

    @contextlib.contextmanager
    def tracing_with(self, stand_in: Any):
        token = _ACTIVE.set(stand_in)
        try:
            yield
        finally:
            _ACTIVE.reset(token)


def bind_constant_inputs(traced: Traced, count: int, values: list[np.ndarray],
                         in_tree, arg_names: tuple[str, ...]) -> Traced:
    """`traced` with its first `count` graph inputs replaced by const nodes holding `values`
    (their types must match), the other inputs renumbered; `in_tree` and `arg_names` describe
    the arguments left."""
    g = traced.graph
    bound, kept = g.inputs[:count], g.inputs[count:]
    mapping: dict[Value, Value] = {}
    consts = []
    for v, a in zip(bound, values):
        if v.type.shape != a.shape or v.type.dtype.np != a.dtype:
            raise ArgumentError(f"{g.name}: constant {v.node.attrs['name']} is "
                                f"{a.dtype}{list(a.shape)}, traced as {v.type}")
        n = Node(Op.CONST, (), {"value": a}, (v.type,), v.node.loc)
        consts.append(n)
        mapping[v] = n.out
    inputs = []
    for i, v in enumerate(kept):
        new = make_input(v.node.attrs["name"], v.type, i, v.node.loc)
        mapping[v] = new
        inputs.append(new)
    nodes, renamed = list(consts), {}
    for n in g.nodes:
        srcs = tuple(mapping.get(s) or Value(renamed.get(s.node, s.node), s.index)
                     for s in n.srcs)
        new = n if srcs == n.srcs else n.replace(srcs=srcs)
        renamed[n] = new
        nodes.append(new)

    def remap(v: Value) -> Value:
        return mapping.get(v) or Value(renamed.get(v.node, v.node), v.index)

    graph = Graph(g.name, tuple(inputs), tuple(nodes), tuple(remap(v) for v in g.outputs),
                  g.meta)
    remat = tuple(frozenset(renamed.get(n, n) for n in region) for region in traced.remat)
    return Traced(graph, in_tree, traced.out_tree, traced.in_paths[count:], traced.captures,
                  arg_names, remat)
