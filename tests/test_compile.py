"""torch.compile (default mode and fullgraph=True) on models that contain fusedrnn modules:
forward and backward on every CPU-capable backend."""

import pytest
import torch

import fusedrnn
from conftest import assert_rel_close


class Tagger(torch.nn.Module):
    def __init__(self, rnn):
        super().__init__()
        self.rnn = rnn
        width = rnn.hidden_size * (2 if rnn.bidirectional else 1)
        self.head = torch.nn.Linear(width, 3)

    def forward(self, x):
        y, h = self.rnn(x)
        h = h[0] if isinstance(h, tuple) else h
        return self.head(y).square().mean() + h.square().mean()


@pytest.mark.parametrize("fullgraph", [True, False], ids=["fullgraph", "default"])
@pytest.mark.parametrize("backend", ["auto", "reference", "triton-step", "triton-persistent"])
@pytest.mark.parametrize("cls", [fusedrnn.LSTM, fusedrnn.GRU])
def test_compile_forward_and_backward(cls, backend, fullgraph):
    torch._dynamo.reset()
    torch.manual_seed(0)
    model = Tagger(cls(3, 5, num_layers=2, bidirectional=True, backend=backend))
    x = torch.randn(4, 2, 3)

    eager_loss = model(x)
    eager_loss.backward()
    eager_grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()

    compiled = torch.compile(model, fullgraph=fullgraph)
    loss = compiled(x)
    loss.backward()
    assert_rel_close(loss, eager_loss, torch.float32, "compiled loss")
    for n, p in model.named_parameters():
        assert p.grad is not None, n
        assert_rel_close(p.grad, eager_grads[n], torch.float32, f"compiled grad {n}")


def test_layer_op_is_registered_with_fake_kernel():
    from torch._subclasses.fake_tensor import FakeTensorMode

    m = fusedrnn.LSTM(3, 5, proj_size=2, bidirectional=True)
    weights = [p.detach() for p in m._flat_weights]
    with FakeTensorMode() as mode:
        x = mode.from_tensor(torch.randn(4, 2, 3))
        h0 = mode.from_tensor(torch.zeros(2, 2, 2))
        c0 = mode.from_tensor(torch.zeros(2, 2, 5))
        fw = [mode.from_tensor(w) for w in weights]
        y, h, c, ws = torch.ops.fusedrnn.layer_forward(x, None, h0, c0, fw, "LSTM", "reference",
                                                       True, True, True)
    assert (tuple(y.shape), tuple(h.shape), tuple(c.shape)) == ((4, 2, 4), (2, 2, 2), (2, 2, 5))
