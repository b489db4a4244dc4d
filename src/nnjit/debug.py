"""Debugging compiled numerics: `bisect` finds the first kernel whose native result differs
from the reference interpreter, and the node inside it (with the user's source line).

    >>> report = nnjit.debug.bisect(train_step, params, x, y, backend="llvm")
    >>> print(report)   # kernel 7 (fusion/reduce): first differing node: exp at model.py:31 ...
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from .api import JitFunction
from .ir import Graph, Node, Op, Value, evaluate, make_input
from .runtime.compiled import Options, compile_graph


@dataclass(frozen=True)
class BisectReport:
    kernel: int                 # index of the top-level node (kernel) in the final graph
    kernel_op: str
    node: str                   # the first differing node inside it, as "op type"
    loc: str
    max_abs_error: float
    max_rel_error: float

    def __str__(self) -> str:
        return (f"kernel %{self.kernel} ({self.kernel_op}): first differing node: {self.node}"
                f" at {self.loc or 'unknown location'}; max abs error {self.max_abs_error:.3g}, "
                f"max rel error {self.max_rel_error:.3g}")


def isolate(n: Node) -> tuple[Graph, list[Value]]:
    """A graph computing only `n` from its operands (which become the inputs)."""
    operands: list[Value] = []
    for s in n.srcs:
        if s not in operands:
            operands.append(s)
    inputs = [make_input(f"a{i}", v.type, i) for i, v in enumerate(operands)]
    env = dict(zip(operands, inputs))
    new = n.replace(srcs=tuple(env[s] for s in n.srcs))
    return Graph(f"isolated_{n.op.value}", tuple(inputs), (new,), new.outs), operands


def _error(got: np.ndarray, want: np.ndarray) -> tuple[float, float]:
    if got.dtype.kind != "f":
        bad = np.count_nonzero(got != want)
        return float(bad), float(bad)
    with np.errstate(all="ignore"):
        diff = np.abs(got.astype(np.float64) - want.astype(np.float64))
        diff = np.where(np.isnan(got) & np.isnan(want), 0.0, diff)
        diff = np.where(np.isnan(diff), np.inf, diff)
        rel = diff / np.maximum(np.abs(want.astype(np.float64)), 1e-30)
    return float(diff.max(initial=0.0)), float(rel.max(initial=0.0))


def _differs(got, want, rtol, atol) -> tuple[bool, float, float]:
    abs_err, rel_err = _error(np.asarray(got), np.asarray(want))
    if np.asarray(want).dtype.kind != "f":
        return abs_err > 0, abs_err, rel_err
    bad = not np.allclose(got, want, rtol=rtol, atol=atol, equal_nan=True)
    return bad, abs_err, rel_err


def _run_isolated(n: Node, values: dict[Value, np.ndarray], options):
    g, operands = isolate(n)
    exe, _, _ = compile_graph(g, options, graph_passes=False)
    return exe([np.ascontiguousarray(values[v]) for v in operands])


def bisect(fn: Callable, *args, backend: str = "llvm", fuse: bool = True, rtol: float = 1e-4,
           atol: float = 1e-5) -> BisectReport | None:
    """Compile `fn` for `backend`, then run its kernels one at a time on the interpreter's
    inputs and return where the first mismatch beyond tolerance is (None when all agree)."""
    cf = JitFunction(fn, backend=backend, fuse=fuse).lower(*args)
    g = cf.graph
    values: dict[Value, np.ndarray] = dict(zip(g.inputs, cf.flat_args(args)))
    evaluate(g, [values[v] for v in g.inputs], lambda n, outs: values.update(zip(n.outs, outs)))
    options = Options(backend, fuse)
    for k, n in enumerate(g.nodes):
        if n.op == Op.CONST:
            continue
        outs = _run_isolated(n, values, options)
        for o, got in zip(n.outs, outs):
            bad, abs_err, rel_err = _differs(got, values[o], rtol, atol)
            if bad:
                inner = _inner_culprit(n, values, options, rtol, atol) if n.op == Op.FUSION \
                    else n
                return BisectReport(k, n.op.value if n.op != Op.FUSION else
                                    f"fusion/{n.attrs['kind']}",
                                    f"{inner.op.value} {', '.join(map(str, inner.types))}",
                                    str(inner.loc) if inner.loc else "", abs_err, rel_err)
    return None


def _inner_culprit(n: Node, values, options, rtol, atol) -> Node:
    """The first node of a fusion body whose isolated native result differs."""
    body: Graph = n.attrs["body"]
    inner: dict[Value, np.ndarray] = dict(zip(body.inputs, [values[s] for s in n.srcs]))
    evaluate(body, [inner[v] for v in body.inputs],
             lambda m, outs: inner.update(zip(m.outs, outs)))
    for m in body.nodes:
        if m.op == Op.CONST:
            continue
        for o, got in zip(m.outs, _run_isolated(m, inner, options)):
            if _differs(got, inner[o], rtol, atol)[0]:
                return m
    return n
