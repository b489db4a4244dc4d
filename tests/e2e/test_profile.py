"""The per-kernel profiler: every kernel timed, the numbers adding up, a Chrome trace, and no
timing code in the build that ordinary calls run."""
from __future__ import annotations

import json

import numpy as np
import pytest

import nnjit
from nnjit import nn
from nnjit.cli import main
from nnjit.ir.kernel import STATUS_BYTES

RNG = np.random.default_rng(0)


def _step():
    model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4))

    def loss(p, x, y):
        return nn.cross_entropy(model.apply(p, x), y)

    args = (model.init(seed=0), RNG.standard_normal((8, 16)).astype(np.float32),
            RNG.integers(0, 4, 8))
    return nnjit.value_and_grad(loss), args


@pytest.mark.parametrize("native", ["llvm", "cuda", "interp"])
def test_profile_times_every_kernel_and_the_dispatch(native, tmp_path):
    fn, args = _step()
    cf = nnjit.jit(fn, backend=native).lower(*args)
    trace = tmp_path / "trace.json"
    p = cf.profile(*args, repeats=3, trace=str(trace))
    n = len(cf.program.kernels) if cf.program is not None else len(cf.graph.nodes)
    assert len(p.kernels) == n and all(k.seconds >= 0 for k in p.kernels)
    assert p.call_seconds > 0 and p.dispatch_seconds >= 0
    assert "dispatch" in str(p) and "share" in str(p)
    events = json.loads(trace.read_text())["traceEvents"]
    assert len(events) == n + 1 and all(e["ph"] == "X" for e in events)
    if native == "llvm":
        assert any(k.kind == "gemm" and k.flops > 0 for k in p.kernels)
        assert any("test_profile.py" in k.where for k in p.kernels)   # the user's lines


def test_ordinary_builds_carry_no_timing_code():
    """Timestamps are taken only in the instrumented build that profile() compiles."""
    fn, args = _step()
    cf = nnjit.jit(fn, backend="llvm").lower(*args)
    assert "clock_gettime" not in cf.llvm_ir()
    cf.profile(*args, repeats=1)
    assert "clock_gettime" not in cf.llvm_ir()
    assert "clock_gettime" in cf.executable._instrumented.llvm_ir()
    assert cf.executable._instrumented.rendered.profile_bytes > 0
    assert cf.executable.rendered.profile_bytes == 0


def test_profile_command(tmp_path, capsys):
    src = tmp_path / "model.py"
    src.write_text("import numpy as np\nimport nnjit\n\n\ndef f(x):\n"
                   "    return nnjit.softmax(x * 2.0, axis=-1)\n\n\n"
                   "EXAMPLES = {'f': (np.ones((4, 8), np.float32),)}\n")
    assert main(["profile", str(src), "--repeats", "2", "--trace",
                 str(tmp_path / "t.json")]) == 0
    out = capsys.readouterr().out
    assert "profile of @f on llvm" in out and "model.py:6" in out
    assert (tmp_path / "t.json").exists()


def test_a_profiled_run_still_checks_indices():
    """The instrumented build's timestamps and status word do not overlap: an out-of-range
    label raises there as it does in the ordinary build (it once went unreported)."""
    fn, args = _step()
    cf = nnjit.jit(fn, backend="llvm").lower(*args)
    bad = (args[0], args[1], np.full(8, 7))
    with pytest.raises(nnjit.IndexOutOfRange):
        cf(*bad)
    with pytest.raises(nnjit.IndexOutOfRange):
        cf.profile(*bad, repeats=1)
    instrumented = cf.executable._instrumented
    r = instrumented.rendered
    # native code finds the status word just below the workspace; the runtime reads it there
    assert r.status_offset == r.arena_bytes - r.workspace_bytes - STATUS_BYTES
    assert r.profile_offset + r.profile_bytes <= r.status_offset
    with pytest.raises(nnjit.IndexOutOfRange):
        instrumented(cf.flat_args(bad))
