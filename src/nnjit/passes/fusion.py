"""Operator fusion: group nodes into kernels and wrap each multi-node group in a `fusion` node.

Groups grow from consumers towards producers (last node first): a kernel absorbs a producer
when every rule in `fusion_rules.RULES` agrees (no opaque op, one contraction/window/reduction
domain per kernel, no cycle, no expensive recomputation, a kernel template that lowers it). A
producer whose result is also needed elsewhere becomes an extra result of the kernel, so nothing
is computed twice. Every decision, fused or refused, is recorded with its rule, its reason and
the bytes of memory traffic it saves; `explain(graph)` prints them.

Guarantees: the result verifies; it computes exactly what the input did; each `fusion` node's
body is a group one kernel template lowers (its `kind` attribute names the template);
single-element constants are copied into every body that reads them.
"""
from __future__ import annotations

import dataclasses
import heapq
from dataclasses import dataclass, field

from ..ir import Graph, Node, Op, Value, make_input
from .dce import eliminate_dead_code
from .fusion_rules import (
    EXPENSIVE,
    RULES,
    classify,
    fused_rule_name,
    is_free_const,
    recompute_factor,
)


@dataclass(frozen=True)
class FusionDecision:
    rule: str
    producer: str          # the node considered, as "op at file:line"
    kernel: int            # the group it was considered for
    fused: bool
    reason: str
    bytes_saved: int

    def __str__(self) -> str:
        verdict = "fused" if self.fused else "not fused"
        saved = f", saves {self.bytes_saved} B" if self.fused else ""
        return f"kernel {self.kernel}: {self.producer}: {verdict} [{self.rule}] {self.reason}{saved}"


@dataclass
class _Group:
    id: int
    nodes: set[Node] = field(default_factory=set)


class _Context:
    def __init__(self, g: Graph):
        self.graph = g
        self.pos = {n: i for i, n in enumerate(g.nodes)}
        self.users = g.users()
        self.outputs = set(g.outputs)
        self.group_of: dict[Node, _Group] = {}   # kernels formed so far

    def roots(self, nodes: set[Node]) -> list[Value]:
        """Values of `nodes` needed outside them (by other nodes or as graph outputs)."""
        out = []
        for n in sorted(nodes, key=self.pos.__getitem__):
            for v in n.outs:
                if v in self.outputs or any(u not in nodes and v in u.srcs
                                            for u in self.users[n]):
                    out.append(v)
        return out

    def path_outside(self, p: Node, g: _Group) -> Node | None:
        """A node outside `g` + p on a path that leaves them and comes back (fusing p would
        make a cycle)."""
        return self.path_outside_set(g.nodes | {p})

    def path_outside_set(self, union: set[Node]) -> Node | None:
        """A node on a path from `union` back into it through other kernels. Other kernels
        count as one unit each: a path into any of their nodes continues from all of them,
        since a kernel runs only once all its inputs are ready."""
        stack = [u for p in union for u in self.users[p] if u not in union]
        seen: set[Node] = set()
        while stack:
            u = stack.pop()
            if u in seen:
                continue
            grp = self.group_of.get(u)
            unit = grp.nodes - union if grp is not None else {u}
            seen |= unit
            for x in unit:
                for w in self.users[x]:
                    if w in union:
                        return u
                    if w not in seen:
                        stack.append(w)
        return None


