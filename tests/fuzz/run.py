"""The differential fuzzer: N generated programs, each checked by tests/fuzz/oracle.py; prints
every failure (minimized program, its inputs, the check that failed) and one summary line.

    PYTHONPATH=src:. python tests/fuzz/run.py --cases 5000 [--seed 0] [--jobs 1]
    ...
    fuzz: 5000 cases, 0 failures (4990 compiled on llvm, 402 raised IndexOutOfRange on both,
          571 gradient checks) in 640 s

(the summary is one line; the exit status is 1 if any case failed).

Case k is made from seed k alone (tests/fuzz/generate.py `generate_case`), so a run is
deterministic and resumes anywhere: `--seed 2500 --cases 2500` does the second half of the run
above. Progress (with the next seed) goes to stderr every `--progress` cases. Cases run in
worker processes, so a crash or a hang in compiled code is reported as that case's failure
(with its program, not minimized) and the run goes on with a fresh worker.
"""
from __future__ import annotations

import argparse
import json
import os
import selectors
import subprocess
import sys
import time
import traceback

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
for _p in (ROOT, os.path.join(ROOT, "src")):
    if _p not in sys.path:
        sys.path.insert(0, _p)
os.environ.setdefault("NNJIT_VERIFY", "1")


def check_seed(seed: int, minimize_s: float) -> dict:
    """Check the case of `seed` (minimizing a failure): a JSON-able result."""
    from tests.fuzz.generate import generate_case
    from tests.fuzz.values import describe_inputs
    from tests.fuzz.minimize import minimize
    from tests.fuzz.oracle import check_case

    try:
        case = generate_case(seed)
    except Exception:   # the generator broke
        return {"seed": seed, "regime": "?", "compiled": False, "raised": False, "grad": False,
                "failures": [{"check": "generate", "detail": traceback.format_exc(),
                              "graph": "", "inputs": ""}]}
    try:
        report = check_case(case)
    except Exception:   # the oracle itself broke: report it as a failure of this case
        return {"seed": seed, "regime": case.regime, "compiled": False, "raised": False,
                "grad": False, "failures": [_failure("oracle", traceback.format_exc(), case,
                                                     describe_inputs)]}
    failures = []
    for f in report.failures:
        small = minimize(case, f.check, f.detail, minimize_s) if minimize_s > 0 else case
        again = check_case(small, only=f.check).failures
        detail = again[0].detail if again else f.detail
        failures.append(_failure(f.check, detail, small, describe_inputs, minimize_s > 0))
    return {"seed": seed, "regime": case.regime, "compiled": report.compiled,
            "raised": report.raised, "grad": report.grad_checked, "failures": failures}


def _failure(check: str, detail: str, case, describe_inputs, minimized: bool = False) -> dict:
    return {"check": check, "detail": detail, "graph": str(case.graph),
            "inputs": describe_inputs(case.graph, case.inputs), "minimized": minimized}


def worker_main(minimize_s: float) -> None:
    """Read seeds from stdin, one per line; write one JSON result per line to stdout."""
    out = sys.stdout
    sys.stdout = sys.stderr        # stray prints must not corrupt the protocol
    for line in sys.stdin:
        res = check_seed(int(line), minimize_s)
        out.write(json.dumps(res) + "\n")
        out.flush()


class Worker:
    """A worker process checking one seed at a time."""

    def __init__(self, minimize_s: float, quiet: bool):
        # quiet: the worker's stderr (LLVM's remarks, numpy's warnings) is dropped
        self.proc = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), "--worker", "--minimize-s",
             str(minimize_s)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
            stderr=subprocess.DEVNULL if quiet else None, bufsize=1, cwd=ROOT)
        self.seed: int | None = None
        self.started = 0.0

    def send(self, seed: int) -> None:
        self.seed, self.started = seed, time.monotonic()
        self.proc.stdin.write(f"{seed}\n")
        self.proc.stdin.flush()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()


def _died(seed: int, why: str) -> dict:
    """A case whose worker crashed or hung: its unminimized program, made again from the seed."""
    from tests.fuzz.generate import generate_case
    from tests.fuzz.values import describe_inputs

    try:
        case = generate_case(seed)
    except Exception:
        return {"seed": seed, "regime": "?", "compiled": False, "raised": False, "grad": False,
                "failures": [{"check": "crash", "detail": why + "\n" + traceback.format_exc(),
                              "graph": "", "inputs": ""}]}
    return {"seed": seed, "regime": case.regime, "compiled": False, "raised": False,
            "grad": False, "failures": [_failure("crash", why, case, describe_inputs)]}


