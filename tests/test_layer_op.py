"""The one-layer custom op, called directly, for every backend and cell, with lengths."""

import pytest
import torch

from fusedrnn.backends.torch_native import run as torch_layer
from fusedrnn.layer_config import LayerConfig
from conftest import assert_rel_close

G = {"LSTM": 4, "GRU": 3, "RNN_TANH": 1, "RNN_RELU": 1}


def _layer_inputs(cfg, T=4, B=3, In=3, H=5, P=2):
    g = torch.Generator().manual_seed(0)
    Hr = P if cfg.has_proj else H
    D = cfg.directions

    def r(*s):
        return torch.randn(*s, generator=g, dtype=torch.float64).requires_grad_()

    weights = []
    for _ in range(D):
        weights += [r(G[cfg.mode] * H, In), r(G[cfg.mode] * H, Hr)]
        if cfg.has_bias:
            weights += [r(G[cfg.mode] * H), r(G[cfg.mode] * H)]
        if cfg.has_proj:
            weights += [r(P, H)]
    c0 = r(D, B, H) if cfg.has_cell_state else None
    return r(T, B, In), torch.tensor([4, 3, 1]), r(D, B, Hr), c0, weights


CONFIGS = [LayerConfig("LSTM", True, True, True), LayerConfig("LSTM", False, False, False),
           LayerConfig("GRU", True, True, False), LayerConfig("RNN_RELU", True, False, False)]


@pytest.mark.parametrize("backend", ["reference", "torch"])
@pytest.mark.parametrize("cfg", CONFIGS, ids=str)
@pytest.mark.parametrize("with_lengths", [False, True])
def test_op_matches_direct_torch_layer(backend, cfg, with_lengths):
    x, lengths, h0, c0, weights = _layer_inputs(cfg)
    lengths = lengths if with_lengths else None
    leaves = [x, h0] + ([c0] if c0 is not None else []) + weights

    def grads_of(outs):
        g = torch.Generator().manual_seed(1)
        cot = [torch.randn(o.shape, generator=g, dtype=o.dtype) for o in outs]
        return torch.autograd.grad(outs, leaves, cot)

    y, h_n, c_n, ws = torch.ops.fusedrnn.layer_forward(x, lengths, h0, c0, weights, cfg.mode, backend,
                                                       cfg.bidirectional, cfg.has_bias, cfg.has_proj)
    ry, rh, rc = torch_layer(cfg, x, lengths, h0, c0, weights)
    outs, ref_outs = [y, h_n], [ry, rh]
    if cfg.has_cell_state:
        outs.append(c_n)
        ref_outs.append(rc)
    else:
        assert c_n.numel() == 0
    for i, (a, b) in enumerate(zip(outs, ref_outs)):
        assert_rel_close(a, b, torch.float64, f"output {i}")
    if with_lengths:
        assert torch.all(y[1:, 2] == 0), "padded positions must be zero"
    for i, (a, b) in enumerate(zip(grads_of(outs), grads_of(ref_outs))):
        assert_rel_close(a, b, torch.float64, f"grad {i}")


def test_zero_length_batch_runs():
    cfg = LayerConfig("GRU", False, True, False)
    x, _, h0, _, weights = _layer_inputs(cfg, B=0)
    y, h_n, _, _ = torch.ops.fusedrnn.layer_forward(x, None, h0, None, weights, "GRU", "reference",
                                                    False, True, False)
    assert y.shape == (4, 0, 5) and h_n.shape == (1, 0, 5)


@pytest.mark.parametrize("lengths", [[1, 3, 2], [4, 0, 0], [5, 1, 1]], ids=["increasing", "zero", "beyond_T"])
def test_op_rejects_lengths_outside_its_contract(lengths):
    cfg = LayerConfig("GRU", True, True, False)
    x, _, h0, _, weights = _layer_inputs(cfg)
    with pytest.raises(ValueError, match="lengths must be"):
        torch.ops.fusedrnn.layer_forward(x, torch.tensor(lengths), h0, None, weights, "GRU",
                                         "reference", True, True, False)


def test_op_makes_strided_inputs_dense():
    """The op is public: a transposed h0 handed to it directly still gives the right answer."""
    cfg = LayerConfig("GRU", True, True, False)
    x, _, h0, _, weights = _layer_inputs(cfg)
    h0_strided = h0.detach().transpose(1, 2).contiguous().transpose(1, 2)
    assert not h0_strided.is_contiguous()
    want = torch_layer(cfg, x, None, h0, None, weights)[0]
    got = torch.ops.fusedrnn.layer_forward(x, None, h0_strided, None, weights, "GRU", "reference",
                                           True, True, False)[0]
    assert_rel_close(got, want, torch.float64, "strided h0")
