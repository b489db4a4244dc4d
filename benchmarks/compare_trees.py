"""Two source trees side by side: the same timing script run against each in turns.

    python benchmarks/compare_trees.py OLD_SRC NEW_SRC benchmarks/reductions.py --rounds 5

Each round runs `script` once per tree, in a fresh process with PYTHONPATH=<tree>, the order
alternating between rounds, so drift on this shared, noisy machine hits both alike. The script
prints one JSON object {workload: milliseconds} as its last line; the table shows the median
of the rounds per tree and the ratio new/old (below 1: the new tree is faster).

Make an old tree with `git worktree add /tmp/old <commit>` and pass /tmp/old/src.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys


def run(tree: str, script: str, extra: list[str]) -> dict[str, float]:
    env = dict(os.environ, PYTHONPATH=os.path.abspath(tree))
    out = subprocess.run([sys.executable, script, *extra], env=env, capture_output=True,
                         text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("old", help="the old tree's src/ directory")
    ap.add_argument("new", help="the new tree's src/ directory")
    ap.add_argument("script", help="a script printing {workload: ms} as JSON on its last line")
    ap.add_argument("--rounds", type=int, default=5, help="runs per tree (default 5)")
    ap.add_argument("args", nargs=argparse.REMAINDER,
                    help="arguments passed to the script (after --)")
    a = ap.parse_args(argv)
    a.args = a.args[1:] if a.args[:1] == ["--"] else a.args
    samples: dict[str, dict[str, list[float]]] = {"old": {}, "new": {}}
    for r in range(a.rounds):
        order = [("old", a.old), ("new", a.new)]
        for label, tree in (order if r % 2 == 0 else order[::-1]):
            for k, v in run(tree, a.script, a.args).items():
                samples[label].setdefault(k, []).append(v)
    print(f"{'workload':<34} {'old ms':>10} {'new ms':>10} {'new/old':>8}")
    for k in samples["new"]:
        old = statistics.median(samples["old"].get(k, [float("nan")]))
        new = statistics.median(samples["new"][k])
        print(f"{k:<34} {old:>10.3f} {new:>10.3f} {new / old:>8.2f}")


if __name__ == "__main__":
    main()
