"""`checkpoint` (jax.checkpoint, torch.utils.checkpoint): a block whose forward values the
backward pass recomputes instead of keeping, trading compute for memory.

    >>> block = nnjit.checkpoint(lambda h, w: nnjit.tanh(h @ w))
    >>> loss = nnjit.sum(block(block(x, w1), w2))      # under grad: only block inputs are kept

The block is traced and inlined like any call, and its nodes are recorded on the builder
(`Builder.remat_regions`). When `grad` differentiates the trace, autodiff emits the block a
second time inside the backward pass (see `passes/autodiff.py` `_recompute`), so the forward
intermediates die as soon as the forward pass is done with them. Without grad it changes
nothing (called on concrete arrays, it compiles and runs `fn`).
"""
from __future__ import annotations

import functools
from typing import Callable

from ..ir import Sym
from ..ir.prims import builder_of, lift
from .eager import eager
from .pytree import flatten, unflatten
from .tracing import trace_flat


def checkpoint(fn: Callable) -> Callable:
    """`fn` with its values recomputed in the backward pass (pytrees in and out)."""
    name = getattr(fn, "__name__", "checkpoint")

    @functools.wraps(fn)
    def block(*args):
        leaves, tree = flatten(tuple(args))
        syms = [x for x in leaves if isinstance(x, Sym)]
        if not syms:               # concrete arrays: compiled and run like any eager call
            jf = block.__dict__.get("_nnjit_eager")
            if jf is None:
                jf = block.__dict__["_nnjit_eager"] = eager(block, name)
            return jf(*args)
        b = builder_of(*syms)
        flat = [x if isinstance(x, Sym) else lift(b, x)[0] for x in leaves]
        traced = trace_flat(fn, tuple(unflatten(tree, flat)), name, parent=b)
        start = len(b.nodes)
        outs = b.inline(traced.graph, flat + list(traced.captures))
        b.remat_regions.append(frozenset(b.nodes[start:]))
        return unflatten(traced.out_tree, outs)

    return block


__all__ = ["checkpoint"]
