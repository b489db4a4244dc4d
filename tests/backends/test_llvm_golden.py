"""Golden kernel IR and LLVM IR for a few programs: catches codegen drift in refactors (update
only on purpose, after reviewing the diff, with NNJIT_UPDATE_GOLDEN=1)."""
from __future__ import annotations

import os

import numpy as np
import pytest

import nnjit
from nnjit.backends.llvm.render import render
from nnjit.codegen import lower_graph

GOLDEN = os.path.join(os.path.dirname(__file__), "golden")

CASES = {
    "softmax_rows": (lambda a: nnjit.softmax(a, axis=-1), [(3, 300)]),
    "linear_relu": (lambda a, b: nnjit.relu(a @ b + 1.0), [(128, 64), (64, 96)]),
    "bias_grad_sgd": (lambda g, b: b - 0.1 * g.sum(axis=0), [(32, 16), (16,)]),
}


def _strip_locations(text: str) -> str:
    """Source locations depend on this file's lines; the generated code must not."""
    return "".join(ln.split("  //")[0].rstrip() + "\n" for ln in text.splitlines())


@pytest.mark.parametrize("name", list(CASES))
def test_kernel_ir_and_llvm_ir_match_the_golden_text(name):
    fn, shapes = CASES[name]
    args = [np.zeros(s, np.float32) for s in shapes]
    program = lower_graph(nnjit.compile(fn, *args, backend="interp").graph).program
    kernel_ir = _strip_locations(str(program))
    llvm_ir = render(program, nthreads=2).text
    for suffix, text in ((".kir.txt", kernel_ir), (".ll.txt", llvm_ir)):
        path = os.path.join(GOLDEN, f"llvm_{name}{suffix}")
        if os.environ.get("NNJIT_UPDATE_GOLDEN") == "1":
            os.makedirs(GOLDEN, exist_ok=True)
            with open(path, "w") as f:
                f.write(text)
        with open(path) as f:
            assert text == f.read(), f"generated code drifted from {path}"
