"""AOT export: an inference function and an MLP training step exported with nnjit, called from C
programs compiled with the system compiler (no Python at run time), compared with the reference
interpreter. The training step runs several steps with weights in C-owned buffers."""
from __future__ import annotations

import subprocess

import numpy as np
import pytest

import nnjit
from nnjit.backends.llvm import aot, parallel
from nnjit.frontend.pytree import tree_leaves
from tests.helpers import assert_close

pytestmark = pytest.mark.skipif(aot.c_compiler() is None, reason="no C compiler")

RNG = np.random.default_rng(11)
D_IN, HIDDEN, CLASSES, BATCH, STEPS, LR = 12, 16, 5, 8, 4, 0.1


def init_params():
    def f32(*s, scale=0.5):
        return (RNG.standard_normal(s) * scale).astype(np.float32)
    return {"w1": f32(D_IN, HIDDEN), "b1": f32(HIDDEN, scale=0.1),
            "w2": f32(HIDDEN, CLASSES), "b2": f32(CLASSES, scale=0.1)}


def predict(p, x):
    h = nnjit.relu(x @ p["w1"] + p["b1"])
    return nnjit.log_softmax(h @ p["w2"] + p["b2"], axis=-1)


def loss_fn(p, x, y):
    logp = predict(p, x)
    return -(logp * nnjit.one_hot(y, CLASSES)).sum() / BATCH


def train_step(p, x, y):
    loss, g = nnjit.value_and_grad(loss_fn)(p, x, y)
    return {k: p[k] - LR * g[k] for k in p}, loss


def c_array(name, values, ctype):
    body = ", ".join(repr(float(v)) if ctype in ("float", "double") else str(int(v))
                     for v in np.ravel(values))
    return f"static {ctype} {name}[] = {{{body}}};"


