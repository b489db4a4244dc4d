"""Memory planning: where every temporary buffer of a lowered program lives in the arena.

`plan_memory(program)` computes each TEMP buffer's live interval over the kernel sequence
(first kernel that writes it to last kernel that reads it) and gives it a 64-byte aligned
offset in one arena. With `reuse=False` every buffer gets its own slot (the no-reuse baseline).
The plan reports the arena size, the no-reuse total and the liveness lower bound, and
`check_plan` proves that no two buffers live at the same time overlap.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from ..ir import CompileError
from ..ir.kernel import BufKind, Buffer, Program

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


@dataclass(frozen=True)
class MemoryPlan:
    buffers: tuple[BufferPlan, ...]
    arena_bytes: int
    no_reuse_bytes: int
    lower_bound_bytes: int
    num_kernels: int

    def table(self) -> str:
        rows = [f"{'buffer':<16} {'bytes':>12} {'live':>11} {'offset':>12}"]
        for b in sorted(self.buffers, key=lambda b: (b.offset, b.start)):
            rows.append(f"{b.name:<16} {b.nbytes:>12} {f'{b.start}..{b.end}':>11} "
                        f"{b.offset:>12}")
        rows.append(f"arena {self.arena_bytes} B; liveness lower bound "
                    f"{self.lower_bound_bytes} B; no reuse {self.no_reuse_bytes} B")
        return "\n".join(rows)


def live_intervals(program: Program) -> dict[str, tuple[int, int]]:
    """(first, last) kernel index touching each TEMP buffer (aliases count for their base)."""
    base = {b.name: _root(program, b) for b in program.buffers}
    iv: dict[str, tuple[int, int]] = {}
    for k, kern in enumerate(program.kernels):
        for name in tuple(kern.reads) + tuple(kern.writes):
            r = base.get(name, name)
            lo, hi = iv.get(r, (k, k))
            iv[r] = (min(lo, k), max(hi, k))
    temps = {b.name for b in program.buffers if b.kind == BufKind.TEMP}
    return {n: iv.get(n, (0, 0)) for n in temps}


def _root(program: Program, b: Buffer) -> str:
    while b.kind == BufKind.ALIAS:
        b = program.buffer(b.base)
    return b.name


def plan_memory(program: Program, reuse: bool = False) -> tuple[Program, MemoryPlan]:
    """Assign arena offsets to the TEMP buffers of `program` (see module docstring)."""
    iv = live_intervals(program)
    temps = [b for b in program.buffers if b.kind == BufKind.TEMP]
    plans: list[BufferPlan] = []
    offset = 0
    for b in temps:
        lo, hi = iv[b.name]
        size = _align(max(b.nbytes, 1))
        plans.append(BufferPlan(b.name, size, lo, hi, offset))
        offset += size
    if reuse:
        raise CompileError("memory reuse planning is not implemented yet")
    plan = MemoryPlan(tuple(plans), offset, offset, _lower_bound(plans), len(program.kernels))
    check_plan(plan)
    offsets = {p.name: p.offset for p in plans}
    bufs = tuple(dataclasses.replace(b, offset=offsets[b.name]) if b.name in offsets else b
                 for b in program.buffers)
    return dataclasses.replace(program, buffers=bufs, arena_bytes=plan.arena_bytes), plan


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
            if a.start <= b.end and b.start <= a.end:
                raise CompileError(f"memory plan overlap: {a.name} [{a.offset}, "
                                   f"{a.offset + a.nbytes}) live {a.start}..{a.end} and "
                                   f"{b.name} [{b.offset}, {b.offset + b.nbytes}) live "
                                   f"{b.start}..{b.end}")
