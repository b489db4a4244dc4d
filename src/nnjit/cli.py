"""The `nnjit` command line: dump, viz, explain, bench, export.

A function is named as FILE.py:FUNC. The file must say what arguments to trace FUNC with, in a
module-level dict `EXAMPLES = {"FUNC": (arg, ...)}` (a tuple, or a function returning one);
with one entry, `:FUNC` may be left out.

    nnjit dump model.py:step --stage all       IR after every pass (+ --kernel-ir, --llvm-ir)
    nnjit explain model.py:step                fusion groups and every decision
    nnjit viz model.py:step -o step.svg        the fused graph (.svg/.png/.dot; --memory
                                               mem.svg, --html page.html)
    nnjit bench [mlp convnet ...] [--json]     fused vs unfused for the built-in suite
    nnjit bench --file model.py:step           ... or for your own function
    nnjit export model.py:step -o libstep.so   a shared library and C header
    nnjit profile model.py:step                time per kernel (+ --trace trace.json)
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import sys
from typing import Callable

from .backends import BACKENDS, resolve_backend
from .ir import NnjitError
from .runtime.viz import DETAIL_MAX_NODES


def load_target(spec: str) -> tuple[Callable, tuple, str]:
    """(function, example args, name) for a FILE.py[:FUNC] spec."""
    path, _, func = spec.partition(":")
    if not os.path.isfile(path):
        raise NnjitError(f"no such file: {path}")
    name = os.path.splitext(os.path.basename(path))[0]
    mod_spec = importlib.util.spec_from_file_location(f"nnjit_user_{name}", path)
    if mod_spec is None or mod_spec.loader is None:
        raise NnjitError(f"cannot load {path} as a Python module")
    module = importlib.util.module_from_spec(mod_spec)
    sys.path.insert(0, os.path.dirname(os.path.abspath(path)))
    try:
        mod_spec.loader.exec_module(module)   # the user's own program, as `python FILE` would
    except NnjitError:
        raise
    except Exception as e:  # the user's file failed: say where in it, not in nnjit
        raise NnjitError(f"{_where(e, path)}: {type(e).__name__}: {e}") from None
    finally:
        sys.path.pop(0)
    examples = getattr(module, "EXAMPLES", None)
    if not isinstance(examples, dict) or not examples:
        raise NnjitError(f"{path} must define EXAMPLES = {{'FUNC': (args, ...)}} with the "
                         "arguments to trace each function with")
    if not func:
        if len(examples) != 1:
            raise NnjitError(f"{path} has several EXAMPLES ({', '.join(examples)}): name one as "
                             f"{path}:FUNC")
        func = next(iter(examples))
    if func not in examples:
        raise NnjitError(f"{path}: EXAMPLES has no entry for {func!r} (it has "
                         f"{', '.join(examples)})")
    fn = getattr(module, func, None)
    if not callable(fn):
        raise NnjitError(f"{path} defines no function {func!r}")
    args = examples[func]
    args = args() if callable(args) else args
    return fn, tuple(args) if isinstance(args, (tuple, list)) else (args,), func


def _where(e: BaseException, path: str) -> str:
    """`path:line` of the deepest traceback frame inside the user's file `path`."""
    import traceback

    lines = [f.lineno for f in traceback.extract_tb(e.__traceback__)
             if os.path.abspath(f.filename) == os.path.abspath(path)]
    if isinstance(e, SyntaxError) and e.lineno:
        lines.append(e.lineno)
    return f"{path}:{lines[-1]}" if lines else path


def _compile(spec: str, backend: str, fuse: bool = True):
    from .api import JitFunction

    fn, args, name = load_target(spec)
    return JitFunction(fn, backend=backend, fuse=fuse, name=name).lower(*args), fn, args


def cmd_dump(a) -> None:
    if a.llvm_ir and resolve_backend(a.backend) != "llvm":
        raise NnjitError("--llvm-ir needs --backend llvm")
    cf, _, _ = _compile(a.target, a.backend, not a.no_fuse)
    stages = cf.stages() if a.stage == "all" else [a.stage or cf.stages()[-1]]
    unknown = [s for s in stages if s not in cf.stages()]
    if unknown:
        raise NnjitError(f"no stage {unknown[0]!r}; the stages are {', '.join(cf.stages())}")
    for s in stages:
        print(f"// ---- after {s} ({cf.pass_times()[s] * 1e3:.2f} ms)")
        print(cf.ir(s))
    if a.kernel_ir:
        print("// ---- kernel IR")
        print(cf.lowered().program)
    if a.llvm_ir:
        print("// ---- LLVM IR")
        print(cf.llvm_ir())


