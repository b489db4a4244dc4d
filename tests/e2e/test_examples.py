"""Every example runs (with tiny settings) so none of them rots: in-process through its `main`
for each backend, `make run`'s main job and the IR walk-through on the llvm backend, the C export
end to end where a C compiler exists, each script's `--help`, a real run as a subprocess, and
user errors reported in one line without a traceback."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from nnjit import nn

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
EXAMPLES = os.path.join(ROOT, "examples")
sys.path.insert(0, EXAMPLES)
sys.path.insert(0, os.path.join(EXAMPLES, "export_c"))

import char_lstm  # noqa: E402
import convnet_digits  # noqa: E402
import export_mlp  # noqa: E402
import gru_classifier  # noqa: E402
import inspect_ir  # noqa: E402
import main as make_run  # noqa: E402
import memory_network  # noqa: E402
import mlp_digits  # noqa: E402


def test_mlp_digits(backend, tmp_path, capsys):
    path = tmp_path / "mlp.npz"
    res = mlp_digits.main(["--backend", backend, "--epochs", "1", "--save", str(path)])
    out = capsys.readouterr().out
    assert "mlp_digits: test accuracy" in out
    assert res["accuracy"] > 0.5
    loaded = nn.load(path, like=res["params"])
    np.testing.assert_array_equal(loaded["0"]["weight"], res["params"]["0"]["weight"])


def test_mlp_digits_adam(backend, capsys):
    res = mlp_digits.main(["--backend", backend, "--epochs", "1", "--optimizer", "adam"])
    assert res["accuracy"] > 0.5
    assert "Adam(" in capsys.readouterr().out


def test_convnet_digits(backend, capsys):
    res = convnet_digits.main(["--backend", backend, "--epochs", "1"])
    assert "convnet_digits: test accuracy" in capsys.readouterr().out
    assert 0.0 <= res["accuracy"] <= 1.0 and np.isfinite(res["losses"]).all()


def test_char_lstm(backend, capsys):
    res = char_lstm.main(["--backend", backend, "--steps", "4", "--hidden", "16", "--embed", "8",
                          "--seq-len", "8", "--batch", "4", "--log-every", "2",
                          "--sample-chars", "12", "--temperature", "0", "--no-progress"])
    out = capsys.readouterr().out
    assert "unigram entropy" in out and "--- sample ---" in out and "char_lstm: loss" in out
    assert len(res["losses"]) == 4 and np.isfinite(res["val_loss"])


def test_memory_network(backend, capsys):
    res = memory_network.main(["--backend", backend, "--epochs", "2", "--train", "64",
                               "--test", "32", "--memory", "4", "--dim", "8", "--batch", "16"])
    out = capsys.readouterr().out
    assert "where is" in out and "memory_network: test accuracy" in out
    assert len(res["losses"]) == 2 and np.isfinite(res["losses"]).all()
    assert res["losses"][1] < res["losses"][0]


def test_memory_network_stories_are_deterministic_and_answerable():
    x, y = memory_network.make_stories(50, 6, np.random.default_rng(3))
    x2, y2 = memory_network.make_stories(50, 6, np.random.default_rng(3))
    np.testing.assert_array_equal(x, x2)
    np.testing.assert_array_equal(y, y2)
    vocab = memory_network.VOCAB
    for story, answer in zip(x, y):         # the answer is where the asked person went last
        asked = story[-1, 2]
        facts = [s for s in story[:-1] if s[0] == asked]
        assert facts and facts[-1][4] == answer and vocab[answer] in memory_network.PLACES


def test_gru_classifier(backend, capsys):
    res = gru_classifier.main(["--backend", backend, "--epochs", "1", "--hidden", "8",
                               "--layers", "2", "--bidirectional", "--dropout", "0.2"])
    assert "gru_classifier: test accuracy" in capsys.readouterr().out
    assert 0.0 <= res["accuracy"] <= 1.0 and np.isfinite(res["losses"]).all()


def _check_main_outputs(res: dict, out_dir, backend: str) -> None:
    names = {os.path.relpath(p, out_dir) for p in res["written"]}
    stages = [n for n in names if n.startswith("ir" + os.sep)]
    assert len(stages) >= 5 and any(n.endswith(".fuse.nnir") for n in stages)
    assert {"kernels.txt", "kernels-unfused.txt", "fusion.txt", "memory.txt", "memory.svg",
            "graph.dot"} <= names
    assert ("train_step.ll" in names) == (backend == "llvm")
    assert (out_dir / "memory.svg").read_text().startswith("<svg")
    assert (out_dir / "graph.dot").read_text().startswith("digraph")
    assert res["kernels"]["fused"] < res["kernels"]["unfused"]
    assert res["speedup"] > 0 and all(v > 0 for v in res["peak_bytes"].values())


def test_main(backend, tmp_path, capsys):
    """`make run`'s job with one epoch and one timing round, on each backend."""
    res = make_run.main(["--backend", backend, "--epochs", "1", "--repeats", "1",
                         "--out", str(tmp_path), "--no-progress"])
    out = capsys.readouterr().out
    assert "test accuracy" in out and "speed-up of fused over unfused" in out and f"wrote {len(res['written'])} files" \
        in out and str(tmp_path) in out
    assert 0.0 <= res["accuracy"] <= 1.0
    _check_main_outputs(res, tmp_path, backend)


