"""Reverse-mode autodiff as a graph transform.

`grad(g, wrt)` returns a graph computing g's outputs followed by the gradient of its first
output (a scalar loss) with respect to the inputs `wrt`. It walks the nodes in reverse order,
applies each op's `OpDef.vjp` (written with ordinary builder ops), and sums cotangents of values
used several times, so the backward graph is plain IR that is fused and planned like any other.

`scan` is differentiated as a reverse scan (backpropagation through time): the forward scan also
stacks the carries it saw and its per-step contraction and transcendental results; the backward
body recomputes only the cheap rest of one forward step from those and applies its VJP. A
const's cotangent that is a sum of per-step matmuls (a weight gradient) is one matmul over the
stacked steps after the loop; the rest accumulates in the backward scan's carry. Scans' input
projections are hoisted out of their loops first (`hoist.py`), so they are differentiated as
one GEMM each outside.

Guarantees: the result verifies; the forward outputs are computed as before (the same dot
products, with scans' input projections moved before their loops); integer and bool values
never get cotangents; an input that does not affect the loss gets a zero gradient.
"""
from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

from ..ir import Builder, CompileError, Graph, Node, Op, Sym, Value, opdef
from ..ir import prims as P
from ..ir.groups import CONTRACTION, EXPENSIVE
from .hoist import hoist_loop_invariants


def grad(g: Graph, wrt: Sequence[int], name: str | None = None,
         remat: Sequence[frozenset[Node]] = ()) -> Graph:
    """Graph with outputs `(*g.outputs, *d g.outputs[0] / d g.inputs[i] for i in wrt)`.
    `remat`: blocks of g's nodes (nnjit.checkpoint) recomputed in the backward pass."""
    loss = g.outputs[0]
    if loss.type.shape != () or not loss.type.dtype.is_float:
        raise CompileError(f"grad: the first output of @{g.name} must be a float scalar (the "
                           f"loss), got {loss.type}")
    for i in wrt:
        if not g.inputs[i].type.dtype.is_float:
            raise CompileError(f"grad: cannot differentiate with respect to input "
                               f"'{g.input_names[i]}' of type {g.inputs[i].type} (not float)")
    if not remat:
        # Input projections out of scans first: their gradients are then one GEMM each outside
        # the loop, and the scans' VJPs see only the recurrence. (Checkpointed blocks name g's
        # nodes, which the rewrite would replace; the pipeline hoists those scans later.)
        g = hoist_loop_invariants(g)
    b = Builder(name or f"{g.name}_grad")
    ins = [b.input(v.type, v.node.attrs["name"], v.node.loc) for v in g.inputs]
    with b.at(loss.node.loc):  # the seed cotangent belongs to the loss's line
        one = b.const(np.ones((), loss.type.dtype.np))
    outs, in_cts = backprop(b, g, ins, {0: one}, needed=set(wrt), remat=remat)
    grads = [in_cts[i] if in_cts[i] is not None else zeros(b, g.inputs[i].type) for i in wrt]
    return b.build(list(outs) + grads)


def zeros(b: Builder, t) -> Sym:
    z = b.const(np.zeros((), t.dtype.np))
    return P.broadcast_to(z, t.shape) if t.shape else z


def _differentiable(v: Value) -> bool:
    return v.type.dtype.is_float


