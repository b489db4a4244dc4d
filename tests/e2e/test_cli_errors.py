"""User errors at the `nnjit` command line print one `nnjit: error:` line naming the cause (and
the user's file:line where there is one) and exit 1, never a Python traceback."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

FILES = {
    "shape.py": """
        import numpy as np
        import nnjit

        def f(x, w):
            return nnjit.relu(x @ w)

        EXAMPLES = {"f": (np.ones((4, 3), np.float32), np.ones((5, 2), np.float32))}
    """,
    "crash_on_import.py": """
        import numpy as np
        value = undefined_name + 1
    """,
    "bug_in_function.py": """
        import numpy as np
        import nnjit

        def f(x):
            return nnjit.relu(x) + not_defined

        EXAMPLES = {"f": (np.ones(3, np.float32),)}
    """,
    "syntax.py": "def f(:\n",
    "no_examples.py": "def f(x):\n    return x\n",
    "good.py": """
        import numpy as np
        import nnjit

        def f(x):
            return nnjit.relu(x)

        EXAMPLES = {"f": (np.ones(3, np.float32),)}
    """,
}

CASES = [
    (["dump", "missing.py"], "no such file: missing.py"),
    (["dump", "shape.py"], "matmul: inner dims differ, (4, 3) @ (5, 2) at shape.py:5 in f"),
    (["explain", "crash_on_import.py"], "crash_on_import.py:2: NameError"),
    (["dump", "bug_in_function.py"], "bug_in_function.py:5: NameError"),
    (["dump", "syntax.py"], "SyntaxError"),
    (["dump", "no_examples.py"], "must define EXAMPLES"),
    (["dump", "good.py:g"], "no entry for 'g'"),
    (["dump", "good.py", "--stage", "nope"], "no stage 'nope'"),
    (["dump", "good.py", "--llvm-ir", "--backend", "interp"], "--llvm-ir needs --backend llvm"),
    (["export", "good.py", "-o", "good.txt"], "must end in .o or .so"),
    (["export", "good.py", "-o", "no/such/dir/x.so"], "the directory no/such/dir does not exist"),
    (["bench", "no_such_workload"], "unknown workload"),
]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    for name, text in FILES.items():
        (d / name).write_text(textwrap.dedent(text).lstrip())
    return d


@pytest.mark.parametrize("argv, message", CASES, ids=[" ".join(c[0]) for c in CASES])
def test_user_error_is_one_line_without_traceback(workdir, argv, message):
    r = subprocess.run([sys.executable, "-m", "nnjit.cli", *argv], capture_output=True,
                       text=True, cwd=workdir, timeout=120)
    assert r.returncode == 1, (r.stdout, r.stderr)
    assert "Traceback" not in r.stderr
    assert r.stderr.startswith("nnjit: error: ") and message in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr


@pytest.mark.parametrize("argv, message", [
    (["bench", "--repeats", "0"], "'0' is not a whole number >= 1"),
    (["profile", "good.py", "--repeats", "x"], "'x' is not a whole number >= 1"),
    (["dump", "good.py", "--backend", "gpu"], "invalid choice: 'gpu'"),
])
def test_bad_option_values_are_one_line(workdir, argv, message):
    r = subprocess.run([sys.executable, "-m", "nnjit.cli", *argv], capture_output=True,
                       text=True, cwd=workdir, timeout=120)
    assert r.returncode == 2 and message in r.stderr and "Traceback" not in r.stderr
    assert not (workdir / "no").exists()


def test_an_unknown_nnjit_backend_is_one_line(workdir):
    env = {**os.environ, "NNJIT_BACKEND": "nope"}
    r = subprocess.run([sys.executable, "-m", "nnjit.cli", "explain", "good.py"], env=env,
                       capture_output=True, text=True, cwd=workdir, timeout=120)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert r.stderr.strip() == ("nnjit: error: NNJIT_BACKEND='nope' is not a backend; valid: "
                                "interp, llvm, cuda")


def test_every_command_and_option_has_help():
    """`nnjit CMD --help` documents every option (no bare `--json` lines)."""
    import argparse

    from nnjit.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    helps = {c.dest: c.help for c in sub._choices_actions}
    for name, p in sub.choices.items():
        assert helps.get(name), f"nnjit {name} has no help line"
        for action in p._actions:
            if not isinstance(action, argparse._HelpAction):
                assert action.help, f"nnjit {name} {action.option_strings or action.dest}"