def test_main_llvm_as_a_script(tmp_path):
    """`make run` itself (`python examples/main.py`) with tiny settings: the llvm backend,
    progress bars on stderr, the table and the dump directory."""
    r = subprocess.run([sys.executable, os.path.join(EXAMPLES, "main.py"), "--epochs", "1",
                        "--repeats", "1", "--out", "out"], capture_output=True, text=True,
                       timeout=300, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "epoch  1/1" in r.stderr and "steps/s=" in r.stderr and "timing fused" in r.stderr
    lines = r.stdout.splitlines()
    assert any(ln.startswith("fused ") for ln in lines)
    assert any(ln.startswith("unfused ") for ln in lines)
    assert f"to {tmp_path / 'out'}/" in r.stdout
    assert (tmp_path / "out" / "train_step.ll").read_text().startswith(("; ModuleID", "target"))


def test_inspect_ir(capsys):
    res = inspect_ir.main([])
    out = capsys.readouterr().out
    for title in ("1. the traced IR", "2. the passes", "3. the fused graph", "4. fusion",
                  "5. kernel IR", "6. the memory plan", "7. LLVM IR", "8. the compiled step"):
        assert title in out, title
    assert "func @sgd_step(" in out and "define internal void" in out
    assert res["max_abs_error"] < 1e-4 and res["stages"][0] == "input"
    from nnjit.backends.llvm import target

    if "+avx512f" in target.host_cpu()[1]:
        assert res["zmm"] > 0 and "zmm" in out


def test_inspect_ir_interp(capsys):
    res = inspect_ir.main(["--backend", "interp", "--full"])
    out = capsys.readouterr().out
    assert "only with --backend llvm" in out and "+++ after fuse" in out
    assert res["max_abs_error"] == 0.0


@pytest.mark.skipif(shutil.which("cc") is None and shutil.which("gcc") is None,
                    reason="no C compiler")
def test_export_c_end_to_end(tmp_path):
    """`make export-c`: export the MLP to libmlp.so + libmlp.h, build main.c against it with
    the system compiler and run it (no Python at run time): it classifies the digits exactly as
    the compiled Python function does."""
    build = tmp_path / "build"
    args = ["--out", str(build), "--epochs", "3", "--digits", "8"]
    if shutil.which("make"):
        r = subprocess.run(["make", "-s", "-C", os.path.join(EXAMPLES, "export_c"),
                            f"BUILD={build}", f"PYTHON={sys.executable}",
                            f"EXPORT_ARGS={' '.join(args[2:])}", "run"],
                           capture_output=True, text=True, timeout=300)
    else:
        export_mlp.main(args)
        cc = shutil.which("cc") or shutil.which("gcc")
        exe = str(build / "classify")
        subprocess.run([cc, "-O2", "-I", str(build), os.path.join(EXAMPLES, "export_c", "main.c"),
                        "-L", str(build), "-lmlp", f"-Wl,-rpath,{build}", "-o", exe], check=True)
        r = subprocess.run([exe, str(build / "digits.txt")], capture_output=True, text=True,
                           timeout=60, env={"PATH": "/usr/bin:/bin"})
    assert r.returncode == 0, r.stdout + r.stderr
    assert {"libmlp.so", "libmlp.h", "digits.txt", "expected.txt"} <= set(os.listdir(build))
    expected = (build / "expected.txt").read_text().split()
    predicted = [ln.split("predicted ")[1].split()[0] for ln in r.stdout.splitlines()
                 if ln.startswith("digit ") and "predicted" in ln]
    assert predicted == expected and len(expected) == 8
    assert "correct" in r.stdout.splitlines()[-1]
    # The C program runs with an empty environment: no Python needed.
    again = subprocess.run([str(build / "classify"), str(build / "digits.txt")],
                           capture_output=True, text=True, timeout=60, env={})
    assert again.returncode == 0 and again.stdout == r.stdout[r.stdout.index("digit 0"):]


def _script(name: str, *args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, os.path.join(EXAMPLES, name), *args],
                          capture_output=True, text=True, timeout=300, cwd=cwd)