def backprop(b: Builder, g: Graph, ins: Sequence[Sym], out_cts: dict[int, Sym],
             needed: set[int] | None = None, remat: Sequence[frozenset[Node]] = (),
             given: dict[Value, Sym] | None = None) -> tuple[list[Sym], list[Sym | None]]:
    """Emit `g` applied to `ins` into `b`, then its VJP for the given output cotangents.

    Returns (forward outputs, cotangent of each input or None). Only inputs in `needed` (all when
    None) are differentiated; nodes that cannot reach them are not visited. `given`: values of
    g already computed elsewhere (a scan's saved residuals); their nodes are not emitted again.
    """
    given = given or {}
    needed = set(range(len(g.inputs))) if needed is None else needed
    active = _active_values(g, {g.inputs[i] for i in needed if _differentiable(g.inputs[i])})
    env: dict[Value, Sym] = {v: s for v, s in zip(g.inputs, ins)}
    saved: dict[Node, _Saved] = {}
    for n in g.nodes:
        srcs = [env[s] for s in n.srcs]
        with b.at(n.loc):
            if n.outs and all(o in given for o in n.outs):
                outs = [given[o] for o in n.outs]
            elif n.op == Op.SCAN and any(o in active for o in n.outs):
                outs, saved[n] = _scan_forward_saving(n, srcs)
            else:
                new = b.add_node(n.replace(srcs=tuple(s.value for s in srcs)))
                outs = [b.wrap(v) for v in new.outs]
        env.update(zip(n.outs, outs))

    region_of = {n: k for k, region in enumerate(remat) for n in region}
    recomputed: dict[Value, Sym] = {}          # values of checkpointed blocks, recomputed
    done: set[int] = set()

    def primal(v: Value) -> Sym:
        return recomputed[v] if v in recomputed else env[v]

    cts: dict[Value, Sym] = {}
    for k, ct in out_cts.items():
        v = g.outputs[k]
        if v in active:
            _accumulate(cts, v, ct)
    for n in reversed(g.nodes):
        node_cts = [cts.get(o) for o in n.outs]
        if all(c is None for c in node_cts):
            continue
        k = region_of.get(n)
        if k is not None and k not in done:   # the backward pass reaches a checkpointed block
            done.add(k)
            anchor = next(c for c in node_cts if c is not None)
            recomputed.update(_recompute(b, g, remat[k], env, anchor))
        with b.at(n.loc):
            if n.op == Op.SCAN:
                grads = _scan_vjp(b, n, [primal(s) for s in n.srcs], saved[n], node_cts)
            else:
                d = opdef(n.op)
                if d.vjp is None:
                    raise CompileError(f"{n.op.value} is not differentiable (no VJP rule), at "
                                       f"{n.loc}")
                grads = d.vjp([primal(s) for s in n.srcs], [primal(o) for o in n.outs],
                              node_cts, dict(n.attrs))
            for s, gr in zip(n.srcs, grads):
                if gr is None or s not in active:
                    continue
                if gr.type != s.type:
                    raise CompileError(f"VJP of {n.op.value} gave a cotangent of type {gr.type} "
                                       f"for an operand of type {s.type}, at {n.loc}")
                _accumulate(cts, s, gr)
    return [env[v] for v in g.outputs], [cts.get(v) for v in g.inputs]


def _recompute(b: Builder, g: Graph, region: frozenset[Node], env: dict[Value, Sym],
               anchor: Sym) -> dict[Value, Sym]:
    """Emit the block's nodes again, from its inputs passed through optimization barriers that
    depend on `anchor` (a cotangent of the block): the copy runs in the backward pass, and CSE
    cannot merge it with the forward one. Scans keep their forward results (and saved
    carries); an empty anchor (nothing to order by) keeps the forward values."""
    if anchor.size == 0:
        return {}
    nd = anchor.ndim
    after = P.reshape(P.slice(anchor, (0,) * nd, (1,) * nd, (1,) * nd), ()) if nd else anchor
    nodes = [n for n in g.nodes if n in region]
    produced = {o for n in nodes for o in n.outs}
    out: dict[Value, Sym] = {}
    for n in nodes:
        for s in n.srcs:
            if s not in produced and s not in out:
                with b.at(n.loc):
                    out[s] = P.optimization_barrier(env[s], after)
        if n.op == Op.SCAN:
            out.update((o, env[o]) for o in n.outs)
            continue
        new = b.add_node(n.replace(srcs=tuple(out[s].value for s in n.srcs)))
        out.update((o, b.wrap(v)) for o, v in zip(n.outs, new.outs))
    return {v: s for v, s in out.items() if v in produced}


def _accumulate(cts: dict[Value, Sym], v: Value, ct: Sym) -> None:
    cts[v] = cts[v] + ct if v in cts else ct


def _active_values(g: Graph, sources: set[Value]) -> set[Value]:
    """Float values that depend on `sources` (only these can carry cotangents)."""
    active = set(sources)
    for n in g.nodes:
        if any(s in active for s in n.srcs):
            active.update(o for o in n.outs if _differentiable(o))
    return active


