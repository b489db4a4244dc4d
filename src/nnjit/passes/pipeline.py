"""The default pipeline: one list of named stages, top to bottom."""
from __future__ import annotations

from .bucket import bucket_all_reduces
from .cse import eliminate_common_subexpressions
from .dce import eliminate_dead_code
from .fold import fold_constants
from .fusion import fuse as fuse_kernels
from .hoist import hoist_loop_invariants
from .manager import Pass
from .simplify import simplify


def default_pipeline(fuse: bool = True) -> list[tuple[str, Pass]]:
    """The passes `nnjit.jit` runs, in order. `fuse=False` gives the one-kernel-per-op baseline."""
    stages: list[tuple[str, Pass]] = [
        ("simplify", simplify),
        ("fold_constants", fold_constants),
        ("cse", eliminate_common_subexpressions),
        ("dce", eliminate_dead_code),
        ("hoist_loop_invariants", hoist_loop_invariants),
        ("bucket_all_reduces", bucket_all_reduces),
    ]
    if fuse:
        stages.append(("fuse", fuse_kernels))
    return stages
