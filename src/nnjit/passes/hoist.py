"""Loop-invariant hoisting for scans: a matmul of a sequence slice with a loop invariant (a value
computed from the scan's consts alone) becomes one matmul over the whole sequence before the
loop, read by the body as a new sequence slice.

    %r = scan(%h0, %xs, %w) { body(%h, %x, %w): %z = matmul(%x, %w) ... }
 -> %xw = reshape(matmul(reshape(%xs, [T*B, I]), %w), [T, B, N])
    %r = scan(%h0, %xs, %xw, %w) { body(%h, %x, %xw_t, %w): ... %xw_t used for %z ... }

This is the input projection of an RNN written as a scan (x_t @ W_ih inside the body): T small
GEMMs become one (T*B, I) x (I, N) GEMM. The invariant operand's own computation (a transpose of
a const, say) is copied out of the body. Bodies are processed inner first, so a scan nested in a
body is hoisted inside it, and then its hoisted matmul may move out of the enclosing scan too.

Guarantees afterwards: no scan body (at any depth) contains a matmul of one of its own sequence
slices with a loop-invariant value (other than one whose batch dims would not broadcast over
the steps); results are unchanged (each element is the same dot product); when anything was
hoisted, the body inputs and invariant nodes left unread are gone (dead-code elimination runs
on the result), so the pass can follow the cleanup stages.
"""
from __future__ import annotations

import math

from ..ir import Graph, Node, Op, Value, make_input, opdef
from .dce import eliminate_dead_code


def hoist_loop_invariants(graph: Graph) -> Graph:
    """`graph` with every scan's invariant matmuls of sequence slices hoisted (see above)."""
    hoisted = _hoist(graph)
    return graph if hoisted is graph else eliminate_dead_code(hoisted)


def _hoist(graph: Graph) -> Graph:
    if not any(n.op == Op.SCAN for n in graph.nodes):
        return graph
    env: dict[Value, Value] = {v: v for v in graph.inputs}
    nodes: list[Node] = []
    changed = False
    for n in graph.nodes:
        srcs = tuple(env[s] for s in n.srcs)
        new = n if srcs == n.srcs else n.replace(srcs=srcs)
        if new.op == Op.SCAN:
            pre, new = _hoist_scan(new)
            nodes.extend(pre)
        nodes.append(new)
        changed = changed or new is not n
        env.update(zip(n.outs, new.outs))
    return graph.with_nodes(nodes, [env[v] for v in graph.outputs]) if changed else graph


def _node(op: Op, srcs, attrs: dict, loc) -> Node:
    d = opdef(op)
    attrs = d.normalize_attrs(attrs)
    t = d.shape([s.type for s in srcs], attrs)
    return Node(op, tuple(srcs), attrs, t if isinstance(t, tuple) else (t,), loc)


def _invariants(body: Graph, first_const: int) -> set[Value]:
    """The body values computed from its consts alone (the same at every step)."""
    inv = set(body.inputs[first_const:])
    for m in body.nodes:
        if all(s in inv for s in m.srcs):
            inv.update(m.outs)
    return inv


def _slice_of(v: Value, slices: dict[Value, int]) -> Value | None:
    """The sequence slice `v` is (through reshapes), or None."""
    while v not in slices and v.node.op == Op.RESHAPE:
        v = v.node.srcs[0]
    return v if v in slices else None


def _candidate(m: Node, slices: dict[Value, int], inv: set[Value]):
    """(sequence-slice operand position, invariant operand) when `m` is a matmul of a slice
    (or a reshape of one) with an invariant whose batch dims broadcast over the slice's (so
    that the stacked slice's leading step axis stays a batch axis of its own)."""
    if m.op != Op.MATMUL:
        return None
    for pos in (0, 1):
        x, w = m.srcs[pos], m.srcs[1 - pos]
        if _slice_of(x, slices) is not None and w in inv and w.type.ndim <= x.type.ndim:
            return pos, w
    return None


def _stacked_matmul(xs: Value, w: Value, pos: int, loc) -> list[Node]:
    """matmul over every step at once. A slice times a 2-d invariant on the right is one GEMM
    over all rows (reshapes of the contiguous stack); otherwise a matmul batched over steps."""
    if pos == 0 and w.type.ndim == 2:
        rows = math.prod(xs.type.shape[:-1])
        flat = _node(Op.RESHAPE, (xs,), {"shape": (rows, xs.type.shape[-1])}, loc)
        mm = _node(Op.MATMUL, (flat.out, w), {}, loc)
        back = _node(Op.RESHAPE, (mm.out,), {"shape": xs.type.shape[:-1] + w.type.shape[-1:]},
                     loc)
        return [flat, mm, back]
    return [_node(Op.MATMUL, (xs, w) if pos == 0 else (w, xs), {}, loc)]


