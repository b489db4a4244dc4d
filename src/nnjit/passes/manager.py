"""The pass manager: runs named stages in order (Graph -> Graph passes, then the codegen stages
that lower to and transform kernel-IR Programs), verifies after each in debug mode, times them,
keeps every stage for inspection, and dumps IR on request.

    NNJIT_DUMP=after-all            print the IR after every pass (with a diff to the last stage)
    NNJIT_DUMP=fuse,plan_memory     only after these passes
    NNJIT_DUMP_DIR=dir              write one numbered file per stage instead of printing
    NNJIT_VERIFY=1                  verify after every pass (always on in the test suite)
"""
from __future__ import annotations

import difflib
import os
import sys
import time
from dataclasses import dataclass
from typing import Callable, Sequence

from ..ir import CompileError, Graph, NnjitError, format_attr, parse, print_graph, verify
from ..ir.kernel import Program
from ..ir.kernel_verify import verify_program

Pass = Callable[[Graph], Graph]


@dataclass(frozen=True)
class Stage:
    """The IR after one stage (a Graph, or a kernel-IR Program once lowered), and its cost."""

    name: str
    graph: Graph | Program
    seconds: float

    @property
    def text(self) -> str:
        return str(self.graph)


def dump_request() -> set[str] | None:
    """The pass names NNJIT_DUMP asks for (`{"*"}` for after-all), or None."""
    spec = os.environ.get("NNJIT_DUMP", "").strip()
    if not spec:
        return None
    if spec in ("after-all", "all", "1"):
        return {"*"}
    return {s.strip() for s in spec.split(",") if s.strip()}


def verify_enabled() -> bool:
    return os.environ.get("NNJIT_VERIFY", "") not in ("", "0")


def check(ir: Graph | Program) -> Graph | Program:
    """Verify a stage's result: a graph (and its text round trip) or a Program."""
    return verify_program(ir) if isinstance(ir, Program) else check_graph(ir)


def check_graph(g: Graph) -> Graph:
    """Verify `g` and that its text parses back to an equal graph (debug mode and tests)."""
    verify(g)
    text = str(g)
    back = parse(text)
    if back != g:
        raise CompileError(f"@{g.name} does not round-trip through its text form:\n{text}")
    return g


class StableNames:
    """Value names that last from stage to stage: a node keeps its name while its op,
    attributes, types, location and operands' names are unchanged, so a diff between two dumps
    shows only what the pass changed (not every later %n renumbered). New nodes get new
    numbers; the first stage is numbered %0, %1, ... as `print(graph)` numbers it."""

    def __init__(self):
        self._seen: dict[tuple, list[str]] = {}
        self._next = 0

    def text(self, g: Graph) -> str:
        labels: dict = {}
        taken: dict[tuple, int] = {}
        for n in g.nodes:
            operands = tuple(s.node.attrs["name"] if s.node.op.value == "input" else
                             f"{labels[s.node]}#{s.index}" for s in n.srcs)
            key = (n.op, tuple((k, format_attr(v)) for k, v in n.attrs.items()), n.types,
                   n.loc, operands)
            k = taken.get(key, 0)
            taken[key] = k + 1
            known = self._seen.setdefault(key, [])
            if k == len(known):
                known.append(str(self._next))
                self._next += 1
            labels[n] = known[k]
        return print_graph(g, labels=labels)


class PassManager:
    """Runs `passes`. `known`: every stage name a dump may ask for (those of other pipelines,
    like the unfused one or another backend's, are skipped here; anything else is an error)."""

    def __init__(self, passes: Sequence[tuple[str, Pass]], verify_each: bool | None = None,
                 dump: set[str] | None = None, dump_dir: str | None = None,
                 known: Sequence[str] = ()):
        self.passes = list(passes)
        self.verify_each = verify_enabled() if verify_each is None else verify_each
        self.dump = dump_request() if dump is None else dump
        valid = {"input", "*"} | {n for n, _ in self.passes} | set(known)
        if self.dump and (unknown := sorted(self.dump - valid)):
            raise NnjitError(f"NNJIT_DUMP names unknown stage(s) {', '.join(unknown)}; stages: "
                             f"after-all, {', '.join(sorted(valid - {'*'}))}")
        self.dump_dir = dump_dir if dump_dir is not None else os.environ.get("NNJIT_DUMP_DIR")

    def run(self, graph: Graph) -> tuple[Graph, list[Stage]]:
        """The final graph and every stage, starting with the input as stage "input"."""
        if self.verify_each:
            check(graph)
        stages = [Stage("input", graph, 0.0)]
        self._dump(stages, 0)
        done: list[str] = []
        for name, fn in self.passes:
            t0 = time.perf_counter()
            try:
                out = fn(graph)
                if self.verify_each:
                    check(out)
            except NnjitError as e:
                raise type(e)(f"in pass '{name}' (after {', '.join(done) or 'no passes'}): {e}"
                              ) from e
            except Exception as e:  # a bug in a pass: say which one, keep the cause
                raise CompileError(f"pass '{name}' failed (after {', '.join(done) or 'no passes'})"
                                   f": {type(e).__name__}: {e}") from e
            stages.append(Stage(name, out, time.perf_counter() - t0))
            done.append(name)
            graph = out
            self._dump(stages, len(stages) - 1)
        return graph, stages

    def _dump(self, stages: list[Stage], i: int) -> None:
        if self.dump is None:
            return
        st = stages[i]
        if not hasattr(self, "_texts"):
            self._names, self._texts = StableNames(), {}
        # Every graph stage gets its stable names, dumped or not, so names carry through.
        self._texts[i] = self._names.text(st.graph) if isinstance(st.graph, Graph) else st.text
        if not ("*" in self.dump or st.name in self.dump):
            return
        write_stage(st, i, stages[i - 1] if i else None, self.dump_dir, self._texts[i],
                    self._texts.get(i - 1))


def write_stage(st: Stage, index: int, prev: Stage | None, dump_dir: str | None,
                text: str | None = None, prev_text: str | None = None) -> str | None:
    """Print a stage (with a diff against `prev`) to stderr, or write it to `dump_dir`
    (`text`/`prev_text`: the stages printed with stable names, when the caller has them)."""
    header = f"// stage {index}: after {st.name} ({st.seconds * 1e3:.2f} ms)"
    body = text if text is not None else st.text
    if dump_dir:
        os.makedirs(dump_dir, exist_ok=True)
        ext = "kir" if isinstance(st.graph, Program) else "nnir"   # kernel IR or graph IR
        path = os.path.join(dump_dir, f"{st.graph.name}.{index:02d}.{st.name}.{ext}")
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            f.write(header + "\n" + body + "\n")
        os.replace(tmp, path)
        return path
    out = [header, body]
    if prev is not None:
        before = prev_text if prev_text is not None else prev.text
        diff = list(difflib.unified_diff(before.splitlines(), body.splitlines(),
                                         f"before {st.name}", f"after {st.name}", lineterm="", n=1))
        out.append("// diff:\n" + ("\n".join(diff) if diff else "// (no change)"))
    print("\n".join(out), file=sys.stderr)
    return None
