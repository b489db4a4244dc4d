"""The rewrite engine: patterns over the graph IR, rule tables kept as data, and a fixpoint driver.

A rule is `(Pat, fn)`: when the pattern matches a node, `fn(ctx, **captures)` returns the
replacement (a Value, a Sym, a Node, or one of these per result) or None to decline. Tables
are `PatternMatcher`s, indexed by op and combined with `+`; each rule remembers the file:line
where its pattern was written. `graph_rewrite` applies a matcher until nothing fires:

    >>> X = Pat.var("x")
    >>> pm = PatternMatcher([(Pat(Op.NEG, (Pat(Op.NEG, (X,)),)), lambda ctx, x: x)])
    >>> print(graph_rewrite(parse("func @f(%x: f32[3]) -> (f32[3]) {\\n"
    ...     "  %0 = neg(%x) : f32[3]\\n  %1 = neg(%0) : f32[3]\\n  return %1\\n}"), pm))
    func @f(%x: f32[3]) -> (f32[3]) {
      %0 = neg(%x) : f32[3]
      return %x
    }

`NNJIT_DEBUG=rewrite` (or `trace=True`) logs every firing as
`rule at simplify.py:42 rewrote %3 add -> %x : f32[3] (in @f)`.
"""
from __future__ import annotations

import collections
import os
import sys
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np

from ..ir import CompileError, DType, Graph, Node, Op, ShapeError, Sym, Value, opdef

_THIS_FILE = os.path.abspath(__file__)

Captures = dict[str, Value]
RuleFn = Callable[..., Any]


def _caller_site() -> tuple[str, int]:
    """file and line of the innermost frame outside this module (where a pattern is written)."""
    f = sys._getframe(1)
    while f is not None and os.path.abspath(f.f_code.co_filename) == _THIS_FILE:
        f = f.f_back
    if f is None:
        return ("<unknown>", 0)
    return (f.f_code.co_filename, f.f_lineno)


def _check(pred, value) -> bool:
    """`pred` is None (anything), a callable, a collection of allowed values, or one value."""
    if pred is None:
        return True
    if callable(pred) and not isinstance(pred, (DType, Op)):
        return bool(pred(value))
    if isinstance(pred, (set, frozenset, list)):
        return value in pred
    return value == pred


