"""The kernel-IR verifier: what every Program stage must satisfy, checked after each codegen
stage in debug mode (NNJIT_VERIFY=1, always on in the tests), like `verify` for graphs.

It checks that every buffer a kernel names exists and that its declared reads and writes cover
what its statements do; that no kernel stores into an input or a constant; that every variable
is defined before it is used (loop variables, lets, the GEMM epilogue's bindings) and every
Assign updates an accumulator of an enclosing scope; that constant indices are in bounds; that
aliases view memory inside their base; and the same for scan bodies.
"""
from __future__ import annotations

from .errors import VerifyError
from .kernel import (
    PACKED_KINDS,
    Assign,
    BufKind,
    Const,
    CopyKernel,
    HostKernel,
    GemmKernel,
    Let,
    Load,
    Loop,
    LoopKernel,
    Program,
    ScanKernel,
    Store,
    Var,
    children,
)


def verify_program(p: Program) -> Program:
    """Raise VerifyError naming the program, kernel and problem; return `p` unchanged."""
    bufs = {b.name: b for b in p.buffers}
    for b in p.buffers:
        if b.kind == BufKind.ALIAS:
            base = bufs.get(b.base)
            if base is None:
                _fail(p, None, f"alias {b.name} views unknown buffer {b.base}")
            if b.offset < 0 or b.offset + b.size > base.size:
                _fail(p, None, f"alias {b.name} [{b.offset}, {b.offset + b.size}) lies outside "
                               f"{base.name} ({base.size} elements)")
    for name in p.inputs + p.outputs:
        if name not in bufs:
            _fail(p, None, f"signature names unknown buffer {name}")
    for k in p.kernels:
        for name in tuple(k.reads) + tuple(k.writes):
            if name not in bufs:
                _fail(p, k, f"names unknown buffer {name}")
        for name in k.writes:
            if bufs[name].kind in (BufKind.INPUT, BufKind.CONST):
                _fail(p, k, f"writes {bufs[name].kind.value} buffer {name}")
        if isinstance(k, GemmKernel):
            _verify_packed(p, k, bufs)
        if isinstance(k, LoopKernel):
            _Scope(p, k, bufs).stmts(k.body, set(), set())
        elif isinstance(k, GemmKernel) and k.epilogue:
            bound = {"acc", "row", "col"} | {f"b{i}" for i in range(len(k.batch))}
            _Scope(p, k, bufs).stmts(k.epilogue, bound, set())
        elif isinstance(k, ScanKernel):
            verify_program(k.body)
        elif isinstance(k, CopyKernel):
            for name in (k.src_buf, k.dst_buf):
                if name not in bufs:
                    _fail(p, k, f"copies unknown buffer {name}")
        elif isinstance(k, HostKernel):
            _verify_host(p, k, bufs)
    return p


def _verify_packed(p: Program, k: GemmKernel, bufs) -> None:
    """A pre-packed operand is a whole buffer (a constant, or an input or temporary some
    kernel packs: see `PACKED_KINDS`) of exactly its packed size."""
    for which, view, packed, width in (("A", k.a, k.a_packed, k.m), ("B", k.b, k.b_packed, k.n)):
        if packed is None:
            continue
        buf = bufs.get(view.buf)
        if buf is None or buf.kind not in PACKED_KINDS:
            _fail(p, k, f"packed operand {which} must be a constant, input or temporary "
                        f"buffer, got {view.buf}")
        if buf.size != packed.size(k.k, width):
            _fail(p, k, f"packed operand {which} ({view.buf}, {buf.size} elements) must hold "
                        f"{packed.size(k.k, width)} for k={k.k} x {width}")


def _verify_host(p: Program, k: HostKernel, bufs) -> None:
    if len(k.shapes) != len(k.srcs) + len(k.dsts):
        _fail(p, k, f"has {len(k.shapes)} shapes for {len(k.srcs) + len(k.dsts)} buffers")
    for name, shape in zip(k.srcs + k.dsts, k.shapes):
        if name not in k.reads + k.writes:
            _fail(p, k, f"does not list its buffer {name} in its reads or writes")
        size = 1
        for d in shape:
            size *= d
        if name in bufs and max(size, 1) > bufs[name].size:
            _fail(p, k, f"sees {name} as {list(shape)}, larger than its {bufs[name].size} "
                        "elements")


def _fail(p: Program, k, msg: str):
    where = f"program {p.name}" + (f", kernel {k.name}" if k is not None else "")
    raise VerifyError(f"{where}: {msg}")


class _Scope:
    def __init__(self, p: Program, k, bufs):
        self.p, self.k, self.bufs = p, k, bufs
        self.reads, self.writes = set(k.reads), set(k.writes)
        self.seen: set[int] = set()
        self.keep: list = []

    def stmts(self, body, defined: set[str], accs: set[str]) -> None:
        defined, accs = set(defined), set(accs)
        for s in body:
            if isinstance(s, Loop):
                self.stmts(s.body, defined | {s.var}, accs)
            elif isinstance(s, Store):
                if s.buf not in self.writes:
                    _fail(self.p, self.k, f"stores to {s.buf}, which it does not declare")
                self.index(s.buf, s.index)
                self.expr(s.index, defined)
                self.expr(s.value, defined)
            elif isinstance(s, Let):
                self.expr(s.value, defined)
                defined.add(s.var.name)
                accs.add(s.var.name)
            elif isinstance(s, Assign):
                if s.var.name not in accs:
                    _fail(self.p, self.k, f"assigns {s.var.name}, which no enclosing let "
                                          "declares")
                self.expr(s.value, defined)

    def expr(self, e, defined: set[str]) -> None:
        if isinstance(e, Var):
            if e.name not in defined:
                _fail(self.p, self.k, f"uses {e.name} before it is defined")
            return
        key = (id(e), frozenset(defined))
        if id(e) in self.seen:
            return
        self.seen.add(id(e))
        self.keep.append(e)
        if isinstance(e, Load):
            if e.buf not in self.bufs:
                _fail(self.p, self.k, f"loads unknown buffer {e.buf}")
            if e.buf not in self.reads:
                _fail(self.p, self.k, f"loads {e.buf}, which it does not declare")
            self.index(e.buf, e.index)
        del key
        for c in children(e):
            self.expr(c, defined)

    def index(self, buf: str, idx) -> None:
        if isinstance(idx, Const) and not 0 <= int(idx.value) < max(self.bufs[buf].size, 1):
            _fail(self.p, self.k, f"index {idx.value} is outside {buf} "
                                  f"({self.bufs[buf].size} elements)")


__all__ = ["verify_program"]
