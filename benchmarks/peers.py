"""nnjit (llvm) against numpy, torch eager, torch.compile, jax.jit and onnxruntime on issue 14's
workloads, side by side, at one and two threads.

    python benchmarks/peers.py [--rounds 7] [--json FILE] [--quick] [--only a,b] [--no-compile]
    python benchmarks/peers.py --threads 1 ...      # one thread count only

The peers are an optional extra (`pip install -e '.[peers]'`); a peer that is not installed, or
that fails to build a workload (torch.compile without a C++ compiler), is skipped with a note.

Method. Without --threads, the driver runs `--threads 1` and `--threads 2` in subprocesses and
prints their tables and one summary. For one thread count, the coordinator writes each
workload's data and its float64 numpy reference to a file (the same initial parameters and
inputs for every contender: nnjit's initializers, one seed) and starts one worker process per
contender family (nnjit, numpy, torch, jax, onnxruntime) with NNJIT_NUM_THREADS,
OMP_NUM_THREADS, OPENBLAS_NUM_THREADS, torch.set_num_threads, XLA_FLAGS
(intra_op_parallelism_threads=N, and --xla_cpu_multi_thread_eigen=false at one thread only:
at two it left jax's GEMM on one core) and
onnxruntime's intra_op_num_threads set to N, and pinned to N CPUs when N is fewer than the
machine has (`pin_to`: thread settings alone left jax.jit on two cores). Each worker builds its contenders and runs each
once from the initial data; the result is checked against the reference (the loss and, for a
training step, the update of every parameter leaf; see peerlib/common.py) and a contender that
disagrees is reported as WRONG and not timed. Then the contenders take turns: each round asks
every worker in turn to time each of its contenders once (a few inner calls, about 30 ms), with
a short pause between samples so idle thread pools go back to sleep; the figure is the median
over --rounds rounds. Training steps are plain SGD (lr 0.01) everywhere, params donated to
jax.jit and nnjit; nnjit's forwards take the params as arguments (as benchmarks/steps.py).

Why one process per family: two OpenMP runtimes in one process can fight (the note in
benchmarks/onnx_models.py saw a GRU go from 9 ms to 38-1250 ms beside torch's threads). With
nnjit's passive wait policy the effect was not clear here: the MLP step (batch 128, 2 threads)
took 6.6 / 6.6 ms alone and 7.3 / 6.1 ms in a process that also ran torch's step in turn (two
pairs, load about 2). Separate worker processes taking turns cost the method nothing, rule the
interference out for every peer (OpenBLAS, torch's libgomp, XLA's pool), and keep a crashing
peer from taking the run down.

Compile rows run in fresh subprocesses: cold (NNJIT_CACHE=0; jax without its persistent cache),
cold with nnjit's runtime libraries cached (the pool and GEMM, built once per machine by any
earlier use; jaxlib ships its runtime compiled, so jax's cold figure stands against both) and
warm start (nnjit's disk cache populated in a fresh directory; jax's persistent compilation
cache likewise): the time from building the jit function to the first step's result, imports
excluded. torch.compile's compile time is not measured (PERF_NOTES: 4-26 s plus ~9 s start-up).
"""
from __future__ import annotations

import argparse
import atexit
import contextlib
import functools
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from peerlib.workloads import WORKLOADS  # noqa: E402

COLUMNS = ["nnjit", "numpy", "torch", "torch.compile", "jax.jit", "onnxruntime"]
FAMILIES = {"nnjit": ["nnjit"], "numpy": ["numpy"], "torch": ["torch", "torch.compile"],
            "jax": ["jax.jit"], "onnxruntime": ["onnxruntime"]}
QUICK = ["softmax_ce", "mlp_step_b16", "mlp_fwd_b128", "chainB_out", "gemm_1024"]
COMPILE_STEPS = {"mlp_step_b128": "MLP step (batch 128)", "lenet_step_b64": "LeNet-5 step",
                 "lstm_step": "char-LSTM step"}
PAUSE_S = 0.05


def thread_env(threads: int) -> dict:
    env = dict(os.environ)
    n = str(threads)
    env.update(NNJIT_NUM_THREADS=n, OMP_NUM_THREADS=n, OPENBLAS_NUM_THREADS=n, MKL_NUM_THREADS=n,
               XLA_FLAGS=f"--xla_cpu_multi_thread_eigen={'true' if threads > 1 else 'false'} "
                         f"intra_op_parallelism_threads={n}",
               PYTHONPATH=os.pathsep.join(p for p in (HERE, env.get("PYTHONPATH")) if p))
    env.setdefault("NNJIT_CACHE", "0")
    return env


