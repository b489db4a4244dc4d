"""Two ranks on this machine (mpiexec -n 2): data-parallel training equals one process on the
global batch, and a failing, stalled or diverging rank ends the job with a clear error instead
of a hang. Skipped without mpi4py or mpiexec (pip install -e '.[mpi]')."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("mpi4py")

ROOT = Path(__file__).resolve().parents[2]
WORKER = Path(__file__).with_name("worker.py")
MPIEXEC = shutil.which("mpiexec", path=os.path.dirname(sys.executable) + os.pathsep
                       + os.environ.get("PATH", ""))
pytestmark = pytest.mark.skipif(MPIEXEC is None, reason="no mpiexec (install the 'mpi' extra)")


def launch(scenario: str, out: Path, timeout_s: float = 30.0, limit: float = 120.0):
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"), NNJIT_MPI_TIMEOUT=str(timeout_s),
               NNJIT_NUM_THREADS="1", OMPI_ALLOW_RUN_AS_ROOT="1",
               OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1", OMPI_MCA_rmaps_base_oversubscribe="1")
    cmd = [MPIEXEC, "-n", "2", sys.executable, str(WORKER), scenario, str(out)]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=limit)


def test_two_ranks_equal_one_process_on_the_global_batch(tmp_path):
    sys.path.insert(0, str(ROOT / "examples"))
    sys.path.insert(0, str(WORKER.parent))
    import data_parallel
    import models
    import worker
    from nnjit import nn

    r = launch("train", tmp_path / "dp.npz")
    assert r.returncode == 0, r.stdout + r.stderr
    got = nn.load(tmp_path / "dp.npz")
    x, y = worker.batches()
    want = data_parallel.train(models.convnet(channels=(4, 8)), x, y, worker.STEPS, 1,
                               worker.BATCH, 1e-2, 0, "llvm")["params"]
    flat_got, flat_want = nn_leaves(got), nn_leaves(want)
    assert len(flat_got) == len(flat_want)
    for g, w in zip(flat_got, flat_want):
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-5)


def nn_leaves(tree):
    import nnjit

    return [np.asarray(v) for v in nnjit.tree_leaves(tree)]


def test_a_rank_that_raises_ends_the_job(tmp_path):
    r = launch("raise", tmp_path / "x.npz")
    assert r.returncode != 0
    text = r.stdout + r.stderr
    assert "rank 1 failed on purpose" in text
    assert "nnjit: rank 1 of 2: uncaught ValueError" in text


def test_a_stalled_rank_makes_the_other_time_out(tmp_path):
    r = launch("stall", tmp_path / "x.npz", timeout_s=3.0)
    assert r.returncode != 0
    assert "did not complete within NNJIT_MPI_TIMEOUT=3s" in r.stderr, r.stdout + r.stderr


def test_mismatched_shapes_across_ranks_are_a_clear_error(tmp_path):
    r = launch("mismatch", tmp_path / "x.npz")
    assert r.returncode != 0
    text = r.stdout + r.stderr
    assert "the ranks run different collectives" in text, text
    assert "rank 0: " in text and "rank 1: " in text
