"""``backend="triton-step"`` on the variant cells (issue 14: LayerNorm LSTM, zoneout, resets)
against the float64 oracle, the composite layer (``fusedrnn.ops.composite.layer``, the "torch"
backend's form): outputs, h_n, c_n and every gradient, through the variant op and autograd.

Without a GPU the kernels run in the Triton interpreter (conftest sets TRITON_INTERPRET=1
before any kernel module is imported): tiny, odd sizes only.
"""

import pytest
import torch
import triton

from conftest import TOLERANCES, assert_rel_close
from fusedrnn.layer_config import LayerConfig
from fusedrnn.ops import composite
from fusedrnn.ops.variant_layer import starts_from

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def _weights(cfg, In, H, gen):
    """One layer's flat weight list, LayerNorm gains near 1 (and a cell-LN bias)."""
    G = cfg.gates
    shapes = {"w_ih": (G * H, In), "w_hh": (G * H, H), "b_ih": (G * H,), "b_hh": (G * H,),
              "ln_ih": (G * H,), "ln_hh": (G * H,), "ln_cell_w": (H,), "ln_cell_b": (H,)}
    flat = []
    for _ in range(cfg.directions):
        for name in cfg.weight_names:
            w = torch.randn(shapes[name], generator=gen) * 0.5
            if name in ("ln_ih", "ln_hh", "ln_cell_w"):
                w = 1.0 + 0.3 * w
            flat.append(w)
    return flat


def _problem(cfg, T, B, In, H, lengths, resets, keep, seed):
    gen = torch.Generator().manual_seed(seed)
    D = cfg.directions
    x = torch.randn(T, B, In, generator=gen)
    h0 = torch.randn(D, B, H, generator=gen) * 0.5
    c0 = torch.randn(D, B, H, generator=gen) * 0.5
    weights = _weights(cfg, In, H, gen)
    lengths = None if lengths is None else torch.tensor(lengths, dtype=torch.int64)
    resets = None if resets is None else torch.tensor(resets, dtype=torch.bool)
    if keep == "binary":
        keep = (torch.rand(D, T, B, H, generator=gen) < 0.5).float()
    elif keep == "fraction":
        keep = torch.rand(D, T, B, H, generator=gen)
    starts = starts_from(resets, lengths, T, B, D, "cpu")
    cot = [torch.randn(T, B, D * H, generator=gen), torch.randn(D, B, H, generator=gen),
           torch.randn(D, B, H, generator=gen)]
    return x, lengths, h0, c0, weights, starts, keep, cot


def _run_ours(cfg, x, lengths, h0, c0, weights, starts, keep, cot, dtype):
    leaves = [t.to(DEVICE, dtype).requires_grad_() for t in [x, h0, c0, *weights]]
    x_, h0_, c0_, *w_ = leaves
    y, h_n, c_n, _ = torch.ops.fusedrnn.variant_layer_forward(
        x_, lengths, h0_, c0_, w_, starts.to(DEVICE), None if keep is None else keep.to(DEVICE),
        cfg.mode, "triton-step", cfg.bidirectional, cfg.has_bias, cfg.layer_norm,
        cfg.has_resets)
    outs = [y, h_n, c_n]
    grads = torch.autograd.grad(outs, leaves, [c.to(DEVICE, dtype) for c in cot])
    return outs, grads


def _run_oracle(cfg, x, lengths, h0, c0, weights, starts, keep, cot):
    leaves = [t.double().requires_grad_() for t in [x, h0, c0, *weights]]
    x_, h0_, c0_, *w_ = leaves
    y, h_n, c_n = composite.layer(cfg, x_, lengths, h0_, c0_, w_, starts, keep)
    outs = [y, h_n, c_n]
    grads = torch.autograd.grad(outs, leaves, [c.double() for c in cot])
    return outs, grads


