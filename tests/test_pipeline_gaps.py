"""The smaller gaps of issue 12: eval-mode backward and its routing, torch's autocast policy,
and the zero-overhead pass-through of backend "torch"/"auto" to torch's own entry point."""

import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence

import fusedrnn
import fusedrnn.functional
from fusedrnn.backends import torch_native
from conftest import TOLERANCES, assert_rel_close, rel_err

BACKENDS = ["auto", "reference", "torch", "triton-step", "triton-persistent"]
CLASSES = {"lstm": (torch.nn.LSTM, fusedrnn.LSTM), "gru": (torch.nn.GRU, fusedrnn.GRU),
           "rnn": (torch.nn.RNN, fusedrnn.RNN)}


def _twins(cell, backend, dtype, **kw):
    torch.manual_seed(0)
    ref = CLASSES[cell][0](2, 3, **kw).to(dtype)
    ours = CLASSES[cell][1](2, 3, backend=backend, **kw).to(dtype)
    ours.load_state_dict(ref.state_dict())
    return ref, ours


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_backward_in_eval_mode_matches_torch_nn(backend, cell):
    """Input gradients of a module in eval mode (adversarial examples, attributions)."""
    dtype = torch.float32 if backend.startswith("triton") else torch.float64
    ref, ours = _twins(cell, backend, torch.float64, num_layers=2, dropout=0.5, bidirectional=True)
    ours.to(dtype).eval()
    ref.eval()
    x = torch.randn(3, 2, 2, dtype=torch.float64)
    grads = []
    for m, dt in ((ref, torch.float64), (ours, dtype)):
        xi = x.to(dt).requires_grad_()
        out = m(xi)[0]
        (gx,) = torch.autograd.grad(out.square().sum(), xi)
        grads.append((out, gx))
    assert_rel_close(grads[1][0], grads[0][0], dtype, "eval output (dropout off)")
    assert_rel_close(grads[1][1], grads[0][1], dtype, "eval input gradient")


def test_eval_mode_routing_asks_for_training_kernels_only_when_differentiating(monkeypatch):
    """The rule (torch_native.training_kernels): _VF's `train` is True in training mode, and in
    eval mode exactly when autograd will differentiate the call (cuDNN's backward needs it)."""
    flags = []
    real = torch_native._VF_FN["LSTM"]

    def recording_lstm(*args):
        flags.append(args[6])   # (input, hx, weights, bias, layers, dropout, train, bidir, batch_first)
        return real(*args)

    monkeypatch.setitem(torch_native._VF_FN, "LSTM", recording_lstm)
    m = fusedrnn.LSTM(2, 3)
    x = torch.randn(2, 1, 2)
    m.eval()
    with torch.no_grad():
        m(x)
    m(x.requires_grad_())
    m.train()
    with torch.no_grad():
        m(x)
    m.eval()
    m.requires_grad_(False)
    m(x.detach())
    assert flags == [False, True, True, False]


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
@pytest.mark.parametrize("backend", ["auto", "torch"])
def test_autocast_follows_torch_exactly_on_torch_backend(cell, backend):
    ref, ours = _twins(cell, backend, torch.float32)
    x = torch.randn(4, 2, 2)
    with torch.autocast("cpu", torch.bfloat16):
        want, got = ref(x)[0], ours(x)[0]
        got_functional = fusedrnn.functional.forward(
            ours.mode, x, None, ours._flat_weights_now(), num_layers=1, bias=True,
            batch_first=False, dropout=0.0, training=False, bidirectional=False, backend=backend)[0]
    # CPU: lstm and rnn run wholly in bf16; the GRU's matmuls do, its output is fp32.
    assert got.dtype == want.dtype == (torch.float32 if cell == "gru" else torch.bfloat16)
    assert torch.equal(got, want)
    assert torch.equal(got_functional, want)


@pytest.mark.parametrize("backend", ["reference", "triton-step", "triton-persistent"])
@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_autocast_policy_on_the_op_path(cell, backend):
    """The backends behind the op: the autocast dtype where torch runs the cell in it (LSTM, RNN
    on CPU), the weights' dtype where it does not (the CPU GRU, whose bf16 matmul rounding a
    fused kernel does not imitate)."""
    ref, ours = _twins(cell, backend, torch.float32)
    x = torch.randn(4, 2, 2)
    with torch.autocast("cpu", torch.bfloat16):
        want, got = ref(x)[0], ours(x)[0]
    assert got.dtype == want.dtype
    # bf16 storage (8-bit mantissa) of inputs, weights and each step's state on both sides.
    assert rel_err(got, want) <= TOLERANCES[torch.bfloat16]


def test_packed_input_on_auto_passes_straight_through(monkeypatch):
    """No pad-then-repack: functional.forward must not call pad/pack helpers on backend "auto",
    and the results are torch.nn's own, bit for bit, gradients included."""
    def forbidden(*a, **k):
        raise AssertionError("packed input was padded or repacked")

    ref, ours = _twins("lstm", "auto", torch.float32, num_layers=2, bidirectional=True)
    packed = pack_padded_sequence(torch.randn(4, 3, 2), torch.tensor([2, 4, 1]), enforce_sorted=False)
    data = packed.data.requires_grad_()
    packed = packed._replace(data=data)
    want = ref(packed)
    monkeypatch.setattr(fusedrnn.functional, "pad_packed_sequence", forbidden)
    monkeypatch.setattr(fusedrnn.functional, "pack_padded_sequence", forbidden)
    got = ours(packed)
    for a, b in ((got[0].data, want[0].data), (got[1][0], want[1][0]), (got[1][1], want[1][1])):
        assert torch.equal(a, b)
    ga = torch.autograd.grad(got[0].data.sum() + got[1][1].sum(), [data, *ours.parameters()])
    gb = torch.autograd.grad(want[0].data.sum() + want[1][1].sum(), [data, *ref.parameters()])
    for a, b in zip(ga, gb):
        assert torch.equal(a, b)


@pytest.mark.cuda
@pytest.mark.parametrize("backend", ["auto", "torch", "triton-step", "triton-persistent"])
@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_backward_in_eval_mode_on_cuda(backend, cell):
    """cuDNN refuses backward in eval mode for torch.nn ("cudnn RNN backward can only be called
    in training mode"); fusedrnn must not. The twin runs in training mode without dropout (the
    same numbers), since torch.nn itself cannot do eval-mode backward here."""
    ref, ours = _twins(cell, backend, torch.float32, num_layers=2, dropout=0.0, bidirectional=True)
    ref, ours = ref.cuda().train(), ours.cuda()
    ours.dropout = 0.5          # eval mode turns it off; cuDNN's training kernels must too
    ours.eval()
    x = torch.randn(3, 2, 2, device="cuda")
    results = []
    for m in (ref, ours):
        xi = x.clone().requires_grad_()
        out = m(xi)[0]
        results.append((out, torch.autograd.grad(out.square().sum(), xi)[0]))
    assert_rel_close(results[1][0], results[0][0], torch.float32, "eval output on CUDA")
    assert_rel_close(results[1][1], results[0][1], torch.float32, "eval input gradient on CUDA")
