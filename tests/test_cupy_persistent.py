"""``backend="cupy-persistent"`` on a GPU against the float64 reference: outputs and every
gradient, several blocks per direction meeting at the grid barrier, odd sizes, packed input,
both directions, two layers; limits raise ValueError naming them; runs are bitwise reproducible.

The kernels' logic also runs without a GPU in ``test_cupy_persistent_cpu.py`` (host emulation);
what only a GPU checks is here: NVRTC compilation through CuPy, the cooperative launch and grid
barrier, memory ordering between blocks, tensor cores, streams, and the plans at the shared-memory
limit (a full grid of blocks each with ~227 KiB) and with A staged in several chunks.

Without CuPy these tests fail rather than skip (``cupy_gpu.require_cupy``)."""

import pytest
import torch

import conftest
import cupy_gpu
import fusedrnn
from cases import compare_to_reference
from fusedrnn.kernels.cuda import persistent_launch as pl

pytestmark = pytest.mark.cuda

BACKEND = "cupy-persistent"
CELLS = ("lstm", "gru", "rnn_tanh", "rnn_relu")
MODE = {"lstm": "LSTM", "gru": "GRU", "rnn_tanh": "RNN_TANH", "rnn_relu": "RNN_RELU"}
DTYPES = (torch.float32, torch.float16, torch.bfloat16)
# relu in bf16: see fusedrnn.tolerances.RELU_BF16_TOLERANCE (and test_cupy_persistent_cpu).
from fusedrnn.tolerances import RELU_BF16_TOLERANCE  # noqa: E402


@pytest.fixture(autouse=True)
def cupy_on_gpu():
    cupy_gpu.require_cupy(BACKEND)


def _cfg(cell, T, B, In, H, bidirectional=True, layers=1, form=None):
    return dict(cell=cell, form=form or ("packed" if B > 1 else "time_major"), T=T, B=B, In=In,
                H=H, layers=layers, bidirectional=bidirectional, bias=True, with_h0=True)


def _plans(cell, H, B, D, dtype):
    sms, smem = pl.device_limits(torch.device("cuda"))
    return [pl.plan(MODE[cell], H, B, D, dtype, bw, sms, smem) for bw in (False, True)]


def _blocks(cell, H, B, D, dtype):
    return [p.blocks for p in _plans(cell, H, B, D, dtype)]


def _tolerate_relu_bf16(cell, dtype, monkeypatch):
    if cell == "rnn_relu" and dtype == torch.bfloat16:
        monkeypatch.setitem(conftest.TOLERANCES, torch.bfloat16, RELU_BF16_TOLERANCE)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("T,B,In,H", [(1, 1, 7, 33), (128, 16, 32, 256), (37, 5, 16, 100)])
@pytest.mark.parametrize("cell", CELLS)
def test_cuda_matches_reference(cell, T, B, In, H, dtype, monkeypatch):
    """T=1/B=1/H=33 (odd everything), B=16 × H=256 (the multi-block path: tens of blocks per
    direction), a ragged H=100 with packed variable lengths; both directions, h0 given."""
    _tolerate_relu_bf16(cell, dtype, monkeypatch)
    if H >= 100:
        assert min(_blocks(cell, H, B, 2, dtype)) > 1
    torch.manual_seed(0)
    compare_to_reference(BACKEND, _cfg(cell, T, B, In, H), dtype, "cuda")


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("cell", CELLS)
def test_cuda_hidden_768_batch_64(cell, dtype, monkeypatch):
    """The anchor width (FlashRNN's H=768) at a training batch, tensor cores forward."""
    _tolerate_relu_bf16(cell, dtype, monkeypatch)
    assert min(_blocks(cell, 768, 64, 2, dtype)) > 1
    torch.manual_seed(0)
    compare_to_reference(BACKEND, _cfg(cell, T=24, B=64, In=64, H=768), dtype, "cuda")


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("cell", CELLS)
def test_cuda_two_layers_one_direction(cell, dtype, monkeypatch):
    _tolerate_relu_bf16(cell, dtype, monkeypatch)
    torch.manual_seed(0)
    compare_to_reference(BACKEND, _cfg(cell, T=20, B=8, In=12, H=96, bidirectional=False,
                                       layers=2, form="batch_first"), dtype, "cuda")


def test_cuda_at_the_limit_bf16():
    """The largest bf16 LSTM the plan accepts at B=64, one direction (the table's 1600 on an
    H200): every block's W slice plus a KC_MIN-column chunk fill the opt-in shared memory."""
    sms, smem = pl.device_limits(torch.device("cuda"))
    top = pl.max_hidden("LSTM", 64, 1, torch.bfloat16, sms, smem)
    plans = _plans("lstm", top, 64, 1, torch.bfloat16)
    # At the edge, not merely large: within 4 KiB of the opt-in limit (1 KiB to spare on an H200).
    assert max(p.smem for p in plans) > smem - 4096, (plans, smem)
    torch.manual_seed(0)
    compare_to_reference(BACKEND, _cfg("lstm", T=3, B=64, In=16, H=top, bidirectional=False),
                         torch.bfloat16, "cuda")


