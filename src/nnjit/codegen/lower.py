"""`lower_graph`: a (fused) Graph -> a kernel-IR Program, once for every native backend.

Each top-level node becomes one kernel (a `fusion` node's whole body becomes one kernel), after
deciding where every value lives:
  graph inputs   -> INPUT buffers (the caller's arrays)
  graph outputs  -> OUTPUT buffers, written directly by the kernel that produces them
  array consts   -> CONST buffers; single-element consts are inlined into expressions
  reshape        -> an ALIAS of its operand's buffer (no kernel) when the layout allows
  everything else-> TEMP buffers, placed in the arena by the memory planner
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from ..ir import CompileError, DType, Graph, Node, Op, TensorType, Value
from ..ir.defs.movement import index_site
from ..ir.kernel import (
    STATUS_BUFFER,
    Buffer,
    BufKind,
    CopyKernel,
    IndexSite,
    Program,
    ScanKernel,
)
from ..ir.opdef import kind_of, opdef, set_rule
from ..ir.ops import Kind
from . import collective, contraction, window  # noqa: F401  (register their rules on the OpDefs)
from .checks import check_loops
from .index import View
from .loops import GroupLowering, make_loop_kernel


def lower(graph: Graph, name: str | None = None) -> Program:
    """`graph` (fused) as a kernel-IR Program whose temporaries are not placed yet (scan bodies
    included): the `plan_memory` stage places them."""
    return _Lowering(graph, name or graph.name).run()


def kernel_origins(graph: Graph) -> dict[str, int]:
    """Which top-level node of `graph` each kernel `lower(graph)` emits comes from: kernel name
    -> index in graph.nodes (the copies of results at the end have none). Pictures and profiles
    use it to put a program's kernels under the graph's."""
    low = _Lowering(graph, graph.name)
    low.run()
    return dict(low.origins)


class _Lowering:
    def __init__(self, graph: Graph, name: str, sites: list[IndexSite] | None = None):
        self.graph = graph
        self.name = name
        self.sites = [] if sites is None else sites   # shared with scan bodies
        self.buffers: dict[str, Buffer] = {}
        self.kernels: list = []
        self.views: dict[Value, View] = {}     # where each materialized value lives
        self.dest: dict[Value, View] = {}      # pre-assigned homes (graph outputs)
        self._pending: dict[Value, View] = {}  # homes of the node being lowered
        self._n = 0
        self.origins: dict[str, int] = {}      # kernel name -> index of its graph node

    # -- buffers ----------------------------------------------------------------------------
    def fresh(self, prefix: str) -> str:
        self._n += 1
        return f"{prefix}{self._n}"

    def add_buffer(self, buf: Buffer) -> str:
        self.buffers[buf.name] = buf
        return buf.name

    def temp(self, t: TensorType, prefix: str = "t") -> View:
        name = self.add_buffer(Buffer(self.fresh(prefix), t.dtype, max(t.size, 1), BufKind.TEMP))
        return View.contiguous(name, t.shape)

    def home(self, v: Value) -> View:
        """Where node result `v` is written: its output buffer, or a new temporary. It becomes
        visible to later nodes once the current node's kernels are emitted."""
        view = self._pending.get(v) or self.dest.get(v) or self.temp(v.type)
        self._pending[v] = view
        return view

    def kernel_name(self, n: Node) -> str:
        return f"k{len(self.kernels)}_{n.op.value}"

    # -- driver ------------------------------------------------------------------------------
    def run(self) -> Program:
        g = self.graph
        inputs = []
        for i, v in enumerate(g.inputs):
            name = self.add_buffer(Buffer(f"in{i}", v.type.dtype, max(v.type.size, 1),
                                          BufKind.INPUT, index=i))
            self.views[v] = View.contiguous(name, v.shape)
            inputs.append(name)
        outputs, copies = self._claim_outputs()
        self.outputs = set(outputs)
        for i, n in enumerate(g.nodes):
            first = len(self.kernels)
            self.lower_node(n)
            self.origins.update((k.name, i) for k in self.kernels[first:])
            self.views.update(self._pending)
            self._pending.clear()
        for src, dst in copies:
            view = self.views[src]
            self.kernels.append(CopyKernel(f"k{len(self.kernels)}_copy", view.buf, dst,
                                           src.type.size, src.type.dtype, (view.buf,), (dst,),
                                           "result copy"))
        return Program(self.name, tuple(self.buffers.values()), tuple(self.kernels),
                       tuple(inputs), tuple(outputs), 0, tuple(self.sites))

    def _claim_outputs(self) -> tuple[list[str], list[tuple[Value, str]]]:
        """Output buffers; each output is written in place by its producer when possible,
        otherwise copied at the end (inputs, constants, repeated outputs)."""
        outputs, copies = [], []
        produced = {o for n in self.graph.nodes for o in n.outs}
        for k, v in enumerate(self.graph.outputs):
            name = self.add_buffer(Buffer(f"out{k}", v.type.dtype, max(v.type.size, 1),
                                          BufKind.OUTPUT, index=k))
            outputs.append(name)
            base = v
            while base.node.op == Op.RESHAPE and base in produced:
                base = base.node.srcs[0]
            if (base in produced and base.node.op != Op.CONST and base not in self.dest
                    and (base is v or View.contiguous("x", base.shape).reshape(v.shape))):
                self.dest[base] = View.contiguous(name, base.shape)
                if base is not v:
                    self.dest[v] = View.contiguous(name, v.shape)
            else:
                copies.append((v, name))
        return outputs, copies

    def lower_node(self, n: Node) -> None:
        """Opaque nodes (and constants) lower themselves through their OpDef's hook; a reshape
        of a materialized value becomes an alias; anything else is a kernel of its own."""
        d = opdef(n.op)
        if n.op == Op.RESHAPE and n.srcs[0] in self.views:
            alias = self.views[n.srcs[0]].reshape(n.type.shape)
            want = self.dest.get(n.out)
            if alias is not None and (want is None or want.buf == alias.buf):
                self.views[n.out] = alias
                return
        if d.kind == Kind.OPAQUE or n.op == Op.CONST:
            d.lower(self, n)
        else:
            self.lower_group(n, [n])

    def _check_index(self, n: Node) -> None:
        """The indices alias their operand; a kernel before their users checks them."""
        src = n.srcs[0]
        buf = self.buffer_of(src)
        self.views[n.out] = View.contiguous(buf, src.shape)
        if src.type.size:
            self.sites.append(index_site(n.attrs, str(n.loc) if n.loc else ""))
            if STATUS_BUFFER not in self.buffers:
                self.add_buffer(Buffer(STATUS_BUFFER, DType.I64, 2, BufKind.STATUS))
            body = check_loops(buf, src.type.dtype, src.type.size, self.sites[-1],
                               len(self.sites))
            label = f"check_index at {n.loc}" if n.loc else "check_index"
            self.kernels.append(make_loop_kernel(self.kernel_name(n), body, label, self.buffers))
        if n.out in self.dest:
            self.lower_copy(n.out, self.dest[n.out])

    def _const(self, n: Node) -> None:
        arr = n.attrs["value"]
        if arr.size == 1 and n.out not in self.dest and n.out not in self.graph.outputs:
            return  # inlined into every expression that uses it (results are copied out)
        name = self.add_buffer(Buffer(self.fresh("c"), n.type.dtype, max(arr.size, 1),
                                      BufKind.CONST, value=np.ascontiguousarray(arr)))
        view = View.contiguous(name, n.type.shape)
        if n.out in self.dest:
            self.views[n.out] = view
            self.lower_copy(n.out, self.dest[n.out])
        else:
            self.views[n.out] = view

    def lower_copy(self, v: Value, dst: View) -> None:
        src = self.views[v]
        self.kernels.append(CopyKernel(f"k{len(self.kernels)}_copy", src.buf, dst.buf,
                                       v.type.size, v.type.dtype, (src.buf,), (dst.buf,)))
        self.views[v] = dst

    def _fusion(self, n: Node) -> None:
        body: Graph = n.attrs["body"]
        # Bind the body's inputs to the operands' buffers and its outputs to the node's homes.
        inner_views = {bi: self.views[s] for bi, s in zip(body.inputs, n.srcs)}
        outer = dict(self.views)
        self.views.update(inner_views)
        for bo, o in zip(body.outputs, n.outs):
            if bo in self.dest or bo in inner_views:
                continue
            if o in self.dest:
                self.dest[bo] = self.dest[o]
        roots = [bo for bo in body.outputs if bo not in inner_views]
        self.lower_group(n, list(body.nodes), roots=roots, node_label=n)
        for bo, o in zip(body.outputs, n.outs):
            outer[o] = self._pending.get(bo) or self.views[bo]
        self._pending.clear()
        self.views = outer

    # -- groups -----------------------------------------------------------------------------
    def lower_group(self, n: Node, nodes: Sequence[Node], roots: Sequence[Value] | None = None,
                    node_label: Node | None = None) -> None:
        """One kernel for `nodes`, materializing `roots` (default: the results of `n`)."""
        roots = list(roots) if roots is not None else list(n.outs)
        label = node_label or n
        name = self.kernel_name(label)
        # Every user line the kernel computes, in program order (the profile and the kernel
        # listing show them).
        lines = dict.fromkeys(str(m.loc) for m in (list(nodes) or [label]) if m.loc)
        src = f"{label.op.value} at {'; '.join(lines)}" if lines else label.op.value
        anchor = next((m for m in nodes if kind_of(m.op) in (Kind.CONTRACTION, Kind.WINDOW)),
                      None)
        if anchor is not None:   # a template computes the other members inline
            others = [m for m in nodes if m is not anchor]
            self.kernels.extend(opdef(anchor.op).lower(self, anchor, others, roots, name, src))
            return
        stores = [(v, self.home(v)) for v in roots]
        stores = [(v, d) for v, d in stores if v.type.size > 0]   # empty results need no code
        if not stores:
            return
        glow = GroupLowering(nodes, self.visible_views(), name)
        reds = [m for m in nodes if kind_of(m.op) == Kind.REDUCE]
        if reds:
            columns = glow.column_reduction(stores)
            if columns is not None:
                red = reds[0]
                scratch = self.temp(TensorType((columns[1],), red.type.dtype), "colacc")
                body = glow.column_kernel(stores, scratch)
            else:
                body = glow.reduce_kernel(stores)
        else:
            shapes = {v.shape for v in roots}
            body = []
            for k, shape in enumerate(sorted(shapes)):
                body += glow.map_loops(shape, [(v, d) for v, d in stores if v.shape == shape],
                                       prefix=f"i{k}_" if len(shapes) > 1 else "i")
        self.kernels.append(make_loop_kernel(name, body, src, self.buffers))

    def visible_views(self) -> dict[Value, View]:
        return self.views

    # -- scan --------------------------------------------------------------------------------
    def _scan(self, n: Node) -> None:
        body: Graph = n.attrs["body"]
        nk, nc = n.attrs["num_carry"], n.attrs["num_consts"]
        srcs = list(n.srcs)
        carry, xs, consts = srcs[:nk], srcs[nk:len(srcs) - nc], srcs[len(srcs) - nc:]
        sub = _Lowering(body, f"{self.name}_{self.fresh('scan')}", self.sites).run()
        carry_bufs = [self.temp(v.type, "carry").buf for v in carry]
        next_bufs = [self.temp(v.type, "next").buf for v in carry]
        # Sized when the body is planned (see memory_plan.plan_program).
        arena = self.add_buffer(Buffer(self.fresh("scanarena"), _byte_dtype(), 1, BufKind.TEMP))
        finals = [self.home(o).buf for o in n.outs[:nk]]
        ys = [self.home(o).buf for o in n.outs[nk:]]
        ins = [self.buffer_of(v) for v in carry]
        xb = [self.buffer_of(v) for v in xs]
        cb = [self.buffer_of(v) for v in consts]
        # An index check in the body writes the status word of the whole program.
        status = [STATUS_BUFFER] if any(b.kind == BufKind.STATUS for b in sub.buffers) else []
        if status and STATUS_BUFFER not in self.buffers:
            self.add_buffer(Buffer(STATUS_BUFFER, DType.I64, 2, BufKind.STATUS))
        reads = tuple(dict.fromkeys(ins + xb + cb + carry_bufs + next_bufs + [arena] + status))
        writes = tuple(dict.fromkeys(carry_bufs + next_bufs + finals + ys + [arena] + status))
        self.kernels.append(ScanKernel(
            self.kernel_name(n), n.attrs["length"], n.attrs["reverse"], sub, tuple(ins),
            tuple(carry_bufs), tuple(next_bufs), tuple(finals), tuple(xb), tuple(ys), tuple(cb),
            arena, reads, writes, f"scan at {n.loc}" if n.loc else "scan"))

    def buffer_of(self, v: Value) -> str:
        """The buffer holding `v` contiguously from its start (copied into one if needed)."""
        if v not in self.views:
            if v.node.op != Op.CONST:
                raise CompileError(f"{self.name}: {v.node.op.value} result is not materialized")
            self._const_buffer(v)
        view = self.views[v]
        if view.offset == 0 and view.strides == View.contiguous("x", v.shape).strides:
            return view.buf
        t = self.temp(v.type)
        glow = GroupLowering([], {v: view}, "relayout")
        body = glow.map_loops(v.shape, [(v, t)])
        self.kernels.append(make_loop_kernel(f"k{len(self.kernels)}_relayout", body,
                                             "relayout", self.buffers))
        self.views[v] = t
        return t.buf

    def _const_buffer(self, v: Value) -> None:
        arr = v.node.attrs["value"]
        name = self.add_buffer(Buffer(self.fresh("c"), v.type.dtype, max(arr.size, 1),
                                      BufKind.CONST, value=np.ascontiguousarray(arr)))
        self.views[v] = View.contiguous(name, v.shape)


def _byte_dtype():
    return DType.BOOL   # 1-byte elements: a raw byte region


# The node hooks of the ops the driver lowers itself (constants, checks, control).
for _op, _hook in {Op.CONST: _Lowering._const, Op.CHECK_INDEX: _Lowering._check_index,
                   Op.SCAN: _Lowering._scan, Op.FUSION: _Lowering._fusion}.items():
    set_rule(_op, lower=_hook)
