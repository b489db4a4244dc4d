"""The codegen floor: the fused Graph lowered to kernel IR once for every native backend, the
Program -> Program transforms targets schedule with, memory planning, and the one analysis
module they all share (see `pipeline` for the stages)."""
from .pipeline import Lowered, lower_graph, program_stages

__all__ = ["Lowered", "lower_graph", "program_stages"]