# -- scan -----------------------------------------------------------------------------------------
# The forward scan stacks, besides its results, the carries each step started from and the
# residuals: the per-step results of contractions and transcendentals (the rule: a value is
# saved when recomputing it would cost a matmul, a convolution or an exp/tanh/...; cheap
# elementwise values are recomputed from the saved ones). The backward body takes them as
# per-step sequences, so it never runs a forward contraction again; dead-code elimination then
# drops whatever the VJP does not read (a matmul whose every user is saved, say), from the
# backward body and from the forward scan's stacked results alike. Memory: `length` times each
# saved value. A scan nested in the body is not a residual: the backward body runs it again,
# and its own VJP saves its residuals.
#
# A const's cotangent that is a sum over steps of matmul(P_t, Q_t) of two per-step values (a
# weight gradient such as h_t^T @ dz_t) is not accumulated in the backward scan's carry: the
# scan stacks P_t and Q_t (or reuses stacks it already has, such as the saved carries) and one
# matmul over the (length * k) stacked rows after the loop computes the sum. Likewise a sum of
# a per-step value (a bias's row sums of dz_t) is one sum over the stacked steps. The rest of a
# const's cotangent (terms with a loop-invariant factor, say) accumulates in the carry.

@dataclasses.dataclass(frozen=True)
class _Saved:
    """What the forward scan kept for its VJP: the stacked carries each step started from, and
    the stacked residuals (body value -> its stack)."""
    carries: list[Sym]
    residuals: dict[Value, Sym]


def _scan_parts(n: Node, srcs: Sequence):
    nk, nc = n.attrs["num_carry"], n.attrs["num_consts"]
    return list(srcs[:nk]), list(srcs[nk:len(srcs) - nc]), list(srcs[len(srcs) - nc:])


def _per_step(body: Graph, n_varying_inputs: int) -> set[Value]:
    """The body values that change from step to step: those depending on a carry or a
    sequence slice (the first `n_varying_inputs` inputs), not on consts alone."""
    varying = set(body.inputs[:n_varying_inputs])
    for m in body.nodes:
        if any(s in varying for s in m.srcs):
            varying.update(m.outs)
    return varying


def _residuals(body: Graph, nk: int, nx: int) -> list[Value]:
    """The body values worth saving for the backward pass (see the rule above)."""
    varying = _per_step(body, nk + nx)
    return [o for m in body.nodes if m.op in CONTRACTION or m.op in EXPENSIVE
            for o in m.outs if o in varying]


def _scan_forward_saving(n: Node, srcs: list[Sym]) -> tuple[list[Sym], _Saved]:
    """Emit the scan with its body also returning its input carries and its residuals (a
    residual that already is a stacked result is not stacked twice). Returns (the original
    results, what was saved)."""
    body: Graph = n.attrs["body"]
    nk = n.attrs["num_carry"]
    carry, xs, consts = _scan_parts(n, srcs)
    residuals = _residuals(body, nk, len(xs))
    as_ys = {v: i for i, v in reversed(list(enumerate(body.outputs[nk:])))}
    fresh = [v for v in residuals if v not in as_ys]
    aug = Graph(body.name, body.inputs, body.nodes,
                body.outputs + tuple(body.inputs[:nk]) + tuple(fresh))
    res = P.scan(aug, carry, xs, consts, n.attrs["length"], n.attrs["reverse"])
    n_out = len(n.types)
    results = list(res[:n_out])
    stacks = dict(zip(fresh, res[n_out + nk:]))
    wanted = set(residuals)
    stacks.update((v, results[nk + i]) for v, i in as_ys.items() if v in wanted)
    return results, _Saved(list(res[n_out:n_out + nk]), stacks)


