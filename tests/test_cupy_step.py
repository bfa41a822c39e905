"""``backend="cupy-step"`` against the float64 reference: outputs and every gradient.

* CPU (runs everywhere): the backend's host code — GEMMs, state buffers, active rows, reverse
  times, argument lists — with the kernels replaced by the emulator (``cupy_emulator``), which
  checks every launch against the real ``.cu`` signature and grid.
* CUDA (``@pytest.mark.cuda``, needs CuPy: without it they fail, see ``cupy_gpu``): the real
  kernels at realistic and odd sizes, packed, bidirectional, stacked, all dtypes; bitwise
  determinism; torch's current stream.

Everywhere, the launchers' scratch buffers start as NaN (``step_launch.POISON``), as the
library's outputs do (conftest), so an element no step wrote fails the comparison.
"""

import pytest
import torch

import cupy_emulator
import cupy_gpu
from cases import CELLS, compare_to_reference
from conftest import assert_rel_close
from fusedrnn.backends import registry as backend_registry
from fusedrnn.backends.cupy_step import CupyStepBackend
from fusedrnn.backends.reference import ReferenceBackend
from fusedrnn.kernels.cuda import gru_step, lstm_step, loader, rnn_step, step_launch
from fusedrnn.layer_config import LayerConfig

NAME = "cupy-step"


@pytest.fixture
def registered(monkeypatch):
    """The backend under its name, whether or not this build's registry lists it yet."""
    if NAME not in backend_registry.AVAILABLE:
        monkeypatch.setitem(backend_registry.AVAILABLE, NAME, CupyStepBackend())
    if NAME not in backend_registry.NAMES:
        monkeypatch.setattr(backend_registry, "NAMES", backend_registry.NAMES + (NAME,))


@pytest.fixture(autouse=True)
def poison_scratch(monkeypatch):
    monkeypatch.setattr(step_launch, "POISON", True)


@pytest.fixture(autouse=True)
def cupy_on_gpu(request):
    """The CUDA tests need CuPy: missing or broken, they fail (cupy_gpu.require_cupy)."""
    if request.node.get_closest_marker("cuda"):
        cupy_gpu.require_cupy(NAME)


# ---------------------------------------------------------------------------------------------
# CPU: the host code through the emulator, at the layer contract.

@pytest.fixture
def emulated(monkeypatch):
    launched = cupy_emulator.install(monkeypatch)
    real_product = step_launch.product

    def product_on_cpu(a, w, buf):
        # fp32 operands take the real product (torch.bmm into the buffer). fp16/bf16 ones need
        # bmm's fp32-output overload, which has no CPU kernel ("aten::bmm.dtype_out" is
        # registered for CUDA only, torch 2.13): the same product in fp32 on the rounded values.
        if a.dtype == torch.float32 and w.dtype == torch.float32:
            return real_product(a, w, buf)
        D, rows, _ = a.shape
        out = buf[:D * rows * w.shape[2]].view(D, rows, w.shape[2])
        if rows:
            torch.bmm(a.float(), w.float(), out=out)
        return out

    for module in (lstm_step, gru_step, rnn_step):
        monkeypatch.setattr(module, "product", product_on_cpu)
    return launched


def _layer(mode, D, bias, proj, T, B, In, H, P, lengths, dtype, seed=0):
    """Inputs of one layer in ``dtype`` and the same values in float64."""
    g = torch.Generator().manual_seed(seed)
    cfg = LayerConfig(mode, D == 2, bias, proj)
    G, Hr = cfg.gates, (P if proj else H)

    def r(*shape, scale=0.5):
        return (torch.randn(*shape, generator=g, dtype=torch.float64) * scale).to(dtype)

    weights = []
    for _ in range(D):
        weights += [r(G * H, In), r(G * H, Hr)]
        weights += [r(G * H), r(G * H)] if bias else []
        weights += [r(P, H)] if proj else []
    x, h0 = r(T, B, In, scale=1.0), r(D, B, Hr)
    c0 = r(D, B, H) if mode == "LSTM" else None
    lengths = None if lengths is None else torch.tensor(lengths, dtype=torch.int64)
    return cfg, x, lengths, h0, c0, weights


def _double(t):
    return None if t is None else t.double()


