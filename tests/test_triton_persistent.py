"""``backend="triton-persistent"`` (batch-tiled, register-resident form) against the float64
reference: outputs and every gradient; its limits raise ValueError naming them."""

import pytest
import torch

import fusedrnn
from cases import CELLS, FORMS, compare_to_reference, random_config
from fusedrnn.kernels.triton import gru_persistent, lstm_persistent, rnn_persistent
from fusedrnn.kernels.triton.persistent_common import dot_key

PERSISTENT_CELLS = [c for c in CELLS if c != "lstm_proj"]
ON_GPU = torch.cuda.is_available()
DEVICE = "cuda" if ON_GPU else "cpu"


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=str)
@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("cell", PERSISTENT_CELLS)
def test_matches_reference(cell, form, dtype):
    seed = sum(map(ord, cell + form)) + 1
    cfg = random_config(cell, form, seed)
    cfg["layers"] = min(cfg["layers"], 2)       # the interpreter is slow: a small stack
    compare_to_reference("triton-persistent", cfg, dtype, DEVICE, seed)


@pytest.mark.parametrize("cell", PERSISTENT_CELLS)
def test_edge_sizes(cell):
    """T=1, B=1, H not a power of two, a batch wider than one tile, no bias, with h0."""
    for T, B, H in [(1, 1, 3), (3, 1, 7), (2, 17, 5)]:
        cfg = dict(cell=cell, form="packed" if B > 1 else "time_major", T=T, B=B, In=2, H=H,
                   layers=1, bidirectional=True, bias=False, with_h0=True)
        compare_to_reference("triton-persistent", cfg, torch.float32, DEVICE)


@pytest.mark.parametrize("cell", PERSISTENT_CELLS)
def test_largest_supported_hidden_size(cell):
    module = {"lstm": lstm_persistent, "gru": gru_persistent}.get(cell, rnn_persistent)
    limit = module.MAX_HIDDEN[dot_key(torch.float32)]
    cfg = dict(cell=cell, form="time_major", T=2, B=2, In=3, H=limit, layers=1,
               bidirectional=False, bias=True, with_h0=True)
    compare_to_reference("triton-persistent", cfg, torch.float32, DEVICE)


@pytest.mark.parametrize("allow_tf32", [True, False], ids=["tf32", "ieee"])
@pytest.mark.parametrize("cls, module", [(fusedrnn.LSTM, lstm_persistent),
                                         (fusedrnn.GRU, gru_persistent),
                                         (fusedrnn.RNN, rnn_persistent)])
def test_hidden_size_beyond_the_limit_names_it(cls, module, allow_tf32, monkeypatch):
    """The limit depends on the dot configuration (IEEE fp32 needs more registers)."""
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", allow_tf32)
    limit = module.MAX_HIDDEN["fp32-tf32" if allow_tf32 else "fp32-ieee"]
    m = cls(3, limit + 1, backend="triton-persistent").to(DEVICE)
    with pytest.raises(ValueError, match=f"hidden_size {limit + 1} exceeds .* limit {limit}"):
        m(torch.randn(2, 1, 3, device=DEVICE))
    auto = cls(3, limit + 1).to(DEVICE)          # "auto" never raises for a limit
    assert auto(torch.randn(2, 1, 3, device=DEVICE))[0].shape == (2, 1, limit + 1)


def test_projection_is_refused_with_a_reason():
    m = fusedrnn.LSTM(3, 6, proj_size=2, backend="triton-persistent").to(DEVICE)
    with pytest.raises(ValueError, match="proj_size"):
        m(torch.randn(2, 1, 3, device=DEVICE))


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("T,B,In,H", [(1, 1, 7, 17), (256, 64, 64, 32), (512, 40, 96, 31)])
@pytest.mark.parametrize("cell", PERSISTENT_CELLS)
def test_cuda_matches_reference(cell, T, B, In, H, dtype, monkeypatch):
    # IEEE fp32 (see test_triton_step); H ≤ 32 is within every dot configuration's limit.
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    cfg = dict(cell=cell, form="packed" if B > 1 else "time_major", T=T, B=B, In=In, H=H,
               layers=1, bidirectional=True, bias=True, with_h0=True)
    compare_to_reference("triton-persistent", cfg, dtype, "cuda")


@pytest.mark.cuda
@pytest.mark.parametrize("backend", ["triton-step", "triton-persistent"])
def test_cuda_runs_are_bitwise_deterministic(backend):
    """No atomics anywhere: repeated calls give bitwise-equal outputs and gradients."""
    torch.manual_seed(0)
    m = fusedrnn.LSTM(32, 32, bidirectional=True, backend=backend).cuda()
    x = torch.randn(100, 8, 32, device="cuda", requires_grad=True)
    runs = []
    for _ in range(3):
        m.zero_grad()
        x.grad = None
        out, (h, c) = m(x)
        (out.square().sum() + h.sum() + c.sum()).backward()
        runs.append([out.detach(), h.detach(), c.detach(), x.grad] + [p.grad for p in m.parameters()])
    for other in runs[1:]:
        assert all(torch.equal(a, b) for a, b in zip(runs[0], other))


@pytest.mark.cuda
@pytest.mark.parametrize("cell", PERSISTENT_CELLS)
def test_cuda_at_the_bf16_limit(cell):
    """The widest register-resident case (bf16: H = 64 for the LSTM and GRU, 128 for the RNN)."""
    module = {"lstm": lstm_persistent, "gru": gru_persistent}.get(cell, rnn_persistent)
    cfg = dict(cell=cell, form="packed", T=300, B=24, In=48, H=module.MAX_HIDDEN["bf16"],
               layers=1, bidirectional=True, bias=True, with_h0=True)
    compare_to_reference("triton-persistent", cfg, torch.bfloat16, "cuda")
