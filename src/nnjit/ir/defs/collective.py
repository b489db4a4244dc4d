"""Collectives over a named group of processes (issue 15): data-parallel training's gradient
all-reduce and its friends, with JAX's `psum`/`pmean`/`all_gather`/`psum_scatter` semantics.

Every process of a group runs the same graph on its own operands; `axis_name` names the group
and `group_size` is its number of processes (static: shapes depend on it). Results:

    all_reduce(x) {reduce, axis_name, group_size}   sum, mean or max over the ranks' x
    all_gather(x) {axis, ...}                        the ranks' x concatenated along `axis`
    reduce_scatter(x) {axis, ...}                    this rank's block (along `axis`) of the sum
    broadcast(x) {root, ...}                         rank `root`'s x on every rank
    axis_index() {...}                               this process's rank in the group (i32)

Transposes (the VJPs, for a loss every rank computes on replicated results): the cotangent of
a sum is summed, of a mean averaged (so `pmean` of gradients differentiates to `pmean`),
all_gather and reduce_scatter transpose into each other, broadcast sums the cotangents onto the
root. The numpy reference is the group of one (a single process); with more processes the
backends run these ops through the process group (nnjit.backends.collective), never `ref`.
They are OPAQUE: kernel boundaries, never fused or folded.
"""
from __future__ import annotations

import numpy as np

from .. import prims as P
from ..errors import CompileError
from ..opdef import AttrSpec, OpDef, register
from ..ops import Kind, Op
from ..types import DType, TensorType
from .common import require, require_float, require_numeric

REDUCTIONS = ("sum", "mean", "max")

_GROUP = (AttrSpec("axis_name", "str"), AttrSpec("group_size", "int"))


def _check_group(attrs) -> int:
    n = attrs["group_size"]
    require(n >= 1, f"group_size must be >= 1, got {n}")
    require(bool(attrs["axis_name"]), "axis_name must not be empty")
    return n


def _all_reduce_shape(ts, attrs):
    _check_group(attrs)
    (t,) = ts
    red = attrs["reduce"]
    require(red in REDUCTIONS, f"reduce must be one of {', '.join(REDUCTIONS)}, got {red!r}")
    require_numeric(t)
    if red == "mean":
        require_float(t, "a mean all-reduce operand")
    return t


def _block_axis(t: TensorType, attrs) -> int:
    require(t.ndim >= 1, f"operand must have at least one dim, got {t}")
    axis = attrs["axis"]
    require(0 <= axis < t.ndim, f"axis {axis} is out of range for {t}")
    return axis


def _all_gather_shape(ts, attrs):
    n = _check_group(attrs)
    (t,) = ts
    axis = _block_axis(t, attrs)
    return t.with_shape(t.shape[:axis] + (t.shape[axis] * n,) + t.shape[axis + 1:])


def _reduce_scatter_shape(ts, attrs):
    n = _check_group(attrs)
    (t,) = ts
    require_numeric(t)
    axis = _block_axis(t, attrs)
    require(t.shape[axis] % n == 0, f"dim {axis} of {t} is not divisible by the group size {n}")
    return t.with_shape(t.shape[:axis] + (t.shape[axis] // n,) + t.shape[axis + 1:])


def _broadcast_shape(ts, attrs):
    n = _check_group(attrs)
    require(0 <= attrs["root"] < n, f"root {attrs['root']} is not a rank of a group of {n}")
    return ts[0]


def _axis_index_shape(ts, attrs):
    _check_group(attrs)
    return TensorType((), DType.I32)


def _group_of_one(name: str):
    """The reference: a single process is a group of one, where every collective is the
    identity on its operand (and its rank is 0)."""
    def ref(xs, attrs):
        if attrs["group_size"] != 1:
            raise CompileError(f"{name} over {attrs['group_size']} processes has no numpy "
                               f"reference: it runs through the process group (a backend)")
        if not xs:
            return np.zeros((), np.int32)
        return np.array(xs[0], copy=True)
    ref.__name__ = f"_{name}_ref"
    return ref


def _group(attrs) -> dict:
    return {"axis_name": attrs["axis_name"], "group_size": attrs["group_size"]}


def _all_reduce_vjp(xs, outs, cts, attrs):
    red, g = attrs["reduce"], _group(attrs)
    if red in ("sum", "mean"):
        return [P.all_reduce(cts[0], red, **g)]
    # max: the summed cotangent goes to the ranks (and elements) holding the maximum, split
    # evenly between ties across ranks, as the local max's VJP splits it.
    x = xs[0]
    mask = P.cast(P.eq(x, outs[0]), x.dtype)
    count = P.all_reduce(mask, "sum", **g)
    return [P.all_reduce(cts[0], "sum", **g) * mask / count]


def _all_gather_vjp(xs, outs, cts, attrs):
    return [P.reduce_scatter(cts[0], attrs["axis"], **_group(attrs))]


def _reduce_scatter_vjp(xs, outs, cts, attrs):
    return [P.all_gather(cts[0], attrs["axis"], **_group(attrs))]


def _broadcast_vjp(xs, outs, cts, attrs):
    g = _group(attrs)
    total = P.all_reduce(cts[0], "sum", **g)
    is_root = P.eq(P.axis_index(P.builder_of(total), **g), attrs["root"])
    return [P.where(is_root, total, 0.0)]


register(
    OpDef(Op.ALL_REDUCE, Kind.OPAQUE, 1, _all_reduce_shape, _group_of_one("all_reduce"),
          attrs=(AttrSpec("reduce", "str"),) + _GROUP, vjp=_all_reduce_vjp,
          doc="sum, mean or max of the operand over the processes of group `axis_name`"),
    OpDef(Op.ALL_GATHER, Kind.OPAQUE, 1, _all_gather_shape, _group_of_one("all_gather"),
          attrs=(AttrSpec("axis", "int", 0),) + _GROUP, vjp=_all_gather_vjp,
          doc="the processes' operands concatenated along `axis`, in rank order"),
    OpDef(Op.REDUCE_SCATTER, Kind.OPAQUE, 1, _reduce_scatter_shape,
          _group_of_one("reduce_scatter"), attrs=(AttrSpec("axis", "int", 0),) + _GROUP,
          vjp=_reduce_scatter_vjp,
          doc="the sum over the processes, split along `axis`: rank r keeps block r"),
    OpDef(Op.BROADCAST, Kind.OPAQUE, 1, _broadcast_shape, _group_of_one("broadcast"),
          attrs=(AttrSpec("root", "int", 0),) + _GROUP, vjp=_broadcast_vjp,
          doc="rank `root`'s operand on every process"),
    OpDef(Op.AXIS_INDEX, Kind.OPAQUE, 0, _axis_index_shape, _group_of_one("axis_index"),
          attrs=_GROUP, doc="this process's rank in group `axis_name` (i32), at run time"),
)