def pin_to(threads: int):
    """A `preexec_fn` restricting a child to the first `threads` CPUs this process may use
    (None when that is all of them): N threads means N cores for every contender, whatever
    its library does with its thread settings (at one thread, jax.jit ran GEMM 1024 at 230
    GFLOP/s, two cores' worth, with XLA told to use one)."""
    allowed = sorted(os.sched_getaffinity(0))
    if threads >= len(allowed):
        return None
    cpus = set(allowed[:threads])
    return lambda: os.sched_setaffinity(0, cpus)


# -- workers -------------------------------------------------------------------------------------
class Worker:
    """One family's process; `ask` sends a command and returns its JSON reply."""

    def __init__(self, family: str, threads: int, log_dir: str):
        self.family = family
        self.log = os.path.join(log_dir, f"{family}-{threads}T.log")
        with open(self.log, "w") as log:     # the child keeps its own copy of the descriptor
            self.proc = subprocess.Popen(
                [sys.executable, os.path.abspath(__file__), "--worker", family, "--threads",
                 str(threads)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log,
                text=True, env=thread_env(threads), preexec_fn=pin_to(threads))
        hello = self._read()
        self.version, self.missing = hello.get("version"), hello.get("missing")

    def _read(self) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            return {"missing": f"{self.family} worker exited (rc {self.proc.wait()}; see "
                               f"{self.log})"}
        return json.loads(line)

    def ask(self, **msg) -> dict:
        try:
            self.proc.stdin.write(json.dumps(msg) + "\n")
            self.proc.stdin.flush()
        except BrokenPipeError:
            return {"missing": f"{self.family} worker died"}
        return self._read()

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.proc.stdin.close()
            except BrokenPipeError:
                pass
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def _data_file(w, data_dir: str) -> tuple[str, str | None]:
    """Write (once) the workload's data with its reference, and its ONNX export for the
    inference rows; (npz path, onnx path or None)."""
    from peerlib import common, workloads

    key = f"chain{w.chain}" if w.kind == "chain" else w.name
    path = os.path.join(data_dir, key + ".npz")
    if not os.path.exists(path):
        data = workloads.make_data(w)
        tmp = path + f".{os.getpid()}.tmp.npz"
        common.save(tmp, data, workloads.reference(w, data))
        os.replace(tmp, path)
    onnx = None
    if w.kind in ("forward", "chain"):
        onnx = os.path.join(data_dir, key + ".onnx")
        if not os.path.exists(onnx):
            try:
                import onnx as _  # noqa: F401
            except ImportError:
                return path, None
            from peerlib import ort_side
            data, _ = common.load(path)
            ort_side.export(w, data, onnx + f".{os.getpid()}.tmp")
            os.replace(onnx + f".{os.getpid()}.tmp", onnx)
    return path, onnx


@contextlib.contextmanager
def alone(timed: Worker, workers: list[Worker]):
    """The other workers stopped (SIGSTOP) while `timed` runs: an idle pool that spins after
    its own turn (OpenMP, onnxruntime, Eigen, nnjit's) would otherwise take the second core
    from whoever is timed next. At two threads that halved some contenders' rates, by turns."""
    others = [wk for wk in workers if wk is not timed and wk.proc.poll() is None]
    for wk in others:
        wk.proc.send_signal(signal.SIGSTOP)
    try:
        yield
    finally:
        for wk in others:
            wk.proc.send_signal(signal.SIGCONT)


def run_workload(w, workers: list[Worker], data_dir: str, rounds: int) -> dict:
    path, onnx = _data_file(w, data_dir)
    res: dict = {}
    inner: dict = {}
    for wk in workers:
        r = wk.ask(op="setup", workload=w.name, path=path, onnx=onnx)
        if "missing" in r:
            wk.missing = r["missing"]
            continue
        for name, st in r["status"].items():
            res[name] = {"status": st, "first_call_s": r.get("first_call_s", {}).get(name)}
            if st == "ok":
                inner[name] = (wk, r["inner"][name])
    samples: dict = {name: [] for name in inner}
    order = list(inner)
    for k in range(rounds):
        for name in order[k % len(order):] + order[:k % len(order)] if order else []:
            wk, n = inner[name]
            with alone(wk, workers):
                time.sleep(PAUSE_S)
                samples[name].append(wk.ask(op="time", name=name, inner=n)["s"])
    for wk in workers:
        if not wk.missing:
            wk.ask(op="drop")
    for name, s in samples.items():
        res[name].update(ms=1e3 * statistics.median(s), samples_ms=[1e3 * v for v in s],
                         inner=inner[name][1])
    return res


# -- compile probes ------------------------------------------------------------------------------
def probe(family: str, name: str, path: str, cache: str | None) -> None:
    """In a fresh process: build the step and run it once; print the seconds on stdout."""
    from peerlib import common
    t_import = time.perf_counter()
    w = WORKLOADS[name]
    data, _ = common.load(path)
    if family == "nnjit":
        import nnjit  # noqa: F401
        from peerlib.nnjit_side import step_fn
        t_import = time.perf_counter() - t_import
        t = time.perf_counter()
        step_fn(w)(data["params"], data["x"], data["y"])
    else:
        import jax
        if cache:
            jax.config.update("jax_compilation_cache_dir", cache)
            jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
            jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
        else:
            jax.config.update("jax_enable_compilation_cache", False)
        from peerlib import jax_side
        t_import = time.perf_counter() - t_import
        t = time.perf_counter()
        jax_side.contenders(w, data)["jax.jit"].call()
    print(json.dumps({"s": time.perf_counter() - t, "import_and_load_s": t_import}))


def _probe(family: str, name: str, path: str, threads: int, cache: str | None) -> dict:
    """One fresh process; cold (cache None: nnjit's cache off and pointed at an empty
    directory, jax's off) or warm from the cache directory `cache`."""
    env = thread_env(threads)
    # Bytecode cached as for any installed package (a sandbox may set PYTHONDONTWRITEBYTECODE,
    # which made every probe compile nnjit's sources, but not site-packages', again).
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = _pycache()
    cmd = [sys.executable, os.path.abspath(__file__), "--probe", family, name, path,
           "--cache", cache or ""]
    with tempfile.TemporaryDirectory(prefix="nnjit-cold-") as empty:
        if family == "nnjit":
            env["NNJIT_CACHE"] = "1" if cache else "0"
            env["NNJIT_CACHE_DIR"] = cache or empty
        p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600,
                           preexec_fn=pin_to(threads))
    if p.returncode:
        return {"error": (p.stderr.strip().splitlines() or ["?"])[-1][:200]}
    return json.loads(p.stdout.strip().splitlines()[-1])


