"""`bucket_all_reduces`: the per-tensor all-reduces of a step (pmean of every gradient) merged
into a few large flat ones, as Horovod's tensor fusion and PyTorch DDP's gradient buckets do:

    %g1 = all_reduce(%a) ...        %f1 = reshape(%a); %f2 = reshape(%b)
    %g2 = all_reduce(%b) ...   ->   %c = concat(%f1, %f2); %r = all_reduce(%c)
                                    %g1 = reshape(slice(%r)); %g2 = reshape(slice(%r))

All-reduces merge when they have the same reduction, group and dtype and none uses another's
result. Members are ordered by when their operand is ready (the backward pass produces the last
layer's gradients first) and cut into buckets of at most NNJIT_BUCKET_BYTES (default 4 MiB; a
tensor larger than that is a bucket of its own); each bucket is placed right after its last
operand is computed, so its transfer can start while the rest of the backward pass runs.

Guarantees afterwards: no two mergeable all-reduces over more than one process are left
unmerged within a bucket's size; every result is the one the separate all-reduces gave (sum,
mean and max are elementwise, so a concatenation reduces to the concatenation of reductions).
"""
from __future__ import annotations

import os

from ..ir import CompileError, Graph, Node, Op, Value
from ..ir.opdef import opdef

DEFAULT_BUCKET_BYTES = 4 << 20


def bucket_bytes() -> int:
    raw = os.environ.get("NNJIT_BUCKET_BYTES", "").strip()
    if not raw:
        return DEFAULT_BUCKET_BYTES
    if not raw.isdigit() or int(raw) < 1:
        raise CompileError(f"NNJIT_BUCKET_BYTES must be a positive number of bytes, got {raw!r}")
    return int(raw)


def _key(n: Node):
    a = n.attrs
    if n.op != Op.ALL_REDUCE or a["group_size"] == 1:
        return None
    return (a["reduce"], a["axis_name"], a["group_size"], n.type.dtype)


def _node(op: Op, srcs, attrs: dict, loc) -> Node:
    d = opdef(op)
    attrs = d.normalize_attrs(attrs)
    t = d.shape([s.type for s in srcs], attrs)
    return Node(op, tuple(srcs), attrs, t if isinstance(t, tuple) else (t,), loc)


def bucket_all_reduces(graph: Graph, limit: int | None = None) -> Graph:
    """`graph` with its mergeable all-reduces bucketed (see the module docstring)."""
    limit = bucket_bytes() if limit is None else limit
    if sum(1 for n in graph.nodes if _key(n) is not None) < 2:
        return graph
    env: dict[Value, Value] = {v: v for v in graph.inputs}
    out: list[Node] = []
    pos: dict[Value, int] = {}                     # where each new value is defined in `out`
    open_: dict[tuple, list[Node]] = {}            # key -> members (original nodes)
    members: dict[Value, tuple] = {}               # original member result -> its bucket key

    def place(nodes: list[Node], at: int) -> None:
        out[at:at] = nodes
        for v in list(pos):
            if pos[v] >= at:
                pos[v] += len(nodes)
        for k, n in enumerate(nodes):
            for o in n.outs:
                pos[o] = at + k

    def flush(key) -> None:
        group = sorted(open_.pop(key), key=lambda m: pos.get(env[m.srcs[0]], -1))
        for chunk in _chunks(group, limit):
            nodes, results = _merged(chunk, [env[m.srcs[0]] for m in chunk])
            at = max(pos.get(env[m.srcs[0]], -1) for m in chunk) + 1
            place(nodes, at)
            for m, r in zip(chunk, results):
                env[m.out] = r
                members.pop(m.out, None)

    for n in graph.nodes:
        for s in n.srcs:                       # a use of a pending result closes its bucket
            if s in members and members[s] in open_:
                flush(members[s])
        key = _key(n)
        if key is not None:
            open_.setdefault(key, []).append(n)
            members[n.out] = key
            continue
        new = n.replace(srcs=tuple(env[s] for s in n.srcs))
        place([new], len(out))
        env.update(zip(n.outs, new.outs))
    for key in list(open_):
        flush(key)
    return graph.with_nodes(out, [env[v] for v in graph.outputs])


def _chunks(group: list[Node], limit: int) -> list[list[Node]]:
    chunks, cur, size = [], [], 0
    for m in group:
        nbytes = m.type.size * m.type.dtype.itemsize
        if cur and size + nbytes > limit:
            chunks.append(cur)
            cur, size = [], 0
        cur.append(m)
        size += nbytes
    return chunks + [cur] if cur else chunks


def _merged(chunk: list[Node], srcs: list[Value]) -> tuple[list[Node], list[Value]]:
    """The nodes of one bucket (flatten, concat, all_reduce, slice back) and each member's
    new result; a bucket of one keeps its all-reduce as it was."""
    first = chunk[0]
    if len(chunk) == 1:
        new = first.replace(srcs=(srcs[0],))
        return [new], [new.out]
    nodes: list[Node] = []
    flat = []
    for s in srcs:
        if s.type.ndim == 1:
            flat.append(s)
            continue
        r = _node(Op.RESHAPE, (s,), {"shape": (s.type.size,)}, first.loc)
        nodes.append(r)
        flat.append(r.out)
    cat = _node(Op.CONCAT, flat, {"axis": 0}, first.loc)
    red = _node(Op.ALL_REDUCE, (cat.out,), dict(first.attrs), first.loc)
    nodes += [cat, red]
    results, at = [], 0
    for m in chunk:
        n = m.type.size
        piece = _node(Op.SLICE, (red.out,), {"starts": (at,), "stops": (at + n,), "steps": (1,)},
                      m.loc)
        back = _node(Op.RESHAPE, (piece.out,), {"shape": m.type.shape}, m.loc)
        nodes += [piece, back]
        results.append(back.out)
        at += n
    return nodes, results
