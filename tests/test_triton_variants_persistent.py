"""``backend="triton-persistent"`` on the variant cells (issue 14: LayerNorm LSTM/GRU, zoneout,
resets) — the batch-tiled persistent kernels of ``kernels/triton/variants/<cell>_persistent``
— against the float64 oracle, the composite layer (the "torch" backend's form): outputs, h_n,
c_n and every gradient (gains included), through the variant op and autograd; and the
projection refusal. Past ``MAX_HIDDEN`` the hidden-split form runs instead
(``test_triton_variants_persistent_split.py``).

Without a GPU the kernels run in the Triton interpreter (conftest sets TRITON_INTERPRET=1):
tiny, odd sizes only. The problem builder and the oracle are the step family's test's.
"""

import pytest
import torch

from conftest import assert_rel_close
from fusedrnn.layer_config import LayerConfig
from test_triton_variants_step import _problem, _run_oracle

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
BACKEND = "triton-persistent"


def _run_ours(cfg, x, lengths, h0, c0, weights, starts, keep, cot, dtype):
    has_c = cfg.has_cell_state
    leaves = [t.to(DEVICE, dtype).requires_grad_() for t in [x, h0, *([c0] if has_c else []),
                                                             *weights]]
    x_, h0_ = leaves[:2]
    c0_ = leaves[2] if has_c else None
    w_ = leaves[3 if has_c else 2:]
    y, h_n, c_n, _ = torch.ops.fusedrnn.variant_layer_forward(
        x_, lengths, h0_, c0_, w_, starts.to(DEVICE), None if keep is None else keep.to(DEVICE),
        cfg.mode, BACKEND, cfg.bidirectional, cfg.has_bias, cfg.layer_norm, cfg.has_resets)
    outs = [y, h_n] + ([c_n] if has_c else [])
    grads = torch.autograd.grad(outs, leaves, [c.to(DEVICE, dtype) for c in cot[:len(outs)]])
    return outs, grads


def _oracle(cfg, x, lengths, h0, c0, weights, starts, keep, cot):
    if cfg.has_cell_state:
        return _run_oracle(cfg, x, lengths, h0, c0, weights, starts, keep, cot)
    from fusedrnn.ops import composite

    leaves = [t.double().requires_grad_() for t in [x, h0, *weights]]
    x_, h0_, *w_ = leaves
    y, h_n, _ = composite.layer(cfg, x_, lengths, h0_, None, w_, starts, keep)
    grads = torch.autograd.grad([y, h_n], leaves, [c.double() for c in cot[:2]])
    return [y, h_n], grads


def check(cfg, T, B, In, H, lengths=None, resets=None, keep=None, seed=0, dtype=torch.float32):
    problem = _problem(cfg, T, B, In, H, lengths, resets, keep, seed)
    got_outs, got_grads = _run_ours(cfg, *problem, dtype)
    want_outs, want_grads = _oracle(cfg, *problem)
    for name, a, b in zip(("y", "h_n", "c_n"), got_outs, want_outs):
        assert_rel_close(a, b, dtype, name)
    names = ["x", "h0"] + (["c0"] if cfg.has_cell_state else []) + [
        f"{n}[{d}]" for d in range(cfg.directions) for n in cfg.weight_names]
    for name, a, b in zip(names, got_grads, want_grads):
        assert_rel_close(a, b, dtype, f"d{name}")


def _cfg(mode, layer_norm, bidirectional=False, bias=True, resets=False, zoneout=False):
    return LayerConfig(mode, bidirectional, bias, False, layer_norm, resets, zoneout)


# (mode, layer_norm) of every cell with finished persistent variant kernels.
CELLS = [("LSTM", False), ("LSTM", True), ("GRU", False), ("GRU", True), ("RNN_TANH", False),
         ("RNN_RELU", False)]
IDS = [f"{'ln_' if ln else ''}{m.lower()}" for m, ln in CELLS]