def fuse(g: Graph) -> Graph:
    """The graph with fusible groups wrapped in `fusion` nodes (decisions in meta)."""
    g = _fuse_bodies(fold_output_transposes(g))
    ctx = _Context(g)
    group_of = ctx.group_of
    groups: list[_Group] = []
    decisions: list[FusionDecision] = []
    for n in reversed(g.nodes):
        if n in group_of or is_free_const(n):
            continue
        grp = _Group(len(groups), {n})
        groups.append(grp)
        group_of[n] = grp
        if classify({n}, ctx.roots({n}))[0] is None:
            continue  # opaque (scan, scatter, arrays): a kernel of its own
        frontier = [(-ctx.pos.get(s.node, -1), id(s.node), s.node) for s in n.srcs]
        heapq.heapify(frontier)
        while frontier:
            _, _, p = heapq.heappop(frontier)
            if p in group_of or p.op == Op.INPUT or is_free_const(p) or p not in ctx.pos:
                continue
            d = _decide(p, grp, ctx)
            decisions.append(d)
            if d.fused:
                grp.nodes.add(p)
                group_of[p] = grp
                for s in p.srcs:
                    heapq.heappush(frontier, (-ctx.pos.get(s.node, -1), id(s.node), s.node))
    merged_into: dict[int, int] = {}
    groups = _merge_groups(groups, group_of, ctx, decisions, merged_into)
    out, position = _rebuild(g, ctx, groups, group_of)

    def final(gid: int) -> int:
        while gid in merged_into:
            gid = merged_into[gid]
        return position.get(gid, -1)

    # Name kernels by their position in the result, as explain_fusion() lists them.
    decisions = [dataclasses.replace(d, kernel=final(d.kernel)) for d in decisions]
    meta = dict(g.meta)
    meta["fusion_decisions"] = tuple(decisions)
    return Graph(out.name, out.inputs, out.nodes, out.outputs, meta)


def _fuse_bodies(g: Graph) -> Graph:
    """Fuse inside scan bodies too: each step of an RNN runs the body's kernels."""
    if not any(n.op == Op.SCAN for n in g.nodes):
        return g
    env: dict[Value, Value] = {}
    nodes = []
    for n in g.nodes:
        srcs = tuple(env.get(s, s) for s in n.srcs)
        new = n.replace(srcs=srcs, attrs={**n.attrs, "body": fuse(n.attrs["body"])}) \
            if n.op == Op.SCAN else n.replace(srcs=srcs)
        nodes.append(new)
        env.update(zip(n.outs, new.outs))
    return Graph(g.name, g.inputs, tuple(nodes), tuple(env.get(v, v) for v in g.outputs), g.meta)


def _is_swap(n: Node) -> bool:
    perm = n.attrs["perm"]
    k = len(perm)
    return k >= 2 and tuple(perm) == tuple(range(k - 2)) + (k - 1, k - 2)


def fold_output_transposes(g: Graph) -> Graph:
    """Rewrite `transpose(matmul(a, b))` (last two axes swapped) as `matmul(bT, aT)`.

    Autodiff of a torch-layout linear layer produces exactly this for the weight gradient; a
    transposed GEMM output cannot take an elementwise epilogue (the SGD update), while
    transposed operands are free strides. The products and their summation order are the
    same, so results do not change."""
    users = g.users()
    outputs = set(g.outputs)
    fold = {n.srcs[0].node: n for n in g.nodes
            if n.op == Op.TRANSPOSE and _is_swap(n) and n.srcs[0].node.op == Op.MATMUL
            and users[n.srcs[0].node] == [n] and n.srcs[0] not in outputs}
    if not fold:
        return g
    replaced = {t: m for m, t in fold.items()}
    env: dict[Value, Value] = {}
    nodes: list[Node] = []

    def swapped(v: Value, loc) -> Value:
        if v.node.op == Op.TRANSPOSE and _is_swap(v.node):
            return v.node.srcs[0]
        k = v.type.ndim
        perm = tuple(range(k - 2)) + (k - 1, k - 2)
        t = Node(Op.TRANSPOSE, (v,), {"perm": perm},
                 (v.type.with_shape(v.shape[:-2] + (v.shape[-1], v.shape[-2])),), loc)
        nodes.append(t)
        return t.out

    for n in g.nodes:
        if n in fold:
            continue
        if n in replaced:
            a, b = (env.get(s, s) for s in replaced[n].srcs)
            mm = Node(Op.MATMUL, (swapped(b, n.loc), swapped(a, n.loc)), {}, n.types,
                      replaced[n].loc)
            nodes.append(mm)
            env[n.out] = mm.out
            continue
        new = n.replace(srcs=tuple(env.get(s, s) for s in n.srcs))
        nodes.append(new)
        env.update(zip(n.outs, new.outs))
    out = Graph(g.name, g.inputs, tuple(nodes), tuple(env.get(v, v) for v in g.outputs), g.meta)
    return eliminate_dead_code(out)   # transposes the rewrite made redundant


