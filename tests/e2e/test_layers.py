"""The package's import structure: dependencies point one way (ir <- frontend, passes <-
codegen <- backends <- runtime <- the api layer), and there are no import cycles outside ir/
(whose op definitions and builders refer to each other by design). Function-local imports
count: hiding a cycle inside a function does not remove it."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2] / "src" / "nnjit"

# Each layer may import the layers listed for it (and itself).
ALLOWED = {
    "ir": {"ir"},
    "frontend": {"ir", "frontend"},
    "passes": {"ir", "passes"},
    "codegen": {"ir", "codegen"},
    "backends": {"ir", "codegen", "backends"},
    "runtime": {"ir", "frontend", "passes", "codegen", "backends", "runtime"},
}


def _module(path: Path) -> str:
    rel = path.relative_to(ROOT.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _imports(path: Path) -> set[str]:
    """Every nnjit module `path` imports, anywhere in the file."""
    mod = _module(path)
    package = mod if path.name == "__init__.py" else mod.rsplit(".", 1)[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith("nnjit")}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.startswith("nnjit"):
                out.add(target)
                out |= {f"{target}.{a.name}" for a in node.names}
    return out


def _modules() -> dict[str, set[str]]:
    files = {_module(p): p for p in ROOT.rglob("*.py")}
    graph = {}
    for name, path in files.items():
        # Names imported from a package may be submodules or attributes: keep only modules.
        graph[name] = {m for m in _imports(path) if m in files and m != name}
    return graph


def _layer(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 2 or (len(parts) == 2 and parts[1] in ALLOWED) else None


def test_dependencies_point_one_way():
    bad = []
    for mod, deps in _modules().items():
        layer = _layer(mod)
        if layer not in ALLOWED:
            continue            # the api layer (api, cli, bench, debug) may use everything
        for dep in deps:
            dl = _layer(dep)
            if dl is not None and dl not in ALLOWED[layer]:
                bad.append(f"{mod} imports {dep} ({layer} -> {dl})")
            if dl is None and dep != "nnjit":
                bad.append(f"{mod} imports {dep} (the api layer)")
    assert not bad, "\n".join(sorted(bad))


def test_no_import_cycles_outside_ir():
    graph = {m: {d for d in deps if not d.startswith("nnjit.ir")}
             for m, deps in _modules().items() if not m.startswith("nnjit.ir")}
    # Package __init__ files re-export their children: an edge package -> child is not a
    # dependency of the child on its siblings, so they are left out of the cycle search.
    graph = {m: {d for d in deps if not m == d.rsplit(".", 1)[0] or "." not in d}
             for m, deps in graph.items()}
    cycles, state, stack = [], {}, []

    def visit(m):
        state[m] = 1
        stack.append(m)
        for d in sorted(graph.get(m, ())):
            if state.get(d) == 1:
                cycles.append(" -> ".join(stack[stack.index(d):] + [d]))
            elif d not in state:
                visit(d)
        stack.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


@pytest.mark.parametrize("layer", sorted(ALLOWED))
def test_every_layer_imports_cleanly_on_its_own(layer):
    """Importing a layer first (not through nnjit/__init__) works: no hidden order
    dependence."""
    import subprocess
    import sys

    code = f"import nnjit.{layer}"
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=ROOT.parents[1])
    assert res.returncode == 0, res.stderr[-2000:]