def run(first: int, n: int, jobs: int, minimize_s: float, timeout_s: float,
        progress: int, quiet: bool = True) -> int:
    t0 = time.monotonic()
    print(f"fuzz: seeds {first}..{first + n - 1}, {max(1, jobs)} worker(s)", file=sys.stderr,
          flush=True)
    seeds = iter(range(first, first + n))
    workers = [Worker(minimize_s, quiet) for _ in range(max(1, jobs))]
    sel = selectors.DefaultSelector()
    results: dict[int, dict] = {}
    idle = list(workers)
    busy: dict[int, Worker] = {}

    def feed() -> None:
        while idle:
            seed = next(seeds, None)
            if seed is None:
                return
            w = idle.pop()
            w.send(seed)
            busy[seed] = w
            sel.register(w.proc.stdout, selectors.EVENT_READ, w)

    def replace(w: Worker) -> None:
        w.kill()
        workers[workers.index(w)] = fresh = Worker(minimize_s, quiet)
        idle.append(fresh)

    feed()
    while busy:
        events = sel.select(timeout=1.0)
        for key, _ in events:
            w = key.data
            line = w.proc.stdout.readline()
            sel.unregister(w.proc.stdout)
            seed = w.seed
            del busy[seed]
            if line:
                results[seed] = json.loads(line)
                idle.append(w)
            else:
                code = w.proc.wait()
                results[seed] = _died(seed, f"the worker died (exit status {code}) while "
                                            "checking this case")
                replace(w)
            _report(results[seed])
            if progress and len(results) % progress == 0:
                resume = min([s for s in range(first, first + n) if s not in results],
                             default=first + n)
                print(f"fuzz: {len(results)}/{n} cases, {_failed(results)} failures, "
                      f"{time.monotonic() - t0:.0f} s (to resume: --seed {resume})",
                      file=sys.stderr, flush=True)
        for seed, w in list(busy.items()):
            if time.monotonic() - w.started > timeout_s:
                sel.unregister(w.proc.stdout)
                del busy[seed]
                results[seed] = _died(seed, f"no result within {timeout_s:.0f} s (a hang?)")
                replace(w)
                _report(results[seed])
        feed()
    for w in workers:
        w.proc.stdin.close()
        w.kill()
    rs = list(results.values())
    print(f"fuzz: {len(rs)} cases, {_failed(results)} failures "
          f"({sum(r['compiled'] for r in rs)} compiled on llvm, "
          f"{sum(r['raised'] for r in rs)} raised IndexOutOfRange on both, "
          f"{sum(r['grad'] for r in rs)} gradient checks) in {time.monotonic() - t0:.0f} s",
          flush=True)
    return 1 if _failed(results) else 0


def _failed(results: dict) -> int:
    return sum(1 for r in results.values() if r["failures"])


def _report(r: dict) -> None:
    for f in r["failures"]:
        what = "minimized program" if f.get("minimized") else "program (not minimized)"
        print(f"FAIL seed {r['seed']} [{r['regime']}] check {f['check']}\n{f['detail'].rstrip()}"
              f"\n{what}:\n{f['graph']}\ninputs:\n{f['inputs']}\n", flush=True)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="The differential fuzzer (see the module "
                                 "docstring): interp vs llvm on generated programs.")
    ap.add_argument("--cases", type=int, default=1000, help="how many cases (seeds) to run")
    ap.add_argument("--seed", type=int, default=0, help="the first case's seed")
    ap.add_argument("--jobs", type=int, default=1, help="worker processes")
    ap.add_argument("--minimize-s", type=float, default=60.0,
                    help="seconds to spend minimizing each failure (0: don't)")
    ap.add_argument("--timeout-s", type=float, default=300.0, help="per case, minimizing included")
    ap.add_argument("--progress", type=int, default=100, help="cases between progress lines")
    ap.add_argument("--worker-stderr", action="store_true",
                    help="show the workers' stderr (LLVM remarks, warnings)")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.worker:
        worker_main(a.minimize_s)
        return 0
    return run(a.seed, a.cases, a.jobs, a.minimize_s, a.timeout_s, a.progress,
               quiet=not a.worker_stderr)


if __name__ == "__main__":
    sys.exit(main())