def _merge_groups(groups: list[_Group], group_of: dict[Node, _Group], ctx: _Context,
                  decisions: list[FusionDecision], merged_into: dict[int, int]
                  ) -> list[_Group]:
    """Merge a kernel into the kernel that consumes its results when one template fits both
    (growing consumer-first can split fan-out: `y = x + b; exp(y) * y, y * 2`)."""
    alive = {grp.id: grp for grp in groups}
    changed = True
    while changed:
        changed = False
        for b in sorted(alive.values(), key=lambda grp: max(ctx.pos[n] for n in grp.nodes)):
            producers = {group_of[s.node].id for n in b.nodes for s in n.srcs
                         if s.node in group_of and group_of[s.node].id != b.id}
            for a_id in sorted(producers):
                a = alive[a_id]
                union = a.nodes | b.nodes
                if classify(union, ctx.roots(union))[0] is None:
                    continue
                if ctx.path_outside_set(union) is not None:
                    continue
                if any(n.op in EXPENSIVE and recompute_factor(n, union) > 1 for n in a.nodes):
                    continue
                saved = sum(v.type.nbytes for n in a.nodes for v in n.outs
                            if v not in ctx.roots(union))
                decisions.append(FusionDecision("merge-kernels", f"kernel of {len(a.nodes)} "
                                                f"node(s) ending in {_describe(_last(a, ctx))}",
                                                b.id, True, "one template fits both", 2 * saved))
                b.nodes |= a.nodes
                for n in a.nodes:
                    group_of[n] = b
                del alive[a_id]
                merged_into[a_id] = b.id
                changed = True
                break
            if changed:
                break
    return list(alive.values())


def _last(grp: _Group, ctx: _Context) -> Node:
    return max(grp.nodes, key=ctx.pos.__getitem__)


def _describe(n: Node) -> str:
    return f"{n.op.value} {n.type}" + (f" at {n.loc}" if n.loc else "") if len(n.types) == 1 \
        else n.op.value


def _decide(p: Node, grp: _Group, ctx: _Context) -> FusionDecision:
    for rule in RULES:
        reason = rule.check(p, grp, ctx)
        if reason is not None:
            return FusionDecision(rule.name, _describe(p), grp.id, False, reason, 0)
    template, _ = classify(grp.nodes | {p}, ctx.roots(grp.nodes | {p}))
    internal = all(u in grp.nodes for u in ctx.users[p]) and not (set(p.outs) & ctx.outputs)
    nbytes = sum(v.type.nbytes for v in p.outs)
    saved = 2 * nbytes if internal else nbytes
    why = "no longer stored" if internal else "read in place (still stored for other users)"
    return FusionDecision(fused_rule_name(p, template, grp.nodes), _describe(p), grp.id, True,
                          f"its result is {why}", saved)