def _hoist_scan(n: Node) -> tuple[list[Node], Node]:
    """(nodes to emit before the scan, the scan reading their results as new sequences)."""
    body = _hoist(n.attrs["body"])
    nk, nc = n.attrs["num_carry"], n.attrs["num_consts"]
    first_const = len(body.inputs) - nc
    slices = {v: i for i, v in enumerate(body.inputs[nk:first_const])}
    inv = _invariants(body, first_const)
    found = [(m, c) for m in body.nodes if (c := _candidate(m, slices, inv)) is not None]
    if not found:
        return [], (n if body is n.attrs["body"] else n.replace(attrs={**n.attrs, "body": body}))
    # Invariant values in the outer graph: the consts, then copies of the nodes computing the
    # invariant operands from them.
    outer: dict[Value, Value] = dict(zip(body.inputs[first_const:], n.srcs[first_const:]))
    wanted = {w for _, (_, w) in found}
    needed: set[Node] = set()
    for m in reversed(body.nodes):
        if any(o in wanted for o in m.outs):
            needed.add(m)
            wanted.update(m.srcs)
    pre: list[Node] = []
    for m in body.nodes:
        if m in needed:
            copy = m.replace(srcs=tuple(outer[s] for s in m.srcs))
            pre.append(copy)
            outer.update(zip(m.outs, copy.outs))
    hoisted: dict[Node, Value] = {}
    for m, (pos, w) in found:
        x = m.srcs[pos]
        seq = n.srcs[nk + slices[_slice_of(x, slices)]]
        if seq.type.shape[1:] != x.type.shape:       # the slice was reshaped: so is the stack
            reshape = _node(Op.RESHAPE, (seq,), {"shape": seq.type.shape[:1] + x.type.shape},
                            x.node.loc)
            pre.append(reshape)
            seq = reshape.out
        made = _stacked_matmul(seq, outer[w], pos, m.loc)
        pre.extend(made)
        hoisted[m] = made[-1].out
    return pre, _with_new_sequences(n, body, hoisted)


def _with_new_sequences(n: Node, body: Graph, hoisted: dict[Node, Value]) -> Node:
    """The scan `n` whose body reads each hoisted matmul's result as a new sequence slice
    (inserted after the existing sequences, before the consts)."""
    nc = n.attrs["num_consts"]
    first_const = len(body.inputs) - nc
    old_inputs = list(body.inputs)
    extra = [(m, v) for m, v in hoisted.items()]
    names = [v.node.attrs["name"] for v in old_inputs[:first_const]] + [
        f"hoisted{j}" for j in range(len(extra))] + [
        v.node.attrs["name"] for v in old_inputs[first_const:]]
    types = [v.type for v in old_inputs[:first_const]] + [m.type for m, _ in extra] + [
        v.type for v in old_inputs[first_const:]]
    locs = [v.node.loc for v in old_inputs[:first_const]] + [m.loc for m, _ in extra] + [
        v.node.loc for v in old_inputs[first_const:]]
    inputs = [make_input(name, t, i, loc) for i, (name, t, loc) in enumerate(zip(names, types,
                                                                                  locs))]
    env: dict[Value, Value] = dict(zip(old_inputs[:first_const], inputs[:first_const]))
    env.update(zip(old_inputs[first_const:], inputs[first_const + len(extra):]))
    env.update((m.out, inp) for (m, _), inp in zip(extra, inputs[first_const:]))
    nodes = []
    for m in body.nodes:
        if m in hoisted:
            continue
        srcs = tuple(env.get(s, s) for s in m.srcs)
        new = m if srcs == m.srcs else m.replace(srcs=srcs)
        nodes.append(new)
        env.update(zip(m.outs, new.outs))
    new_body = Graph(body.name, tuple(inputs), tuple(nodes),
                     tuple(env.get(v, v) for v in body.outputs), body.meta)
    srcs = n.srcs[:first_const] + tuple(v for _, v in extra) + n.srcs[first_const:]
    return n.replace(srcs=srcs, attrs={**n.attrs, "body": new_body})
