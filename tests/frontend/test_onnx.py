"""ONNX import: a selection of the standard node tests, errors (unsupported ops listed at once,
shapes computed at run time), params as inputs with grad, and hostile files (truncated,
corrupt, wrong types, cycles, absurd dims, external data outside the model's folder). Skipped
when the optional onnx package is missing."""
from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

import nnjit  # noqa: E402
import nnjit.onnx  # noqa: E402
from nnjit import NnjitError  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]


def _bench():
    spec = importlib.util.spec_from_file_location("onnx_node_tests",
                                                  ROOT / "benchmarks" / "onnx_node_tests.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


BENCH = _bench()
# One or two cases per family: the full set runs in benchmarks/onnx_node_tests.py.
SELECTION = [
    "test_relu", "test_leakyrelu", "test_elu", "test_selu", "test_hardsigmoid", "test_softplus",
    "test_gelu_tanh_1", "test_pow_types_int64_int64", "test_clip_default_inbounds",
    "test_max_example", "test_where_example", "test_equal_bcast", "test_cast_FLOAT_to_FLOAT16",
    "test_add_bcast", "test_div_uint8", "test_matmul_4d", "test_gemm_all_attributes",
    "test_einsum_batch_diagonal", "test_einsum_transpose",
    "test_conv_with_strides_and_asymmetric_padding", "test_convtranspose_pads",
    "test_maxpool_2d_ceil", "test_averagepool_2d_pads_count_include_pad",
    "test_globalaveragepool", "test_batchnorm_epsilon", "test_layer_normalization_4d_axis1",
    "test_dropout_default_mask", "test_softmax_axis_0",
    "test_logsoftmax_negative_axis_expanded", "test_sce_mean_weight_ii_3d",
    "test_nllloss_NCd1d2_with_weight_reduction_mean", "test_flatten_negative_axis1",
    "test_reshape_allowzero_reordered", "test_transpose_all_permutations_3",
    "test_concat_3d_axis_negative_2", "test_split_variable_parts_2d_opset18",
    "test_slice_neg_steps", "test_squeeze_negative_axes", "test_unsqueeze_unsorted_axes",
    "test_expand_dim_changed", "test_gather_negative_indices", "test_identity",
    "test_reduce_sum_keepdims_random", "test_reduce_mean_do_not_keepdims_example",
    "test_reduce_max_empty_set", "test_simple_rnn_defaults", "test_lstm_with_peepholes",
    "test_gru_seq_length", "test_gru_with_initial_bias", "test_shape_start_1_end_negative_1",
    "test_constant", "test_cast_FLOAT_to_FLOAT8E4M3FN", "test_castlike_FLOAT_to_INT4_expanded",
    "test_reduce_max_empty_set_bool", "test_maxpool_3d_dilations", "test_averagepool_2d_dilations",
    "test_maxpool_with_argmax_2d_precomputed_strides",
]


@pytest.fixture(scope="module")
def cases():
    return {c.name: c for c in BENCH.all_cases()}


@pytest.mark.parametrize("name", SELECTION)
def test_node_case(name, cases):
    assert name in cases, f"{name} is not a node test of onnx {onnx.__version__}"
    assert BENCH.run_case(cases[name], "llvm") is None, BENCH.run_case(cases[name], "llvm")


def test_selection_is_in_the_families(cases):
    fam, _ = BENCH.family_cases(list(cases.values()))
    assert set(SELECTION) <= {c.name for c in fam}


# -- small models built here -------------------------------------------------------------------

def _model(nodes, inputs, outputs, inits=(), opset=18):
    g = helper.make_graph(nodes, "g", inputs, outputs, initializer=list(inits))
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])


def _vi(name, shape, t=TensorProto.FLOAT):
    return helper.make_tensor_value_info(name, t, shape)