def _rebuild(g: Graph, ctx: _Context, groups: list[_Group],
             group_of: dict[Node, _Group]) -> tuple[Graph, dict[int, int]]:
    """Emit groups in a topological order of the group graph, multi-node ones as fusions;
    also returns each group's node index in the result."""
    order = _group_order(g, ctx, groups, group_of)
    env: dict[Value, Value] = {v: v for v in g.inputs}
    nodes: list[Node] = []

    def value(v: Value) -> Value:
        if v not in env and is_free_const(v.node):
            c = v.node
            nodes.append(c)
            env.update(zip(c.outs, c.outs))
        return env[v]

    position: dict[int, int] = {}
    for grp in order:
        members = sorted(grp.nodes, key=ctx.pos.__getitem__)
        position[grp.id] = len(nodes)
        if len(members) == 1:
            n = members[0]
            new = n.replace(srcs=tuple(value(s) for s in n.srcs))
            nodes.append(new)
            env.update(zip(n.outs, new.outs))
            continue
        roots = ctx.roots(grp.nodes)
        for r in [r for r in roots if _is_view_of_outside(r, grp.nodes)]:
            # Stored as a result, a reshape of an operand would be a copy; outside the kernel
            # it aliases the operand's memory.
            new = r.node.replace(srcs=(value(r.node.srcs[0]),))
            nodes.append(new)
            env[r] = new.out
            roots.remove(r)
            if not any(r in m.srcs for m in members):
                members.remove(r.node)
        position[grp.id] = len(nodes)
        if not roots:
            continue  # dead code: nothing outside reads the group
        template, _ = classify(set(members), roots)
        body, ext = _body(g.name, grp, members, roots)
        anchor = next((m for m in members if m.op not in (Op.RESHAPE,)), members[-1])
        loc = next((m.loc for m in reversed(members) if m.loc), anchor.loc)
        fused = Node(Op.FUSION, tuple(value(v) for v in ext), {"body": body, "kind": template},
                     tuple(r.type for r in roots), loc)
        nodes.append(fused)
        env.update(zip(roots, fused.outs))
    outputs = tuple(value(v) for v in g.outputs)
    return Graph(g.name, g.inputs, tuple(nodes), outputs, g.meta), position


def _is_view_of_outside(r: Value, members: set[Node]) -> bool:
    return r.node.op == Op.RESHAPE and r.node.srcs[0].node not in members


def _body(name: str, grp: _Group, members: list[Node], roots: list[Value]):
    """The fusion body graph: external operands become inputs, free constants are copied in."""
    env: dict[Value, Value] = {}
    ext: list[Value] = []
    inputs: list[Value] = []
    nodes: list[Node] = []
    for n in members:
        srcs = []
        for s in n.srcs:
            if s.node in grp.nodes:
                srcs.append(env[s])
            elif s in env:
                srcs.append(env[s])
            elif is_free_const(s.node):
                c = s.node.replace()   # each body owns its copy of the constant
                nodes.append(c)
                env[s] = c.out
                srcs.append(c.out)
            else:
                v = make_input(f"p{len(inputs)}", s.type, len(inputs), s.node.loc)
                env[s] = v
                inputs.append(v)
                ext.append(s)
                srcs.append(v)
        new = n.replace(srcs=tuple(srcs))
        nodes.append(new)
        env.update(zip(n.outs, new.outs))
    body = Graph(f"{name}_fused{grp.id}", tuple(inputs), tuple(nodes),
                 tuple(env[r] for r in roots))
    return body, ext


def _group_order(g: Graph, ctx: _Context, groups: list[_Group],
                 group_of: dict[Node, _Group]) -> list[_Group]:
    deps: dict[int, set[int]] = {grp.id: set() for grp in groups}
    for grp in groups:
        for n in grp.nodes:
            for s in n.srcs:
                other = group_of.get(s.node)
                if other is not None and other.id != grp.id:
                    deps[grp.id].add(other.id)
    first = {grp.id: min(ctx.pos[n] for n in grp.nodes) for grp in groups}
    by_id = {grp.id: grp for grp in groups}
    indeg = {k: len(v) for k, v in deps.items()}
    users: dict[int, list[int]] = {k: [] for k in deps}
    for k, v in deps.items():
        for d in v:
            users[d].append(k)
    ready = [(first[k], k) for k, d in indeg.items() if d == 0]
    heapq.heapify(ready)
    out = []
    while ready:
        _, k = heapq.heappop(ready)
        out.append(by_id[k])
        for u in users[k]:
            indeg[u] -= 1
            if indeg[u] == 0:
                heapq.heappush(ready, (first[u], u))
    assert len(out) == len(groups), "fusion produced a cyclic group graph"
    return out


def explain(g: Graph) -> str:
    """Every fusion decision recorded on `g`, one per line."""
    return "\n".join(map(str, g.meta.get("fusion_decisions", ()))) or "(no fusion decisions)"
