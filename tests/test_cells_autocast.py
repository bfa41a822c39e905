"""Cells under autocast: every backend returns the dtypes ``torch.nn``'s cell returns, with its
values and gradients, compared with torch at run time (policy: ``fusedrnn/ops/cell_autocast.py``).

Tolerance: bf16's (CPU) / fp16's (CUDA) from the table, whatever the output dtype: on both
sides the GEMMs read operands rounded to the autocast dtype; torch also rounds the gate
pre-activations to it, the fused kernels keep them in fp32, so the two differ by that dtype's
rounding even where the outputs are fp32.
"""

import pytest
import torch

from cell_cases import CELLS, ieee_fp32, is_lstm, twins  # noqa: F401 (a fixture)
from conftest import assert_rel_close
from fusedrnn.ops import cell_autocast
from fusedrnn.tolerances import tolerance

BACKENDS = ["reference", "torch", "triton-step"]
# (input dtype, state dtype or None for the zero default state): fp32 model fed fp32, bf16
# input with bf16 states, bf16 input with fp32 states, and fp16 (cast to bf16 by CPU autocast).
DTYPES = [(torch.float32, torch.float32), (torch.bfloat16, torch.bfloat16),
          (torch.bfloat16, torch.float32), (torch.float16, torch.float16),
          (torch.float32, None), (torch.bfloat16, None)]
B, IN, H = 3, 5, 7   # H odd: partial hidden tile; B, In small for the interpreter


def _inputs(cell, x_dtype, state_dtype, device, seed=0):
    g = torch.Generator().manual_seed(seed)

    def randn(*shape, dtype):
        return torch.randn(*shape, generator=g).to(device, dtype).requires_grad_()

    x = randn(B, IN, dtype=x_dtype)
    if state_dtype is None:
        return x, None, [x]
    if is_lstm(cell):
        hx = (randn(B, H, dtype=state_dtype), randn(B, H, dtype=state_dtype))
        return x, hx, [x, *hx]
    hx = randn(B, H, dtype=state_dtype)
    return x, hx, [x, hx]


def _run(module, x, hx, leaves, device_type, low):
    with torch.autocast(device_type, low):
        out = module(x, hx)
    outs = list(out) if isinstance(out, tuple) else [out]
    loss = sum((o.float() * (k + 1)).sin().sum() for k, o in enumerate(outs))
    grads = torch.autograd.grad(loss, leaves + list(module.parameters()))
    return outs, grads


def check_like_torch(cell, backend, x_dtype, state_dtype, device, low):
    ref, ours = twins(cell, IN, H, backend, dtype=torch.float32, device=device)
    x, hx, leaves = _inputs(cell, x_dtype, state_dtype, device)
    want, want_grads = _run(ref, x, hx, leaves, device, low)
    got, got_grads = _run(ours, x, hx, leaves, device, low)
    what = f"{cell} {backend} x {x_dtype} states {state_dtype} autocast {low}"
    tol = tolerance(low, CELLS[cell][3])   # relu in bf16: the flipped-derivative allowance
    assert [o.dtype for o in got] == [o.dtype for o in want], what
    for i, (a, b) in enumerate(zip(got, want, strict=True)):
        assert_rel_close(a, b, low, f"{what} output {i}")
    for i, (a, b) in enumerate(zip(got_grads, want_grads, strict=True)):
        assert a.dtype == b.dtype, f"{what} grad {i}: {a.dtype} != {b.dtype}"
        err = (a.double() - b.double()).norm() / b.double().norm().clamp_min(1e-30)
        assert err <= tol, f"{what} grad {i}: relative error {err:.3e} > {tol:.0e}"


@pytest.mark.parametrize("x_dtype,state_dtype", DTYPES,
                         ids=lambda d: str(d).replace("torch.", ""))
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("cell", CELLS)
def test_cpu_autocast_matches_torch(cell, backend, x_dtype, state_dtype):
    check_like_torch(cell, backend, x_dtype, state_dtype, "cpu", torch.bfloat16)


def test_cpu_autocast_dtypes_are_those_measured():
    """The policy written in cell_autocast's docstring, as measured with torch's cells: RNN
    cells return bf16; LSTM/GRU the promotion of bf16 with the state that enters the
    pointwise math (c, h)."""
    bf16, f16, f32 = torch.bfloat16, torch.float16, torch.float32
    h32, h16 = torch.empty(1, 1), torch.empty(1, 1, dtype=f16)
    assert cell_autocast.output_dtype("RNN_TANH", "cpu", bf16, h32, None) == bf16
    assert cell_autocast.output_dtype("RNN_RELU", "cpu", bf16, h16, None) == bf16
    assert cell_autocast.output_dtype("LSTM", "cpu", bf16, h16, h32) == f32
    assert cell_autocast.output_dtype("LSTM", "cpu", bf16, h32, h16) == f32   # bf16 ⊔ fp16
    assert cell_autocast.output_dtype("LSTM", "cpu", bf16, h32, h32.to(bf16)) == bf16
    assert cell_autocast.output_dtype("GRU", "cpu", bf16, h32, None) == f32
    assert cell_autocast.output_dtype("GRU", "cpu", bf16, h32.to(bf16), None) == bf16


@pytest.mark.parametrize("cell", CELLS)
def test_cuda_policy_casts_everything_to_the_autocast_dtype(cell):
    """CUDA's autocast list holds the cells themselves: every input in the autocast dtype
    (read from torch's table here, on CPU tensors; the GPU test below runs it)."""
    mode = CELLS[cell][3]
    G = {"LSTM": 4, "GRU": 3}.get(mode, 1)
    x, h = torch.randn(2, 3), torch.randn(2, 4)
    c = torch.randn(2, 4) if is_lstm(cell) else None
    w_ih, w_hh, b = torch.randn(G * 4, 3), torch.randn(G * 4, 4), torch.randn(G * 4)
    low = torch.get_autocast_dtype("cuda")
    cast = cell_autocast.cast(mode, "cuda", x, h, c, w_ih, w_hh, b, b.double())
    assert all(t.dtype == low for t in cast[:6] if t is not None)
    assert cast[6].dtype == torch.float64   # autocast leaves float64 alone


@pytest.mark.cuda
@pytest.mark.parametrize("low", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("cell", CELLS)
def test_cuda_autocast_matches_torch(cell, backend, low, ieee_fp32):
    for x_dtype, state_dtype in [(torch.float32, torch.float32), (low, low), (low, None)]:
        check_like_torch(cell, backend, x_dtype, state_dtype, "cuda", low)


@pytest.mark.parametrize("cell", ["lstm", "rnn_tanh"])
def test_cpu_autocast_under_torch_compile(cell, tmp_path, monkeypatch):
    """The compiled route (the op directly, no autograd.Function) casts the same way: an fp32
    model fed fp32 returns torch's dtypes (LSTM fp32, RNN bf16) with fullgraph=True."""
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path))
    torch._dynamo.reset()
    ref, ours = twins(cell, IN, H, "triton-step", dtype=torch.float32, device="cpu")
    x, hx, _ = _inputs(cell, torch.float32, torch.float32, "cpu")

    def step(module, x, hx):
        with torch.autocast("cpu", torch.bfloat16):
            out = module(x, hx)
        return list(out) if isinstance(out, tuple) else [out]

    want = step(ref, x, hx)
    got = torch.compile(step, fullgraph=True, backend="aot_eager")(ours, x, hx)
    assert [o.dtype for o in got] == [o.dtype for o in want]
    for i, (a, b) in enumerate(zip(got, want, strict=True)):
        assert_rel_close(a, b, torch.bfloat16, f"{cell} compiled output {i}")
