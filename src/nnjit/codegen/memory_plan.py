"""Memory planning: where every temporary buffer of a lowered program lives in the arena.

`plan_memory(program)` computes each TEMP buffer's live interval over the kernel sequence
(first kernel that writes it to last kernel that reads it) and gives it a 64-byte aligned
offset in one arena. With `reuse=False` every buffer gets its own slot (the no-reuse baseline).
Buffers in one in-place class (an elementwise result written over its dying operand) share a
slot. The plan reports the arena size, the no-reuse total and the liveness lower bound (over
the in-place classes), and `check_plan` proves that no two buffers live at the same time
overlap unless they are one in-place class.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from ..ir import CompileError
from ..ir.kernel import BufKind, GemmKernel, Load, LoopKernel, Program, ScanKernel, Store, children
from .analysis import root_buffer

ALIGN = 64


def _align(n: int) -> int:
    return (n + ALIGN - 1) // ALIGN * ALIGN


@dataclass(frozen=True)
class BufferPlan:
    name: str
    nbytes: int
    start: int          # index of the first kernel that touches it
    end: int            # index of the last kernel that touches it (inclusive)
    offset: int
    klass: str = ""     # in-place class: members hand the same bytes over at one kernel
    by: str = ""        # the kernel that first writes it and where that came from (provenance)


@dataclass(frozen=True)
class MemoryPlan:
    """Where the temporaries live (`buffers`, `arena_bytes`) and, once a backend has compiled
    the program, everything else its executable allocates once (`extras`: the GEMM packing
    workspace, the status word, constants and staging slots on cuda), by purpose. `total_bytes`
    is exactly what the executable allocates; `results_bytes` is what each call returns in
    fresh arrays (none with `out=`, less with donated inputs)."""

    buffers: tuple[BufferPlan, ...]
    arena_bytes: int
    no_reuse_bytes: int
    lower_bound_bytes: int
    num_kernels: int
    donated: tuple[tuple[str, str], ...] = ()   # (output, donated input it is written into)
    extras: tuple[tuple[str, int], ...] = ()    # (purpose, bytes) beyond the temporaries
    results_bytes: int = 0

    @property
    def total_bytes(self) -> int:
        return self.arena_bytes + sum(n for _, n in self.extras)

    def with_extras(self, extras, results_bytes: int) -> "MemoryPlan":
        """This plan with what a backend allocates besides the temporaries (bytes > 0 kept)."""
        return dataclasses.replace(self, extras=tuple((p, n) for p, n in extras if n),
                                   results_bytes=results_bytes)

    def table(self) -> str:
        rows = [f"{'buffer':<16} {'bytes':>12} {'live':>11} {'offset':>12}  written by"]
        for b in sorted(self.buffers, key=lambda b: (b.offset, b.start)):
            by = b.by if len(b.by) <= 72 else b.by[:69] + "..."
            rows.append(f"{b.name:<16} {b.nbytes:>12} {f'{b.start}..{b.end}':>11} "
                        f"{b.offset:>12}  {by}".rstrip())
        rows.append(f"temporaries {self.arena_bytes} B; liveness lower bound "
                    f"{self.lower_bound_bytes} B; no reuse {self.no_reuse_bytes} B")
        for purpose, n in self.extras:
            rows.append(f"+ {purpose} {n} B")
        rows.append(f"arena {self.total_bytes} B allocated once; results {self.results_bytes} B "
                    "per call")
        return "\n".join(rows)


def _writers(program: Program) -> dict[str, str]:
    """Each buffer's first writing kernel, with the graph nodes (user lines, module scopes) it
    came from: what the memory table shows so a buffer can be traced to the model."""
    base = {b.name: root_buffer(program, b.name) for b in program.buffers}
    out: dict[str, str] = {}
    for kern in program.kernels:
        for name in kern.writes:
            src = getattr(kern, "src", "")
            out.setdefault(base.get(name, name), f"{kern.name}: {src}" if src else kern.name)
    return out


def live_intervals(program: Program) -> dict[str, tuple[int, int]]:
    """(first, last) kernel index touching each TEMP buffer (aliases count for their base)."""
    base = {b.name: root_buffer(program, b.name) for b in program.buffers}
    iv: dict[str, tuple[int, int]] = {}
    for k, kern in enumerate(program.kernels):
        for name in tuple(kern.reads) + tuple(kern.writes):
            r = base.get(name, name)
            lo, hi = iv.get(r, (k, k))
            iv[r] = (min(lo, k), max(hi, k))
    temps = {b.name for b in program.buffers if b.kind == BufKind.TEMP}
    return {n: iv.get(n, (0, 0)) for n in temps}


def plan_program(program: Program, reuse: bool = True, donate: tuple[int, ...] = ()
                 ) -> Program:
    """The `plan_memory` stage: `program` with every temporary placed (scan bodies first, each
    in its own arena, whose size then sizes the scan's arena buffer) and its `plan` attached."""
    program = _plan_scan_bodies(program, reuse)
    placed, plan = plan_memory(program, reuse=reuse, donate=donate)
    return dataclasses.replace(placed, plan=plan)


def _plan_scan_bodies(program: Program, reuse: bool) -> Program:
    kernels, sizes = [], {}
    for k in program.kernels:
        if isinstance(k, ScanKernel):
            body = plan_program(k.body, reuse)
            sizes[k.arena_buf] = max(body.arena_bytes, 1)
            k = dataclasses.replace(k, body=body)
        kernels.append(k)
    if not sizes:
        return program
    bufs = tuple(dataclasses.replace(b, size=sizes[b.name]) if b.name in sizes else b
                 for b in program.buffers)
    return dataclasses.replace(program, buffers=bufs, kernels=tuple(kernels))


def plan_memory(program: Program, reuse: bool = True, donate: tuple[int, ...] = ()
                ) -> tuple[Program, MemoryPlan]:
    """Assign arena offsets to the TEMP buffers of `program` (see module docstring).

    With `reuse`, buffers whose lifetimes do not overlap share memory (best fit, largest
    first), and a kernel that reads a buffer for the last time at the very index it writes a
    same-sized result runs in place. Inputs listed in `donate` may likewise receive the result
    of the kernel that consumes them last: those outputs are written into the caller's array."""
    iv = live_intervals(program)
    temps = [b for b in program.buffers if b.kind == BufKind.TEMP]
    sizes = {b.name: _align(max(b.nbytes, 1)) for b in temps}
    classes = _inplace_classes(program, iv, sizes) if reuse else {b.name: b.name for b in temps}
    members: dict[str, list[str]] = {}
    for name in sizes:
        members.setdefault(classes[name], []).append(name)
    spans = {root: (min(iv[m][0] for m in ms), max(iv[m][1] for m in ms),
                    max(sizes[m] for m in ms)) for root, ms in members.items()}
    offsets = _best_fit(spans) if reuse else _sequential(spans)
    writers = _writers(program)
    plans = [BufferPlan(name, sizes[name], *iv[name], offsets[classes[name]], classes[name],
                        writers.get(name, ""))
             for name in sizes]
    arena = max((offsets[r] + spans[r][2] for r in spans), default=0)
    plan = MemoryPlan(tuple(plans), arena, sum(sizes.values()),
                      _lower_bound([BufferPlan(r, sz, lo, hi, 0)
                                    for r, (lo, hi, sz) in spans.items()]),
                      len(program.kernels), _donations(program, donate))
    check_plan(plan)
    offs = {p.name: p.offset for p in plans}
    donated = dict(plan.donated)
    bufs = tuple(dataclasses.replace(b, offset=offs[b.name]) if b.name in offs else
                 dataclasses.replace(b, base=donated[b.name]) if b.name in donated else b
                 for b in program.buffers)
    return dataclasses.replace(program, buffers=bufs, arena_bytes=plan.arena_bytes), plan


def _sequential(spans) -> dict[str, int]:
    offsets, at = {}, 0
    for root, (_, _, size) in spans.items():
        offsets[root] = at
        at += size
    return offsets


def _best_fit(spans: dict[str, tuple[int, int, int]]) -> dict[str, int]:
    """Largest first; each buffer goes into the smallest gap among the buffers live at the same
    time that fits it (or above them all)."""
    placed: list[tuple[int, int, int, int]] = []   # (offset, size, start, end)
    offsets: dict[str, int] = {}
    for root in sorted(spans, key=lambda r: (-spans[r][2], spans[r][0], r)):
        lo, hi, size = spans[root]
        busy = sorted((o, o + s) for o, s, a, b in placed if a <= hi and lo <= b)
        best, best_gap, at = None, None, 0
        for start, end in busy:
            gap = start - at
            if gap >= size and (best_gap is None or gap < best_gap):
                best, best_gap = at, gap
            at = max(at, end)
        offsets[root] = best if best is not None else at
        placed.append((offsets[root], size, lo, hi))
    return offsets


def inplace_pairs(kernel) -> list[tuple[str, str]]:
    """(src, dst) buffer pairs a loop kernel may run in place: its only store writes dst at the
    same index expression every load of src uses, so each element of src is read in the
    iteration that overwrites it, before the store."""
    if isinstance(kernel, GemmKernel):
        # The epilogue runs element by element over the finished C: the same rule applies to
        # its statements, as long as neither buffer is C itself, and src is not an operand
        # (other blocks may still be loading it while this block's epilogue writes).
        pairs = _pairs(kernel.epilogue, Load, Store, children) if kernel.epilogue else []
        busy = {kernel.c.buf, kernel.a.buf, kernel.b.buf}
        return [(s, d) for s, d in pairs if s not in busy and d not in busy]
    if not isinstance(kernel, LoopKernel):
        return []
    return _pairs(kernel.body, Load, Store, children)


def _pairs(body, Load, Store, children) -> list[tuple[str, str]]:
    """In-place pairs of one loop body: every store writes at the same index expression E, in
    one statement list after every value is computed (see lowering's `store_all`), and src is
    loaded only at E."""
    stores, loads = [], {}
    tail_ok = [True]

    def visit_expr(e):
        if isinstance(e, Load):
            loads.setdefault(e.buf, set()).add(e.index)
        for c in children(e):
            visit_expr(c)

    def visit(stmts):
        seen_store = False
        for s in stmts:
            if hasattr(s, "body"):
                tail_ok[0] &= not seen_store
                visit(s.body)
                continue
            if isinstance(s, Store):
                seen_store = True
                stores.append(s)
                visit_expr(s.index)
            elif seen_store:
                tail_ok[0] = False      # a value computed after a store may read stale memory
            visit_expr(s.value)

    visit(body)
    if not stores or not tail_ok[0] or len({s.index for s in stores}) != 1:
        return []
    dsts = [s.buf for s in stores]
    if len(set(dsts)) != len(dsts):
        return []
    index = stores[0].index
    return [(src, dst) for src, idx in loads.items() if src not in dsts and idx == {index}
            for dst in dsts]


def _inplace_classes(program: Program, iv, sizes) -> dict[str, str]:
    """In-place classes of TEMP buffers: a result computed in place joins its operand's."""
    # Each class is a chain of buffers handing one slot over, oldest first: a result may only
    # take over its operand's slot when that operand is the chain's newest member.
    klass = {n: n for n in sizes}
    tail = {n: n for n in sizes}
    itemsize = {b.name: b.dtype.itemsize for b in program.buffers}
    roots = {b.name: root_buffer(program, b.name) for b in program.buffers}
    for k, kern in enumerate(program.kernels):
        for src, dst in inplace_pairs(kern):
            if _read_through_alias(kern, src, roots):
                continue
            if (src in sizes and dst in sizes and iv[src][1] == k and iv[dst][0] == k
                    and sizes[dst] <= sizes[src] and itemsize[src] == itemsize[dst]
                    and klass[dst] == dst and tail[dst] == dst and tail[klass[src]] == src):
                root = klass[src]
                klass[dst] = root
                tail[root] = dst
    return klass


def _donations(program: Program, donate: tuple[int, ...]) -> tuple[tuple[str, str], ...]:
    """(output, input) pairs: outputs computed in place over a donated input's array."""
    if not donate:
        return ()
    bufs = {b.name: b for b in program.buffers}
    donated = {b.name for b in program.buffers if b.kind == BufKind.INPUT and b.index in donate}
    # Reads through an alias (a reshape of the input) count as reads of the input itself.
    root = {b.name: root_buffer(program, b.name) for b in program.buffers}
    last_read: dict[str, int] = {}
    for k, kern in enumerate(program.kernels):
        for name in kern.reads:
            last_read[root.get(name, name)] = k
    out, used = [], set()
    for k, kern in enumerate(program.kernels):
        # Prefer giving input i's memory to result i: a training step returns its parameters
        # in the order it takes them, so the caller's arrays keep their roles.
        pairs = sorted(inplace_pairs(kern),
                       key=lambda p: bufs[p[1]].index != bufs[p[0]].index)
        for src, dst in pairs:
            if _read_through_alias(kern, src, root):
                continue
            if (src in donated and src not in used and last_read.get(src) == k
                    and bufs[dst].kind == BufKind.OUTPUT and bufs[dst].nbytes == bufs[src].nbytes
                    and bufs[dst].dtype == bufs[src].dtype
                    and not any(dst == o for o, _ in out)):
                out.append((dst, src))
                used.add(src)
    return tuple(out)


def _read_through_alias(kernel, src: str, root: dict[str, str]) -> bool:
    """Whether `kernel` also reads `src`'s memory under another name (a reshape), at indices
    the in-place analysis of `src` did not see."""
    reads = set(kernel.reads) | {getattr(kernel, m).buf for m in ("a", "b") if hasattr(kernel, m)}
    return any(n != src and root.get(n, n) == root.get(src, src) for n in reads)


def _lower_bound(plans: list[BufferPlan]) -> int:
    """The largest total size of buffers live at one kernel: no plan can beat it."""
    best = 0
    for k in {p.start for p in plans}:
        best = max(best, sum(p.nbytes for p in plans if p.start <= k <= p.end))
    return best


def check_plan(plan: MemoryPlan) -> None:
    """Raise CompileError if two buffers live at the same time share arena bytes."""
    ps = sorted(plan.buffers, key=lambda p: p.offset)
    for i, a in enumerate(ps):
        if a.offset % ALIGN or a.offset + a.nbytes > plan.arena_bytes:
            raise CompileError(f"buffer {a.name} at {a.offset}+{a.nbytes} is misaligned or "
                               f"outside the arena of {plan.arena_bytes} B")
        for b in ps[i + 1:]:
            if b.offset >= a.offset + a.nbytes:
                break
            handoff = a.klass and a.klass == b.klass and (a.end == b.start or b.end == a.start)
            if a.start <= b.end and b.start <= a.end and not handoff:
                raise CompileError(f"memory plan overlap: {a.name} [{a.offset}, "
                                   f"{a.offset + a.nbytes}) live {a.start}..{a.end} and "
                                   f"{b.name} [{b.offset}, {b.offset + b.nbytes}) live "
                                   f"{b.start}..{b.end}")