def check(cfg, T, B, In, H, lengths=None, resets=None, keep=None, seed=0, dtype=torch.float32):
    problem = _problem(cfg, T, B, In, H, lengths, resets, keep, seed)
    got_outs, got_grads = _run_ours(cfg, *problem, dtype)
    want_outs, want_grads = _run_oracle(cfg, *problem)
    for name, a, b in zip(("y", "h_n", "c_n"), got_outs, want_outs):
        assert_rel_close(a, b, dtype, name)
    names = ["x", "h0", "c0"] + [f"{n}[{d}]" for d in range(cfg.directions)
                                 for n in cfg.weight_names]
    for name, a, b in zip(names, got_grads, want_grads):
        assert_rel_close(a, b, dtype, f"d{name}")


def _cfg(layer_norm, bidirectional=False, bias=True, resets=False, zoneout=False):
    return LayerConfig("LSTM", bidirectional, bias, False, layer_norm, resets, zoneout)


@pytest.mark.parametrize("layer_norm", [False, True], ids=["lstm", "ln_lstm"])
def test_resets_and_zoneout_bidirectional_variable_length(layer_norm):
    """Resets at t = 0 and at the last step (row 0), on consecutive steps (row 1), past the
    row's length (row 2, ignored); fractional zoneout mask."""
    resets = [[1, 0, 0], [0, 1, 0], [0, 1, 1], [1, 0, 0]]          # [T=4, B=3]
    check(_cfg(layer_norm, bidirectional=True, resets=True, zoneout=True), T=4, B=3, In=3, H=5,
          lengths=[4, 4, 2], resets=resets, keep="fraction", seed=1)


@pytest.mark.parametrize("layer_norm", [False, True], ids=["lstm", "ln_lstm"])
def test_binary_zoneout_dense(layer_norm):
    check(_cfg(layer_norm, zoneout=True), T=3, B=2, In=2, H=3, keep="binary", seed=2)


@pytest.mark.parametrize("layer_norm", [False, True], ids=["lstm", "ln_lstm"])
def test_edge_sizes(layer_norm):
    """T = 1 and B = 1, odd H, no bias, bidirectional, a reset on the only step."""
    check(_cfg(layer_norm, bidirectional=True, bias=False, resets=True), T=1, B=1, In=2, H=3,
          resets=[[1]], seed=3)
    check(_cfg(layer_norm, bidirectional=True, resets=True), T=3, B=1, In=3, H=5,
          resets=[[0], [0], [1]], seed=4)


def test_layer_norm_alone():
    """LayerNorm without resets or zoneout (starts from lengths only), variable length."""
    check(_cfg(True, bidirectional=True), T=4, B=3, In=3, H=7, lengths=[4, 2, 1], seed=7)


def test_resets_on_each_rows_last_step():
    """Forward resets on each row's own last valid step (t = 2, 2, 1), one at t = 1 and one
    past a row's length (t = 2 of the length-2 row, which must be ignored)."""
    resets = [[0, 0, 0], [1, 0, 1], [0, 1, 1]]                     # [T=3, B=3]
    check(_cfg(True, bidirectional=True, resets=True), T=3, B=3, In=2, H=3,
          lengths=[3, 3, 2], resets=resets, seed=5)


def test_several_programs_per_direction(monkeypatch):
    """One row per program, so the row kernels' grid has several programs per direction."""
    from fusedrnn.kernels.triton.variants import lstm_step

    monkeypatch.setattr(lstm_step, "row_blocks", lambda H: (1, triton.next_power_of_2(H)))
    check(_cfg(True, bidirectional=True, resets=True, zoneout=True), T=3, B=3, In=2, H=5,
          lengths=[3, 2, 2], resets=[[0, 0, 0], [0, 1, 0], [1, 0, 0]], keep="fraction", seed=8)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("layer_norm", [False, True], ids=["lstm", "ln_lstm"])