@functools.cache
def _pycache() -> str:
    """One bytecode cache for every probe of this run (removed at exit)."""
    path = tempfile.mkdtemp(prefix="peers-pycache-")
    atexit.register(shutil.rmtree, path, True)
    return path


def _runtime_cache(threads: int) -> str:
    """A cache directory holding nnjit's runtime libraries (thread pool, GEMMs) and nothing
    else: what any earlier use of nnjit on the machine leaves, as jaxlib ships XLA's runtime
    compiled."""
    cache = tempfile.mkdtemp(prefix="peers-nnjit-runtime-")
    env = dict(thread_env(threads), NNJIT_CACHE="1", NNJIT_CACHE_DIR=cache)
    subprocess.run([sys.executable, "-c", "from nnjit.backends.llvm import gemm; "
                    "gemm.ensure_runtime_loaded(None)"], env=env, check=True, timeout=600)
    return cache


def _cold_model_probe(family: str, name: str, path: str, threads: int, runtime: str) -> dict:
    """A cold compile of the model with the runtime libraries already cached (a fresh copy of
    `runtime` each time, so no model code from an earlier probe is found)."""
    with tempfile.TemporaryDirectory(prefix="peers-nnjit-model-") as tmp:
        cache = os.path.join(tmp, "cache")
        shutil.copytree(runtime, cache)
        return _probe(family, name, path, threads, cache)


def compile_times(names: list[str], data_dir: str, threads: int, repeats: int,
                  families: list[str]) -> dict:
    out: dict = {}
    runtime = _runtime_cache(threads) if "nnjit" in families else None
    for name in names:
        path, _ = _data_file(WORKLOADS[name], data_dir)
        for fam in families:
            _probe(fam, name, path, threads, None)       # fills the bytecode cache: not timed
            cache = tempfile.mkdtemp(prefix=f"peers-{fam}-cache-")
            cold = [_probe(fam, name, path, threads, None) for _ in range(repeats)]
            cold_model = [_cold_model_probe(fam, name, path, threads, runtime)
                          for _ in range(repeats)] if fam == "nnjit" else []
            populate = _probe(fam, name, path, threads, cache)
            warm = [_probe(fam, name, path, threads, cache) for _ in range(repeats)]
            cell = {}
            for kind, runs in (("cold", cold), ("cold_model", cold_model), ("warm", warm)):
                if not runs:
                    continue
                ok = [r["s"] for r in runs if "s" in r]
                cell[kind] = statistics.median(ok) if ok else None
                errs = [r["error"] for r in runs + [populate] if "error" in r]
                if errs:
                    cell["error"] = errs[0]
            loads = [r["import_and_load_s"] for r in warm + cold if "import_and_load_s" in r]
            cell["import_and_load_s"] = statistics.median(loads) if loads else None
            cell["cache_files"] = sum(len(f) for _, _, f in os.walk(cache))
            shutil.rmtree(cache, ignore_errors=True)
            out.setdefault(name, {})[fam] = cell
    if runtime:
        shutil.rmtree(runtime, ignore_errors=True)
    return out


