"""torch.compile with PackedSequence input on every backend, default mode and fullgraph: the
packed rows and batch_sizes enter the layer op directly (fusedrnn/ops/packed_layer.py)."""

import pytest
import torch
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence

import fusedrnn
from conftest import assert_rel_close

# "auto" is "torch" on CPU (registry.resolve), so it is not run twice.
BACKENDS = ["reference", "torch", "triton-step", "triton-persistent"]


def _loss(rnn, packed, hx):
    out, hidden = rnn(packed, hx)
    h_n = hidden[0] if isinstance(hidden, tuple) else hidden
    assert isinstance(out, PackedSequence)
    weights = torch.linspace(-1, 1, out.data.shape[-1])
    return (out.data * weights).sum() + h_n.square().sum()


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", ["unsorted_lstm_with_h0", "sorted_gru_no_state"])
@pytest.mark.parametrize("fullgraph", [False, True], ids=["default", "fullgraph"])
def test_compiled_packed_matches_eager(backend, case, fullgraph):
    torch._dynamo.reset()
    torch.manual_seed(0)
    lstm = case.endswith("with_h0")
    cls = fusedrnn.LSTM if lstm else fusedrnn.GRU
    # 2 layers, bidirectional, H=3: the reverse direction starts at each row's own end.
    rnn = cls(2, 3, num_layers=2, bidirectional=True, backend=backend)
    x = torch.randn(3, 3, 2)
    if lstm:   # enforce_sorted=False: a permutation travels with the packed data
        packed = pack_padded_sequence(x, torch.tensor([2, 3, 1]), enforce_sorted=False)
    else:      # sorted, no permutation, no state: B is known only from batch_sizes[0]
        packed = pack_padded_sequence(x, torch.tensor([3, 2, 1]))
    data = packed.data.detach().requires_grad_()
    packed = packed._replace(data=data)
    h0 = torch.randn(4, 3, 3, requires_grad=True)
    hx = (h0, torch.randn(4, 3, 3)) if lstm else None
    leaves = [data] + ([h0] if lstm else []) + list(rnn.parameters())

    want = _loss(rnn, packed, hx)
    want_grads = torch.autograd.grad(want, leaves)
    got = torch.compile(_loss, fullgraph=fullgraph)(rnn, packed, hx)
    got_grads = torch.autograd.grad(got, leaves)
    assert_rel_close(got, want, torch.float32, "compiled loss")
    for i, (a, b) in enumerate(zip(got_grads, want_grads)):
        assert_rel_close(a, b, torch.float32, f"compiled grad {i}")