def build(tmp_path, source: str, objects: list[str]) -> str:
    src = tmp_path / "main.c"
    src.write_text(source)
    exe = tmp_path / "main"
    cmd = [aot.c_compiler(), "-O1", "-std=c11", "-o", str(exe), str(src), *objects,
           f"-Wl,-rpath,{tmp_path}", *parallel.link_flags()]
    res = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    run = subprocess.run([str(exe)], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    return run.stdout


def numbers(text: str) -> np.ndarray:
    return np.array(text.split(), np.float64)


def test_export_inference_so_with_header_and_call_from_c(tmp_path):
    params, x = init_params(), RNG.standard_normal((BATCH, D_IN)).astype(np.float32)
    cf = nnjit.compile(predict, params, x, backend="llvm")
    written = cf.export(tmp_path / "predict.so")
    assert written == [str(tmp_path / "predict.so"), str(tmp_path / "predict.h")]
    header = (tmp_path / "predict.h").read_text()
    for needle in ("void predict(", "#define PREDICT_ARENA_BYTES", "#define PREDICT_NUM_INPUTS 5",
                   "#define PREDICT_NUM_OUTPUTS 1", "p_w1", f"float32[{D_IN}, {HIDDEN}]"):
        assert needle in header
    leaves = tree_leaves((params, x))     # the flat argument order of the entry point
    arrays = "\n".join(c_array(f"in{i}", a, "float") for i, a in enumerate(leaves))
    args = ", ".join(f"in{i}" for i in range(len(leaves)))
    source = f"""
#include <stdio.h>
#include <stdlib.h>
#include "predict.h"
{arrays}
int main(void) {{
    static float out0[PREDICT_OUT0_SIZE];
    void *arena = aligned_alloc(PREDICT_ARENA_ALIGN,
                                (PREDICT_ARENA_BYTES + 63) / 64 * 64);
    predict({args}, out0, arena);
    for (int i = 0; i < PREDICT_OUT0_SIZE; i++) printf("%.9g\\n", out0[i]);
    free(arena);
    return 0;
}}
"""
    got = numbers(build(tmp_path, source, [str(tmp_path / "predict.so")]))
    want = nnjit.compile(predict, params, x, backend="interp")(params, x)
    assert_close(got.astype(np.float32).reshape(want.shape), want)


def test_export_training_step_runs_steps_on_c_owned_weights(tmp_path):
    params = init_params()
    x = RNG.standard_normal((BATCH, D_IN)).astype(np.float32)
    y = RNG.integers(0, CLASSES, BATCH).astype(np.int64)
    step = nnjit.compile(train_step, params, x, y, backend="llvm")
    step.export(tmp_path / "train_step.o")
    infer = nnjit.compile(predict, params, x, backend="llvm")
    infer.export(tmp_path / "predict.o")   # linked into the same program: no symbol clashes
    names = sorted(params)                 # pytree order of the dict's leaves
    np_ = len(names)
    weights = "\n".join(c_array(f"init{i}", params[k], "float") for i, k in enumerate(names))
    source = f"""
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "train_step.h"
#include "predict.h"
{weights}
{c_array("x", x, "float")}
{c_array("y", y, "int64_t")}
static const long sizes[{np_}] = {{{", ".join(f"TRAIN_STEP_IN{i}_SIZE" for i in range(np_))}}};
int main(void) {{
    float *w[2][{np_}];
    const float *init[{np_}] = {{{", ".join(f"init{i}" for i in range(np_))}}};
    for (int i = 0; i < {np_}; i++) {{
        for (int s = 0; s < 2; s++) w[s][i] = malloc(sizeof(float) * sizes[i]);
        memcpy(w[0][i], init[i], sizeof(float) * sizes[i]);
    }}
    void *arena = aligned_alloc(64, (TRAIN_STEP_ARENA_BYTES + 63) / 64 * 64);
    float loss;
    int cur = 0;
    for (int t = 0; t < {STEPS}; t++) {{
        train_step({", ".join(f"w[cur][{i}]" for i in range(np_))}, x, y,
                   {", ".join(f"w[1 - cur][{i}]" for i in range(np_))}, &loss, arena);
        printf("%.9g\\n", loss);
        cur = 1 - cur;
    }}
    for (int i = 0; i < {np_}; i++)
        for (long j = 0; j < sizes[i]; j++) printf("%.9g\\n", w[cur][i][j]);
    void *arena2 = aligned_alloc(64, (PREDICT_ARENA_BYTES + 63) / 64 * 64);
    static float logp[PREDICT_OUT0_SIZE];
    predict({", ".join(f"w[cur][{i}]" for i in range(np_))}, x, logp, arena2);
    for (int i = 0; i < PREDICT_OUT0_SIZE; i++) printf("%.9g\\n", logp[i]);
    return 0;
}}
"""
    got = numbers(build(tmp_path, source, [str(tmp_path / "train_step.o"),
                                          str(tmp_path / "predict.o")]))
    ref_step = nnjit.compile(train_step, params, x, y, backend="interp")
    p, losses = params, []
    for _ in range(STEPS):
        p, loss = ref_step(p, x, y)
        losses.append(loss)
    assert losses[-1] < losses[0]
    assert_close(got[:STEPS].astype(np.float32), np.array(losses, np.float32), rtol=1e-4)
    flat_w = np.concatenate([p[k].ravel() for k in names])
    assert_close(got[STEPS:STEPS + flat_w.size].astype(np.float32), flat_w, rtol=1e-4,
                 atol=1e-5)
    logp = nnjit.compile(predict, p, x, backend="interp")(p, x)
    assert_close(got[STEPS + flat_w.size:].astype(np.float32), logp.ravel(), rtol=1e-4,
                 atol=1e-5)


def test_export_rejects_unknown_suffix(tmp_path):
    params, x = init_params(), np.zeros((BATCH, D_IN), np.float32)
    cf = nnjit.compile(predict, params, x, backend="llvm")
    with pytest.raises(ValueError, match=".o or .so"):
        cf.export(tmp_path / "predict.dll")
