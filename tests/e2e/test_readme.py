"""Every code snippet in README.md runs: the ```python blocks in order in one namespace (a block
opening with a `# FILE.py` comment is also written to that file), and the ```sh blocks marked
`<!-- readme-test: run -->` line by line with the installed `nnjit`. Other ```sh blocks
(`make run`, `make test`, the full benchmark) and output blocks are shown, not run."""
from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys

import pytest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
README = os.path.join(ROOT, "README.md")
RUN_MARK = "<!-- readme-test: run -->"


def blocks() -> list[tuple[str, str, bool]]:
    """(language, code, marked to run) for every fenced block, in order."""
    text = open(README).read()
    out = []
    for m in re.finditer(r"^```(\w*)\n(.*?)^```\s*$", text, re.S | re.M):
        marked = text[:m.start()].rstrip().endswith(RUN_MARK)
        out.append((m.group(1), m.group(2), marked))
    return out


def test_readme_starts_with_the_two_commands():
    lang, code, _ = blocks()[0]
    commands = [ln.split("#")[0].strip() for ln in code.splitlines() if ln.strip()]
    assert lang == "sh" and commands == ["make run", "make test"]
    assert open(README).read().lstrip().startswith("# nnjit\n")


def test_readme_has_no_placeholders_and_documents_every_variable():
    text = open(README).read()
    assert not re.search(r"\b(BENCH_TABLE|MAKE_RUN_FIGURES|KNOWN_LIMITS|TODO)\b", text)
    used = set()
    for dirpath, _, files in os.walk(os.path.join(ROOT, "src", "nnjit")):
        for f in files:
            if f.endswith(".py"):
                used |= set(re.findall(r"\bNNJIT_[A-Z_]+[A-Z]\b",
                                       open(os.path.join(dirpath, f)).read()))
    missing = sorted(v for v in used if v not in text)
    assert not missing, f"README.md does not document {missing}"


def test_python_blocks_run_in_order(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": "__readme__"}
    ran = 0
    for i, (lang, code, _) in enumerate(blocks()):
        if lang != "python":
            continue
        first = code.splitlines()[0]
        if re.fullmatch(r"# [\w./-]+\.py", first.strip()):
            (tmp_path / first[2:].strip()).write_text(code)
        try:
            exec(compile(code, f"README.md block {i}", "exec"), namespace)
        except Exception as e:
            pytest.fail(f"README.md python block {i} failed: {type(e).__name__}: {e}\n{code}")
        ran += 1
    assert ran >= 3
    out = capsys.readouterr().out
    assert "(16, 10)" in out and "fused " in out and "func @layer(" in out


def _commands() -> list[str]:
    cmds = []
    for lang, code, marked in blocks():
        if lang == "sh" and marked:
            cmds += [ln.split(" #")[0].strip() for ln in code.splitlines()
                     if ln.strip() and not ln.lstrip().startswith("#")]
    return cmds


def test_cli_blocks_run(tmp_path):
    for lang, code, _ in blocks():
        first = code.splitlines()[0] if code else ""
        if lang == "python" and re.fullmatch(r"# [\w./-]+\.py", first.strip()):
            (tmp_path / first[2:].strip()).write_text(code)
    cmds = _commands()
    assert cmds and all(c.startswith("nnjit ") for c in cmds)
    has_cc = any(shutil.which(c) for c in ("cc", "gcc", "clang"))
    for cmd in cmds:
        if " export " in f" {cmd} " and not has_cc:
            continue
        argv = [sys.executable, "-m", "nnjit.cli", *shlex.split(cmd)[1:]]
        r = subprocess.run(argv, capture_output=True, text=True, cwd=tmp_path, timeout=300)
        assert r.returncode == 0, f"{cmd}\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}"
        assert "Traceback" not in r.stderr, cmd
    assert (tmp_path / "layer.dot").exists() and (tmp_path / "mem.svg").exists()
