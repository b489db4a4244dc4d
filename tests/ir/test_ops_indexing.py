"""Movement and indexing composites (squeeze, expand_dims, split, flip, tile, repeat,
take_along_axis, einsum, advanced indexing, `.at` updates) against numpy on every backend, and
the gradient of every differentiable case against central finite differences in float64."""
import numpy as np
import pytest

from tests.gradcheck import check_grads
from tests.op_cases import F64, IDX, case_params, cases, check_case, ids

GRAD_CASES = [c for c in cases(IDX) if c.differentiable]


@pytest.mark.parametrize("case,dtype", case_params(IDX))
def test_forward(case, dtype, backend):
    check_case(case, case.make_inputs(np.random.default_rng(0), dtype), backend)


@pytest.mark.parametrize("case", GRAD_CASES, ids=ids(GRAD_CASES))
def test_gradient(case, backend):
    args = case.make_inputs(np.random.default_rng(0), F64)
    check_grads(case.fn, args, case.diff_inputs, backend=backend)
