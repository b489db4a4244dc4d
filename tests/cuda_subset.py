"""Which suite-wide tests run on the cuda backend, and with how many hypothesis examples.

Under Numba's CUDA simulator every GPU thread is a Python thread, so the cuda backend runs a
curated subset of the backend-parametrized tests: the op forward tests, gradients, scan,
dropout and the small-shape model tests (MLP, ConvNet, RNN/LSTM gradients, the GRU, norm,
attention and loss layers), with a few hypothesis examples each. Multi-epoch training (tests/e2e) is left to real GPUs; the backend's
own tests (tests/backends/test_cuda_*.py) train small models for a few steps instead.
On a real GPU (no simulator) everything runs.
"""
from __future__ import annotations

import os

import pytest

#: Test modules whose `backend`-parametrized tests also run on cuda under the simulator.
CUDA_MODULES = (
    "tests/passes/test_scan_autodiff.py", "tests/passes/test_hoist.py",
    "tests/ir/test_ops_", "tests/ir/test_scan.py", "tests/ir/test_dropout.py",
    "tests/passes/test_vjp_rules.py", "tests/passes/test_autodiff.py",
    "tests/frontend/test_layers_backends.py", "tests/e2e/test_constants.py",
)
#: ... minus these (node id prefixes): statistics over a large array (the Philox stream itself
#: is checked bit for bit on cuda), and a second-order gradient through a scan (~35 s there).
CUDA_SKIP = (
    "tests/ir/test_dropout.py::test_keep_rate_and_scaling_within_statistical_bounds[cuda",
    "tests/passes/test_autodiff.py::test_grad_of_grad_matches_finite_differences[cuda-rnn",
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
        if _on_cuda(item) and (not path.startswith(CUDA_MODULES)
                               or item.nodeid.startswith(CUDA_SKIP)):
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
