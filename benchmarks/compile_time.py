"""Compile time of the training steps in fresh processes: cold, cold with the GEMM runtime
already cached, and warm (the disk cache holds everything), split into phases.

    python benchmarks/compile_time.py [--repeats 3] [--only mlp,lenet,lstm] [--json]

Each repeat uses a new empty NNJIT_CACHE_DIR and runs, each in its own Python process:
  cold        the empty cache: the GEMM runtime library and the step are both compiled
  cold_model  the GEMM runtime is cached (as after any earlier compile on this machine),
              the step is compiled (a second step's figure; jax's runtime is prebuilt too)
  warm        the step is cached as well: import + jit + first call, nothing compiled
The steps are benchmarks/steps.py's (MLP 784-512-512-10 batch 128, LeNet-5 batch 64,
char-LSTM T32 B16). Phases (seconds, exclusive: a phase nested in another is not counted twice;
the GEMM runtime's own parsing, optimization and emission count as `gemm_runtime`):
  import        `import nnjit` (numpy included)
  backend_import  importing the llvm backend (llvmlite), done by the first llvm jit
  trace         tracing the step into a graph (autodiff included)
  passes        graph passes and kernel-IR stages (lower, schedule, plan_memory)
  codegen       rendering kernel IR to LLVM IR text (llvmlite.ir)
  llvm_parse    parsing and verifying that text in LLVM
  llvm_opt      the LLVM optimization pipeline
  llvm_emit     machine code emission
  gemm_runtime  generating/compiling/loading the GEMM runtime library
  load          linking object code into the process
  other         the rest of jit (cache keys and I/O, argument checks, ...)
  first_call    the first call of the compiled step
  jit_call      everything after import: jit + first call (the warm-start figure)
Medians over the repeats. The machine may be shared: compare figures from one run.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

STEPS = {"mlp": "mlp_step_b128", "lenet": "lenet_step_b64", "lstm": "lstm_step_t32_b16"}
MODES = ("cold", "cold_model", "warm")
PHASES = ("import", "backend_import", "trace", "passes", "codegen", "llvm_parse", "llvm_opt", "llvm_emit",
          "gemm_runtime", "load", "other", "first_call", "jit_call")
HERE = Path(__file__).resolve().parent


# --- the child: one step, one process ---------------------------------------------------------
class _Phases:
    """Exclusive wall time per phase: a wrapped function's time minus that of the wrapped
    functions it calls. Inside `group` phases, nested phases are attributed to the group."""

    def __init__(self):
        self.times: dict[str, float] = {}
        self.stack: list[list] = []     # [name, start, time spent in children]

    def wrap(self, owner, attr: str, phase: str, group: bool = False) -> None:
        fn = getattr(owner, attr)

        def timed(*args, **kwargs):
            name = phase
            if any(g for _, _, _, g in self.stack):
                name = next(n for n, _, _, g in self.stack if g)
            frame = [name, time.perf_counter(), 0.0, group]
            self.stack.append(frame)
            try:
                return fn(*args, **kwargs)
            finally:
                self.stack.pop()
                spent = time.perf_counter() - frame[1]
                self.times[name] = self.times.get(name, 0.0) + spent - frame[2]
                if self.stack:
                    self.stack[-1][2] += spent
        setattr(owner, attr, timed)


def _instrument(phases: _Phases) -> None:
    import llvmlite.binding as llvm  # noqa: PLC0415

    import nnjit.api  # noqa: PLC0415
    from nnjit.backends.llvm import executable, gemm, target  # noqa: PLC0415
    from nnjit.passes import manager  # noqa: PLC0415

    phases.wrap(nnjit.api, "trace_flat", "trace")
    phases.wrap(manager.PassManager, "run", "passes")
    phases.wrap(executable, "render", "codegen")
    phases.wrap(gemm, "ensure_runtime_loaded", "gemm_runtime", group=True)
    phases.wrap(target, "prepare_module", "llvm_parse")
    phases.wrap(target, "optimize", "llvm_opt")
    phases.wrap(llvm.TargetMachine, "emit_object", "llvm_emit")
    phases.wrap(target, "load_object", "load")


def child(step: str, prime_runtime: bool) -> None:
    t0 = time.perf_counter()
    import nnjit  # noqa: F401, PLC0415
    t_import = time.perf_counter() - t0
    if prime_runtime:
        from nnjit.backends.llvm import gemm  # noqa: PLC0415
        gemm.ensure_runtime_loaded()
        print(json.dumps({}))
        return
    sys.path.insert(0, str(HERE))
    import numpy as np  # noqa: PLC0415
    import steps  # noqa: PLC0415

    make, args = steps.workloads(np.random.default_rng(0))[step]
    fn = make("llvm")
    t1 = time.perf_counter()
    import nnjit.backends.llvm  # noqa: F401, PLC0415  (what the first llvm jit imports)
    t_backend = time.perf_counter() - t1
    phases = _Phases()
    _instrument(phases)
    t1 = time.perf_counter()
    cf = fn.lower(*args)
    t2 = time.perf_counter()
    cf(*args)
    t3 = time.perf_counter()
    out = dict(phases.times)
    out["other"] = (t2 - t1) - sum(out.values())
    out.update(first_call=t3 - t2, jit_call=t3 - t1 + t_backend, backend_import=t_backend)
    out["import"] = t_import
    print(json.dumps(out))


# --- the parent ---------------------------------------------------------------------------------
def _run_child(step: str, cache_dir: str, prime: bool = False) -> dict:
    env = dict(os.environ, NNJIT_CACHE="1", NNJIT_CACHE_DIR=cache_dir)
    cmd = [sys.executable, __file__, "--child", step] + (["--prime-runtime"] if prime else [])
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if res.returncode != 0:
        raise SystemExit(f"{step}: child failed:\n{res.stderr}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def measure(step: str, repeats: int) -> dict:
    runs: dict[str, list[dict]] = {m: [] for m in MODES}
    for _ in range(repeats):
        with tempfile.TemporaryDirectory(prefix="nnjit-ct-") as d:
            runs["cold"].append(_run_child(step, d))
            runs["warm"].append(_run_child(step, d))
        with tempfile.TemporaryDirectory(prefix="nnjit-ct-") as d:
            _run_child(step, d, prime=True)
            runs["cold_model"].append(_run_child(step, d))
    return {m: {p: statistics.median(r.get(p, 0.0) for r in rs) for p in PHASES}
            for m, rs in runs.items()}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--only", default="", help="comma-separated: " + ",".join(STEPS))
    ap.add_argument("--json", action="store_true", help="print only the JSON line")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--prime-runtime", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.child:
        child(a.child, a.prime_runtime)
        return
    names = [n for n in STEPS if not a.only or n in a.only.split(",")]
    res = {n: measure(STEPS[n], a.repeats) for n in names}
    if not a.json:
        for n, modes in res.items():
            print(f"{n} ({STEPS[n]}), medians of {a.repeats}, seconds")
            print(f"  {'phase':<13}" + "".join(f"{m:>11}" for m in MODES))
            for p in PHASES:
                print(f"  {p:<13}" + "".join(f"{modes[m][p]:11.3f}" for m in MODES))
    print(json.dumps(res))


if __name__ == "__main__":
    main()