class Pat:
    """A pattern that matches one SSA value and the node that defines it.

    op        an Op, a collection of Ops, or None (any op, graph inputs included)
    srcs      sub-patterns for the operands (the arity must match), or None (any operands)
    name      capture name: the matched Value is passed to the rule fn under this name
    dtype     a DType, a collection of DTypes, or a predicate on the DType
    shape     a shape tuple or a predicate on it
    attrs     {attr name: value or predicate}
    where     a predicate on the matched Value (anything the fields above cannot say)
    commutative  also try the two operands swapped (two-operand patterns only)

    The same name captured twice must bind the same value (`sub(x, x)`). For multi-result nodes
    the root pattern's dtype/shape refer to result 0.
    """

    __slots__ = ("ops", "srcs", "name", "dtype", "shape", "attrs", "where", "commutative",
                 "site")

    def __init__(self, op: Op | Iterable[Op] | None = None, srcs: Sequence["Pat"] | None = None,
                 name: str | None = None, *, dtype=None, shape=None,
                 attrs: Mapping[str, Any] | None = None,
                 where: Callable[[Value], bool] | None = None, commutative: bool = False):
        self.ops = None if op is None else frozenset([op] if isinstance(op, Op) else op)
        self.srcs = None if srcs is None else tuple(srcs)
        if commutative and (self.srcs is None or len(self.srcs) != 2):
            raise ValueError("a commutative pattern needs exactly two operand patterns")
        self.name, self.dtype, self.shape = name, dtype, shape
        self.attrs = dict(attrs or {})
        self.where, self.commutative = where, commutative
        self.site = _caller_site()

    # -- helpers ---------------------------------------------------------------------------------
    @staticmethod
    def var(name: str, **preds) -> "Pat":
        """Any value, captured as `name` (with optional dtype/shape/where predicates)."""
        return Pat(None, None, name, **preds)

    @staticmethod
    def const(value=None, name: str | None = None, **preds) -> "Pat":
        """A `const` node; with `value`, every element must equal it. Zeros compare with their
        sign for float arrays (`const(0.0)` does not match -0.0), and `const(nan)` matches NaNs."""
        if value is None:
            return Pat(Op.CONST, (), name, **preds)
        user = preds.pop("where", None)

        def holds(v: Value) -> bool:
            return const_equals(v, value) and (user is None or user(v))
        return Pat(Op.CONST, (), name, where=holds, **preds)

    # -- matching --------------------------------------------------------------------------------
    def match(self, v: Value, caps: Captures) -> bool:
        """Match `v`, adding captures to `caps` (which is left partly filled on failure: callers
        pass a copy)."""
        n = v.node
        if self.ops is not None and n.op not in self.ops:
            return False
        t = v.type
        if not (_check(self.dtype, t.dtype) and _check(self.shape, t.shape)):
            return False
        for k, pred in self.attrs.items():
            if k not in n.attrs or not _check(pred, n.attrs[k]):
                return False
        if self.name is not None:
            if self.name in caps and caps[self.name] != v:
                return False
            caps[self.name] = v
        if self.srcs is not None:
            if len(self.srcs) != len(n.srcs):
                return False
            if not self._match_srcs(self.srcs, n.srcs, caps):
                if not self.commutative:
                    return False
                if not self._match_srcs(self.srcs[::-1], n.srcs, caps):
                    return False
        return self.where is None or bool(self.where(v))

    @staticmethod
    def _match_srcs(pats: tuple["Pat", ...], srcs: tuple[Value, ...], caps: Captures) -> bool:
        trial = dict(caps)
        if all(p.match(s, trial) for p, s in zip(pats, srcs)):
            caps.update(trial)
            return True
        return False

    def __repr__(self) -> str:
        ops = "any" if self.ops is None else "|".join(sorted(o.value for o in self.ops))
        return f"Pat({ops}{', ' + self.name if self.name else ''})"


def const_value(v: Value) -> np.ndarray | None:
    """The array of a `const` value, or None for anything else."""
    return v.node.attrs["value"] if v.node.op == Op.CONST else None


def const_equals(v: Value, value) -> bool:
    """Every element of the const `v` equals `value` (float zeros must have its sign)."""
    arr = const_value(v)
    if arr is None:
        return False
    if isinstance(value, float) and value != value:
        return arr.dtype.kind == "f" and bool(np.isnan(arr).all())
    with np.errstate(all="ignore"):
        if not bool((arr == value).all()):
            return False
    if arr.dtype.kind == "f" and value == 0:
        return bool((np.signbit(arr) == np.signbit(np.float64(value))).all())
    return True


@dataclass(frozen=True)
class Rule:
    pat: Pat
    fn: RuleFn
    file: str
    line: int

    @property
    def site(self) -> str:
        return f"{os.path.basename(self.file)}:{self.line}"

    def __str__(self) -> str:
        return f"rule at {self.site}"


class PatternMatcher:
    """An ordered rule table, indexed by the root pattern's op. `pm1 + pm2` tries pm1's rules
    first. The first rule (in declaration order) whose pattern matches and whose fn returns
    something other than None wins."""

    def __init__(self, rules: Iterable[tuple[Pat, RuleFn] | Rule]):
        self.rules: list[Rule] = []
        for r in rules:
            if not isinstance(r, Rule):
                pat, fn = r
                r = Rule(pat, fn, *pat.site)
            self.rules.append(r)
        self._index: dict[Op, list[Rule]] = {}
        for op in Op:
            self._index[op] = [r for r in self.rules if r.pat.ops is None or op in r.pat.ops]

    def __add__(self, other: "PatternMatcher") -> "PatternMatcher":
        return PatternMatcher(self.rules + other.rules)

    def __len__(self) -> int:
        return len(self.rules)

    def rules_for(self, op: Op) -> list[Rule]:
        return self._index[op]

    def __repr__(self) -> str:
        return f"<PatternMatcher: {len(self.rules)} rules>"