def cmd_explain(a) -> None:
    cf, _, _ = _compile(a.target, a.backend)
    print(cf.explain_fusion())
    print()
    print(cf.memory_plan().table())


def cmd_viz(a) -> None:
    from .runtime.viz import render

    if a.profile and not a.html:
        raise NnjitError("--profile shows kernel times in the --html page: add --html FILE")
    kind = _picture_kind(a.output or "graph.svg", (".svg", ".png", ".dot"), "-o")
    if a.memory:
        _picture_kind(a.memory, (".svg",), "--memory")
    cf, _, args = _compile(a.target, a.backend, not a.no_fuse)
    dot = cf.to_dot(True if a.detail else None)
    out = a.output or "graph.svg"
    if kind == ".dot":
        _write(out, dot)
    else:
        _write(out[:-4] + ".dot", dot)
        _write_bytes(out, render(dot, kind[1:]))
    print(f"wrote {out}")
    if a.memory:
        _write(a.memory, cf.memory_svg())
        print(f"wrote {a.memory}")
    if a.html:
        profile = cf.profile(*args, repeats=3) if a.profile else None
        _write(a.html, cf.to_html(profile, True if a.detail else None))
        print(f"wrote {a.html}")


def _picture_kind(path: str, allowed: tuple[str, ...], option: str) -> str:
    ext = os.path.splitext(path)[1].lower()
    if ext not in allowed:
        raise NnjitError(f"{option} {path}: unknown picture type {ext or '(no extension)'!r}; "
                         f"use {', '.join(allowed)}")
    return ext


def cmd_bench(a) -> None:
    from . import bench

    workloads = None
    if a.file:
        fn, args, name = load_target(a.file)
        workloads = [bench.Workload(name, fn, lambda: args)]
    unknown = [n for n in a.names if n not in bench.SUITE]
    if unknown:
        raise NnjitError(f"unknown workload(s) {', '.join(unknown)}; the suite has "
                         f"{', '.join(bench.SUITE)}")
    bench.main(a.names or None, resolve_backend(a.backend), a.repeats, a.json, workloads,
               small=a.small)


def cmd_profile(a) -> None:
    cf, _, args = _compile(a.target, a.backend)
    print(cf.profile(*args, repeats=a.repeats, trace=a.trace))
    if a.trace:
        print(f"wrote {a.trace} (open it in https://ui.perfetto.dev or chrome://tracing)")


def cmd_export(a) -> None:
    if a.backend != "llvm":
        raise NnjitError("export needs the llvm backend")
    cf, _, _ = _compile(a.target, "llvm")
    written = cf.export(a.output)
    for w in written or [a.output]:
        print(f"wrote {w}")


