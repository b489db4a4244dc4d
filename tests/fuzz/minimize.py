"""Shrink a failing fuzz case to a small program that still fails the same check.

    >>> small = minimize(case, "llvm[fused]")
    >>> print(small.graph)

Reductions, repeated while any helps: drop the dead nodes of scan bodies; keep one output (and
what it needs); make an intermediate value the only output, which drops everything downstream of
it; and cut: turn an intermediate value into a graph input that is fed the value the
interpreter computed for it, which drops everything upstream of it. Cutting the operands of the
last nodes first removes the most at once; then single values are cut front to back. Scan
bodies are otherwise kept whole.
"""
from __future__ import annotations

import time
from typing import Callable

import numpy as np

from nnjit.ir import Graph, IndexOutOfRange, Op, Value, evaluate, make_input
from nnjit.passes.dce import eliminate_dead_code
from tests.fuzz.generate import Case
from tests.fuzz.oracle import check_case


def rebuild(case: Case, outputs: list[Value], cuts: dict[Value, np.ndarray]) -> Case:
    """`case` computing only `outputs`, with each value of `cuts` turned into an input fed that
    array; inputs nothing uses are dropped (index hints follow the inputs they belong to)."""
    g = case.graph
    needed, live = set(outputs), set()
    for n in reversed(g.nodes):
        if any(v in needed and v not in cuts for v in n.outs):
            live.add(n)
            needed.update(n.srcs)
    env: dict[Value, Value] = {}
    inputs, args, hints = [], [], {}
    names = set(g.input_names)
    for i, v in enumerate(g.inputs):
        if v in needed:
            if i in case.hints:
                hints[len(inputs)] = case.hints[i]
            env[v] = make_input(v.node.attrs["name"], v.type, len(inputs), v.node.loc)
            inputs.append(env[v])
            args.append(case.inputs[i])
    for k, (v, a) in enumerate(cuts.items()):
        if v in needed:
            name = f"cut{k}"
            while name in names:
                name += "_"
            env[v] = make_input(name, v.type, len(inputs))
            inputs.append(env[v])
            args.append(np.array(a, copy=True))
    nodes = []
    for n in g.nodes:
        if n in live:
            new = n.replace(srcs=tuple(env[s] for s in n.srcs))
            nodes.append(new)
            for v, w in zip(n.outs, new.outs):
                env.setdefault(v, w)
    graph = Graph(g.name, tuple(inputs), tuple(nodes), tuple(env[v] for v in outputs))
    return Case(case.seed, graph, args, hints, case.regime)


def node_values(case: Case) -> dict[Value, np.ndarray]:
    """Every value the interpreter computes for `case` (up to the node that raises, if any)."""
    got: dict[Value, np.ndarray] = {}

    def on_node(n, results):
        got.update(zip(n.outs, results))

    try:
        with np.errstate(all="ignore"):
            evaluate(case.graph, [np.array(a, copy=True) for a in case.inputs], on_node)
    except IndexOutOfRange:
        pass
    return got


def kind(detail: str) -> str:
    """The kind of a failure's detail, which a smaller case must reproduce: the exception type
    of a crash, or how the results differed."""
    if "Traceback" in detail:
        return detail.strip().splitlines()[-1].split(":")[0]
    if detail.startswith("expected IndexOutOfRange") or "expected IndexOutOfRange" in detail:
        return "message" if "got IndexOutOfRange" in detail else "raised-vs-results"
    if "expected results, got IndexOutOfRange" in detail:
        return "results-vs-raised"
    return "values" if "differs at" in detail else detail[:40]


def minimize(case: Case, check: str, detail: str | None = None, budget_s: float = 120.0,
             fails: Callable[[Case], bool] | None = None) -> Case:
    """The smallest variant of `case` found within `budget_s` seconds that still fails `check`
    (a check name of `tests.fuzz.oracle`, e.g. "llvm[fused]") the same way as `detail` did."""
    if fails is None:
        want = kind(detail) if detail is not None else None

        def fails(c: Case) -> bool:
            if _kills_a_check(c.graph):
                return False
            try:
                got = check_case(c, only=check).failures
            except Exception:
                return False
            return any(f.check == check and want in (None, kind(f.detail)) for f in got)
    deadline = time.monotonic() + budget_s
    best = case
    changed = True
    while changed and time.monotonic() < deadline:
        changed = False
        for cand in _candidates(best):
            if time.monotonic() > deadline:
                break
            if _size(cand) < _size(best) and fails(cand):
                best, changed = cand, True
                break
    return best


def _kills_a_check(g: Graph) -> bool:
    """Whether a reduction made an index check dead code (in a body whose results are no
    longer used): the interpreter would still raise there, the compiled program would not,
    which is dead code elimination working, not the failure being minimized."""
    def checks(graph: Graph) -> int:
        return sum(1 for n in graph.walk() if n.op == Op.CHECK_INDEX)

    return checks(eliminate_dead_code(g)) < checks(g)


def _size(c: Case) -> tuple[int, int, int]:
    return (sum(1 for n in c.graph.walk() if n.op != Op.CONST), len(c.graph.outputs),
            sum(a.size for a in c.inputs))


def prune_bodies(g: Graph) -> Graph:
    """`g` with the dead nodes of its scan bodies removed (index checks are kept: they are
    live by construction, see generate.py)."""
    nodes, env = [], {}
    for n in g.nodes:
        m = n.replace(srcs=tuple(env.get(s, s) for s in n.srcs))
        if n.op == Op.SCAN:
            m = m.replace(attrs=dict(m.attrs, body=_prune(prune_bodies(m.attrs["body"]))))
        nodes.append(m)
        env.update(zip(n.outs, m.outs))
    return Graph(g.name, g.inputs, tuple(nodes), tuple(env.get(v, v) for v in g.outputs))


def _prune(g: Graph) -> Graph:
    needed = set(g.outputs)
    keep = []
    for n in reversed(g.nodes):
        if n.op == Op.CHECK_INDEX or any(v in needed for v in n.outs):
            keep.append(n)
            needed.update(n.srcs)
    return g.with_nodes(reversed(keep))


def _candidates(c: Case):
    g = c.graph
    if any(n.op == Op.SCAN for n in g.nodes):
        yield Case(c.seed, prune_bodies(g), c.inputs, c.hints, c.regime)
    outs = list(g.outputs)
    if len(outs) > 1:
        for v in dict.fromkeys(outs):
            yield rebuild(c, [v], {})
    for n in reversed(g.nodes):           # an intermediate value as the only output
        if n.op != Op.CONST:
            for v in n.outs:
                if v not in outs:
                    yield rebuild(c, [v], {})
    values = node_values(c)
    inputs = set(g.inputs)
    for n in reversed(g.nodes):           # keep only the last nodes: cut all their operands
        srcs = [s for s in dict.fromkeys(n.srcs) if s not in inputs]
        if srcs and all(s in values for s in srcs):
            yield rebuild(c, outs, {s: values[s] for s in srcs})
    for n in g.nodes:                     # then single values, front to back
        for v in n.outs if n.op != Op.CONST else ():
            if v in values:
                yield rebuild(c, outs, {v: values[v]})
