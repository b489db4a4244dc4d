"""The ONNX backend node tests (onnx.backend.test.case.node, generated in memory by the onnx
package) for the operator families nnjit imports, run through `nnjit.onnx.load`.

    python benchmarks/onnx_node_tests.py [--backend llvm] [-k REGEX] [--quiet]

Prints one line per failure (case: reason), then `N passed, M failed, K skipped`, where the
skipped cases are those of operators outside the families (not attempted). A case passes when
every output of every data set matches within the case's own rtol/atol, with the declared
dtype and shape.
"""
from __future__ import annotations

import argparse
import re
import sys
import time
import warnings

import numpy as np

# The operator families of issue 13; a case belongs to them when its model (for an
# `_expanded` case: the model it expands) uses one of these.
FAMILIES = set("""
Relu LeakyRelu Sigmoid Tanh Elu Selu Softplus HardSigmoid Gelu Erf Exp Log Sqrt Pow Neg Abs
Clip Max Min Where Equal Greater Cast Add Sub Mul Div MatMul Gemm Einsum Conv ConvTranspose
MaxPool AveragePool GlobalAveragePool BatchNormalization LayerNormalization Dropout Softmax
LogSoftmax SoftmaxCrossEntropyLoss NegativeLogLikelihoodLoss Flatten Reshape Transpose Concat
Split Slice Squeeze Unsqueeze Expand Gather Identity ReduceSum ReduceMean ReduceMax RNN LSTM GRU
Constant CastLike Shape
""".split())


def all_cases():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from onnx.backend.test.case.node import collect_testcases
        import contextlib, io
        with contextlib.redirect_stdout(io.StringIO()), np.errstate(all="ignore"):
            return collect_testcases()


def family_cases(cases=None):
    """(in-family cases, the number of other cases)."""
    cases = all_cases() if cases is None else cases
    base = {c.name: {n.op_type for n in c.model.graph.node} for c in cases
            if "_expanded" not in c.name}
    keep = []
    for c in cases:
        ops = base.get(re.sub(r"_expanded(_ver\d+)?$", "", c.name),
                       {n.op_type for n in c.model.graph.node})
        if ops & FAMILIES:
            keep.append(c)
    return keep, len(cases) - len(keep)


def run_case(case, backend: str = "llvm") -> str | None:
    """None when `case` passes, else the reason it fails (one line)."""
    for k, (inputs, expected) in enumerate(case.data_sets):
        inputs, expected = [_array(x) for x in inputs], [_array(x) for x in expected]
        try:
            fn, inputs = load_specialized(case.model, inputs, backend)
        except Exception as e:
            return _reason("import", e)
        try:
            with np.errstate(all="ignore"):
                got = fn(*inputs)
        except Exception as e:
            return _reason("run", e)
        if len(got) != len(expected):
            return f"run: {len(got)} outputs, expected {len(expected)}"
        for j, (g, e) in enumerate(zip(got, expected)):
            e = np.asarray(e)
            if e.dtype == object:
                return f"output {j}: expected values of dtype object (strings)"
            if g.shape != e.shape:
                return f"output {j}: shape {g.shape}, expected {e.shape}"
            if g.dtype != e.dtype and not _bfloat16(e):
                return f"output {j}: dtype {g.dtype}, expected {e.dtype}"
            try:
                np.testing.assert_allclose(_as_comparable(g), _as_comparable(e), rtol=case.rtol,
                                           atol=case.atol)
            except AssertionError as err:
                lines = [x for x in str(err).splitlines() if "Max abs" in x or "Mismatched" in x]
                return f"data set {k} output {j}: values differ ({'; '.join(lines)})"
    return None


def load_specialized(model, inputs, backend: str):
    """`nnjit.onnx.load(model)`, with each graph input that determines a shape (the node tests
    pass Reshape's shape, Slice's starts... as inputs) fixed to its value in `inputs`: the
    adapter specializes exactly the inputs the importer asks for. Returns (fn, the inputs
    left)."""
    import nnjit.onnx

    names = [v.name for v in model.graph.input
             if v.name not in {t.name for t in model.graph.initializer}]
    values = dict(zip(names, inputs))
    constants = {}
    while True:
        try:
            fn = nnjit.onnx.load(model, backend=backend, constants=constants)
            break
        except nnjit.onnx.ConstantRequired as e:
            if e.value_name not in values or e.value_name in constants:
                raise
            constants[e.value_name] = values[e.value_name]
    return fn, [values[n] for n in names if n not in constants]


def _array(x):
    """Data-set values are numpy arrays, or TensorProtos for the types numpy lacks."""
    from onnx import TensorProto, numpy_helper

    return numpy_helper.to_array(x) if isinstance(x, TensorProto) else x


def _bfloat16(e) -> bool:
    return "bfloat16" in str(e.dtype)


def _as_comparable(e):
    if e.dtype.kind == "V":       # ml_dtypes: bfloat16, float8, int4...
        return e.astype(np.float64)
    return e.astype(np.float64) if e.dtype.kind == "f" else e


def _reason(stage: str, e: BaseException) -> str:
    msg = str(e).strip().splitlines()[0] if str(e).strip() else ""
    return f"{stage}: {type(e).__name__}: {msg[:300]}"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--backend", default="llvm", choices=["interp", "llvm", "cuda"])
    p.add_argument("-k", "--filter", help="only cases whose name matches this regex")
    p.add_argument("--quiet", action="store_true", help="print only the failures and summary")
    a = p.parse_args(argv)
    cases, skipped = family_cases()
    if a.filter:
        cases = [c for c in cases if re.search(a.filter, c.name)]
    passed, failures, t0 = 0, [], time.time()
    for c in cases:
        why = run_case(c, a.backend)
        if why is None:
            passed += 1
        else:
            failures.append((c.name, why))
        if not a.quiet:
            print(f"{'ok  ' if why is None else 'FAIL'} {c.name}", flush=True)
    print(f"\n{len(failures)} failures:")
    for name, why in failures:
        print(f"  {name}: {why}")
    total = passed + len(failures)
    print(f"\n{passed} passed, {len(failures)} failed, {skipped} skipped "
          f"({100.0 * passed / max(total, 1):.1f}% of {total} in-family cases pass on "
          f"{a.backend}, {time.time() - t0:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
