"""TorchScript: torch.jit.trace works on every backend (the trace records torch's aten::lstm &
co., as the TorchScript ONNX exporter needs); torch.jit.script does not (README table)."""

import pytest
import torch

import fusedrnn
from conftest import assert_rel_close


@pytest.mark.parametrize("backend", ["reference", "torch", "triton-step", "triton-persistent"])
def test_trace_matches_eager(backend):
    torch.manual_seed(0)
    m = fusedrnn.GRU(3, 4, num_layers=2, bidirectional=True, backend=backend)
    x = torch.randn(2, 1, 3)
    traced = torch.jit.trace(m, (x,), check_trace=False)
    assert any(n.kind() == "aten::gru" for n in traced.graph.nodes())
    x2 = torch.randn(2, 1, 3)
    for a, b in zip(traced(x2), m(x2)):
        assert_rel_close(a, b, torch.float32, f"{backend} traced")


def test_script_is_refused_with_torchs_error():
    with pytest.raises(torch.jit.frontend.NotSupportedError):
        torch.jit.script(fusedrnn.LSTM(3, 4))
