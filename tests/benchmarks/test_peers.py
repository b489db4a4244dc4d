"""benchmarks/peers.py runs end to end on one cheap workload, with whatever peers are
installed and with none of them (then only nnjit and numpy are reported). It checks that the
driver works and that every contender agrees with the float64 reference, not any timing."""
from __future__ import annotations

import json
import os
import subprocess
import sys

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
PEERS = os.path.join(ROOT, "benchmarks", "peers.py")
PEER_PACKAGES = ("torch", "jax", "onnxruntime", "onnx")


def _run(tmp_path, extra_path: str | None = None) -> tuple[dict, str]:
    env = dict(os.environ)
    paths = [p for p in (extra_path, os.path.join(ROOT, "src"), env.get("PYTHONPATH")) if p]
    env["PYTHONPATH"] = os.pathsep.join(paths)
    out = tmp_path / "peers.json"
    p = subprocess.run([sys.executable, PEERS, "--quick", "--threads", "1", "--rounds", "1",
                        "--only", "gemm_1024", "--no-compile", "--json", str(out)],
                       env=env, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    return json.loads(out.read_text()), p.stdout


def _check_row(res: dict) -> dict:
    row = res["rows"]["gemm_1024"]
    assert {"nnjit", "numpy"} <= set(row)
    for name, r in row.items():
        assert r["status"] == "ok", (name, r["status"])
        assert r["ms"] > 0
    return row


def test_peers_quick_with_the_installed_peers(tmp_path):
    res, table = _run(tmp_path)
    row = _check_row(res)
    for family, contender in (("torch", "torch"), ("jax", "jax.jit")):
        assert (contender in row) == (family in res["versions"])
    assert "| GEMM 1024x1024x1024 f32 |" in table and "nnjit/best" in table


def test_peers_quick_without_any_peer(tmp_path):
    hidden = tmp_path / "hidden"
    for name in PEER_PACKAGES:              # importing one of these now fails, as if absent
        (hidden / name).mkdir(parents=True)
        (hidden / name / "__init__.py").write_text(f"raise ImportError('{name} hidden')\n")
    res, table = _run(tmp_path, str(hidden))
    assert set(_check_row(res)) == {"nnjit", "numpy"}
    assert {"torch", "jax", "onnxruntime"} <= set(res["notes"])
    assert "torch not importable" in table


def test_the_reference_check_flags_a_wrong_update_and_forgives_rounding():
    import numpy as np
    sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
    from peerlib.common import disagreement

    rng = np.random.default_rng(0)
    p0 = rng.standard_normal((64, 32)).astype(np.float32)
    grad = rng.standard_normal((64, 32)) * 1e-3
    ref = {"loss": np.float64(2.5), "params": {"w": p0 - 0.01 * grad}}
    right = {"loss": np.float32(2.5), "params": {"w": (p0 - 0.01 * grad).astype(np.float32)}}
    wrong = {"loss": np.float32(2.5), "params": {"w": (p0 - 0.011 * grad).astype(np.float32)}}
    assert disagreement(right, ref, {"w": p0}) is None
    assert "params/w" in disagreement(wrong, ref, {"w": p0})
    assert "loss" in disagreement({**right, "loss": np.float32(2.6)}, ref, {"w": p0})
