"""Inputs for one-layer op tests: random weights in torch's flat order, states and lengths."""

import torch

from fusedrnn.layer_config import LayerConfig

# One configuration per feature the op must get right: projection + both directions, no bias,
# reset-after GRU, relu (kinks), the tanh RNN.
CONFIGS = [LayerConfig("LSTM", True, True, True), LayerConfig("LSTM", False, False, False),
           LayerConfig("GRU", True, True, False), LayerConfig("RNN_RELU", True, False, False),
           LayerConfig("RNN_TANH", False, True, False)]


def layer_inputs(cfg, T=4, B=3, In=3, H=5, P=2, dtype=torch.float64, seed=0, lengths=None):
    """``(x [T,B,In], lengths [B] or None, h0 [D,B,Hr], c0 [D,B,H] or None, weights)``, all
    floating tensors leaves that require grad."""
    g = torch.Generator().manual_seed(seed)
    Hr = P if cfg.has_proj else H
    D, G = cfg.directions, cfg.gates

    def r(*s):
        return (torch.randn(*s, generator=g, dtype=torch.float64) * 0.7).to(dtype).requires_grad_()

    weights = []
    for _ in range(D):
        weights += [r(G * H, In), r(G * H, Hr)]
        if cfg.has_bias:
            weights += [r(G * H), r(G * H)]
        if cfg.has_proj:
            weights += [r(P, H)]
    c0 = r(D, B, H) if cfg.has_cell_state else None
    lengths = None if lengths is None else torch.tensor(lengths, dtype=torch.int64)
    return r(T, B, In), lengths, r(D, B, Hr), c0, weights


def leaves_of(x, h0, c0, weights):
    return [x, h0] + ([c0] if c0 is not None else []) + list(weights)


def op_call(cfg, backend, x, lengths, h0, c0, weights):
    """``(y, h_n, c_n or None)`` through ``torch.ops.fusedrnn.layer_forward``."""
    y, h_n, c_n, _ = torch.ops.fusedrnn.layer_forward(x, lengths, h0, c0, list(weights), cfg.mode,
                                                      backend, cfg.bidirectional, cfg.has_bias,
                                                      cfg.has_proj)
    return y, h_n, (c_n if cfg.has_cell_state else None)


def outputs(result):
    return [t for t in result if t is not None]
