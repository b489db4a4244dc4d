"""`scan` (structured iteration over the leading axis of its sequence operands) and `fusion`
(a group of nodes that becomes one kernel).

    scan(init..., xs..., consts...) {body, num_carry, num_consts, length, reverse}
      body(carry..., x_t..., consts...) -> (carry'..., y_t...)
      results: (final carry..., ys...) with ys stacked along a new leading axis of `length`

This is how RNNs and LSTMs run without unrolling (jax.lax.scan's semantics). Consts are the
values the body closes over; they come last so a traced body's captures simply append.
Its VJP is a reverse scan over the saved carries; see passes/autodiff.py.
"""
from __future__ import annotations

import numpy as np

from ..evaluate import evaluate
from ..opdef import AttrSpec, OpDef, register
from ..ops import Kind, Op
from ..types import TensorType
from .common import require


def _scan_shape(ts, attrs):
    body, nc, nk, length = attrs["body"], attrs["num_consts"], attrs["num_carry"], attrs["length"]
    require(nc >= 0 and nk >= 0 and nc + nk <= len(ts), f"num_consts={nc} num_carry={nk} do not "
            f"fit {len(ts)} operands")
    require(length >= 0, f"length must be >= 0, got {length}")
    carry, xs, consts = ts[:nk], ts[nk:len(ts) - nc], ts[len(ts) - nc:]
    for x in xs:
        require(x.ndim >= 1 and x.shape[0] == length,
                f"sequence operand {x} does not have leading dim {length}")
    want_in = tuple(carry) + tuple(x.with_shape(x.shape[1:]) for x in xs) + tuple(consts)
    have_in = body.input_types
    require(have_in == want_in, "body inputs " + _types(have_in) + " do not match "
            "(carry, x slices, consts) " + _types(want_in))
    outs = body.output_types
    require(len(outs) >= nk and tuple(outs[:nk]) == tuple(carry),
            "body must return the carry types " + _types(carry) + " first, got " + _types(outs))
    return tuple(carry) + tuple(TensorType((length,) + y.shape, y.dtype) for y in outs[nk:])


def _types(ts) -> str:
    return "(" + ", ".join(map(str, ts)) + ")"


def _scan_ref(xs, attrs):
    body, nc, nk, length = attrs["body"], attrs["num_consts"], attrs["num_carry"], attrs["length"]
    carry, seqs, consts = list(xs[:nk]), xs[nk:len(xs) - nc], list(xs[len(xs) - nc:])
    y_types = body.output_types[nk:]
    ys = [np.empty((length,) + t.shape, t.dtype.np) for t in y_types]
    steps = range(length - 1, -1, -1) if attrs["reverse"] else range(length)
    for t in steps:
        outs = evaluate(body, carry + [s[t] for s in seqs] + consts)
        carry = list(outs[:nk])
        for y, o in zip(ys, outs[nk:]):
            y[t] = o
    return tuple(carry) + tuple(ys)


def _fusion_shape(ts, attrs):
    body = attrs["body"]
    require(tuple(ts) == body.input_types, "operands " + _types(ts) + " do not match the body "
            "inputs " + _types(body.input_types))
    outs = body.output_types
    return outs if len(outs) != 1 else outs[0]


def _fusion_ref(xs, attrs):
    outs = evaluate(attrs["body"], list(xs))
    return tuple(outs) if len(outs) != 1 else outs[0]


register(
    OpDef(Op.FUSION, Kind.OPAQUE, None, _fusion_shape, _fusion_ref,
          attrs=(AttrSpec("body", "graph"), AttrSpec("kind", "str", "loop")),
          doc="a group of nodes compiled as one kernel (made by the fusion pass; `kind` names "
              "the kernel template: loop, reduce, gemm, conv, window)"),
    OpDef(Op.SCAN, Kind.OPAQUE, None, _scan_shape, _scan_ref,
          attrs=(AttrSpec("body", "graph"), AttrSpec("num_carry", "int"),
                 AttrSpec("num_consts", "int", 0), AttrSpec("length", "int"),
                 AttrSpec("reverse", "bool", False))),
)


# -- rematerialization (issue 12) ----------------------------------------------------------------
# optimization_barrier(x, after) is x, computed only once `after` (a scalar) exists. Autodiff
# recomputes a checkpointed block from its inputs passed through barriers that depend on the
# backward pass: the recomputation cannot be merged with the forward one (CSE) or run before
# the backward pass reaches the block, so the block's forward intermediates die early.

def _optimization_barrier_shape(ts, attrs):
    x, after = ts
    require(after.shape == (), f"the ordering operand must be a scalar, got {after}")
    return x


register(
    OpDef(Op.OPTIMIZATION_BARRIER, Kind.ELEMENTWISE, 2, _optimization_barrier_shape,
          lambda xs, attrs: xs[0], vjp=lambda xs, outs, cts, attrs: [cts[0], None],
          scalar=lambda args, dtype, attrs: args[0], nondiff_inputs=frozenset({1}),
          doc="x, ordered after the scalar `after` and never merged with another x (the "
              "recomputation of a checkpointed block in the backward pass)"),
)
