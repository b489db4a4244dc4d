"""onnxruntime contenders (CPU execution provider) on the inference rows and the chains, run on
the models the driver exported with nnjit.onnx.export (the same function, its parameters as
initializers). "Reused output" binds a preallocated output buffer (io_binding); an output
aliasing the input is not offered by onnxruntime, so it has no in-place row."""
from __future__ import annotations

import numpy as np

from .common import Contender


def contenders(w, data, onnx_path: str | None, threads: int) -> dict[str, Contender]:
    if onnx_path is None or (w.kind == "chain" and w.output == "inplace"):
        return {}
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
    sess = ort.InferenceSession(onnx_path, opts, providers=["CPUExecutionProvider"])
    (inp,), (outp,) = sess.get_inputs(), sess.get_outputs()
    x = data["x"]
    if w.kind == "chain" and w.output == "out":
        out = np.empty_like(x)
        io = sess.io_binding()
        io.bind_cpu_input(inp.name, x)
        io.bind_output(outp.name, "cpu", 0, np.float32, list(out.shape), out.ctypes.data)

        def call():
            sess.run_with_iobinding(io)
            return out
        return {"onnxruntime": Contender(call)}
    return {"onnxruntime": Contender(lambda: sess.run(None, {inp.name: x})[0])}


def export(w, data, path: str) -> str:
    """Write workload w's inference function as ONNX with nnjit's exporter; the path."""
    import nnjit

    from .workloads import CHAINS, model
    if w.kind == "chain":
        nnjit.onnx.export(lambda v: CHAINS[w.chain](v, nnjit), data["x"], path=path)
    else:
        m, p = model(w.model), data["params"]
        nnjit.onnx.export(lambda x: m.apply(p, x), data["x"], path=path)
    return path
