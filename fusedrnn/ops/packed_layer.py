"""Packed input straight into the one-layer op, for ``torch.compile(fullgraph=True)``.

Eager mode pads a ``PackedSequence`` in Python (``pad_packed_sequence``), which reads
``batch_sizes`` on the host and so breaks a compiled graph. Under ``torch.compile`` the layers
take the packed data and ``batch_sizes`` themselves; padding and repacking happen inside the
op's kernel, where the values are real. Every output shape is known without reading
``batch_sizes``: N packed rows, T = ``len(batch_sizes)``, B from the initial state.

    data         [N, In]        the packed rows (time-major, active rows a prefix per step)
    batch_sizes  [T] int64 CPU  as in a PackedSequence (non-increasing)
    h0           [D, B, Hr]     c0 [D, B, H] for the LSTM, else None
  returns
    out_data     [N, D*Hr]      packed like ``data``
    h_n, c_n, workspace         as ``fusedrnn::layer_forward`` (see :mod:`fusedrnn.ops.layer`)

``packed_initial_states`` makes the zero initial states when none is given: their batch size
``batch_sizes[0]`` is data-dependent, so the op reports it as one unbacked size shared by all.

Double backward through these ops is not registered: ``torch.compile`` does not support double
backward at all; eager mode (with its pad helpers) supports it on every backend.
"""

import torch
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

from ..backends import registry as backend_registry
from ..layer_config import LayerConfig


def _pad(data, batch_sizes):
    """``[N, C]`` packed -> ``([T, B, C], lengths [B])``."""
    return pad_packed_sequence(PackedSequence(data, batch_sizes))


def _pack(padded, lengths):
    return pack_padded_sequence(padded, lengths, enforce_sorted=True).data


def _padded_shape(data, batch_sizes, h0):
    return (batch_sizes.shape[0], h0.shape[1], data.shape[1])


@torch.library.custom_op("fusedrnn::packed_initial_states", mutates_args=())
def packed_initial_states(batch_sizes: torch.Tensor, rows: int, widths: list[int],
                          dtype: torch.dtype, device: torch.device) -> list[torch.Tensor]:
    B = int(batch_sizes[0])
    return [torch.zeros((rows, B, w), dtype=dtype, device=device) for w in widths]


@packed_initial_states.register_fake
def _(batch_sizes, rows, widths, dtype, device):
    B = torch.library.get_ctx().new_dynamic_size()
    return [torch.empty((rows, B, w), dtype=dtype, device=device) for w in widths]


@torch.library.custom_op("fusedrnn::packed_layer_forward", mutates_args=())
def packed_layer_forward(
    data: torch.Tensor, batch_sizes: torch.Tensor, h0: torch.Tensor, c0: torch.Tensor | None,
    weights: list[torch.Tensor], mode: str, backend: str, bidirectional: bool, has_bias: bool,
    has_proj: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    x, lengths = _pad(data, batch_sizes)
    y, h_n, c_n, workspace = torch.ops.fusedrnn.layer_forward(
        x, lengths, h0, c0, weights, mode, backend, bidirectional, has_bias, has_proj)
    return _pack(y, lengths), h_n, c_n, workspace


@packed_layer_forward.register_fake
def _(data, batch_sizes, h0, c0, weights, mode, backend, bidirectional, has_bias, has_proj):
    cfg = LayerConfig(mode, bidirectional, has_bias, has_proj)
    H, Hr = cfg.hidden_sizes(weights)
    x = data.new_empty(_padded_shape(data, batch_sizes, h0))
    ws_shape, ws_dtype = backend_registry.AVAILABLE[backend].workspace_spec(cfg, x, H)
    c_n = c0.new_empty(c0.shape) if cfg.has_cell_state else data.new_empty(0)
    return (data.new_empty((data.shape[0], cfg.directions * Hr)), h0.new_empty(h0.shape), c_n,
            data.new_empty(ws_shape, dtype=ws_dtype))


@torch.library.custom_op("fusedrnn::packed_layer_backward", mutates_args=())
def packed_layer_backward(
    dout: torch.Tensor, dh_n: torch.Tensor, dc_n: torch.Tensor | None,
    data: torch.Tensor, batch_sizes: torch.Tensor, h0: torch.Tensor, c0: torch.Tensor | None,
    weights: list[torch.Tensor], out_data: torch.Tensor, workspace: torch.Tensor,
    mode: str, backend: str, bidirectional: bool, has_bias: bool, has_proj: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, list[torch.Tensor]]:
    x, lengths = _pad(data, batch_sizes)
    dy, _ = _pad(dout, batch_sizes)
    y, _ = _pad(out_data, batch_sizes)
    dx, dh0, dc0, dweights = torch.ops.fusedrnn.layer_backward(
        dy, dh_n, dc_n, x, lengths, h0, c0, weights, y, workspace, mode, backend, bidirectional,
        has_bias, has_proj)
    return _pack(dx, lengths), dh0, dc0, dweights


@packed_layer_backward.register_fake
def _(dout, dh_n, dc_n, data, batch_sizes, h0, c0, weights, out_data, workspace, mode, backend,
      bidirectional, has_bias, has_proj):
    dc0 = c0.new_empty(c0.shape) if c0 is not None else data.new_empty(0)
    return (data.new_empty(data.shape), h0.new_empty(h0.shape), dc0,
            [w.new_empty(w.shape) for w in weights])


def _setup_context(ctx, inputs, output):
    data, batch_sizes, h0, c0, weights, *config = inputs
    out_data, _, _, workspace = output
    ctx.save_for_backward(data, batch_sizes, h0, c0, out_data, workspace, *weights)
    ctx.config = config


def _backward(ctx, dout, dh_n, dc_n, _dworkspace):
    data, batch_sizes, h0, c0, out_data, workspace, *weights = ctx.saved_tensors
    dc_n = dc_n if ctx.config[0] == "LSTM" else None
    ddata, dh0, dc0, dweights = torch.ops.fusedrnn.packed_layer_backward(
        dout, dh_n, dc_n, data, batch_sizes, h0, c0, weights, out_data, workspace, *ctx.config)
    return (ddata, None, dh0, (dc0 if c0 is not None else None), dweights,
            None, None, None, None, None)


packed_layer_forward.register_autograd(_backward, setup_context=_setup_context)


def run_packed_layer(cfg, backend, data, batch_sizes, h0, c0, weights):
    """One layer on packed rows. Returns ``(out_data [N, D*Hr], h_n, c_n or None)``."""
    out, h_n, c_n, _ = torch.ops.fusedrnn.packed_layer_forward(
        data, batch_sizes, h0, c0, list(weights), cfg.mode, backend, cfg.bidirectional,
        cfg.has_bias, cfg.has_proj)
    return out, h_n, (c_n if cfg.has_cell_state else None)