# -- the fixpoint engine ---------------------------------------------------------------------------

class RewriteContext:
    """What a rule fn gets besides its captures: the matched node (operands already rewritten)
    and emitters whose nodes carry the matched node's source location."""

    def __init__(self, engine: "_Engine", node: Node):
        self._engine = engine
        self.node = node

    @property
    def out(self) -> Value:
        """The matched node's (first) result."""
        return Value(self.node, 0)

    @property
    def type(self):
        return self.node.types[0]

    def emit(self, op: Op, srcs: Sequence[Value | Sym], attrs: Mapping[str, Any] | None = None
             ) -> Value | tuple[Value, ...]:
        """A new node `op(srcs) {attrs}` at the matched node's loc; it is itself rewritten before
        this returns, so the result may be an existing value (e.g. a no-op reshape)."""
        d = opdef(op)
        vals = tuple(s.value if isinstance(s, Sym) else s for s in srcs)
        try:
            attrs = d.normalize_attrs(attrs or {})
            out = d.shape([v.type for v in vals], attrs)
        except ShapeError as e:
            raise CompileError(f"{self._engine.current_rule}: emitted an ill-typed "
                               f"{op.value}: {e}") from None
        types = out if isinstance(out, tuple) else (out,)
        outs = self._engine.settle(Node(op, vals, attrs, types, self.node.loc))
        return outs if len(outs) != 1 else outs[0]

    def const(self, value: Any, dtype: DType | None = None) -> Value:
        """A `const` node holding `value` (cast to `dtype`, else to the matched node's dtype)."""
        dt = (dtype or self.node.types[0].dtype).np
        return self.emit(Op.CONST, (), {"value": np.asarray(value, dtype=dt)})

    def rebuild(self, srcs: Sequence[Value] | None = None, **attrs) -> Value | tuple[Value, ...]:
        """The matched node with other operands and/or attributes."""
        n = self.node
        return self.emit(n.op, n.srcs if srcs is None else srcs, {**n.attrs, **attrs})


def debug_enabled(what: str) -> bool:
    """NNJIT_DEBUG names `what` among its comma-separated words (e.g. NNJIT_DEBUG=rewrite)."""
    return what in {w.strip() for w in os.environ.get("NNJIT_DEBUG", "").split(",")}