def test_half_precision(layer_norm, dtype):
    """fp16/bf16 inputs and weights, fp32 math inside; that dtype's tolerance."""
    check(_cfg(layer_norm, bidirectional=True, resets=True, zoneout=True), T=3, B=2, In=3, H=5,
          lengths=[3, 2], resets=[[0, 0], [1, 0], [0, 0]], keep="binary", seed=9, dtype=dtype)


def test_projection_is_refused():
    from fusedrnn.backends.triton_step import TritonStepBackend

    cfg = LayerConfig("LSTM", False, False, True, has_zoneout=True)
    weights = [torch.zeros(8, 1), torch.zeros(8, 1), torch.zeros(1, 2)]
    reason = TritonStepBackend().unsupported_reason(cfg, torch.zeros(1, 1, 1, device=DEVICE),
                                                    weights)
    assert reason is not None and "projection" in reason


def test_neutral_options_reproduce_torch_nn_lstm():
    """The variant path with starts from lengths only, keep all 0 and no LayerNorm is the
    plain LSTM: compare with torch.nn.LSTM (float32, both directions, variable length)."""
    T, B, In, H = 4, 3, 3, 5
    torch.manual_seed(6)
    ref = torch.nn.LSTM(In, H, bidirectional=True)
    x = torch.randn(T, B, In)
    h0, c0 = torch.randn(2, B, H), torch.randn(2, B, H)
    lengths = torch.tensor([4, 3, 1])
    packed = torch.nn.utils.rnn.pack_padded_sequence(x, lengths)
    y_ref, (h_ref, c_ref) = ref(packed, (h0, c0))
    y_ref, _ = torch.nn.utils.rnn.pad_packed_sequence(y_ref, total_length=T)

    cfg = _cfg(False, bidirectional=True, zoneout=True)
    keep = torch.zeros(2, T, B, H)
    starts = starts_from(None, lengths, T, B, 2, "cpu")
    weights = [w.detach().to(DEVICE) for w in ref._flat_weights]
    y, h_n, c_n, _ = torch.ops.fusedrnn.variant_layer_forward(
        x.to(DEVICE), lengths, h0.to(DEVICE), c0.to(DEVICE), weights, starts.to(DEVICE),
        keep.to(DEVICE), "LSTM", "triton-step", True, True, False, False)
    assert_rel_close(y.cpu(), y_ref.detach(), torch.float32, "y")
    assert_rel_close(h_n.cpu(), h_ref.detach(), torch.float32, "h_n")
    assert_rel_close(c_n.cpu(), c_ref.detach(), torch.float32, "c_n")


def test_double_backward_matches_oracle():
    """Second order through the variant op (its backward's autograd is the composite's)."""
    cfg = _cfg(True, resets=True, zoneout=True)
    x, lengths, h0, c0, weights, starts, keep, cot = _problem(
        cfg, 2, 2, 2, 3, [2, 1], [[0, 0], [1, 0]], "fraction", 10)

    def grad_norm(backend, dtype):
        leaves = [t.to(DEVICE, dtype).requires_grad_() for t in [x, h0, c0, *weights]]
        x_, h0_, c0_, *w_ = leaves
        if backend == "torch":
            outs = composite.layer(cfg, x_, lengths, h0_, c0_, w_, starts.to(DEVICE),
                                   keep.to(DEVICE, dtype))
        else:
            outs = torch.ops.fusedrnn.variant_layer_forward(
                x_, lengths, h0_, c0_, w_, starts.to(DEVICE), keep.to(DEVICE), "LSTM", backend,
                False, True, True, True)[:3]
        g = torch.autograd.grad(outs, leaves, [c.to(DEVICE, dtype) for c in cot],
                                create_graph=True)
        return torch.autograd.grad(sum((gi * gi).sum() for gi in g), leaves)

    for a, b in zip(grad_norm("triton-step", torch.float32), grad_norm("torch", torch.float64)):
        assert_rel_close(a, b, torch.float32, "second order")
