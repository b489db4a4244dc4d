"""One contender family in its own process, driven over stdin/stdout by the coordinator in
peers.py: JSON lines in, JSON lines out (anything the libraries print goes to stderr)."""
from __future__ import annotations

import gc
import importlib
import json
import os
import sys
import time
import traceback

from .common import disagreement, load
from .workloads import WORKLOADS

FAMILIES = {"nnjit": "nnjit", "numpy": "numpy", "torch": "torch", "jax": "jax",
            "onnxruntime": "onnxruntime"}
#: Aim of one timed sample (a few inner calls of a short contender add up to about this).
SAMPLE_S = 0.03
MAX_INNER = 20


def _contenders(family: str, w, data, msg: dict, threads: int) -> dict:
    module = "ort" if family == "onnxruntime" else family
    side = importlib.import_module(f"peerlib.{module}_side")
    if family == "onnxruntime":
        return side.contenders(w, data, msg.get("onnx"), threads)
    return side.contenders(w, data)


def _setup(family: str, msg: dict, threads: int, live: dict) -> dict:
    w = WORKLOADS[msg["workload"]]
    data, ref = load(msg["path"])
    status, inner, setup_s = {}, {}, {}
    try:
        made = _contenders(family, w, data, msg, threads)
    except Exception as exc:                      # a peer that cannot build this workload
        return {"status": {family: f"failed: {type(exc).__name__}: {exc}"[:300]}}
    for name, c in made.items():
        try:
            t = time.perf_counter()
            got = c.fetch(c.call())
            setup_s[name] = time.perf_counter() - t
            why = disagreement(got, ref, data["params"] if w.kind == "step" else None)
            if why:
                status[name] = f"WRONG: {why}"
                continue
            t = time.perf_counter()
            c.call()
            one = time.perf_counter() - t
            inner[name] = max(1, min(MAX_INNER, round(SAMPLE_S / max(one, 1e-9))))
            status[name] = "ok"
            live[name] = c
        except Exception as exc:                  # e.g. torch.compile without a compiler
            traceback.print_exc(file=sys.stderr)
            status[name] = f"failed: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}" \
                if str(exc) else f"failed: {type(exc).__name__}"
    return {"status": status, "inner": inner, "first_call_s": setup_s}


def serve(family: str, threads: int) -> None:
    reply_to = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)                                 # stray prints must not corrupt the protocol
    sys.stdout = sys.stderr

    def reply(obj):
        reply_to.write(json.dumps(obj) + "\n")

    try:
        mod = importlib.import_module(FAMILIES[family])
        if family == "torch":
            mod.set_num_threads(threads)
        version = getattr(mod, "__version__", "?")
    except Exception as exc:
        reply({"missing": f"{family} not importable ({type(exc).__name__}: {exc})"[:200]})
        return
    reply({"version": str(version)})
    live: dict = {}
    for line in sys.stdin:
        msg = json.loads(line)
        if msg["op"] == "setup":
            reply(_setup(family, msg, threads, live))
        elif msg["op"] == "time":
            c, n = live[msg["name"]], msg["inner"]
            t = time.perf_counter()
            for _ in range(n):
                c.call()
            reply({"s": (time.perf_counter() - t) / n})
        elif msg["op"] == "drop":
            live.clear()
            gc.collect()
            reply({})
        else:
            return
