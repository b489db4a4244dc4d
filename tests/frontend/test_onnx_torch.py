"""Models exported from PyTorch with torch.onnx.export (the TorchScript exporter) import and
match torch within 1e-4 relative: an MLP, LeNet-5, LSTM and GRU language models, and a
ConvNet with BatchNorm (inference). Marked `oracle`: skipped without torch or onnx."""
from __future__ import annotations

import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnx")

import nnjit.onnx  # noqa: E402

pytestmark = pytest.mark.oracle
nn = torch.nn


class LanguageModel(nn.Module):
    def __init__(self, cell, vocab=50, dim=16, hidden=32):
        super().__init__()
        self.emb = nn.Embedding(vocab, dim)
        self.rnn = cell(dim, hidden, batch_first=True)
        self.out = nn.Linear(hidden, vocab)

    def forward(self, tokens):
        h, _ = self.rnn(self.emb(tokens))
        return self.out(h)


def _mlp():
    return nn.Sequential(nn.Linear(20, 64), nn.ReLU(), nn.Linear(64, 10)), torch.randn(8, 20)


def _lenet():
    return nn.Sequential(
        nn.Conv2d(1, 6, 5, padding=2), nn.Tanh(), nn.AvgPool2d(2),
        nn.Conv2d(6, 16, 5), nn.Tanh(), nn.AvgPool2d(2), nn.Flatten(),
        nn.Linear(400, 120), nn.Tanh(), nn.Linear(120, 84), nn.Tanh(), nn.Linear(84, 10),
    ), torch.randn(4, 1, 28, 28)


def _convnet_bn():
    # BatchNorm after the ReLU cannot be folded into the conv by the exporter, so the model
    # keeps its BatchNormalization nodes.
    m = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.BatchNorm2d(8), nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, stride=2), nn.ReLU(), nn.BatchNorm2d(16),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10))
    with torch.no_grad():
        for mod in m.modules():
            if isinstance(mod, nn.BatchNorm2d):
                mod.running_mean.uniform_(-1, 1)
                mod.running_var.uniform_(0.5, 2)
                mod.weight.uniform_(0.5, 1.5)
                mod.bias.uniform_(-1, 1)
    return m, torch.randn(2, 3, 16, 16)


MODELS = {
    "mlp": (_mlp, {"Gemm"}),
    "lenet5": (_lenet, {"Conv", "AveragePool", "Gemm"}),
    "convnet_bn": (_convnet_bn, {"Conv", "BatchNormalization", "MaxPool", "GlobalAveragePool"}),
    "lstm_lm": (lambda: (LanguageModel(nn.LSTM), torch.randint(0, 50, (3, 7))), {"LSTM"}),
    "gru_lm": (lambda: (LanguageModel(nn.GRU), torch.randint(0, 50, (3, 7))), {"GRU"}),
}


def export(model, x, path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (x,), path, dynamo=False, input_names=["x"],
                          output_names=["y"])


@pytest.mark.parametrize("name", list(MODELS))
def test_torch_model_matches(name, tmp_path):
    import onnx

    torch.manual_seed(0)
    make, ops = MODELS[name]
    model, x = make()
    model.eval()
    path = str(tmp_path / f"{name}.onnx")
    export(model, x, path)
    assert ops <= {n.op_type for n in onnx.load(path).graph.node}
    with torch.no_grad():
        want = model(x).numpy()
    fn = nnjit.onnx.load(path, backend="llvm")
    (got,) = fn(x.numpy())
    assert got.shape == want.shape and got.dtype == np.float32
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5 * np.abs(want).max())
