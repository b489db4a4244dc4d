"""The codegen stages, in order, as named Program -> Program functions the pass manager runs
after the graph passes (so NNJIT_DUMP and NNJIT_VERIFY see each Program too):

    lower          the fused Graph as a kernel-IR Program (nnjit.codegen.lower)
    <schedule>     the target's transforms (CPU: split_loop_ranges, split_full_reductions,
                   block_sums, overlap_collectives, prepack_constants, pack_scan_operands;
                   GPU: column block_sums)
    plan_memory    every temporary placed in one arena (scan bodies first)
    <mapping>      the target's mapping of the placed program (GPU: inline_operands,
                   map_to_gpu: grid/block loops, barriers, shared memory)
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Callable, Sequence

from ..ir import Graph
from ..ir.kernel import Program
from .lower import lower
from .memory_plan import MemoryPlan, plan_program

Stage = tuple[str, Callable]

#: Every codegen stage name some backend runs (what NNJIT_DUMP may name).
STAGE_NAMES = ("lower", "split_loop_ranges", "split_full_reductions", "block_sums",
               "overlap_collectives", "prepack_constants", "pack_scan_operands", "plan_memory",
               "inline_operands", "map_to_gpu")


def program_stages(schedule: Sequence[Stage] = (), donate: tuple[int, ...] = (),
                   reuse: bool = True, mapping: Sequence[Stage] = ()) -> list[Stage]:
    """`lower`, the target's `schedule`, `plan_memory`, then the target's `mapping` (`reuse`
    shares memory between buffers whose lifetimes do not overlap; `donate`: the inputs
    results may be written into)."""
    plan = functools.partial(plan_program, reuse=reuse, donate=tuple(donate))
    return [("lower", lower), *schedule, ("plan_memory", plan), *mapping]


@dataclasses.dataclass
class Lowered:
    program: Program
    plan: MemoryPlan


def lower_graph(graph: Graph, name: str | None = None, reuse: bool = True,
                donate: tuple[int, ...] = (), schedule: Sequence[Stage] = ()) -> Lowered:
    """All the codegen stages at once, outside the pass manager (tests and tools)."""
    # NOTE: an empty input still gets a one-element buffer; its array has no bytes to write.
    donate = tuple(i for i in donate if graph.inputs[i].type.size > 0)
    ir = graph
    for stage_name, fn in program_stages(schedule, donate, reuse):
        ir = lower(ir, name) if stage_name == "lower" else fn(ir)
    return Lowered(ir, ir.plan)


__all__ = ["Lowered", "STAGE_NAMES", "Stage", "lower_graph", "program_stages"]