@pytest.mark.parametrize("mode,layer_norm", CELLS, ids=IDS)
def test_resets_and_zoneout_bidirectional_variable_length(mode, layer_norm):
    """Resets at t = 0 and at the last step (row 0), on consecutive steps (row 1), past the
    row's length (row 2, ignored); fractional zoneout mask."""
    resets = [[1, 0, 0], [0, 1, 0], [0, 1, 1], [1, 0, 0]]          # [T=4, B=3]
    check(_cfg(mode, layer_norm, bidirectional=True, resets=True, zoneout=True), T=4, B=3,
          In=3, H=5, lengths=[4, 4, 2], resets=resets, keep="fraction", seed=1)


@pytest.mark.parametrize("mode,layer_norm", CELLS, ids=IDS)
def test_binary_zoneout_dense(mode, layer_norm):
    check(_cfg(mode, layer_norm, zoneout=True), T=3, B=2, In=2, H=3, keep="binary", seed=2)


@pytest.mark.parametrize("mode,layer_norm", CELLS, ids=IDS)
def test_edge_sizes(mode, layer_norm):
    """T = 1 and B = 1, odd H, no bias, bidirectional, a reset on the only step; a reset on
    the last step."""
    check(_cfg(mode, layer_norm, bidirectional=True, bias=False, resets=True), T=1, B=1, In=2,
          H=3, resets=[[1]], seed=3)
    check(_cfg(mode, layer_norm, bidirectional=True, resets=True), T=3, B=1, In=3, H=5,
          resets=[[0], [0], [1]], seed=4)


@pytest.mark.parametrize("mode,layer_norm", CELLS, ids=IDS)
def test_no_options_but_lengths(mode, layer_norm):
    """Starts from lengths only (LayerNorm alone, or the plain cell through the variant op)."""
    check(_cfg(mode, layer_norm, bidirectional=True, resets=True), T=4, B=3, In=3, H=7,
          lengths=[4, 2, 1], seed=7)


@pytest.mark.parametrize("mode,layer_norm", CELLS, ids=IDS)
def test_two_batch_tiles(mode, layer_norm):
    """17 rows: two programs per direction (BB = 16), variable length, resets, zoneout."""
    lengths = [3] * 5 + [2] * 8 + [1] * 4
    resets = [[b % 3 == 0 for b in range(17)], [b % 2 == 0 for b in range(17)], [0] * 17]
    check(_cfg(mode, layer_norm, bidirectional=True, resets=True, zoneout=True), T=3, B=17,
          In=2, H=3, lengths=lengths, resets=resets, keep="binary", seed=11)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("mode,layer_norm", CELLS, ids=IDS)
def test_half_precision(mode, layer_norm, dtype):
    """fp16/bf16 inputs and weights, fp32 math inside; that dtype's tolerance."""
    check(_cfg(mode, layer_norm, bidirectional=True, resets=True, zoneout=True), T=3, B=2,
          In=3, H=5, lengths=[3, 2], resets=[[0, 0], [1, 0], [0, 0]], keep="binary", seed=9,
          dtype=dtype)


def _module(mode):
    from fusedrnn.backends.triton_variant import variant_kernels

    return variant_kernels(mode, "persistent")


@pytest.mark.parametrize("mode,layer_norm", CELLS, ids=IDS)
def test_largest_supported_hidden_size(mode, layer_norm):
    from fusedrnn.kernels.triton.persistent_common import dot_key

    H = _module(mode).MAX_HIDDEN[dot_key(torch.float32)]
    check(_cfg(mode, layer_norm, resets=True, zoneout=True), T=2, B=2, In=3, H=H,
          lengths=[2, 1], resets=[[0, 0], [1, 0]], keep="fraction", seed=12)


def test_projection_is_refused():
    from fusedrnn.backends import registry

    cfg = LayerConfig("LSTM", False, False, True, has_zoneout=True)
    weights = [torch.zeros(8, 1), torch.zeros(8, 1), torch.zeros(1, 2)]
    with pytest.raises(ValueError, match="projection"):
        registry.resolve(BACKEND, cfg, torch.zeros(1, 1, 1, device=DEVICE), weights)