#: The compile rows: kind -> label. jax has no runtime of its own to build, so its cold figure
#: stands against both of nnjit's.
COMPILE_KINDS = {"cold": "cold compile (nothing cached)",
                 "cold_model": "cold compile (runtime libraries cached)",
                 "warm": "warm start (disk cache)"}


def _jax_kind(kind: str) -> str:
    return "cold" if kind == "cold_model" else kind


# -- one thread count ----------------------------------------------------------------------------
def run_threads(a) -> dict:
    names = a.only.split(",") if a.only else (QUICK if a.quick else list(WORKLOADS))
    unknown = [n for n in names if n not in WORKLOADS]
    if unknown:
        raise SystemExit(f"unknown workload(s) {unknown}; known: {', '.join(WORKLOADS)}")
    data_dir = a.data_dir
    workers = [Worker(f, a.threads, data_dir) for f in FAMILIES]
    notes = {wk.family: wk.missing for wk in workers if wk.missing}
    versions = {wk.family: wk.version for wk in workers if wk.version}
    live = [wk for wk in workers if not wk.missing]
    rows = {}
    try:
        for n in names:
            t = time.perf_counter()
            rows[n] = run_workload(WORKLOADS[n], live, data_dir, a.rounds)
            print(f"[{a.threads}T] {n}: " + ", ".join(
                f"{c} {r['ms']:.3f}" if "ms" in r else f"{c} {r['status'][:60]}"
                for c, r in rows[n].items()) + f"  ({time.perf_counter() - t:.0f} s)",
                file=sys.stderr, flush=True)
    finally:
        for wk in workers:
            if wk.missing and wk.family not in notes:
                notes[wk.family] = wk.missing
            wk.close()
    compiles = {}
    if not a.no_compile:
        wanted = [n for n in COMPILE_STEPS if not a.only or n in names]
        fams = ["nnjit"] + (["jax"] if "jax" in versions else [])
        compiles = compile_times(wanted, data_dir, a.threads, 1 if a.quick else 3, fams)
    return {"threads": a.threads, "rounds": a.rounds, "rows": rows, "compile": compiles,
            "notes": notes, "versions": versions, "load_avg": os.getloadavg()}


# -- tables --------------------------------------------------------------------------------------
def best_peer(row: dict) -> tuple[str | None, float | None]:
    peers = [(r["ms"], c) for c, r in row.items() if c != "nnjit" and "ms" in r]
    return (min(peers)[1], min(peers)[0]) if peers else (None, None)


def _cell(r: dict | None) -> str:
    if r is None:
        return ""
    if "ms" in r:
        return f"{r['ms']:.3f}"
    return "WRONG" if r["status"].startswith("WRONG") else "failed"


def table(res: dict) -> str:
    lines = [f"| workload ({res['threads']} thread{'s' * (res['threads'] > 1)}, ms) | "
             + " | ".join(COLUMNS) + " | best peer | nnjit/best |",
             "|---|" + "---:|" * len(COLUMNS) + "---|---:|"]
    problems = []
    for n, row in res["rows"].items():
        peer, ms = best_peer(row)
        nn = row.get("nnjit", {}).get("ms")
        ratio = f"{nn / ms:.2f}" if nn and ms else ""
        lines.append(f"| {WORKLOADS[n].label} | " + " | ".join(_cell(row.get(c)) for c in COLUMNS)
                     + f" | {peer or ''} | {ratio} |")
        problems += [f"{n} / {c}: {r['status']}" for c, r in row.items() if r["status"] != "ok"]
    for n, fams in res["compile"].items():
        for kind, label in COMPILE_KINDS.items():
            nn = fams.get("nnjit", {}).get(kind)
            jx = fams.get("jax", {}).get(_jax_kind(kind))
            cells = {"nnjit": f"{nn:.2f} s" if nn else "", "jax.jit": f"{jx:.2f} s" if jx else ""}
            ratio = f"{nn / jx:.2f}" if nn and jx else ""
            lines.append(f"| {label}, {COMPILE_STEPS.get(n, n)} | "
                         + " | ".join(cells.get(c, "") for c in COLUMNS)
                         + f" | {'jax.jit' if jx else ''} | {ratio} |")
        problems += [f"compile {n} / {f}: {c['error']}" for f, c in fams.items() if "error" in c]
    notes = [f"- {f}: {why}" for f, why in res["notes"].items()] + [f"- {p}" for p in problems]
    vers = ", ".join(f"{k} {v}" for k, v in res["versions"].items())
    return "\n".join(lines + ["", f"versions: {vers}; load average at the end "
                              f"{res['load_avg'][0]:.1f}"] + (["", "notes:"] + notes if notes
                                                              else []))


