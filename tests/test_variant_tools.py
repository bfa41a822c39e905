"""The variant layers under PyTorch's tools (issue 14): torch.compile (default and fullgraph),
double backward, torch.export (decomposed: no fusedrnn op left) and torch.jit.trace."""

import pytest
import torch

import fusedrnn


def _model(backend, cls=fusedrnn.LayerNormLSTM, **kwargs):
    torch.manual_seed(0)
    return cls(3, 5, bidirectional=True, backend=backend, dtype=torch.float64, **kwargs)


def _x():
    return torch.randn(4, 2, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1))


RESETS = torch.tensor([[False, False], [True, False], [False, True], [False, False]])


@pytest.mark.parametrize("fullgraph", [False, True])
@pytest.mark.parametrize("backend", ["reference", "torch", "triton-step", "triton-persistent"])
def test_compile(backend, fullgraph):
    torch._dynamo.reset()
    dtype = torch.float32 if backend.startswith("triton") else torch.float64   # interpreter
    m = _model(backend, zoneout=0.2).eval().to(dtype)
    x = _x().to(dtype).requires_grad_()
    want = m(x, resets=RESETS)[0]
    (g_want,) = torch.autograd.grad(want.sum(), x)
    compiled = torch.compile(m, fullgraph=fullgraph)
    got = compiled(x, resets=RESETS)[0]
    (g_got,) = torch.autograd.grad(got.sum(), x)
    torch.testing.assert_close(got, want)
    torch.testing.assert_close(g_got, g_want)


@pytest.mark.parametrize("cls", [fusedrnn.LayerNormLSTM, fusedrnn.LayerNormGRU, fusedrnn.LSTM])
@pytest.mark.parametrize("backend", ["reference", "torch"])
def test_gradgradcheck(backend, cls):
    """Double backward through the variant op (any backend: its backward's autograd
    differentiates the composite), in float64."""
    m = _model(backend, cls=cls, zoneout=0.3).eval()
    params = [p for p in m.parameters()]
    x = torch.randn(3, 1, 3, dtype=torch.float64, requires_grad=True)
    resets = torch.tensor([[False], [True], [False]])

    def f(x, *ps):
        out = torch.func.functional_call(m, dict(zip([n for n, _ in m.named_parameters()], ps)),
                                         (x,), {"resets": resets})
        return out[0]

    assert torch.autograd.gradgradcheck(f, (x, *params), eps=1e-6, atol=1e-5)


def test_export_decomposes_to_aten():
    m = _model("auto")
    x = _x()
    ep = torch.export.export(m, (x,), {"resets": RESETS}).run_decompositions()
    targets = {str(n.target) for n in ep.graph.nodes if n.op == "call_function"}
    assert not any("fusedrnn" in t for t in targets), targets
    torch.testing.assert_close(ep.module()(x, resets=RESETS)[0], m(x, resets=RESETS)[0])


class _WithResets(torch.nn.Module):
    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        return self.inner(x, resets=RESETS)[0]


def test_jit_trace():
    m = _WithResets(_model("reference"))
    x = _x()
    traced = torch.jit.trace(m, (x,))
    assert "fusedrnn::" not in str(traced.inlined_graph)   # the composite's torch ops, no fusedrnn op
    torch.testing.assert_close(traced(2 * x), m(2 * x))
