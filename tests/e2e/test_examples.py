"""Every example runs (with tiny settings) so none of them rots: in-process through its `main`
for each backend, plus each script's `--help` and one real run as a subprocess."""
from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from nnjit import nn

EXAMPLES = os.path.join(os.path.dirname(__file__), "..", "..", "examples")
sys.path.insert(0, EXAMPLES)

import char_lstm  # noqa: E402
import convnet_digits  # noqa: E402
import main as make_run  # noqa: E402
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
                          "--sample-chars", "12", "--temperature", "0"])
    out = capsys.readouterr().out
    assert "unigram entropy" in out and "--- sample ---" in out and "char_lstm: loss" in out
    assert len(res["losses"]) == 4 and np.isfinite(res["val_loss"])


def test_main(backend, capsys):
    res = make_run.main(["--backend", backend, "--epochs", "1"])
    out = capsys.readouterr().out
    assert "func @mlp(" in out and "func @convnet(" in out and "conv2d(" in out
    assert "-> (4, 10) float32" in out and "main: ConvNet test accuracy" in out
    assert 0.0 <= res["accuracy"] <= 1.0


def _script(name: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, os.path.join(EXAMPLES, name), *args],
                          capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("name", ["mlp_digits.py", "convnet_digits.py", "char_lstm.py",
                                  "main.py"])
def test_help(name):
    r = _script(name, "--help")
    assert r.returncode == 0, r.stderr
    assert "--backend" in r.stdout and "--seed" in r.stdout


def test_runs_as_a_script():
    r = _script("mlp_digits.py", "--epochs", "1", "--hidden", "16")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().splitlines()[-1].startswith("mlp_digits: test accuracy")