class _Stacks:
    """Per-step values of a backward body wanted stacked over the steps after its loop: an
    outer sequence whose slice the body reads is used as it is; any other value becomes an
    extra stacked result of the backward scan (each value once)."""

    def __init__(self, outer: dict[Value, Sym], ys: Sequence[Sym]):
        self.outer = outer
        self.ys: list[Sym] = list(ys)    # the backward body's stacked outputs, in order
        self._index: dict[Value, int] = {}
        for k, y in enumerate(ys):
            self._index.setdefault(y.value, k)

    def _add(self, v: Sym) -> int:
        if v.value not in self._index:
            self._index[v.value] = len(self.ys)
            self.ys.append(v)
        return self._index[v.value]

    def want(self, v: Sym):
        """A function from the backward scan's stacked results to the stack of `v`."""
        if v.value in self.outer:
            stack = self.outer[v.value]
            return lambda ys: stack
        k = self._add(v)
        return lambda ys: ys[k]


def _terms(ct: Sym) -> list[Sym]:
    """`ct` as a list of summands (its same-shaped adds taken apart)."""
    v = ct.value
    if v.node.op == Op.ADD and all(s.type == v.type for s in v.node.srcs):
        return [t for s in v.node.srcs for t in _terms(ct.builder.wrap(s))]
    return [ct]


def _movements(term: Sym) -> tuple[list[Node], Value]:
    """The transposes and reshapes on top of `term` (from the top down), and what is below."""
    chain: list[Node] = []
    v = term.value
    while v.node.op in (Op.TRANSPOSE, Op.RESHAPE):
        chain.append(v.node)
        v = v.node.srcs[0]
    return chain, v


def _after_loop(term: Sym, varying: set[Value], stacks: "_Stacks"):
    """When `term` (one summand of a const's per-step cotangent) is movements of a 2-d
    matmul(P, Q) of two per-step values, or of a sum of one per-step value: a function from
    the backward scan's stacked results to the sum of `term` over the steps (one matmul or one
    sum over the stacks). Otherwise None: the term accumulates in the carry."""
    chain, v = _movements(term)
    node, wrap = v.node, term.builder.wrap
    if node.op == Op.MATMUL and v.type.ndim == 2 and all(s in varying for s in node.srcs):
        a, q = stacks.want(_rows(wrap(node.srcs[0]))), stacks.want(wrap(node.srcs[1]))
        return lambda ys: _moved(_sum_of_products(a(ys), q(ys)), chain)
    if node.op == Op.SUM and node.srcs[0] in varying:
        x = stacks.want(wrap(node.srcs[0]))
        axes = (0,) + tuple(a + 1 for a in node.attrs["axes"])
        return lambda ys: _moved(P.reshape(P.reduce_sum(x(ys), axes), v.type.shape), chain)
    return None


def _rows(p: Sym) -> Sym:
    """p^T, taking an existing transpose apart instead of transposing it back (the stack of
    the untransposed value is then often one the scan already has, such as a saved carry)."""
    n = p.value.node
    if n.op == Op.TRANSPOSE and tuple(n.attrs["perm"]) == (1, 0):
        return p.builder.wrap(n.srcs[0])
    return P.transpose(p, (1, 0))


def _sum_of_products(a_stack: Sym, q_stack: Sym) -> Sym:
    """sum_t a_t^T @ q_t as one matmul over the stacked rows: (T*k, m)^T @ (T*k, n)."""
    t, k, m = a_stack.shape
    return P.matmul(P.transpose(P.reshape(a_stack, (t * k, m)), (1, 0)),
                    P.reshape(q_stack, (t * k, q_stack.shape[-1])))


def _moved(out: Sym, chain: list[Node]) -> Sym:
    """`out` with a term's movement nodes applied again (bottom up)."""
    for node in reversed(chain):
        out = (P.transpose(out, tuple(node.attrs["perm"])) if node.op == Op.TRANSPOSE
               else P.reshape(out, tuple(node.attrs["shape"])))
    return out


