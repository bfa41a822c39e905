"""``backend="triton-step"`` against the float64 reference: outputs and every gradient.

Without a GPU the kernels run in the Triton interpreter on CPU tensors (tiny shapes: the
interpreter costs milliseconds per program per step). With a GPU the ``cuda`` tests run the
same comparison at realistic sizes.
"""

import pytest
import torch

import fusedrnn
from cases import (CELLS, FORMS, compare_to_reference, ctor_kwargs, make_inputs,
                   outputs_and_grads, random_config, twin_modules)
from conftest import TOLERANCES, assert_rel_close, rel_err

INTERPRETER_DTYPES = [torch.float32, torch.float16]


def _tiny(cfg):
    # The interpreter runs every program of every step in Python: keep the stack small.
    return {**cfg, "layers": min(cfg["layers"], 2)}


@pytest.mark.parametrize("dtype", INTERPRETER_DTYPES, ids=str)
@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("cell", CELLS)
def test_interpreter_matches_reference(cell, form, dtype):
    if torch.cuda.is_available():
        pytest.skip("interpreter test; the cuda tests cover this machine")
    seed = sum(map(ord, cell + form))
    compare_to_reference("triton-step", _tiny(random_config(cell, form, seed)), dtype, "cpu", seed)


@pytest.mark.parametrize("cell", CELLS)
def test_interpreter_edge_sizes(cell):
    """T=1, B=1, hidden sizes that are not powers of two, bidirectional with h0, no bias."""
    if torch.cuda.is_available():
        pytest.skip("interpreter test; the cuda tests cover this machine")
    for T, B, H in [(1, 1, 3), (3, 1, 7), (1, 2, 5)]:
        cfg = dict(cell=cell, form="time_major", T=T, B=B, In=2, H=H, layers=1,
                   bidirectional=True, bias=False, with_h0=True)
        compare_to_reference("triton-step", cfg, torch.float32, "cpu")


def test_interpreter_module_parity_with_torch_nn_float32():
    """The issue's acceptance check: triton-step vs torch.nn in float32 on packed input."""
    if torch.cuda.is_available():
        pytest.skip("interpreter test")
    for cell in CELLS:
        cfg = dict(cell=cell, form="packed", T=5, B=3, In=3, H=5, layers=2, bidirectional=True,
                   bias=True, with_h0=True)
        ref, _ = twin_modules(cfg, "torch", dtype=torch.float32)
        ours = CELLS[cell][1](3, 5, **ctor_kwargs(cfg), backend="triton-step")
        ours.load_state_dict(ref.state_dict())
        inp, hx, leaves = make_inputs(cfg, dtype=torch.float32)
        want_outs, want_grads = outputs_and_grads(ref, inp, hx, leaves)
        got_outs, got_grads = outputs_and_grads(ours, inp, hx, leaves)
        for a, b in zip(got_outs, want_outs):
            assert rel_err(a, b) <= 2e-4
        for name in want_grads:
            assert rel_err(got_grads[name], want_grads[name]) <= 2e-4, (cell, name)


def test_unsupported_dtype_and_device_raise_value_error():
    m = fusedrnn.GRU(3, 4, backend="triton-step").double()
    with pytest.raises(ValueError, match="float64"):
        m(torch.randn(2, 1, 3, dtype=torch.float64))


def test_non_contiguous_input_and_state():
    if torch.cuda.is_available():
        pytest.skip("interpreter test")
    cfg = dict(cell="lstm", form="batch_first", T=3, B=2, In=3, H=5, layers=1,
               bidirectional=True, bias=True, with_h0=False)
    ref, _ = twin_modules(cfg, "reference")
    ours = fusedrnn.LSTM(3, 5, batch_first=True, bidirectional=True, backend="triton-step")
    ours.load_state_dict({k: v.float() for k, v in ref.state_dict().items()})
    x = torch.randn(3, 2, 6, dtype=torch.float64)[:, :, ::2].transpose(0, 1)   # strided view
    h0 = torch.randn(2, 5, 2, dtype=torch.float64).transpose(1, 2)
    c0 = torch.randn(2, 5, 2, dtype=torch.float64).transpose(1, 2)
    want, (wh, wc) = ref(x, (h0, c0))
    got, (gh, gc) = ours(x.float(), (h0.float(), c0.float()))
    assert_rel_close(got, want, torch.float32, "output")
    assert_rel_close(gh, wh, torch.float32, "h_n")
    assert_rel_close(gc, wc, torch.float32, "c_n")


# ----------------------------------------------------------------------------- CUDA sizes

