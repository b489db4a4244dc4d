"""Lowering collectives (issue 15), and `overlap_collectives`, the CPU schedule stage that lets
an all-reduce run while the kernels after it do.

In a group of one every collective is the identity, so it lowers to a copy (axis_index to the
constant 0) and no backend sees anything new. Across processes each becomes a `HostKernel`
(the runtime's step between native kernels); an all_reduce becomes a start and a wait:

    kernel k7_all_reduce_start(reads t5; writes t6): host all_reduce_start(...)
    kernel k8_all_reduce_wait(reads t5, t6; writes ): host all_reduce_wait(...)

`overlap_collectives` then moves each wait down to just before the first kernel that touches
either buffer, so the bucket's transfer overlaps the rest of the backward pass.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from ..ir import CompileError, DType, Node, Op
from ..ir.kernel import Buffer, BufKind, HostKernel, Program
from ..ir.opdef import set_rule
from .analysis import root_buffer
from .index import View


def _lower_collective(lw, n: Node) -> None:
    attrs = dict(n.attrs)
    if attrs["group_size"] == 1:
        _lower_identity(lw, n)
        return
    srcs = [lw.buffer_of(s) for s in n.srcs]
    dst = _contiguous_home(lw, n)
    shapes = tuple(s.shape for s in n.srcs) + (n.out.shape,)
    label = f"{n.op.value} at {n.loc}" if n.loc else n.op.value
    if n.op == Op.ALL_REDUCE:
        slot = len([k for k in lw.kernels if isinstance(k, HostKernel)])
        pair = tuple(sorted({**attrs, "slot": slot}.items()))
        (src,) = srcs
        lw.kernels.append(HostKernel(f"k{len(lw.kernels)}_all_reduce_start", "all_reduce_start",
                                     pair, (src,), (dst,), shapes, (src,), (dst,), label))
        lw.kernels.append(HostKernel(f"k{len(lw.kernels)}_all_reduce_wait", "all_reduce_wait",
                                     pair, (src,), (dst,), shapes, (src, dst), (), label))
        return
    lw.kernels.append(HostKernel(lw.kernel_name(n), n.op.value, tuple(sorted(attrs.items())),
                                 tuple(srcs), (dst,), shapes, tuple(srcs), (dst,), label))


def _contiguous_home(lw, n: Node) -> str:
    """The buffer the node's result is written to whole, from element 0."""
    view = lw.home(n.out)
    if view.offset != 0 or view.strides != View.contiguous("x", n.out.shape).strides:
        raise CompileError(f"{n.op.value}: its result home {view} is not a whole buffer")
    return view.buf


def _lower_identity(lw, n: Node) -> None:
    """A group of one: the result is the operand (axis_index: rank 0)."""
    if n.op == Op.AXIS_INDEX:
        name = lw.add_buffer(Buffer(lw.fresh("c"), DType.I32, 1, BufKind.CONST,
                                    value=np.zeros(1, np.int32)))
        lw.views[n.out] = View.contiguous(name, ())
        if n.out in lw.dest:
            lw.lower_copy(n.out, lw.dest[n.out])
        return
    src = n.srcs[0]
    lw.views[n.out] = lw.views[src] if src in lw.views else View.contiguous(
        lw.buffer_of(src), src.shape)
    if n.out in lw.dest:
        lw.lower_copy(n.out, lw.dest[n.out])


for _op in (Op.ALL_REDUCE, Op.ALL_GATHER, Op.REDUCE_SCATTER, Op.BROADCAST, Op.AXIS_INDEX):
    set_rule(_op, lower=_lower_collective)


def overlap_collectives(program: Program) -> Program:
    """`program` with each all_reduce wait moved down to just before the first later kernel
    that reads or writes its source or result (or to the end): what runs in between overlaps
    the transfer. Results are unchanged: nothing moved past touches those buffers."""
    kernels = list(program.kernels)
    moved = False
    for k in [k for k in kernels if isinstance(k, HostKernel) and k.op == "all_reduce_wait"]:
        i = kernels.index(k)
        j = i + 1
        while j < len(kernels) and not _touches(program, kernels[j], k.srcs + k.dsts):
            j += 1
        if j > i + 1:
            kernels.insert(j - 1, kernels.pop(i))
            moved = True
    return dataclasses.replace(program, kernels=tuple(kernels)) if moved else program


def _touches(program: Program, k, names) -> bool:
    """Whether kernel `k` may touch any of buffers `names`. NOTE: this stage runs before
    memory planning, so temporaries are told apart by name (aliases by their base); two
    inputs may be one array passed twice."""
    bufs = {b.name: b for b in program.buffers}
    roots = {root_buffer(program, n) for n in names}
    inputs = any(bufs[r].kind == BufKind.INPUT for r in roots)
    for used in tuple(k.reads) + tuple(k.writes):
        r = root_buffer(program, used)
        if r in roots or (inputs and bufs[r].kind == BufKind.INPUT):
            return True
    return False