def _scan_vjp(b: Builder, n: Node, srcs: list[Sym], saved: _Saved,
              cts: list[Sym | None]) -> list[Sym | None]:
    body: Graph = n.attrs["body"]
    nk, nc, length = n.attrs["num_carry"], n.attrs["num_consts"], n.attrs["length"]
    carry, xs, consts = _scan_parts(n, srcs)
    nx = len(xs)
    ct_carry = [c if c is not None else zeros(b, t) for c, t in zip(cts[:nk], n.types[:nk])]
    ct_ys = [c if c is not None else zeros(b, t) for c, t in zip(cts[nk:], n.types[nk:])]
    fc = [i for i in range(nk) if carry[i].dtype.is_float]         # differentiable carries
    fk = [i for i in range(nc) if consts[i].dtype.is_float]        # differentiable consts
    fx = [i for i in range(nx) if xs[i].dtype.is_float]            # differentiable sequences
    n_y = len(ct_ys)
    residuals = list(saved.residuals)

    # Backward body: carry (ct_carry[fc], acc_consts[fk]),
    # xs (saved carries, saved residuals, x, ct_y), consts.
    bb = Builder(f"{body.name}_vjp", parent=b)
    with bb.at(n.loc):   # the backward body's own nodes keep the scan's line too
        in_ct = [bb.input(carry[i].type, f"ct_carry{i}") for i in fc]
        in_acc = [bb.input(consts[i].type, f"ct_const{i}") for i in fk]
        in_c = [bb.input(c.type, f"carry{i}") for i, c in enumerate(carry)]
        in_r = [bb.input(v.type, f"saved{j}") for j, v in enumerate(residuals)]
        in_x = [bb.input(x.type.with_shape(x.shape[1:]), f"x{i}") for i, x in enumerate(xs)]
        in_cty = [bb.input(t.with_shape(t.shape[1:]), f"ct_y{i}")
                  for i, t in enumerate(n.types[nk:])]
        in_k = [bb.input(c.type, f"const{i}") for i, c in enumerate(consts)]
        step_cts = {i: ct for i, ct in zip(fc, in_ct)}
        step_cts.update({nk + j: in_cty[j] for j in range(n_y)})
        needed = set(fc) | {nk + i for i in fx} | {nk + nx + i for i in fk}
        _, body_in_cts = backprop(bb, body, in_c + in_x + in_k, step_cts, needed=needed,
                                  given={v: s for v, s in zip(residuals, in_r)})
        new_ct = [body_in_cts[i] if body_in_cts[i] is not None else zeros(bb, carry[i].type)
                  for i in fc]
        ct_x = [body_in_cts[nk + i] if body_in_cts[nk + i] is not None else
                zeros(bb, xs[i].type.with_shape(xs[i].shape[1:])) for i in fx]
        seqs = in_c + in_r + in_x + in_cty
        stacks = _Stacks({s.value: o for s, o in zip(seqs, saved.carries + [
            saved.residuals[v] for v in residuals] + xs + ct_ys)}, ct_x)
        varying = {s.value for s in in_ct + in_acc + seqs}
        for m in bb.nodes:
            if any(s in varying for s in m.srcs):
                varying.update(m.outs)
        new_acc, carried, after = [], [], []
        for acc, i in zip(in_acc, fk):
            ct = body_in_cts[nk + nx + i]
            sums, rest = [], []
            for term in _terms(ct) if ct is not None else []:
                total = _after_loop(term, varying, stacks)
                if total is None:
                    rest.append(term)
                else:
                    sums.append(total)
            new_acc.append(sum(rest[1:], acc + rest[0]) if rest else acc)
            carried.append(bool(rest))
            after.append(sums)
        # Inputs are (carry, xs, consts) in scan order; values the body captured from the outer
        # graph were appended after the consts while tracing, so they simply extend the consts.
        bgraph = bb.build(new_ct + new_acc + stacks.ys)
    extra = [outer for outer, _ in bb.captures]
    res = P.scan(bgraph, [ct_carry[i] for i in fc] + [zeros(b, consts[i].type) for i in fk],
                 saved.carries + [saved.residuals[v] for v in residuals] + xs + ct_ys,
                 consts + extra, length, reverse=not n.attrs["reverse"])
    ys = res[len(fc) + len(fk):]
    grads: list[Sym | None] = [None] * len(srcs)
    for j, i in enumerate(fc):
        grads[i] = res[j]
    for j, i in enumerate(fk):
        parts = [res[len(fc) + j]] if carried[j] else []
        parts += [total(ys) for total in after[j]]
        grads[nk + nx + i] = sum(parts[1:], parts[0]) if parts else None
    for j, i in enumerate(fx):
        grads[nk + i] = ys[j]
    return grads
