"""Which suite-wide tests run on the cuda backend, and with how many hypothesis examples.

Under Numba's CUDA simulator every GPU thread is a Python thread, so the cuda backend runs a
curated subset of the backend-parametrized tests: the op forward tests, gradients, scan,
dropout and the model tests, with a few hypothesis examples each (the backend's own tests are
in tests/backends/test_cuda_*.py). On a real GPU (no simulator) everything runs.
"""
from __future__ import annotations

import os

import pytest

#: Test modules whose `backend`-parametrized tests also run on cuda under the simulator.
CUDA_MODULES = (
    "tests/ir/test_ops_", "tests/ir/test_scan.py", "tests/ir/test_dropout.py",
    "tests/passes/test_vjp_rules.py", "tests/passes/test_autodiff.py",
    "tests/e2e/test_training.py",
)
#: Hypothesis examples per cuda test under the simulator.
CUDA_EXAMPLES = 2


def _simulated() -> bool:
    return os.environ.get("NUMBA_ENABLE_CUDASIM", "0") not in ("", "0")


def _on_cuda(item) -> bool:
    spec = getattr(item, "callspec", None)
    return spec is not None and spec.params.get("backend") == "cuda"


def pytest_collection_modifyitems(config, items):
    """Deselect the cuda variants of tests outside CUDA_MODULES when simulating."""
    if not _simulated():
        return
    keep, drop = [], []
    for item in items:
        path = item.nodeid.split("::")[0]
        if _on_cuda(item) and not path.startswith(CUDA_MODULES):
            drop.append(item)
        else:
            keep.append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


@pytest.hookimpl(wrapper=True)
def pytest_pyfunc_call(pyfuncitem):
    """Cuda variants of hypothesis tests draw CUDA_EXAMPLES examples under the simulator."""
    fn = pyfuncitem.obj
    if not (_simulated() and _on_cuda(pyfuncitem) and getattr(fn, "is_hypothesis_test", False)):
        return (yield)
    from hypothesis import settings

    old = fn._hypothesis_internal_use_settings
    fn._hypothesis_internal_use_settings = settings(old, max_examples=CUDA_EXAMPLES)
    try:
        return (yield)
    finally:
        fn._hypothesis_internal_use_settings = old