@pytest.mark.parametrize("name", ["mlp_digits.py", "convnet_digits.py", "char_lstm.py",
                                  "main.py", "inspect_ir.py", "export_c/export_mlp.py",
                                  "memory_network.py", "gru_classifier.py"])
def test_help(name):
    r = _script(name, "--help")
    assert r.returncode == 0, r.stderr
    assert "--backend" in r.stdout and "--seed" in r.stdout and "llvm" in r.stdout


SCRIPTS = ["mlp_digits.py", "convnet_digits.py", "char_lstm.py", "main.py", "inspect_ir.py",
           "export_c/export_mlp.py", "memory_network.py", "gru_classifier.py"]


@pytest.mark.parametrize("name", SCRIPTS)
def test_every_option_has_help_and_the_description_is_whole(name, monkeypatch):
    """Each example's --help documents every option, and its description is the docstring's
    whole first paragraph (not a line cut mid-sentence)."""
    import argparse
    import importlib.util

    seen = []

    def capture(self, args=None, namespace=None):
        seen.append(self)
        raise SystemExit(0)

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", capture)
    path = os.path.join(EXAMPLES, name)
    spec = importlib.util.spec_from_file_location(f"example_{len(seen)}", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    with pytest.raises(SystemExit):
        mod.parse_args([])
    (p,) = seen
    for action in p._actions:
        if not isinstance(action, argparse._HelpAction):
            assert action.help, f"{name}: {action.option_strings} has no help"
    assert p.description.rstrip().endswith((".", ":", ")")), p.description


def test_runs_as_a_script():
    r = _script("mlp_digits.py", "--epochs", "1", "--hidden", "16")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().splitlines()[-1].startswith("mlp_digits: test accuracy")


@pytest.mark.parametrize("name, args, message", [
    ("export_c/export_mlp.py", ["--params", "no-such-file.npz"], "No such file"),
    ("mlp_digits.py", ["--epochs", "1", "--hidden", "8", "--save", "/proc/no/x.npz"],
     "no such directory"),
    ("main.py", ["--backend", "nope"], "invalid choice"),
    ("mlp_digits.py", ["--batch", "0"], "'0' is not a whole number >= 1"),
    ("mlp_digits.py", ["--epochs", "0"], "'0' is not a whole number >= 1"),
    ("mlp_digits.py", ["--dropout", "1.5"], "'1.5' is not a number in [0, 1)"),
    ("char_lstm.py", ["--temperature", "-1"], "'-1' is not a finite number >= 0"),
    ("convnet_digits.py", ["--lr", "nan"], "'nan' is not a finite number > 0"),
])
def test_user_errors_print_one_line(name, args, message, tmp_path):
    r = _script(name, *args, cwd=tmp_path)
    assert r.returncode in (1, 2), r.stdout
    assert message in r.stderr and "Traceback" not in r.stderr