def _write(path: str, text: str) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def _write_bytes(path: str, data: bytes) -> None:
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def _positive(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        v = 0
    if v < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number >= 1")
    return v


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="nnjit", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)

    def target(sp, backend=None):
        sp.add_argument("target", help="FILE.py[:FUNC]: the function, traced with the "
                        "arguments its file's EXAMPLES dict gives")
        default = backend or "$NNJIT_BACKEND if set, else llvm"
        sp.add_argument("--backend", default=backend, choices=list(BACKENDS),
                        help=f"the backend to compile for (default: {default})")

    d = sub.add_parser("dump", help="print the IR after each pass, kernel IR, LLVM IR")
    target(d)
    d.add_argument("--stage", default="all",
                   help="a stage name (an unknown one lists them), or 'all' (default)")
    d.add_argument("--kernel-ir", action="store_true", help="also print the kernel IR")
    d.add_argument("--llvm-ir", action="store_true",
                   help="also print the LLVM IR (llvm backend only)")
    d.add_argument("--no-fuse", action="store_true", help="compile without the fusion pass")
    d.set_defaults(run=cmd_dump)
    e = sub.add_parser("explain", help="fusion groups, decisions and the memory plan")
    target(e)
    e.set_defaults(run=cmd_explain)
    v = sub.add_parser(
        "viz", help="draw the fused graph, the memory plan, or an interactive page",
        description="Draw the compiled graph. Each kernel is one cluster holding exactly its "
        f"ops; graphs of more than {DETAIL_MAX_NODES} nodes (inputs, ops, results) are drawn "
        "one box per kernel instead (ops summarized, edges labelled with tensor types) unless "
        "--detail asks for every op. .svg and .png go through Graphviz's `dot` (the .dot is "
        "written beside them); --html writes one self-contained interactive page.")
    target(v)
    v.add_argument("-o", "--output", help="the picture to write: .svg (default graph.svg), "
                   ".png (both need Graphviz) or .dot")
    v.add_argument("--detail", action="store_true",
                   help=f"draw every op even above {DETAIL_MAX_NODES} nodes (default: one box "
                   "per kernel there)")
    v.add_argument("--memory", help="also write the memory-plan timeline to this .svg")
    v.add_argument("--html", help="also write an interactive page (.html: pan, zoom, click a "
                   "kernel for its graph IR and kernel IR; needs Graphviz)")
    v.add_argument("--profile", action="store_true",
                   help="with --html: run the function and show each kernel's time")
    v.add_argument("--no-fuse", action="store_true", help="draw the unfused graph")
    v.set_defaults(run=cmd_viz)
    b = sub.add_parser("bench", help="time fused vs unfused (built-in suite or --file)")
    b.add_argument("names", nargs="*", help="workloads (default: all): elementwise "
                   "softmax_xent mlp convnet lstm")
    b.add_argument("--file", help="FILE.py[:FUNC] to benchmark instead of the suite")
    b.add_argument("--backend", choices=list(BACKENDS),
                   help="the backend to compile for (default: $NNJIT_BACKEND if set, else llvm)")
    b.add_argument("--repeats", type=_positive, default=7,
                   help="timing rounds per variant; medians are reported (default: 7)")
    b.add_argument("--json", action="store_true", help="print the rows as JSON")
    b.add_argument("--small", action="store_true",
                   help="small sizes (e.g. for the CUDA simulator)")
    b.set_defaults(run=cmd_bench)
    pr = sub.add_parser("profile", help="time each kernel of one call, and Python's overhead")
    target(pr, "llvm")
    pr.add_argument("--repeats", type=_positive, default=7,
                    help="calls timed (the median is shown; default: 7)")
    pr.add_argument("--trace", help="also write a Chrome trace (.json) of one call here")
    pr.set_defaults(run=cmd_profile)
    x = sub.add_parser("export", help="AOT-compile to a shared library (.so) or object (.o)")
    target(x, "llvm")
    x.add_argument("-o", "--output", required=True,
                   help="the .so or .o to write (its directory must exist); the .h goes beside it")
    x.set_defaults(run=cmd_export)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.run(args)
    except NnjitError as e:
        print(f"nnjit: error: {e}", file=sys.stderr)
        return 1
    except (OSError, ValueError, TypeError) as e:
        print(f"nnjit: error: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except Exception as e:
        where = _user_frame(e)
        if where is None:   # raised inside nnjit: a bug, keep the traceback for the report
            raise
        print(f"nnjit: error: {where}: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    return 0


def _user_frame(e: BaseException) -> str | None:
    """`file:line` when the innermost frame of `e` outside the standard library and installed
    packages is the user's code (an error in their function), None when it is nnjit's."""
    import sysconfig
    import traceback

    pkg = os.path.dirname(os.path.abspath(__file__))
    libs = {os.path.abspath(sysconfig.get_paths()[k]) for k in ("stdlib", "purelib", "platlib")}
    for f in reversed(traceback.extract_tb(e.__traceback__)):
        path = os.path.abspath(f.filename)
        if path.startswith(pkg + os.sep):
            return None
        if f.filename.startswith("<") or any(path.startswith(d + os.sep) for d in libs):
            continue
        return f"{os.path.relpath(path)}:{f.lineno}"
    return None


if __name__ == "__main__":
    sys.exit(main())