def _mlp(rng):
    w = rng.standard_normal((4, 3)).astype(np.float32)
    b = rng.standard_normal(3).astype(np.float32)
    return _model([helper.make_node("Gemm", ["x", "w", "b"], ["h"]),
                   helper.make_node("Relu", ["h"], ["y"])],
                  [_vi("x", [2, 4])], [_vi("y", [2, 3])],
                  [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")]), w, b


def test_load_returns_an_inspectable_compiled_function():
    rng = np.random.default_rng(0)
    m, w, b = _mlp(rng)
    fn = nnjit.onnx.load(m, backend="llvm")
    x = rng.standard_normal((2, 4)).astype(np.float32)
    (y,) = fn(x)
    np.testing.assert_allclose(y, np.maximum(x @ w + b, 0), rtol=1e-5)
    text = str(fn.graph)
    assert "matmul" in text and "relu" in text
    assert fn.lower().stages() and fn.explain_fusion().num_kernels >= 1
    assert fn.memory_plan().total_bytes > 0
    assert "<model>:1 in Gemm" in fn.lower().ir("input") or "Gemm" in fn.lower().ir("input")


def test_params_as_inputs_fine_tunes_with_grad():
    rng = np.random.default_rng(1)
    m, w, b = _mlp(rng)
    fn = nnjit.onnx.load(m, backend="interp", params_as_inputs=True)
    assert set(fn.params) == {"w", "b"}
    x = rng.standard_normal((2, 4)).astype(np.float32)
    (y,) = fn(fn.params, x)
    np.testing.assert_allclose(y, np.maximum(x @ w + b, 0), rtol=1e-5)
    loss = lambda p, x: nnjit.sum(fn.model.apply(p, x)[0])  # noqa: E731
    g = nnjit.jit(nnjit.grad(loss))(fn.params, x)
    active = (x @ w + b > 0).astype(np.float32)
    np.testing.assert_allclose(g["b"], active.sum(0), rtol=1e-5)
    np.testing.assert_allclose(g["w"], x.T @ active, rtol=1e-5)


def test_unsupported_operators_are_listed_in_one_error():
    m = _model([helper.make_node("Relu", ["x"], ["a"], name="ok"),
                helper.make_node("NonZero", ["a"], ["b"], name="nz"),
                helper.make_node("Hardmax", ["x"], ["c"], name="hm"),
                helper.make_node("Foo", ["x"], ["d"], name="custom", domain="my.ops")],
               [_vi("x", [2, 3])], [_vi("b", [2, 3], TensorProto.INT64), _vi("c", [2, 3]),
                                   _vi("d", [2, 3])])
    m.opset_import.append(helper.make_opsetid("my.ops", 1))
    with pytest.raises(NnjitError) as e:
        nnjit.onnx.load(m)
    msg = str(e.value)
    assert "3 node(s)" in msg and "'nz' (NonZero)" in msg and "'hm' (Hardmax)" in msg
    assert "'custom' (my.ops.Foo)" in msg and "'ok'" not in msg


def test_shape_computed_at_run_time_names_the_node():
    m = _model([helper.make_node("Reshape", ["x", "s"], ["y"], name="reshape1")],
               [_vi("x", [2, 3]), _vi("s", [2], TensorProto.INT64)], [_vi("y", [3, 2])])
    with pytest.raises(nnjit.onnx.ConstantRequired, match="reshape1.*shape.*'s'.*run time"):
        nnjit.onnx.load(m, backend="interp")
    fn = nnjit.onnx.load(m, backend="interp", constants={"s": np.array([3, 2])})
    (y,) = fn(np.arange(6, dtype=np.float32).reshape(2, 3))
    assert y.shape == (3, 2)


def test_torch_style_shape_chain_folds_at_import():
    """Shape -> Gather -> Unsqueeze -> Concat -> Reshape (what exporters write for a flatten)
    is known at import time, so the Reshape gets a constant shape."""
    c = lambda n, v: helper.make_node("Constant", [], [n], value=numpy_helper.from_array(  # noqa
        np.asarray(v, np.int64)))
    m = _model([helper.make_node("Shape", ["x"], ["s"]), c("zero", 0), c("ax", [0]),
                c("minus1", [-1]),
                helper.make_node("Gather", ["s", "zero"], ["n"]),
                helper.make_node("Unsqueeze", ["n", "ax"], ["n1"]),
                helper.make_node("Concat", ["n1", "minus1"], ["shape"], axis=0),
                helper.make_node("Reshape", ["x", "shape"], ["y"])],
               [_vi("x", [2, 3, 4])], [_vi("y", [2, 12])])
    fn = nnjit.onnx.load(m, backend="interp")
    x = np.random.default_rng(0).standard_normal((2, 3, 4)).astype(np.float32)
    np.testing.assert_array_equal(fn(x)[0], x.reshape(2, 12))
    assert "shape" not in [n.op.value for n in fn.graph.nodes]


def test_symbolic_dims_need_shapes():
    m = _model([helper.make_node("Relu", ["x"], ["y"])], [_vi("x", ["batch", 3])],
               [_vi("y", ["batch", 3])])
    with pytest.raises(NnjitError, match="symbolic dims.*shapes="):
        nnjit.onnx.load(m)
    fn = nnjit.onnx.load(m, backend="interp", shapes={"x": (5, 3)})
    assert fn(np.ones((5, 3), np.float32))[0].shape == (5, 3)
    with pytest.raises(NnjitError, match="must have shape"):
        fn(np.ones((4, 3), np.float32))


def test_narrow_types_are_rounded_where_they_are_returned():
    ml_dtypes = pytest.importorskip("ml_dtypes")
    f8 = TensorProto.FLOAT8E4M3FN
    m = _model([helper.make_node("Cast", ["x"], ["y"], to=f8)], [_vi("x", [4])],
               [_vi("y", [4], f8)])
    (y,) = nnjit.onnx.load(m, backend="interp")(np.array([0.3, 1e6, -np.inf, np.nan],
                                                         np.float32))
    assert y.dtype == ml_dtypes.float8_e4m3fn
    np.testing.assert_array_equal(y.astype(np.float32), [0.3125, 448, -448, np.nan])
    inner = _model([helper.make_node("Cast", ["x"], ["h"], to=f8, name="c8"),
                    helper.make_node("Cast", ["h"], ["y"], to=TensorProto.FLOAT)],
                   [_vi("x", [4])], [_vi("y", [4])])
    with pytest.raises(NnjitError, match="'c8' \\(Cast\\).*only where its result is a graph"):
        nnjit.onnx.load(inner, backend="interp")


# -- hostile and broken files ------------------------------------------------------------------

def _save(tmp_path, m, name="m.onnx") -> str:
    p = tmp_path / name
    p.write_bytes(m.SerializeToString())
    return str(p)


def test_truncated_file(tmp_path):
    m, _, _ = _mlp(np.random.default_rng(0))
    data = m.SerializeToString()
    for cut in (len(data) // 2, len(data) - 3, 7):
        p = tmp_path / f"cut{cut}.onnx"
        p.write_bytes(data[:cut])
        with pytest.raises(NnjitError, match="truncated|corrupt|not an ONNX model|reads"):
            nnjit.onnx.load(str(p))


def test_corrupt_bytes_and_other_files(tmp_path):
    rng = np.random.default_rng(0)
    for k in range(5):
        p = tmp_path / f"junk{k}.onnx"
        p.write_bytes(rng.integers(0, 256, 200 + 37 * k, dtype=np.uint8).tobytes())
        with pytest.raises(NnjitError):
            nnjit.onnx.load(str(p))
    (tmp_path / "empty.onnx").write_bytes(b"")
    with pytest.raises(NnjitError, match="not an ONNX model"):
        nnjit.onnx.load(str(tmp_path / "empty.onnx"))
    with pytest.raises(NnjitError, match="no such file"):
        nnjit.onnx.load(str(tmp_path / "missing.onnx"))
    with pytest.raises(NnjitError, match="expected a path"):
        nnjit.onnx.load(42)


def test_flipped_bytes_never_crash(tmp_path):
    m, _, _ = _mlp(np.random.default_rng(0))
    data = bytearray(m.SerializeToString())
    rng = np.random.default_rng(3)
    for k in range(40):
        bad = bytearray(data)
        for i in rng.integers(0, len(bad), 3):
            bad[i] = int(rng.integers(0, 256))
        try:
            fn = nnjit.onnx.load(bytes(bad), backend="interp")
        except NnjitError:
            continue
        fn(np.ones((2, 4), np.float32))      # what still loads must run


def test_wrong_types():
    m = _model([helper.make_node("Relu", ["x"], ["y"])], [_vi("x", [2], TensorProto.STRING)],
               [_vi("y", [2], TensorProto.STRING)])
    with pytest.raises(NnjitError, match="element type string is not supported"):
        nnjit.onnx.load(m)
    m = _model([helper.make_node("Transpose", ["x"], ["y"], perm=[1.0, 0.0])],
               [_vi("x", [2, 3])], [_vi("y", [3, 2])])
    with pytest.raises(NnjitError, match="perm"):
        nnjit.onnx.load(m)
    bad = _model([helper.make_node("Relu", ["x"], ["y"])], [_vi("x", [2])], [_vi("y", [2])])
    bad.graph.input[0].type.tensor_type.elem_type = 999
    with pytest.raises(NnjitError, match="999"):
        nnjit.onnx.load(bad)


def test_cycle_and_undefined_values():
    m = _model([helper.make_node("Add", ["x", "b"], ["a"], name="n1"),
                helper.make_node("Relu", ["a"], ["b"], name="n2")],
               [_vi("x", [2])], [_vi("b", [2])])
    with pytest.raises(NnjitError, match="cycle.*n1|cycle.*n2"):
        nnjit.onnx.load(m)
    m = _model([helper.make_node("Relu", ["nowhere"], ["y"], name="r")], [_vi("x", [2])],
               [_vi("y", [2])])
    with pytest.raises(NnjitError, match="'r' \\(Relu\\) reads 'nowhere'"):
        nnjit.onnx.load(m)
    m = _model([helper.make_node("Relu", ["x"], ["y"]), helper.make_node("Neg", ["x"], ["y"])],
               [_vi("x", [2])], [_vi("y", [2])])
    with pytest.raises(NnjitError, match="defined twice"):
        nnjit.onnx.load(m)


def test_unsorted_nodes_are_an_error_naming_them():
    m = _model([helper.make_node("Neg", ["a"], ["y"], name="late"),
                helper.make_node("Relu", ["x"], ["a"], name="early")],
               [_vi("x", [3])], [_vi("y", [3])])
    with pytest.raises(NnjitError, match="'late' \\(Neg\\) reads 'a' before node 'early'"):
        nnjit.onnx.load(m, backend="interp")


def test_dims_that_overflow_or_are_absurd():
    huge = TensorProto()
    huge.name, huge.data_type = "w", TensorProto.FLOAT
    huge.dims.extend([1 << 40, 1 << 40])
    m = _model([helper.make_node("Add", ["x", "w"], ["y"])], [_vi("x", [1])], [_vi("y", [1])],
               [huge])
    with pytest.raises(NnjitError, match="elements"):
        nnjit.onnx.load(m)
    m = _model([helper.make_node("Relu", ["x"], ["y"])], [_vi("x", [1 << 62, 1 << 62])],
               [_vi("y", [1])])
    with pytest.raises(NnjitError, match="bytes"):
        nnjit.onnx.load(m)
    neg = TensorProto()
    neg.name, neg.data_type = "w", TensorProto.FLOAT
    neg.dims.extend([-3])
    m = _model([helper.make_node("Add", ["x", "w"], ["y"])], [_vi("x", [1])], [_vi("y", [1])],
               [neg])
    with pytest.raises(NnjitError, match="negative dim"):
        nnjit.onnx.load(m)
    short = numpy_helper.from_array(np.ones(4, np.float32), "w")
    short.raw_data = short.raw_data[:7]
    m = _model([helper.make_node("Add", ["x", "w"], ["y"])], [_vi("x", [4])], [_vi("y", [4])],
               [short])
    with pytest.raises(NnjitError, match="raw_data has 7 bytes"):
        nnjit.onnx.load(m)
    m = _model([helper.make_node("ConstantOfShape", ["s"], ["y"])], [], [_vi("y", [1])],
               [numpy_helper.from_array(np.array([1 << 40, 1 << 40], np.int64), "s")])
    with pytest.raises(NnjitError, match="elements"):
        nnjit.onnx.load(m, backend="interp")


def _external(location: str, nbytes: int = 16, offset: int = 0) -> TensorProto:
    t = TensorProto()
    t.name, t.data_type = "w", TensorProto.FLOAT
    t.dims.extend([nbytes // 4])
    t.data_location = TensorProto.EXTERNAL
    for k, v in (("location", location), ("offset", str(offset)), ("length", str(nbytes))):
        e = t.external_data.add()
        e.key, e.value = k, v
    return t


def test_external_data_stays_in_the_models_folder(tmp_path):
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    (tmp_path / "secret.bin").write_bytes(np.arange(4, dtype=np.float32).tobytes())
    (model_dir / "w.bin").write_bytes(np.arange(4, dtype=np.float32).tobytes())
    os.symlink(tmp_path / "secret.bin", model_dir / "link.bin")

    def model(t):
        return _model([helper.make_node("Add", ["x", "w"], ["y"])], [_vi("x", [4])],
                      [_vi("y", [4])], [t])

    ok = _save(model_dir, model(_external("w.bin")))
    (y,) = nnjit.onnx.load(ok, backend="interp")(np.ones(4, np.float32))
    np.testing.assert_array_equal(y, [1, 2, 3, 4])
    for loc, why in (("../secret.bin", "escapes"), (str(tmp_path / "secret.bin"), "relative"),
                     ("link.bin", "escapes"), ("sub/../../secret.bin", "escapes"),
                     ("nothere.bin", "not found")):
        p = _save(model_dir, model(_external(loc)), "bad.onnx")
        with pytest.raises(NnjitError, match=why):
            nnjit.onnx.load(p)
    p = _save(model_dir, model(_external("w.bin", 16, offset=8)), "bad.onnx")
    with pytest.raises(NnjitError, match="has 16 bytes"):
        nnjit.onnx.load(p)
    with pytest.raises(NnjitError, match="loaded from a path"):
        nnjit.onnx.load(model(_external("w.bin")))


# -- export --------------------------------------------------------------------------------------

def test_export_runs_in_onnxruntime(tmp_path):
    ort = pytest.importorskip("onnxruntime")

    def f(x, w, b):
        h = nnjit.relu(x @ w + b)
        img = nnjit.reshape(h, (1, 1, 4, 8))
        pooled = nnjit.max_pool2d(img, 2)
        return nnjit.log_softmax(h, axis=-1), h[:, ::-1].sum(axis=0), pooled, \
            nnjit.conv2d(img, np.ones((2, 1, 3, 3), np.float32), padding=1)

    rng = np.random.default_rng(0)
    x, w = rng.standard_normal((4, 5)).astype(np.float32), rng.standard_normal((5, 8)).astype(
        np.float32)
    b = rng.standard_normal(8).astype(np.float32)
    path = str(tmp_path / "f.onnx")
    proto = nnjit.onnx.export(f, x, w, b, path=path)
    onnx.checker.check_model(onnx.load(path), full_check=True)
    got = ort.InferenceSession(path).run(None, {"x": x, "w": w, "b": b})
    for g, want in zip(got, nnjit.jit(f)(x, w, b)):
        np.testing.assert_allclose(g, want, rtol=1e-5, atol=1e-6)
    back = nnjit.onnx.load(proto, backend="interp")        # and it imports again
    for g, want in zip(back(x, w, b), got):
        np.testing.assert_allclose(g, want, rtol=1e-5, atol=1e-6)


def test_export_names_the_op_it_cannot_express():
    def f(x, seed):
        return nnjit.dropout(x, 0.5, seed)

    with pytest.raises(NnjitError, match="op random_uniform .*has no ONNX form"):
        nnjit.onnx.export(f, np.ones(4, np.float32), np.int64(1))


# -- command line --------------------------------------------------------------------------------

def test_cli_import_and_export(tmp_path, capsys):
    from nnjit.cli import main

    m, _, _ = _mlp(np.random.default_rng(0))
    path = _save(tmp_path, m)
    assert main(["import", path]) == 0
    out = capsys.readouterr().out
    assert out.startswith("func @g(%x: f32[2,4]) -> (f32[2,3])") and "relu" in out
    assert nnjit.parse(out.strip()) is not None          # the printed IR parses back
    assert main(["import", path, "--stage", "nope"]) == 1
    assert "no stage 'nope'" in capsys.readouterr().err
    lib = tmp_path / "libm.so"
    assert main(["export", path, "-o", str(lib)]) == 0
    assert lib.exists() and (tmp_path / "libm.h").exists()
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x08\x07garbage")
    assert main(["import", str(bad)]) == 1
    assert "nnjit: error:" in capsys.readouterr().err


def test_export_math_ops_of_issue_12(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    if not hasattr(nnjit, "floor_divide"):
        pytest.skip("this nnjit has no floor_divide")

    def f(x, a, b):
        return (nnjit.sin(x), nnjit.cos(x), nnjit.erf(x), nnjit.expm1(x), nnjit.log1p(x * x),
                nnjit.floor(x * 3), nnjit.round(x * 4), nnjit.floor_divide(x, -0.3),
                nnjit.floor_divide(a, b))

    x = np.linspace(-2, 2, 41).astype(np.float32)
    a = np.array([7, -7, 7, -7, 0, 5], np.int64)
    b = np.array([2, 2, -2, -2, 3, -5], np.int64)
    path = str(tmp_path / "m.onnx")
    nnjit.onnx.export(f, x, a, b, path=path)
    got = ort.InferenceSession(path).run(None, {"x": x, "a": a, "b": b})
    for g, want in zip(got, nnjit.jit(f)(x, a, b)):
        np.testing.assert_allclose(g, want, rtol=1e-6, atol=1e-6)


def test_missing_onnx_package_is_a_clear_error(monkeypatch, tmp_path):
    import sys

    m, _, _ = _mlp(np.random.default_rng(0))
    path = _save(tmp_path, m)
    monkeypatch.setitem(sys.modules, "onnx", None)     # import onnx now raises ImportError
    with pytest.raises(NnjitError, match="pip install 'nnjit\\[onnx\\]'"):
        nnjit.onnx.load(path)
