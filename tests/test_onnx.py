"""ONNX export with both exporters on every backend, checked in onnxruntime against eager.

Both write ONNX LSTM/GRU/RNN operators (the TorchScript exporter through torch's aten::lstm
symbolics, the default dynamo exporter through fusedrnn/onnx_layer.py). An LSTM with a
projection, which ONNX's LSTM cannot express, is exported as its unrolled cell equations."""

import warnings

import onnx
import onnxruntime
import pytest
import torch

import fusedrnn
from fusedrnn.layer_config import LayerConfig
from fusedrnn.ops.layer import run_layer
from conftest import assert_rel_close
from layer_cases import layer_inputs

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
    assert {"LSTM", "GRU", "RNN"} <= op_types, op_types
    session = onnxruntime.InferenceSession(str(path))
    feeds = {i.name: a.numpy() for i, a in zip(session.get_inputs(), args)}
    for i, (got, ref) in enumerate(zip(session.run(None, feeds), want)):
        # onnxruntime's fp32 kernels against the backend's fp32 kernels.
        assert_rel_close(torch.from_numpy(got), ref, torch.float32, f"output {i}")


class OneLayer(torch.nn.Module):
    """One layer through the op's contract, lengths as a model input (ONNX sequence_lens)."""

    def __init__(self, cfg, weights):
        super().__init__()
        self.cfg = cfg
        self.weights = torch.nn.ParameterList([torch.nn.Parameter(w.detach()) for w in weights])

    def forward(self, x, lengths, h0, *c0):
        y, h_n, c_n = run_layer(self.cfg, "reference", x, lengths, h0, c0[0] if c0 else None,
                                list(self.weights))
        return (y, h_n, c_n) if c_n is not None else (y, h_n)


@pytest.mark.parametrize("cfg", [LayerConfig("LSTM", True, True, False),
                                 LayerConfig("GRU", True, False, False),
                                 LayerConfig("RNN_RELU", False, True, False)], ids=str)
def test_onnx_sequence_lens_matches_the_contract(cfg, tmp_path):
    """Padded steps zero, state held, the reverse direction from each row's own end: the
    contract must survive the mapping onto ONNX's sequence_lens."""
    x, lengths, h0, c0, weights = layer_inputs(cfg, T=3, B=3, In=2, H=3, dtype=torch.float32,
                                               lengths=[3, 2, 1])
    model = OneLayer(cfg, weights)
    args = (x.detach(), lengths, h0.detach()) + ((c0.detach(),) if c0 is not None else ())
    want = model(*args)
    path = tmp_path / "layer.onnx"
    torch.onnx.export(model, args, str(path), dynamo=True)
    assert {"LSTM": "LSTM", "GRU": "GRU"}.get(cfg.mode, "RNN") in {
        n.op_type for n in onnx.load(str(path)).graph.node}
    session = onnxruntime.InferenceSession(str(path))
    feeds = {i.name: a.numpy() for i, a in zip(session.get_inputs(), args)}
    for i, (got, ref) in enumerate(zip(session.run(None, feeds), want)):
        assert_rel_close(torch.from_numpy(got), ref, torch.float32, f"output {i}")
