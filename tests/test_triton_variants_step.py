"""``backend="triton-step"`` on the variant cells (issue 14: LayerNorm LSTM, zoneout, resets)
against the float64 oracle, the composite layer (``fusedrnn.ops.composite.layer``, the "torch"
backend's form): outputs, h_n, c_n and every gradient, through the variant op and autograd.

Without a GPU the kernels run in the Triton interpreter (conftest sets TRITON_INTERPRET=1
before any kernel module is imported): tiny, odd sizes only.
"""

import pytest
import torch

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
    grads = torch.autograd.grad(outs, leaves, cot_double(cot))
    return outs, grads


def cot_double(cot):
    return [c.double() for c in cot]


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
    """Resets at t=0, at the last step and on consecutive steps; fractional zoneout mask."""
    resets = [[1, 0, 0], [0, 1, 0], [0, 1, 1], [1, 0, 0]]          # [T=4, B=3]
    check(_cfg(layer_norm, bidirectional=True, resets=True, zoneout=True), T=4, B=3, In=3, H=5,
          lengths=[4, 4, 2], resets=resets, keep="fraction", seed=1)


@pytest.mark.parametrize("layer_norm", [False, True], ids=["lstm", "ln_lstm"])
def test_binary_zoneout_dense(layer_norm):
    check(_cfg(layer_norm, zoneout=True), T=3, B=2, In=2, H=3, keep="binary", seed=2)


@pytest.mark.parametrize("layer_norm", [False, True], ids=["lstm", "ln_lstm"])
def test_edge_sizes(layer_norm):
    """T = 1, B = 1, odd H, no bias, bidirectional; LayerNorm alone (no resets, no zoneout)."""
    check(_cfg(layer_norm, bidirectional=True, bias=False, resets=not layer_norm),
          T=1, B=1, In=2, H=3, resets=[[1]] if not layer_norm else None, seed=3)
    check(_cfg(layer_norm, bidirectional=True), T=3, B=1, In=3, H=5,
          resets=None if layer_norm else [[0], [0], [1]], seed=4) if layer_norm else None


def test_resets_variable_length_with_last_step_reset():
    """A reset on each row's own last valid step (forward) and on step 1 (reverse boundary)."""
    resets = [[0, 0, 0], [1, 1, 0], [0, 0, 1]]                     # lengths 3, 2, 3 sorted? no
    check(_cfg(True, bidirectional=True, resets=True), T=3, B=3, In=2, H=3,
          lengths=[3, 3, 2], resets=resets, seed=5)


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
