"""Suite-wide fixtures: the backend list every op/model test runs on, debug verification, and
hypothesis settings sized for CI (2 cores, the whole suite under 10 minutes)."""
from __future__ import annotations

import os

os.environ.setdefault("NNJIT_VERIFY", "1")   # verify + text round-trip after every pass
# The cuda backend runs under Numba's CUDA simulator where there is no GPU; numba reads this
# when it is first imported, so it is set before anything imports numba.
if not os.path.exists("/dev/nvidiactl"):
    os.environ.setdefault("NUMBA_ENABLE_CUDASIM", "1")

import pytest  # noqa: E402
from hypothesis import HealthCheck, settings  # noqa: E402

settings.register_profile("ci", max_examples=20, deadline=None, derandomize=True,
                          suppress_health_check=[HealthCheck.too_slow,
                                                 HealthCheck.data_too_large])
settings.register_profile("thorough", max_examples=300, deadline=None)
settings.load_profile(os.environ.get("NNJIT_HYPOTHESIS", "ci"))

from tests.helpers import BACKENDS  # noqa: E402
from tests.cuda_subset import (pytest_collection_modifyitems,  # noqa: E402,F401
                               pytest_pyfunc_call)


@pytest.fixture(params=BACKENDS)
def backend(request) -> str:
    return request.param
