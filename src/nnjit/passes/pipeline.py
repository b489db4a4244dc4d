"""The default pipeline: one list of named stages, top to bottom."""
from __future__ import annotations

from .fusion import fuse as fuse_kernels
from .manager import Pass


def default_pipeline(fuse: bool = True) -> list[tuple[str, Pass]]:
    """The passes `nnjit.jit` runs, in order. `fuse=False` gives the one-kernel-per-op baseline."""
    stages: list[tuple[str, Pass]] = []
    if fuse:
        stages.append(("fuse", fuse_kernels))
    return stages