def summary(results: list[dict]) -> str:
    head = " | ".join(f"{r['threads']}T nnjit/best (best peer)" for r in results)
    lines = [f"| workload | {head} |", "|---|" + "---|" * len(results)]
    for n in results[0]["rows"]:
        cells = []
        for r in results:
            peer, ms = best_peer(r["rows"].get(n, {}))
            nn = r["rows"].get(n, {}).get("nnjit", {}).get("ms")
            cells.append(f"{nn / ms:.2f} ({peer})" if nn and ms else "")
        lines.append(f"| {WORKLOADS[n].label} | " + " | ".join(cells) + " |")
    for n in results[0]["compile"]:
        for kind, what in COMPILE_KINDS.items():
            cells = []
            for r in results:
                c = r["compile"].get(n, {})
                nn = c.get("nnjit", {}).get(kind)
                jx = c.get("jax", {}).get(_jax_kind(kind))
                cells.append(f"{nn:.2f} s" * bool(nn) + f" (jax.jit {jx:.2f} s)" * bool(jx))
            lines.append(f"| {what}, {COMPILE_STEPS.get(n, n)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, help="one thread count (default: 1 and 2, each in "
                    "its own subprocess)")
    ap.add_argument("--rounds", type=int, default=7, help="rounds of turns; the median is shown")
    ap.add_argument("--only", default="", help="comma-separated workload names: "
                    + ", ".join(WORKLOADS))
    ap.add_argument("--quick", action="store_true", help="a few cheap workloads, 3 rounds, one "
                    "compile probe each")
    ap.add_argument("--no-compile", action="store_true", help="skip the cold/warm compile rows")
    ap.add_argument("--json", help="write every figure to this file")
    ap.add_argument("--from-json", help="print the tables of an earlier --json file and exit")
    ap.add_argument("--data-dir", help=argparse.SUPPRESS)
    ap.add_argument("--quiet-table", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--probe", nargs=3, help=argparse.SUPPRESS)
    ap.add_argument("--cache", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.worker:
        from peerlib.worker import serve
        serve(a.worker, a.threads)
        return 0
    if a.probe:
        probe(*a.probe, a.cache or None)
        return 0
    if a.from_json:
        with open(a.from_json) as f:
            res = json.load(f)
        res = res if isinstance(res, list) else [res]
        print("\n\n".join(table(r) for r in res) + ("\n\n" + summary(res) if len(res) > 1 else ""))
        return 0
    if a.quick and a.rounds == 7:
        a.rounds = 3
    made_data_dir = not a.data_dir
    a.data_dir = a.data_dir or tempfile.mkdtemp(prefix="peers-data-")
    if a.threads:
        res = [run_threads(a)]
    else:
        res = []
        for t in (1, 2):
            with tempfile.NamedTemporaryFile(suffix=".json") as f:
                cmd = [sys.executable, os.path.abspath(__file__), "--threads", str(t),
                       "--rounds", str(a.rounds), "--data-dir", a.data_dir, "--json", f.name,
                       "--quiet-table"]
                cmd += (["--only", a.only] if a.only else []) + (["--quick"] * a.quick) \
                    + (["--no-compile"] * a.no_compile)
                subprocess.run(cmd, check=True)
                with open(f.name) as fh:
                    res.append(json.load(fh))
    for r in ([] if a.quiet_table else res):
        print(table(r) + "\n")
    if len(res) > 1:
        print(summary(res))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(res if len(res) > 1 else res[0], f, indent=1)
    if made_data_dir:          # the data (GBs of float64 references); a dead worker's log stays
        if any(".log" in str(why) for r in res for why in r["notes"].values()):
            for name in os.listdir(a.data_dir):
                if name.endswith((".npz", ".onnx")):
                    os.remove(os.path.join(a.data_dir, name))
        else:
            shutil.rmtree(a.data_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