def _check_layer(cfg, x, lengths, h0, c0, weights, dtype):
    ours, ref = CupyStepBackend(), ReferenceBackend()
    y, h_n, c_n, ws = ours.forward(cfg, x, lengths, h0, c0, weights)
    args64 = (_double(x), lengths, _double(h0), _double(c0), [w.double() for w in weights])
    ry, rh, rc, _ = ref.forward(cfg, *args64)
    outs = [(y, ry, "y"), (h_n, rh, "h_n")] + ([(c_n, rc, "c_n")] if cfg.has_cell_state else [])
    for got, want, what in outs:
        assert got.dtype == dtype
        assert_rel_close(got, want, dtype, f"{cfg} {what}")
    if lengths is not None:
        padded = torch.arange(x.shape[0])[:, None] >= lengths[None, :]
        assert (y[padded] == 0).all(), "padded positions must be zero"

    g = torch.Generator().manual_seed(1)
    dy, dh_n = (torch.randn(t.shape, generator=g, dtype=torch.float64).to(dtype) for t in (y, h_n))
    dc_n = torch.randn(c_n.shape, generator=g, dtype=torch.float64).to(dtype) if cfg.has_cell_state else None
    got = ours.backward(cfg, x, lengths, h0, c0, weights, y, ws, dy, dh_n, dc_n)
    want = ref.backward(cfg, *args64, _double(y), ws, _double(dy), _double(dh_n), _double(dc_n))
    names = ["dx", "dh0", "dc0"]
    for name, a, b in zip(names, got[:3], want[:3]):
        if name == "dc0" and not cfg.has_cell_state:
            continue
        assert_rel_close(a, b, dtype, f"{cfg} {name}")
    for k, (a, b) in enumerate(zip(got[3], want[3])):
        assert a.dtype == dtype
        assert_rel_close(a, b, dtype, f"{cfg} dweight {k}")


LAYERS = [  # mode, directions, bias, projection, T, B, In, H, P, lengths
    ("LSTM", 2, True, False, 5, 4, 3, 6, 0, [5, 4, 2, 1]),
    ("LSTM", 1, False, False, 4, 3, 2, 5, 0, None),
    ("LSTM", 2, True, True, 5, 3, 3, 6, 4, [5, 3, 3]),
    ("LSTM", 1, True, True, 3, 2, 2, 5, 2, None),
    ("GRU", 2, True, False, 6, 4, 3, 7, 0, [6, 6, 3, 1]),
    ("GRU", 1, False, False, 3, 2, 4, 5, 0, None),
    ("RNN_TANH", 2, True, False, 5, 3, 3, 6, 0, [5, 2, 1]),
    ("RNN_RELU", 2, False, False, 4, 3, 2, 5, 0, [4, 4, 2]),
    ("RNN_RELU", 1, True, False, 1, 1, 2, 3, 0, None),            # T = 1, B = 1
    ("GRU", 2, True, False, 1, 1, 2, 3, 0, [1]),
]


@pytest.mark.parametrize("layer", LAYERS, ids=lambda c: "-".join(map(str, c[:5])))
def test_emulated_layer_matches_reference_fp32(layer, emulated):
    cfg, *inputs = _layer(*layer, dtype=torch.float32)
    _check_layer(cfg, *inputs, torch.float32)
    assert emulated, "no kernel ran"


@pytest.mark.parametrize("layer", [LAYERS[0], LAYERS[2], LAYERS[4], LAYERS[6]],
                         ids=lambda c: "-".join(map(str, c[:4])))
def test_emulated_layer_matches_reference_bf16(layer, emulated):
    """Model-dtype buffers and arguments (scalar_t pointers, state copies) in bf16. (Not relu:
    at these tiny sizes one pre-activation whose bf16 sign differs from float64's flips a mask
    and moves dx by ~9%, measured, which says nothing about the plumbing.)"""
    cfg, *inputs = _layer(*layer, dtype=torch.bfloat16)
    _check_layer(cfg, *inputs, torch.bfloat16)


def test_emulated_launch_sequence(emulated):
    """Forward: one pointwise launch per step (two with a projection); backward likewise plus
    the projection's dh kernel."""
    cfg, *inputs = _layer("LSTM", 2, True, True, 3, 2, 2, 4, 3, [3, 2], dtype=torch.float32)
    _check_layer(cfg, *inputs, torch.float32)
    assert emulated == ["lstm_step_fwd", "lstm_proj_store"] * 3 + \
        ["lstm_proj_bwd_dh", "lstm_step_bwd"] * 3


def test_emulated_empty_batch(emulated):
    cfg, x, _, h0, _, weights = _layer("GRU", 1, True, False, 3, 0, 2, 4, 0, None, dtype=torch.float32)
    y, h_n, _, ws = CupyStepBackend().forward(cfg, x, None, h0, None, weights)
    assert y.shape == (3, 0, 4) and h_n.shape == (1, 0, 4)
    assert emulated == []


def test_split_biases_match_the_triton_modules():
    from fusedrnn.kernels.triton import gru_step as tg, lstm_step as tl_, rnn_step as tr

    dirs = [{"b_ih": torch.randn(12), "b_hh": torch.randn(12)} for _ in range(2)]
    for ours, theirs, H in ((lstm_step, tl_, 3), (gru_step, tg, 4), (rnn_step.TANH, tr.TANH, 12)):
        a, b = ours.split_biases(dirs, H), theirs.split_biases(dirs, H)
        assert torch.equal(a[0], b[0])
        assert (a[1] is None and b[1] is None) or torch.equal(a[1], b[1])
        assert (ours.GATES, ours.WORKSPACE_COLUMNS) == (theirs.GATES, theirs.WORKSPACE_COLUMNS)


# ---------------------------------------------------------------------------------------------
# CUDA: the real kernels.

@pytest.fixture
def ieee_fp32(monkeypatch, matmul_tf32):
    # fp32 parity at 2e-4 needs IEEE fp32 products (TF32 keeps 10 mantissa bits).
    matmul_tf32(False)
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)


