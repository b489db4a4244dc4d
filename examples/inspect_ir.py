"""Walk one small training step through every stage of the compiler and print what each did.

    python examples/inspect_ir.py                 # LLVM backend: down to the machine code
    python examples/inspect_ir.py --full          # whole diffs, every fusion decision
    python examples/inspect_ir.py --backend interp

The model is a two-layer perceptron's SGD step (forward, cross-entropy, backward, update):

  1. the traced IR            what `nnjit.jit` records from the Python function
  2. each pass                its time, node count and a diff against the stage before
  3. the fused graph          fusion nodes, each becoming one kernel
  4. fusion decisions         why each producer was fused or not
  5. kernel IR                loop nests and GEMM templates over flat buffers
  6. the memory plan          every temporary's lifetime and offset in one arena
  7. LLVM IR and assembly     a kernel's LLVM IR, and vector (zmm = AVX-512) instructions
  8. a check                  the compiled step against the numpy reference interpreter
"""
from __future__ import annotations

import argparse
import difflib
import os
import re
import sys
from collections import Counter

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402

import nnjit  # noqa: E402
from nnjit import nn  # noqa: E402

import training  # noqa: E402


def loss_fn(params, x, y):
    h = nnjit.relu(x @ params["w1"] + params["b1"])
    logits = h @ params["w2"]
    return nn.cross_entropy(logits, y)


def sgd_step(params, x, y):
    loss, grads = nnjit.value_and_grad(loss_fn)(params, x, y)
    params = nnjit.tree_map(lambda p, g: p - 0.1 * g, params, grads)
    return params, loss


def example_args(batch: int, n_in: int = 8, hidden: int = 16, n_out: int = 4) -> tuple:
    rng = np.random.default_rng(0)
    params = {"w1": rng.standard_normal((n_in, hidden), np.float32) * 0.3,
              "b1": np.zeros(hidden, np.float32),
              "w2": rng.standard_normal((hidden, n_out), np.float32) * 0.3}
    return (params, rng.standard_normal((batch, n_in), np.float32),
            rng.integers(0, n_out, batch))


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=training.description(__doc__),
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--backend", default="llvm", choices=["llvm", "interp", "cuda"],
                   help="nnjit backend (the LLVM IR and assembly need llvm)")
    p.add_argument("--batch", type=training.positive_int, default=32,
                   help="examples in the traced training step")
    p.add_argument("--full", action="store_true", help="print whole diffs and all decisions")
    p.add_argument("--seed", type=int, default=0, help="unused (every example takes --seed)")
    return p.parse_args(argv)


def section(n: int, title: str) -> None:
    print(f"\n{'=' * 100}\n{n}. {title}\n{'=' * 100}")


def clip(lines: list[str], limit: int | None, what: str = "lines") -> str:
    if limit is None or len(lines) <= limit:
        return "\n".join(lines)
    return "\n".join(lines[:limit] + [f"... ({len(lines) - limit} more {what}; --full shows "
                                      "them)"])


def show_passes(cf, full: bool) -> None:
    """Per pass: time, node count and which ops it removed and added (--full: the IR diff)."""
    prev = None
    for st in cf.stages_:
        if not isinstance(st.graph, nnjit.Graph):    # a codegen stage: a kernel-IR Program
            print(f"-- {st.name:<16} {st.seconds * 1e3:8.2f} ms  {len(st.graph.kernels):4d} "
                  "kernels (kernel IR)")
            continue
        ops = Counter(n.op.value for n in st.graph.nodes)
        line = f"-- {st.name:<16} {st.seconds * 1e3:8.2f} ms  {len(st.graph.nodes):4d} nodes"
        if prev is not None:
            old = Counter(n.op.value for n in prev.graph.nodes)
            line += f"   removed: {_ops(old - ops)}   added: {_ops(ops - old)}"
        print(line)
        if full and prev is not None:
            diff = difflib.unified_diff(prev.text.splitlines(), st.text.splitlines(),
                                        f"before {st.name}", f"after {st.name}", lineterm="",
                                        n=0)
            print("\n".join(diff))
        prev = st
    if not full:
        print("(--full prints the IR diff of every pass; NNJIT_DUMP=after-all does the same "
              "for any program)")


def _ops(c: Counter) -> str:
    return ", ".join(f"{op}" + (f" x{k}" if k > 1 else "") for op, k in sorted(c.items())) \
        or "-"