CUDA_SIZES = [  # (T, B, In, H)
    (1, 1, 7, 33),
    (37, 5, 48, 100),
    (64, 256, 256, 256),
    (512, 16, 128, 1024),
]


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("T,B,In,H", CUDA_SIZES)
@pytest.mark.parametrize("cell", ["lstm", "lstm_proj", "gru", "rnn_tanh", "rnn_relu"])
def test_cuda_matches_reference(cell, T, B, In, H, dtype, monkeypatch):
    # fp32 parity is judged against IEEE fp32 accumulation; TF32 (cuDNN's default) is
    # a 10-bit-mantissa product and has its own, looser budget in the bf16 row.
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    if T * B * H > 512 * 16 * 1024 // 2 and cell != "lstm":
        pytest.skip("largest size is run for the LSTM only (reference cost)")
    cfg = dict(cell=cell, form="packed" if B > 1 else "time_major", T=T, B=B, In=In, H=H,
               layers=1, bidirectional=True, bias=True, with_h0=True)
    compare_to_reference("triton-step", cfg, dtype, "cuda")


@pytest.mark.cuda
def test_cuda_follows_tf32_flag():
    cfg = dict(cell="gru", form="time_major", T=8, B=4, In=64, H=128, layers=1,
               bidirectional=False, bias=True, with_h0=False)
    _, ours = twin_modules(cfg, "triton-step", dtype=torch.float32, device="cuda")
    x = torch.randn(8, 4, 64, device="cuda")
    with torch.backends.cudnn.flags(allow_tf32=False):
        ieee, _ = ours(x)
    with torch.backends.cudnn.flags(allow_tf32=True):
        tf32, _ = ours(x)
    assert rel_err(tf32, ieee) <= TOLERANCES[torch.bfloat16]


@pytest.mark.cuda
def test_cuda_offsets_beyond_int32():
    """T*B*4H = 2³¹·1.0: activation offsets need int64. Forward against cuDNN (the reference
    would take hours at this size); bf16 tolerance because both run in bf16."""
    T, B, In, H = 2048, 256, 64, 1024
    assert T * B * 4 * H >= 2**31
    torch.manual_seed(0)
    ref = torch.nn.LSTM(In, H).cuda().bfloat16()
    ours = fusedrnn.LSTM(In, H, backend="triton-step").cuda().bfloat16()
    ours.load_state_dict(ref.state_dict())
    x = torch.randn(T, B, In, device="cuda", dtype=torch.bfloat16)
    with torch.no_grad():
        want, (wh, wc) = ref(x)
        got, (gh, gc) = ours(x)
    for a, b, what in [(got, want, "y"), (gh, wh, "h_n"), (gc, wc, "c_n")]:
        assert_rel_close(a, b, torch.bfloat16, what)


@pytest.mark.parametrize("cell", ["lstm", "lstm_proj", "gru"])
def test_broadcast_and_transposed_state_gradients(cell):
    """``c_n.sum()`` hands backward a stride-0 gradient and a transposed read a permuted one;
    the kernels must see dense tensors (this once gave inf/NaN weight gradients)."""
    if torch.cuda.is_available():
        pytest.skip("interpreter test")
    cfg = dict(cell=cell, form="time_major", T=3, B=2, In=3, H=5, layers=2, bidirectional=True,
               bias=True, with_h0=False)
    ref, _ = twin_modules(cfg, "reference")
    ours = CELLS[cell][1](3, 5, **ctor_kwargs(cfg), backend="triton-step")
    ours.load_state_dict({k: v.float() for k, v in ref.state_dict().items()})
    x = torch.randn(3, 2, 3, dtype=torch.float64)
    grads = []
    for m, inp in ((ref, x), (ours, x.float())):
        m.zero_grad()
        out, hidden = m(inp)
        h_n, c_n = hidden if isinstance(hidden, tuple) else (hidden, hidden)
        loss = out.sum() + c_n.sum() + (h_n.transpose(0, 1).reshape(2, -1) ** 2).sum()
        loss.backward()
        grads.append({n: p.grad for n, p in m.named_parameters()})
    for name in grads[0]:
        assert_rel_close(grads[1][name], grads[0][name], torch.float32, name)


def test_tanh_keeps_relative_accuracy_for_tiny_preactivations():
    """2σ(2x)-1 alone loses relative accuracy near 0 (1e-3 at |x|≈1e-4); the kernels switch
    to the Taylor series there."""
    if torch.cuda.is_available():
        pytest.skip("interpreter test")
    for scale in (1e-2, 1e-4, 1e-6):
        cfg = dict(cell="rnn_tanh", form="time_major", T=4, B=2, In=3, H=5, layers=1,
                   bidirectional=False, bias=True, with_h0=False)
        ref, _ = twin_modules(cfg, "reference")
        with torch.no_grad():
            for p in ref.parameters():
                p.mul_(scale)
        ours = fusedrnn.RNN(3, 5, backend="triton-step")
        ours.load_state_dict({k: v.float() for k, v in ref.state_dict().items()})
        x = torch.randn(4, 2, 3, dtype=torch.float64) * scale
        want, _ = ref(x.float().double())
        got, _ = ours(x.float())
        assert_rel_close(got, want, torch.float32, f"scale {scale}")