@pytest.mark.parametrize("cell", ["lstm", "rnn_tanh"])
def test_cuda_full_grid_fp32(cell):
    """fp32, one direction, the largest H up to the limit whose forward grid has one block on
    every SM (the whole device in one cooperative launch)."""
    sms, smem = pl.device_limits(torch.device("cuda"))
    top = pl.max_hidden(MODE[cell], 64, 1, torch.float32, sms, smem)
    H = next(h for h in range(top, 0, -1)
             if _plans(cell, h, 64, 1, torch.float32)[0].blocks == sms)
    assert H > top - sms, (H, top)
    torch.manual_seed(0)
    compare_to_reference(BACKEND, _cfg(cell, T=3, B=64, In=16, H=H, bidirectional=False),
                         torch.float32, "cuda")


@pytest.mark.parametrize("cell", ["rnn_tanh", "lstm"])
def test_cuda_forward_stages_a_in_chunks(cell):
    """fp32 at H=768, B=64, both directions: the forward's A (h) does not fit in one chunk
    (RNN 720 of 768 columns per chunk on an H200, LSTM 272), nor does the backward's."""
    plans = _plans(cell, 768, 64, 2, torch.float32)
    assert all(p.kc < p.layout.kp for p in plans), plans
    torch.manual_seed(0)
    compare_to_reference(BACKEND, _cfg(cell, T=6, B=64, In=16, H=768), torch.float32, "cuda")


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_cuda_beyond_the_limit_raises_value_error(dtype):
    sms, smem = pl.device_limits(torch.device("cuda"))
    top = pl.max_hidden("LSTM", 64, 1, dtype, sms, smem)
    assert top >= 768 if dtype == torch.bfloat16 else top >= 512
    m = fusedrnn.LSTM(8, top + 1, backend=BACKEND).to("cuda", dtype)
    with pytest.raises(ValueError, match=f"hidden size {top + 1} with batch 64.*largest "
                                         f"hidden size at this batch on this GPU is {top}"):
        m(torch.randn(3, 64, 8, device="cuda", dtype=dtype))


def test_cuda_projection_raises_value_error():
    m = fusedrnn.LSTM(8, 32, proj_size=16, backend=BACKEND).cuda()
    with pytest.raises(ValueError, match="proj_size"):
        m(torch.randn(3, 2, 8, device="cuda"))


def _run(m, x):
    m.zero_grad()
    x.grad = None
    out, state = m(x)
    states = state if isinstance(state, tuple) else (state,)
    (out.float().square().sum() + sum(s.float().sum() for s in states)).backward()
    return [out.detach(), *[s.detach() for s in states], x.grad] + [p.grad for p in m.parameters()]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("cls", [fusedrnn.LSTM, fusedrnn.GRU])
def test_cuda_runs_are_bitwise_deterministic(cls, dtype):
    """No atomics in the arithmetic and a fixed K-split order: repeated calls give bitwise-equal
    outputs and gradients (H=256: tens of blocks per direction)."""
    torch.manual_seed(0)
    m = cls(32, 256, bidirectional=True, backend=BACKEND).to("cuda", dtype)
    x = torch.randn(100, 16, 32, device="cuda", dtype=dtype, requires_grad=True)
    runs = [_run(m, x) for _ in range(3)]
    for other in runs[1:]:
        assert all(torch.equal(a, b) for a, b in zip(runs[0], other))


def test_cuda_runs_on_the_current_stream(monkeypatch):
    """Launched on torch's current stream: every launch hands CuPy the side stream's handle, and
    with the side stream held up first (``torch.cuda._sleep``) a kernel on any other stream would
    run before the projections it reads, so results would differ from the default stream's."""
    torch.manual_seed(0)
    m = fusedrnn.GRU(32, 200, bidirectional=True, backend=BACKEND).cuda()
    x = torch.randn(50, 8, 32, device="cuda", requires_grad=True)
    want = _run(m, x)
    handles = cupy_gpu.record_launch_streams(monkeypatch)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        torch.cuda._sleep(50_000_000)          # ~25 ms at 2 GHz: far longer than a launch
        got = _run(m, x)
    torch.cuda.current_stream().wait_stream(side)
    torch.cuda.synchronize()
    assert len(handles) == 2 and set(handles) == {side.cuda_stream}, handles
    assert all(torch.equal(a, b) for a, b in zip(want, got))
