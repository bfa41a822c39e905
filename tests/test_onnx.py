"""ONNX export with both exporters on every backend, checked in onnxruntime against eager.

The TorchScript exporter (dynamo=False) writes ONNX LSTM/GRU/RNN operators; the default dynamo
exporter goes through torch.export and the op's decomposition (fusedrnn/layer_decomposition.py)
and writes the unrolled cell equations. An LSTM with a projection, which ONNX's LSTM cannot
express, is the decomposition under both."""

import warnings

import onnx
import onnxruntime
import pytest
import torch

import fusedrnn
from conftest import assert_rel_close

BACKENDS = ["reference", "torch", "triton-step", "triton-persistent"]


class Stack(torch.nn.Module):
    """Bidirectional 2-layer batch-first LSTM with a given state, a GRU, an Elman RNN, and an
    LSTM with a projection."""

    def __init__(self, backend):
        super().__init__()
        self.lstm = fusedrnn.LSTM(3, 5, num_layers=2, bidirectional=True, batch_first=True,
                                  backend=backend)
        self.gru = fusedrnn.GRU(10, 3, backend=backend)
        self.rnn = fusedrnn.RNN(3, 3, nonlinearity="tanh", bidirectional=True, backend=backend)
        self.proj = fusedrnn.LSTM(6, 3, proj_size=2, backend=backend)

    def forward(self, x, h0, c0):
        y, (h, c) = self.lstm(x, (h0, c0))
        z, hg = self.gru(y.transpose(0, 1))
        r, hr = self.rnn(z)
        p, (hp, cp) = self.proj(r)
        return p, h, c, hg, hr, hp, cp


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dynamo", [True, False], ids=["dynamo", "torchscript"])
def test_onnx_export_runs_in_onnxruntime(backend, dynamo, tmp_path):
    torch.manual_seed(0)
    model = Stack(backend).eval()
    g = torch.Generator().manual_seed(1)
    args = (torch.randn(2, 3, 3, generator=g), torch.randn(4, 2, 5, generator=g),
            torch.randn(4, 2, 5, generator=g))
    want = model(*args)
    path = tmp_path / "model.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")   # the TorchScript exporter's deprecation notice
        torch.onnx.export(model, args, str(path), dynamo=dynamo)
    graph = onnx.load(str(path)).graph
    op_types = {n.op_type for n in graph.node}
    assert not any(n.domain.startswith("fusedrnn") for n in graph.node), op_types
    if not dynamo:
        assert {"LSTM", "GRU", "RNN"} <= op_types, op_types
    session = onnxruntime.InferenceSession(str(path))
    feeds = {i.name: a.numpy() for i, a in zip(session.get_inputs(), args)}
    for i, (got, ref) in enumerate(zip(session.run(None, feeds), want)):
        # onnxruntime's fp32 kernels against the backend's fp32 kernels.
        assert_rel_close(torch.from_numpy(got), ref, torch.float32, f"output {i}")
