"""One rank of the two-rank tests (run by test_data_parallel.py under mpiexec):

    worker.py train OUT      a few data-parallel steps of the digits ConvNet; rank 0 saves OUT
    worker.py raise OUT      rank 1 raises before its first step
    worker.py stall OUT      rank 1 never joins the step's collectives (sleeps)
    worker.py mismatch OUT   rank 1 builds a wider model: gradient shapes differ across ranks
"""
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "examples"))

import numpy as np  # noqa: E402

import nnjit.distributed as dist  # noqa: E402
from nnjit import nn  # noqa: E402

import data_parallel  # noqa: E402
import models  # noqa: E402

STEPS, BATCH = 3, 32


def batches():
    rng = np.random.default_rng(0)
    return rng.normal(size=(STEPS * BATCH, 1, 8, 8)).astype(np.float32), \
        rng.integers(0, 10, STEPS * BATCH)


def main(scenario: str, out: str) -> None:
    x, y = batches()
    model = models.convnet(channels=(4, 8))
    if scenario == "raise" and dist.rank() == 1:
        raise ValueError("rank 1 failed on purpose")
    if scenario == "stall" and dist.rank() == 1:
        time.sleep(60)
    if scenario == "mismatch" and dist.rank() == 1:
        model = models.convnet(channels=(4, 12))
    res = data_parallel.train(model, x, y, STEPS, 1, BATCH, 1e-2, 0, "llvm")
    if dist.rank() == 0:
        nn.save(out, res["params"])


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