SIZES = [  # T, B, In, H, layers: realistic, odd, one-step
    (64, 64, 64, 256, 1),
    (9, 5, 7, 33, 2),
    (1, 1, 3, 7, 1),
]


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("T,B,In,H,layers", SIZES, ids=lambda v: str(v))
@pytest.mark.parametrize("cell", list(CELLS))
def test_cuda_matches_reference(cell, T, B, In, H, layers, dtype, registered, ieee_fp32):
    cfg = dict(cell=cell, form="packed" if B > 1 else "time_major", T=T, B=B, In=In, H=H,
               layers=layers, bidirectional=True, bias=True, with_h0=True)
    compare_to_reference(NAME, cfg, dtype, "cuda")


@pytest.mark.cuda
@pytest.mark.parametrize("form", ["time_major", "batch_first", "packed"])
@pytest.mark.parametrize("cell", list(CELLS))
def test_cuda_forms_unidirectional_without_bias(cell, form, registered, ieee_fp32):
    cfg = dict(cell=cell, form=form, T=17, B=6, In=5, H=40, layers=2, bidirectional=False,
               bias=False, with_h0=False)
    compare_to_reference(NAME, cfg, torch.float32, "cuda")


def _run_lstm(x, m):
    m.zero_grad()
    x.grad = None
    out, (h, c) = m(x)
    (out.square().sum() + h.sum() + c.sum()).backward()
    return [out.detach(), h.detach(), c.detach(), x.grad] + [p.grad.clone() for p in m.parameters()]


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_cuda_runs_are_bitwise_deterministic(dtype, registered):
    import fusedrnn
    from torch.nn.utils.rnn import pack_padded_sequence

    torch.manual_seed(0)
    m = fusedrnn.LSTM(32, 96, num_layers=2, bidirectional=True, backend=NAME).to("cuda", dtype)
    x = torch.randn(50, 8, 32, device="cuda", dtype=dtype, requires_grad=True)
    lengths = torch.tensor([50, 47, 47, 30, 21, 9, 2, 1])

    def run():
        m.zero_grad()
        x.grad = None
        out, (h, c) = m(pack_padded_sequence(x, lengths))
        (out.data.square().sum() + h.sum() + c.sum()).backward()
        return [out.data.detach(), h.detach(), c.detach(), x.grad] + [p.grad.clone() for p in m.parameters()]

    first, second = run(), run()
    assert all(torch.equal(a, b) for a, b in zip(first, second))


@pytest.mark.cuda
def test_cuda_runs_on_torch_current_stream(registered, monkeypatch):
    """Kernels and GEMMs go on torch's current stream. Every launch hands CuPy the side stream's
    handle; and with the side stream held up first (``torch.cuda._sleep``) and no
    synchronisation of our own, a kernel on any other stream would read its inputs before the
    side stream's GEMMs wrote them (NaN-poisoned scratch), so the results would not equal the
    default stream's bit for bit."""
    import fusedrnn

    torch.manual_seed(0)
    m = fusedrnn.GRU(16, 64, bidirectional=True, backend=NAME).cuda()
    x = torch.randn(40, 4, 16, device="cuda", requires_grad=True)
    want = _run_gru(m, x)
    handles = cupy_gpu.record_launch_streams(monkeypatch)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        torch.cuda._sleep(50_000_000)          # ~25 ms at 2 GHz: far longer than a launch
        got = _run_gru(m, x)
    torch.cuda.current_stream().wait_stream(side)
    assert handles and set(handles) == {side.cuda_stream}, (len(handles), set(handles))
    assert all(torch.equal(a, b) for a, b in zip(want, got))


def _run_gru(m, x):
    m.zero_grad()
    x.grad = None
    out, h = m(x)
    (out.square().sum() + h.sum()).backward()
    return [out.detach(), h.detach(), x.grad.clone()] + [p.grad.clone() for p in m.parameters()]


@pytest.mark.cuda
def test_cuda_float64_is_refused_with_the_reason(registered):
    import fusedrnn

    m = fusedrnn.LSTM(3, 4, backend=NAME).cuda().double()
    with pytest.raises(ValueError, match="cupy-step.*float64"):
        m(torch.randn(2, 1, 3, device="cuda", dtype=torch.float64))


@pytest.mark.cuda
def test_cuda_empty_batch_launches_nothing(registered, monkeypatch):
    launches = []
    real_launch = loader.launch
    monkeypatch.setattr(loader, "launch", lambda *a, **k: (launches.append(a[0].name),
                                                           real_launch(*a, **k)))
    cfg, x, _, h0, _, weights = _layer("LSTM", 2, True, False, 3, 0, 2, 4, 0, None, dtype=torch.float32)
    c0 = torch.zeros(2, 0, 4)
    to = [t.cuda() for t in (x, h0, c0, *weights)]
    y, h_n, c_n, _ = CupyStepBackend().forward(cfg, to[0], None, to[1], to[2], to[3:])
    assert y.shape == (3, 0, 8) and h_n.shape == (2, 0, 4) and c_n.shape == (2, 0, 4)
    assert launches == []
