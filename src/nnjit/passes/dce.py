"""Dead code elimination: drop every node whose results cannot reach the graph's outputs.

Scans are pruned too: a stacked output (ys) or a carry that no live result depends on is removed
from the body and from the scan, sequences and consts the remaining body does not read are no
longer passed in, and the users of the scan's results are renumbered. Bodies are cleaned
recursively (autodiff's backward bodies recompute forward values that are often unused).

Guarantees afterwards: every node (in every nested body) contributes to an output; graph inputs
and outputs are unchanged; results are unchanged (every op is pure).
"""
from __future__ import annotations

from ..ir import Graph, Node, Op, Value, make_input

# old result index -> new result index of a node that lost results
IndexMap = dict[int, int]


def eliminate_dead_code(graph: Graph) -> Graph:
    """`graph` without the nodes its outputs do not depend on.

        %0 = exp(%x) : f32[3]
        %1 = neg(%x) : f32[3]          ->  %0 = neg(%x) : f32[3]
        return %1                          return %0
    """
    live: set[Value] = set(graph.outputs)
    kept: dict[Node, tuple[Node, IndexMap | None]] = {}
    for n in reversed(graph.nodes):
        used = [i for i, v in enumerate(n.outs) if v in live]
        if not used:
            continue
        if n.op == Op.SCAN:
            new, index_map = _prune_scan(n, used)
        else:
            new, index_map = _clean_bodies(n), None
        kept[n] = (new, index_map)
        live.update(new.srcs)      # the pruned node's operands are a subset of the old ones
    if len(kept) == len(graph.nodes) and all(kept[n][0] is n for n in graph.nodes):
        return graph
    env: dict[Value, Value] = {v: v for v in graph.inputs}
    nodes: list[Node] = []
    for n in graph.nodes:
        if n not in kept:
            continue
        new, index_map = kept[n]
        srcs = tuple(env[s] for s in new.srcs)
        if srcs != new.srcs:
            new = new.replace(srcs=srcs)
        nodes.append(new)
        if index_map is None:
            env.update(zip(n.outs, new.outs))
        else:
            env.update((n.outs[i], new.outs[j]) for i, j in index_map.items())
    return graph.with_nodes(nodes, [env[v] for v in graph.outputs])


def _clean_bodies(n: Node) -> Node:
    """`n` with dead code removed inside its nested graphs (their signatures unchanged)."""
    if not any(isinstance(v, Graph) for v in n.attrs.values()):
        return n
    attrs = {k: eliminate_dead_code(v) if isinstance(v, Graph) else v for k, v in n.attrs.items()}
    if all(attrs[k] is n.attrs[k] for k in attrs):
        return n
    return n.replace(attrs=attrs)


def _prune_scan(n: Node, used: list[int]) -> tuple[Node, IndexMap | None]:
    """The scan `n` computing only what results `used` need (and the carries they depend on)."""
    body: Graph = n.attrs["body"]
    nk, nc = n.attrs["num_carry"], n.attrs["num_consts"]
    n_in = len(body.inputs)
    live_out = set(used)
    while True:
        trimmed = eliminate_dead_code(body.with_nodes(
            body.nodes, [body.outputs[i] for i in sorted(live_out)]))
        read = _reads(trimmed)
        # A carry whose value in the body feeds a live output must itself be carried along.
        more = {i for i in range(nk) if body.inputs[i] in read} - live_out
        if not more:
            break
        live_out |= more
    keep_in = [i for i in range(n_in)
               if (i in live_out if i < nk else body.inputs[i] in read)]
    outs = sorted(live_out)
    if len(keep_in) == n_in and len(outs) == len(n.types):
        return _clean_bodies(n), None
    new_body = _select_inputs(trimmed, keep_in)
    kept_carry = sum(1 for i in keep_in if i < nk)
    kept_consts = sum(1 for i in keep_in if i >= n_in - nc)
    attrs = {**n.attrs, "body": new_body, "num_carry": kept_carry, "num_consts": kept_consts}
    types = tuple(n.types[i] for i in outs)
    new = Node(Op.SCAN, tuple(n.srcs[i] for i in keep_in), attrs, types, n.loc)
    return new, {i: j for j, i in enumerate(outs)}


def _reads(g: Graph) -> set[Value]:
    """The values `g`'s nodes and outputs read."""
    return {s for m in g.nodes for s in m.srcs} | set(g.outputs)


def _select_inputs(g: Graph, keep: list[int]) -> Graph:
    """`g` with only the inputs at positions `keep` (the others must be unused), renumbered."""
    if keep == list(range(len(g.inputs))):
        return g
    env: dict[Value, Value] = {}
    inputs = []
    for j, i in enumerate(keep):
        old = g.inputs[i]
        new = make_input(old.node.attrs["name"], old.type, j, old.node.loc)
        env[old] = new
        inputs.append(new)
    nodes = []
    for m in g.nodes:
        srcs = tuple(env.get(s, s) for s in m.srcs)
        new_m = m if srcs == m.srcs else m.replace(srcs=srcs)
        nodes.append(new_m)
        env.update(zip(m.outs, new_m.outs))
    return Graph(g.name, tuple(inputs), tuple(nodes), tuple(env.get(v, v) for v in g.outputs),
                 g.meta)
