"""`vmap`: map a function over a batch axis by a graph transform, not a Python loop.

`fn` is traced once on the per-example shapes (the mapped axis removed); then `batch_graph`
re-emits that graph with a leading batch dimension on every value that depends on a mapped
input, one batching rule per primitive (`OpDef.batch`, registered below as JAX registers its
batching rules next to each primitive). Values that do not depend on a mapped input stay
unbatched. Composite DSL functions batch through their primitives, and so do gradients:
`vmap(grad(loss), in_axes=(None, 0, 0))` gives per-example gradients.

    >>> per_example = nnjit.vmap(nnjit.grad(loss), in_axes=(None, 0, 0))
    >>> grads = per_example(params, xs, ys)      # each leaf gets a leading batch dim

A rule takes `(b, node, srcs, batched, size)`, where each batched operand carries the batch as
its axis 0, and returns the node's results, all batched at axis 0.
"""
from __future__ import annotations

import functools
from typing import Any, Callable, Sequence

import numpy as np

from ..ir import Builder, DType, Graph, Kind, NnjitError, Op, ShapeError, Sym
from ..ir import prims as P
from ..ir.opdef import OPDEFS, opdef, set_rule
from .eager import eager
from .pytree import TreeDef, flatten, unflatten
from .tracing import arg_names, trace_flat


class BatchingError(NnjitError):
    """An op inside a vmapped function has no batching rule for how it is used."""


# -- the transform ------------------------------------------------------------------------------

def batch_graph(b: Builder, g: Graph, args: Sequence[Sym], batched: Sequence[bool],
                size: int) -> tuple[list[Sym], list[bool]]:
    """Emit `g` into `b` with `args` bound to its inputs, where `batched[i]` says that args[i]
    has an extra leading axis of `size`. Returns (outputs, which of them are batched)."""
    env: dict = {}
    for v, a, bt in zip(g.inputs, args, batched):
        env[v] = (a, bt)
    for n in g.nodes:
        srcs = [env[s][0] for s in n.srcs]
        flags = [env[s][1] for s in n.srcs]
        with b.at(n.loc):
            if not any(flags):
                out = b.emit(n.op, srcs, dict(n.attrs))
                outs = list(out) if isinstance(out, tuple) else [out]
                env.update((o, (s, False)) for o, s in zip(n.outs, outs))
                continue
            outs = _rule(n.op)(b, n, srcs, flags, size)
        env.update((o, (s, True)) for o, s in zip(n.outs, outs))
    return [env[v][0] for v in g.outputs], [env[v][1] for v in g.outputs]


def _rule(op: Op) -> Callable:
    d = opdef(op)
    if d.batch is not None:
        return d.batch
    if d.kind == Kind.ELEMENTWISE and d.arity != 0:
        return _elementwise
    return functools.partial(_no_rule, op)


def _no_rule(op: Op, b, n, srcs, flags, size):
    which = ", ".join(str(i) for i, f in enumerate(flags) if f)
    raise BatchingError(f"vmap: {op.value} has no batching rule (batched operand(s) {which}: "
                        f"{', '.join(str(s.type) for s in srcs)}), at {n.loc}")


def _unsupported(op: Op, why: str):
    def rule(b, n, srcs, flags, size):
        raise BatchingError(f"vmap: {op.value} cannot be batched here: {why}, at {n.loc}")
    return rule


# -- helpers --------------------------------------------------------------------------------------

def _per_example(n) -> tuple[int, ...]:
    return n.outs[0].type.shape


def _lift_rank(x: Sym, rank: int) -> Sym:
    """A batched `x` (B, *s) as (B, 1, ..., 1, *s) with `rank` dims after B (for broadcasting)."""
    extra = rank - (x.ndim - 1)
    return P.reshape(x, (x.shape[0],) + (1,) * extra + x.shape[1:]) if extra > 0 else x


def _ensure_batched(x: Sym, is_batched: bool, size: int) -> Sym:
    return x if is_batched else P.broadcast_to(x, (size,) + x.shape)


def _move_axis(x: Sym, src: int, dst: int) -> Sym:
    if src == dst:
        return x
    perm = [i for i in range(x.ndim) if i != src]
    perm.insert(dst, src)
    return P.transpose(x, tuple(perm))


def _fold(x: Sym) -> Sym:
    """(B, N, ...) -> (B*N, ...)."""
    return P.reshape(x, (x.shape[0] * x.shape[1],) + x.shape[2:])


