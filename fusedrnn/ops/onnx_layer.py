"""One layer as ONNX's own ``LSTM``/``GRU``/``RNN`` operator, for ``torch.onnx.export(dynamo=True)``.

While the dynamo exporter traces, :func:`fusedrnn.ops.layer.run_layer` calls :func:`layer`, which
emits the ONNX operator through ``torch.onnx.ops.symbolic_multi_out`` (a placeholder node with
shapes only; onnxruntime computes it). The TorchScript exporter reaches the same operators
through torch's ``aten::lstm`` symbolics instead (see :func:`fusedrnn.functional.forward`). An LSTM
with a projection has no ONNX operator and is exported as the composite layer's equations.

Dimensions: T steps, B batch, In input features, H hidden, D directions, G gates.
ONNX's layouts (opset 7+): ``W [D, G*H, In]``, ``R [D, G*H, H]``, ``B [D, 2*G*H]`` (input biases
then recurrent biases), ``sequence_lens [B]`` int32, states ``[D, B, H]``, ``Y [T, D, B, H]``.
Gate orders differ from torch's: LSTM torch ``i f g o`` -> ONNX ``i o f c``; GRU torch ``r z n`` ->
ONNX ``z r h``. The GRU is ``linear_before_reset=1`` (reset applied after the recurrent matmul,
as torch and cuDNN). Padded steps give zero output and do not advance the state, and the
reverse direction starts at each row's own last step: ONNX's ``sequence_lens`` semantics.
"""

import torch

_ONNX_GATE_ORDER = {"LSTM": [0, 3, 1, 2], "GRU": [1, 0, 2], "RNN_TANH": [0], "RNN_RELU": [0]}
_OP = {"LSTM": "LSTM", "GRU": "GRU", "RNN_TANH": "RNN", "RNN_RELU": "RNN"}


def _reorder(t, mode):
    """Gate blocks of ``t`` [G*H, ...] from torch's order to ONNX's."""
    return torch.cat([t.chunk(len(_ONNX_GATE_ORDER[mode]))[g] for g in _ONNX_GATE_ORDER[mode]])


def layer(cfg, x, lengths, h0, c0, weights):
    """The one-layer contract as one ONNX node. Returns ``(y [T, B, D*H], h_n, c_n or None)``."""
    assert not cfg.has_proj, "ONNX's LSTM has no projection; the caller uses the composite"
    mode, D = cfg.mode, cfg.directions
    dirs = cfg.split_weights(list(weights))
    H = dirs[0]["w_hh"].shape[1]
    T, B, _ = x.shape
    W = torch.stack([_reorder(d["w_ih"], mode) for d in dirs])                  # [D, G*H, In]
    R = torch.stack([_reorder(d["w_hh"], mode) for d in dirs])                  # [D, G*H, H]
    bias = (torch.stack([torch.cat([_reorder(d["b_ih"], mode), _reorder(d["b_hh"], mode)])
                         for d in dirs]) if cfg.has_bias else None)             # [D, 2*G*H]
    seq_lens = None if lengths is None else lengths.to(device=x.device, dtype=torch.int32)
    attrs = {"hidden_size": H, "direction": "bidirectional" if D == 2 else "forward"}
    if mode == "GRU":
        attrs["linear_before_reset"] = 1
    if mode.startswith("RNN"):
        attrs["activations"] = ["Tanh" if mode == "RNN_TANH" else "Relu"] * D
    inputs = [x, W, R, bias, seq_lens, h0] + ([c0] if cfg.has_cell_state else [])
    n_out = 3 if cfg.has_cell_state else 2
    outs = torch.onnx.ops.symbolic_multi_out(
        _OP[mode], inputs, attrs, dtypes=[x.dtype] * n_out,
        shapes=[(T, D, B, H)] + [(D, B, H)] * (n_out - 1))
    y = outs[0].permute(0, 2, 1, 3).reshape(T, B, D * H)                      # [T, B, D*H]
    return y, outs[1], (outs[2] if cfg.has_cell_state else None)