class _Engine:
    def __init__(self, matcher: PatternMatcher, trace: bool, max_rewrites: int, recurse: bool,
                 graph_name: str):
        self.pm, self.trace, self.max_rewrites = matcher, trace, max_rewrites
        self.recurse, self.graph_name = recurse, graph_name
        self.nodes: list[Node] = []
        self.fired: list[Rule] = []
        self.current_rule: Rule | str = "no rule"
        self._here: list[Rule] = []
        self._at = 0

    def sweep(self, g: Graph, max_sweeps: int) -> Graph:
        """One pass in topological order; each node is rewritten to a local fixpoint."""
        env: dict[Value, Value] = {v: v for v in g.inputs}
        self.nodes = []
        changed = False
        for k, n in enumerate(g.nodes):
            srcs = tuple(env[s] for s in n.srcs)
            attrs = self._rewrite_bodies(n, max_sweeps)
            new = n if srcs == n.srcs and attrs is n.attrs else n.replace(srcs=srcs, attrs=attrs)
            self._at, self._here = k, []
            outs = self.settle(new)
            changed |= new is not n or outs != n.outs
            env.update(zip(n.outs, outs))
        if not changed:
            return g
        return Graph(g.name, g.inputs, tuple(self.nodes), tuple(env[v] for v in g.outputs),
                     g.meta)

    def _rewrite_bodies(self, n: Node, max_sweeps: int):
        if not self.recurse or not any(isinstance(v, Graph) for v in n.attrs.values()):
            return n.attrs
        attrs, changed = dict(n.attrs), False
        for k, v in n.attrs.items():
            if isinstance(v, Graph):
                new = graph_rewrite(v, self.pm, trace=self.trace, max_sweeps=max_sweeps,
                                    max_rewrites_per_node=self.max_rewrites)
                changed |= new is not v
                attrs[k] = new
        return attrs if changed else n.attrs

    def settle(self, node: Node) -> tuple[Value, ...]:
        """Apply the first rule that fires to `node`, recursively; append what remains."""
        for rule in self.pm.rules_for(node.op):
            caps: Captures = {}
            if not rule.pat.match(Value(node, 0), caps):
                continue
            marks = len(self.nodes), len(self._here), len(self.fired)
            self._count(rule, node)
            prev, self.current_rule = self.current_rule, rule
            try:
                result = rule.fn(RewriteContext(self, node), **caps)
            finally:
                self.current_rule = prev
            outs = None if result is None else self._as_values(rule, node, result)
            if outs is None or outs == node.outs:   # declined: forget what it emitted
                del self.nodes[marks[0]:], self._here[marks[1]:], self.fired[marks[2]:]
                continue
            self.fired.append(rule)
            if self.trace:
                self._log(rule, node, outs)
            return outs
        self.nodes.append(node)
        return node.outs

    def _count(self, rule: Rule, node: Node) -> None:
        self._here.append(rule)
        if len(self._here) > self.max_rewrites:
            last = collections.Counter(str(r) for r in self._here[-20:])
            names = ", ".join(f"{r} ({c}x)" for r, c in last.most_common())
            raise CompileError(f"graph_rewrite: more than {self.max_rewrites} rewrites at "
                               f"@{self.graph_name} %{self._at} {node.op.value}"
                               f"{' at ' + str(node.loc) if node.loc else ''}: a rule loops; "
                               f"recent firings: {names}")

    @staticmethod
    def _as_values(rule: Rule, node: Node, result) -> tuple[Value, ...]:
        items = result if isinstance(result, (tuple, list)) else (result,)
        outs: list[Value] = []
        for r in items:
            if isinstance(r, Sym):
                r = r.value
            if isinstance(r, Node):
                outs.extend(r.outs)
            elif isinstance(r, Value):
                outs.append(r)
            else:
                raise CompileError(f"{rule} returned {type(r).__name__}, not a Value")
        got = tuple(v.type for v in outs)
        if got != node.types:
            raise CompileError(f"{rule} replaced {node.op.value} : "
                               f"{', '.join(map(str, node.types))} with values of type "
                               f"{', '.join(map(str, got)) or 'nothing'}")
        return tuple(outs)

    def _log(self, rule: Rule, node: Node, outs: tuple[Value, ...]) -> None:
        def show(v: Value) -> str:
            if v.node.op == Op.INPUT:
                return f"%{v.node.attrs['name']} : {v.type}"
            return f"{v.node.op.value} : {v.type}"
        print(f"{rule} rewrote %{self._at} {node.op.value} -> {', '.join(map(show, outs))} "
              f"(in @{self.graph_name})", file=sys.stderr)


def graph_rewrite(graph: Graph, matcher: PatternMatcher, *, trace: bool | None = None,
                  max_sweeps: int = 16, max_rewrites_per_node: int = 500,
                  recurse: bool = True) -> Graph:
    """Rewrite `graph` with `matcher` until no rule fires; returns a new graph (or `graph` itself
    when nothing fired). Nested graphs (scan and fusion bodies) are rewritten first.

    Nodes are visited in topological order, so a rule sees its operands already rewritten;
    nodes a rule emits are rewritten in turn. Replaced nodes leave their operands in place
    (run `eliminate_dead_code` to drop what became unused). A node rewritten more than
    `max_rewrites_per_node` times, or a graph still changing after `max_sweeps` sweeps, is a
    CompileError naming the rules that kept firing.
    """
    trace = debug_enabled("rewrite") if trace is None else trace
    g = graph
    for _ in range(max_sweeps):
        eng = _Engine(matcher, trace, max_rewrites_per_node, recurse, g.name)
        new = eng.sweep(g, max_sweeps)
        if not eng.fired:        # only nested bodies (already at their fixpoint) may have changed
            return new
        g = new
    names = ", ".join(sorted({str(r) for r in eng.fired}))
    raise CompileError(f"graph_rewrite: @{graph.name} still changing after {max_sweeps} sweeps; "
                       f"rules firing in the last sweep: {names}")