def _unfold(x: Sym, size: int) -> Sym:
    return P.reshape(x, (size, x.shape[0] // size) + x.shape[1:])


def _wrapped_indices(idx: Sym, n: int) -> Sym:
    """The index normalization take and scatter_add apply: negatives wrap once, then clamp."""
    idx = P.where(P.lt(idx, 0), idx + n, idx)
    return P.minimum(P.maximum(idx, 0), max(n - 1, 0))


def _row_offsets(b: Builder, idx: Sym, n: int) -> Sym:
    """Batched indices (B, *i) into rows of n, shifted to index the batch-major merged axis."""
    rows = P.iota(b, idx.shape, 0, idx.dtype)
    return _wrapped_indices(idx, n) + rows * n


# -- rules ----------------------------------------------------------------------------------------

def _elementwise(b, n, srcs, flags, size):
    rank = len(_per_example(n))
    srcs = [_lift_rank(s, rank) if f else s for s, f in zip(srcs, flags)]
    return [b.emit(n.op, srcs, dict(n.attrs))]


def _reduce_axes(b, n, srcs, flags, size):
    attrs = dict(n.attrs)
    attrs["axes"] = tuple(a + 1 for a in attrs["axes"])
    return [b.emit(n.op, srcs, attrs)]


def _argmax(b, n, srcs, flags, size):
    return [b.emit(n.op, srcs, {**n.attrs, "axis": n.attrs["axis"] + 1})]


def _same(b, n, srcs, flags, size):
    """Ops that act on every element alike whatever the shape (all-reduce, broadcast over the
    ranks of a process group): the batched operand goes through unchanged."""
    return [b.emit(n.op, srcs, dict(n.attrs))]


def _shift_axis(b, n, srcs, flags, size):
    return [b.emit(n.op, srcs, {**n.attrs, "axis": n.attrs["axis"] + 1})]


def _reshape(b, n, srcs, flags, size):
    return [P.reshape(srcs[0], (size,) + tuple(n.attrs["shape"]))]


def _transpose(b, n, srcs, flags, size):
    return [P.transpose(srcs[0], (0,) + tuple(p + 1 for p in n.attrs["perm"]))]


def _broadcast_to(b, n, srcs, flags, size):
    shape = tuple(n.attrs["shape"])
    return [P.broadcast_to(_lift_rank(srcs[0], len(shape)), (size,) + shape)]


def _slice(b, n, srcs, flags, size):
    a = n.attrs
    return [b.emit(Op.SLICE, srcs, {"starts": (0,) + a["starts"], "stops": (size,) + a["stops"],
                                    "steps": (1,) + a["steps"]})]


def _pad(b, n, srcs, flags, size):
    return [b.emit(Op.PAD, srcs, {**n.attrs, "pads": ((0, 0),) + tuple(n.attrs["pads"])})]


def _concat(b, n, srcs, flags, size):
    srcs = [_ensure_batched(s, f, size) for s, f in zip(srcs, flags)]
    return [b.emit(Op.CONCAT, srcs, {"axis": n.attrs["axis"] + 1})]


def _check_index(b, n, srcs, flags, size):
    return [b.emit(Op.CHECK_INDEX, srcs, dict(n.attrs))]      # elementwise over the indices


def _take(b, n, srcs, flags, size):
    (x, idx), ax = srcs, n.attrs["axis"]
    if not flags[1]:                                          # a batched table
        return [b.emit(Op.TAKE, [x, idx], {"axis": ax + 1})]
    if not flags[0]:                                          # batched indices: B lands at ax
        return [_move_axis(b.emit(Op.TAKE, [x, idx], {"axis": ax}), ax, 0)]
    # Both: merge the batch with the taken axis, (B, ..., A, ...) -> (B*A, ...), and offset
    # each example's indices by its row.
    a = x.shape[ax + 1]
    merged = _fold(_move_axis(x, ax + 1, 1))                  # (B*A, pre..., post...)
    out = b.emit(Op.TAKE, [merged, _row_offsets(b, idx, a)], {"axis": 0})   # (B, *i, pre, post)
    k = idx.ndim - 1
    perm = (0,) + tuple(range(1 + k, 1 + k + ax)) + tuple(range(1, 1 + k)) + \
        tuple(range(1 + k + ax, out.ndim))
    return [P.transpose(out, perm)]


def _scatter_add(b, n, srcs, flags, size):
    (idx, upd), shape, ax = srcs, tuple(n.attrs["shape"]), n.attrs["axis"]
    if not flags[0]:
        return [b.emit(Op.SCATTER_ADD, [idx, upd], {"shape": (size,) + shape, "axis": ax + 1})]
    upd = _ensure_batched(upd, flags[1], size)
    a = shape[ax]
    # Scatter into the merged axis (B*A) with each example's rows offset, then split it again.
    upd = _move_axis(upd, 0, ax)                              # (pre, B, *i, post)
    merged = shape[:ax] + (size * a,) + shape[ax + 1:]
    out = b.emit(Op.SCATTER_ADD, [_row_offsets(b, idx, a), upd], {"shape": merged, "axis": ax})
    out = P.reshape(out, shape[:ax] + (size, a) + shape[ax + 1:])
    return [_move_axis(out, ax, 0)]


def _matmul(b, n, srcs, flags, size):
    rank = max(s.ndim - f for s, f in zip(srcs, flags))      # per-example ranks
    srcs = [_lift_rank(s, rank) if f else s for s, f in zip(srcs, flags)]
    return [P.matmul(*srcs)]


def _fold_first(op: Op, attr: str | None = None, weight: int | None = None):
    """A rule for N-first ops (conv, pools): the batch folds into N. `weight`: the operand that
    must stay unbatched; `attr`: a shape attribute whose N is scaled too."""
    def rule(b, n, srcs, flags, size):
        if weight is not None and flags[weight]:
            raise BatchingError(f"vmap: {op.value} with a batched weight (operand {weight}) has "
                                f"no batching rule (it needs a grouped convolution), at {n.loc}")
        srcs = [_fold(_ensure_batched(s, f, size)) if i != weight else s
                for i, (s, f) in enumerate(zip(srcs, flags))]
        attrs = dict(n.attrs)
        if attr is not None:
            attrs[attr] = (size * attrs[attr][0],) + tuple(attrs[attr][1:])
        return [_unfold(b.emit(op, srcs, attrs), size)]
    return rule


def _conv2d_grad_weight(b, n, srcs, flags, size):
    """Per-example weight gradients: stack the examples along the channels, (N, B*C, H, W) and
    (N, B*O, H', W'), whose weight gradient (B*O, B*C, kh, kw) holds every pair of examples;
    keep the diagonal blocks. This costs B times the work of one batched gradient.
    TODO(train): a grouped conv2d_grad_weight would do only the diagonal."""
    x, dy = (_ensure_batched(s, f, size) for s, f in zip(srcs, flags))
    o, c, kh, kw = n.attrs["weight_shape"]

    def stack_channels(t):                     # (B, N, C, H, W) -> (N, B*C, H, W)
        t = _move_axis(t, 0, 1)
        return P.reshape(t, (t.shape[0], size * t.shape[2]) + t.shape[3:])

    attrs = {**n.attrs, "weight_shape": (size * o, size * c, kh, kw)}
    full = b.emit(Op.CONV2D_GRAD_WEIGHT, [stack_channels(x), stack_channels(dy)], attrs)
    full = P.transpose(P.reshape(full, (size, o, size, c, kh, kw)), (0, 2, 1, 3, 4, 5))
    full = P.reshape(full, (size * size, o, c, kh, kw))
    diag = b.const(np.arange(size, dtype=np.int64) * (size + 1))
    return [b.emit(Op.TAKE, [full, diag], {"axis": 0})]


def _optimization_barrier(b, n, srcs, flags, size):
    """The ordering operand only orders: one element of a batched one orders as well."""
    x, after = srcs
    if flags[1]:
        after = P.reshape(P.slice(after, (0,), (1,), (1,)), ())
    return [P.optimization_barrier(_ensure_batched(x, flags[0], size), after)]


def _random_uniform(b, n, srcs, flags, size):
    raise BatchingError(f"vmap: random_uniform with a batched seed has no batching rule (use "
                        f"one seed and draw the batch's numbers outside vmap), at {n.loc}")


def _scan(b, n, srcs, flags, size):
    body: Graph = n.attrs["body"]
    nk, nc, length = n.attrs["num_carry"], n.attrs["num_consts"], n.attrs["length"]
    nx = len(srcs) - nk - nc
    carry_b = list(flags[:nk])
    xs_b, consts_b = list(flags[nk:nk + nx]), list(flags[nk + nx:])
    # A carry that meets a batched value in the body becomes batched: iterate to a fixpoint.
    while True:
        new_body, out_b = _batched_body(body, carry_b, xs_b, consts_b, size)
        grown = [a or o for a, o in zip(carry_b, out_b[:nk])]
        if grown == carry_b:
            break
        carry_b = grown
    carry = [P.broadcast_to(s, (size,) + s.shape) if bt and not f else s
             for s, f, bt in zip(srcs[:nk], flags[:nk], carry_b)]
    xs = [_move_axis(s, 0, 1) if f else s for s, f in zip(srcs[nk:nk + nx], xs_b)]  # (L, B, .)
    res = P.scan(new_body, carry, xs, list(srcs[nk + nx:]), length, n.attrs["reverse"])
    outs = []
    for i, (r, bt) in enumerate(zip(res, out_b)):
        if i < nk:
            outs.append(r)                    # the body forces every batched carry out batched
        else:
            outs.append(_move_axis(r, 1, 0) if bt else P.broadcast_to(r, (size,) + r.shape))
    return outs


def _batched_body(body: Graph, carry_b, xs_b, consts_b, size) -> tuple[Graph, list[bool]]:
    bb = Builder(f"{body.name}_vmap")
    flags = list(carry_b) + list(xs_b) + list(consts_b)
    ins = [bb.input(v.type.with_shape(((size,) if f else ()) + v.type.shape),
                    v.node.attrs["name"], v.node.loc) for v, f in zip(body.inputs, flags)]
    outs, out_b = batch_graph(bb, body, ins, flags, size)
    nk = len(carry_b)
    outs = [_ensure_batched(o, ob, size) if i < nk and carry_b[i] else o
            for i, (o, ob) in enumerate(zip(outs, out_b))]
    out_b = [ob or (i < nk and carry_b[i]) for i, ob in enumerate(out_b)]
    return bb.build(outs), out_b


def _register() -> None:
    rules = {
        Op.RANDOM_UNIFORM: _random_uniform,
        Op.SUM: _reduce_axes, Op.MAX: _reduce_axes, Op.PROD: _reduce_axes, Op.ARGMAX: _argmax,
        Op.ALL_REDUCE: _same, Op.BROADCAST: _same,
        Op.ALL_GATHER: _shift_axis, Op.REDUCE_SCATTER: _shift_axis,
        Op.RESHAPE: _reshape, Op.TRANSPOSE: _transpose, Op.BROADCAST_TO: _broadcast_to,
        Op.SLICE: _slice, Op.PAD: _pad, Op.CONCAT: _concat,
        Op.TAKE: _take, Op.SCATTER_ADD: _scatter_add, Op.CHECK_INDEX: _check_index,
        Op.MATMUL: _matmul,
        Op.CONV2D: _fold_first(Op.CONV2D, weight=1),
        Op.CONV2D_GRAD_INPUT: _fold_first(Op.CONV2D_GRAD_INPUT, "input_shape", weight=1),
        Op.CONV2D_GRAD_WEIGHT: _conv2d_grad_weight,
        Op.MAX_POOL2D: _fold_first(Op.MAX_POOL2D),
        Op.AVG_POOL2D: _fold_first(Op.AVG_POOL2D),
        Op.MAX_POOL2D_GRAD: _fold_first(Op.MAX_POOL2D_GRAD),
        Op.AVG_POOL2D_GRAD: _fold_first(Op.AVG_POOL2D_GRAD, "input_shape"),
        Op.SCAN: _scan,
        Op.OPTIMIZATION_BARRIER: _optimization_barrier,
        Op.FUSION: _unsupported(Op.FUSION, "fusion nodes only exist after the fusion pass"),
    }
    for op, rule in rules.items():
        if op in OPDEFS:
            set_rule(op, batch=rule)


_register()


# -- the user-facing transform ------------------------------------------------------------------

class _Spec:
    """A per-example argument's shape and dtype (what the tracer needs, without an array)."""

    def __init__(self, shape, dtype):
        self.shape, self.dtype = tuple(shape), dtype


def _axes_for(label: str, arg, axes, tree: TreeDef) -> list:
    """The mapped axis of each leaf of `arg`: one int/None for all, or a pytree like it."""
    if axes is None or isinstance(axes, int) and not isinstance(axes, bool):
        return [axes] * tree.num_leaves
    leaves, t = flatten(axes)
    if t != tree:
        raise ShapeError(f"vmap: in_axes for argument {label} has structure {t}, the argument "
                         f"{tree}")
    return leaves


def vmap(fn: Callable, in_axes: Any = 0, out_axes: Any = 0) -> Callable:
    """Map `fn` over an axis of its arguments (jax.vmap). `in_axes`: an int (every argument's
    leaves mapped over that axis), None (not mapped), or a tuple with one entry per positional
    argument, each an int, None or a pytree of them like the argument. `out_axes`: where the
    batch axis goes in each output (an int for all, or a tuple per top-level output; None
    for an output that does not depend on the mapped inputs)."""
    name = getattr(fn, "__name__", "fn")

    def traced_vm(*args):
        labels = arg_names(fn, len(args))
        per_arg = in_axes if isinstance(in_axes, (tuple, list)) else (in_axes,) * len(args)
        if len(per_arg) != len(args):
            raise ShapeError(f"vmap({name}): in_axes has {len(per_arg)} entries but {name} was "
                             f"called with {len(args)} arguments")
        leaves, tree = flatten(tuple(args))
        axes = [a for label, arg, ax, sub in zip(labels, args, per_arg, tree.children)
                for a in _axes_for(label, arg, ax, sub)]
        b = P.builder_of(*[x for x in leaves if isinstance(x, Sym)])
        syms = [x if isinstance(x, Sym) else P.lift(b, np.asarray(x))[0] for x in leaves]
        size, moved, specs = None, [], []
        for k, (x, ax) in enumerate(zip(syms, axes)):
            if ax is None:
                moved.append(x), specs.append(_Spec(x.shape, x.dtype.np))
                continue
            if x.ndim == 0 or not -x.ndim <= ax < x.ndim:
                raise ShapeError(f"vmap({name}): in_axes {ax} is out of range for leaf {k} of "
                                 f"type {x.type}")
            ax %= x.ndim
            if size is None:
                size = x.shape[ax]
            elif x.shape[ax] != size:
                raise ShapeError(f"vmap({name}): mapped axes differ in size: leaf {k} "
                                 f"({x.type}, axis {ax}) has {x.shape[ax]}, earlier ones {size}")
            x = _move_axis(x, ax, 0)
            moved.append(x), specs.append(_Spec(x.shape[1:], x.dtype.np))
        if size is None:
            raise ShapeError(f"vmap({name}): no argument is mapped (every in_axes is None)")
        traced = trace_flat(fn, tuple(unflatten(tree, specs)), name, parent=b)
        graph_args = moved + list(traced.captures)
        flags = [ax is not None for ax in axes] + [False] * len(traced.captures)
        outs, out_b = batch_graph(b, traced.graph, graph_args, flags, size)
        return _place_outputs(name, traced.out_tree, outs, out_b, out_axes, size)

    @functools.wraps(fn)
    def vm(*args):
        if any(isinstance(x, Sym) for x in flatten(tuple(args))[0]):
            return traced_vm(*args)
        jf = vm.__dict__.get("_nnjit_eager")
        if jf is None:
            jf = vm.__dict__["_nnjit_eager"] = eager(traced_vm, name)
        return jf(*args)

    return vm


def _place_outputs(name, out_tree: TreeDef, outs, out_b, out_axes, size):
    if isinstance(out_axes, (tuple, list)):
        if out_tree.kind not in ("tuple", "list") or len(out_axes) != len(out_tree.children):
            raise ShapeError(f"vmap({name}): out_axes {out_axes} does not match the outputs "
                             f"{out_tree}")
        per_leaf = [a for a, sub in zip(out_axes, out_tree.children)
                    for _ in range(sub.num_leaves)]
    else:
        per_leaf = [out_axes] * len(outs)
    placed = []
    for k, (o, bt, ax) in enumerate(zip(outs, out_b, per_leaf)):
        if ax is None:
            if bt:
                raise ShapeError(f"vmap({name}): output {k} depends on the mapped inputs, but "
                                 "its out_axes is None")
            placed.append(o)
            continue
        if not bt:
            o = P.broadcast_to(o, (size,) + o.shape)
        if not -o.ndim <= ax < o.ndim:
            raise ShapeError(f"vmap({name}): out_axes {ax} is out of range for output {k} of "
                             f"type {o.type}")
        placed.append(_move_axis(o, 0, ax % o.ndim))
    return unflatten(out_tree, placed)


__all__ = ["BatchingError", "batch_graph", "vmap"]