def llvm_snippet(ir_text: str, lines: int = 28) -> str:
    """The first loop kernel's function in the module (else the first kernel function)."""
    text = ir_text.splitlines()
    defs = [i for i, ln in enumerate(text) if ln.startswith("define internal")]
    loops = [i for i in defs if "epilogue" not in text[i]]
    start = (loops or defs or [0])[0]
    return "\n".join(text[start:start + lines] + ["  ..."])


_VECTOR_MATH = re.compile(r"\bv(fmadd|fmsub|fnmadd|mul|add|sub|max|min|div|sqrt)\w*ps\b")


def asm_snippet(asm: str, lines: int = 18) -> tuple[str, dict]:
    """Counts of vector register uses, and the first loop doing float math in the widest."""
    counts = {reg: len(re.findall(rf"%{reg}\d+", asm)) for reg in ("zmm", "ymm", "xmm")}
    widest = next((r for r in ("zmm", "ymm", "xmm") if counts[r]), None)
    text = asm.splitlines()
    hits = [i for i, ln in enumerate(text) if widest and f"%{widest}" in ln
            and _VECTOR_MATH.search(ln)]
    if not hits:
        return "\n".join(text[:lines]), counts
    labels = [i for i in range(max(0, hits[0] - 24), hits[0]) if text[i].startswith(".LBB")]
    start = labels[-1] if labels else max(0, hits[0] - 4)
    return "\n".join(text[start:start + lines] + ["  ..."]), counts


def main(argv=None) -> dict:
    args = parse_args(argv)
    step_args = example_args(args.batch)
    step = nnjit.jit(sgd_step, backend=args.backend, name="sgd_step")
    cf = step.lower(*step_args)

    section(1, "the traced IR (nnjit.jit(sgd_step).lower(params, x, y).ir('input'))")
    print(cf.ir("input"))

    section(2, f"the passes: {' -> '.join(cf.stages()[1:])} (cf.stages(), cf.pass_times())")
    show_passes(cf, args.full)

    section(3, "the fused graph (cf.ir('fuse')): each fusion node becomes one kernel")
    print(cf.ir(cf.stages()[-1]))

    section(4, "fusion decisions (cf.explain_fusion())")
    report = cf.explain_fusion()
    text = str(report).splitlines()
    head = text[:report.num_kernels + 2]
    print("\n".join(head))
    print(clip(text[report.num_kernels + 2:], None if args.full else 12, "decisions"))

    section(5, "kernel IR (cf.kernel_ir() on llvm; str(cf.lowered().program) on any backend)")
    print(cf.lowered().program)

    section(6, "the memory plan (cf.memory_plan().table(); cf.memory_svg() draws it)")
    print(cf.memory_plan().table())

    result = {"stages": cf.stages(), "kernels": len(cf.lowered().program.kernels)}
    if args.backend == "llvm":
        section(7, "LLVM IR (cf.llvm_ir()) and host assembly (cf.asm())")
        ir_text = cf.llvm_ir()
        print(f"LLVM module: {len(ir_text.splitlines())} lines; its first kernel function:\n")
        print(llvm_snippet(ir_text))
        snippet, counts = asm_snippet(cf.asm())
        print(f"\nassembly: {counts['zmm']} zmm (512-bit AVX-512), {counts['ymm']} ymm (256-bit),"
              f" {counts['xmm']} xmm (128-bit/scalar) register uses; the first vector loop:\n")
        print(snippet)
        result["zmm"] = counts["zmm"]
    else:
        section(7, f"LLVM IR and assembly: only with --backend llvm (this is {args.backend})")

    section(8, "the compiled step against the numpy reference interpreter")
    got = cf(*step_args)
    want = nnjit.jit(sgd_step, backend="interp")(*step_args)
    err = max(float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))))
              for a, b in zip(nnjit.tree_leaves(got), nnjit.tree_leaves(want)))
    print(f"loss {float(got[1]):.6f} ({args.backend}) vs {float(want[1]):.6f} (interp); "
          f"max abs difference over all results {err:.2e}")
    print("\nThe same from the command line: nnjit dump FILE.py:FUNC --kernel-ir --llvm-ir "
          "--backend llvm; nnjit explain FILE.py:FUNC")
    result["max_abs_error"] = err
    return result


if __name__ == "__main__":
    training.run_script(main)
