"""Functional form of fusedrnn: run a whole recurrent stack on any input form.

``lstm``, ``gru``, ``rnn_tanh`` and ``rnn_relu`` take torch's flat weight list (a module's
``_flat_weights``: per layer and direction ``w_ih, w_hh, [b_ih, b_hh], [w_hr]``) and accept what
``torch.nn.LSTM/GRU/RNN.forward`` accepts: batched 3-D input (time- or batch-first), unbatched
2-D input, or a ``PackedSequence``; an optional initial state. They return what torch returns.

Three ways through, after torch's own input checks:

* backend ``"torch"`` (``"auto"`` on CPU) in eager mode, and every backend while ``torch.jit``
  traces: torch's ``_VF`` entry point for the whole stack, exactly as ``torch.nn`` calls it
  (no padding or repacking of packed input; torch's autocast and dropout);
* ``PackedSequence`` input inside ``torch.compile``: the packed rows and ``batch_sizes`` enter
  :func:`fusedrnn.ops.packed_layer.run_packed_layer` layer by layer, with no graph-breaking helper;
* otherwise every form becomes padded, time-major input ``[T, B, In]`` plus per-sequence
  lengths (packed input, kept in its sorted order so active rows are a prefix), and the stack
  runs layer by layer through :func:`fusedrnn.ops.layer.run_layer` on the chosen backend.

On the last two ways ``F.dropout`` runs between layers while training; ``_VF`` applies its own
on the first.
"""

import functools

import torch
import torch.nn.functional as F
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

from . import validation
from .backends import registry as backend_registry
from .backends import torch_native
from .layer_config import GATES, LayerConfig
from .ops.layer import run_layer
from .ops.packed_layer import run_packed_layer
from .ops.variant_layer import run_variant_layer

_NAMES = {"LSTM": "LSTM", "GRU": "GRU", "RNN_TANH": "RNN", "RNN_RELU": "RNN"}
# Which cells torch's autocast runs wholly in the lower precision (float64 never is). CPU:
# measured on torch 2.13 (its CPU autocast list has lstm and rnn_tanh/relu, not gru; its CPU
# GRU is a composite whose aten::linear calls autocast casts, so the matmuls and gates run in
# bf16 and the state update in fp32, output fp32). CUDA: every cell, since all go through
# _cudnn_rnn, which is on the CUDA lower-precision list (not yet checked on a GPU here).
_AUTOCAST_MODES = {"cpu": {"LSTM", "RNN_TANH", "RNN_RELU"},
                   "cuda": {"LSTM", "GRU", "RNN_TANH", "RNN_RELU"}}


def lstm(input, hx, weights, *, num_layers=1, bias=True, batch_first=False, dropout=0.0,
         training=False, bidirectional=False, proj_size=0, backend="auto", layer_norm=False,
         zoneout=0.0, resets=None):
    """LSTM stack. ``hx`` is ``(h0 [L*D, B, P or H], c0 [L*D, B, H])`` or None.

    Returns ``(output, (h_n, c_n))`` exactly as ``torch.nn.LSTM``. ``layer_norm``, ``zoneout``
    and ``resets``: the variants, see :func:`forward` (``layer_norm=True`` wants a
    ``LayerNormLSTM``'s flat weight list, ``_flat_weights_now()``).
    """
    return forward("LSTM", input, hx, weights, num_layers=num_layers, bias=bias,
                   batch_first=batch_first, dropout=dropout, training=training,
                   bidirectional=bidirectional, proj_size=proj_size, backend=backend,
                   layer_norm=layer_norm, zoneout=zoneout, resets=resets)


def gru(input, hx, weights, *, num_layers=1, bias=True, batch_first=False, dropout=0.0,
        training=False, bidirectional=False, backend="auto", layer_norm=False, zoneout=0.0,
        resets=None):
    """GRU stack; returns ``(output, h_n)`` exactly as ``torch.nn.GRU``; variants as ``lstm``."""
    return forward("GRU", input, hx, weights, num_layers=num_layers, bias=bias,
                   batch_first=batch_first, dropout=dropout, training=training,
                   bidirectional=bidirectional, backend=backend, layer_norm=layer_norm,
                   zoneout=zoneout, resets=resets)


def rnn_tanh(input, hx, weights, *, num_layers=1, bias=True, batch_first=False,
             dropout=0.0, training=False, bidirectional=False, backend="auto", resets=None):
    """Elman RNN stack with tanh; returns ``(output, h_n)`` exactly as ``torch.nn.RNN``."""
    return forward("RNN_TANH", input, hx, weights, num_layers=num_layers, bias=bias,
                   batch_first=batch_first, dropout=dropout, training=training,
                   bidirectional=bidirectional, backend=backend, resets=resets)


def rnn_relu(input, hx, weights, *, num_layers=1, bias=True, batch_first=False,
             dropout=0.0, training=False, bidirectional=False, backend="auto", resets=None):
    """Elman RNN stack with relu; returns ``(output, h_n)`` exactly as ``torch.nn.RNN``."""
    return forward("RNN_RELU", input, hx, weights, num_layers=num_layers, bias=bias,
                   batch_first=batch_first, dropout=dropout, training=training,
                   bidirectional=bidirectional, backend=backend, resets=resets)


def _apply_permutation(t, permutation):
    return t.index_select(1, permutation)


def forward(mode, input, hx, weights, *, num_layers, bias, batch_first, dropout, training,
            bidirectional, proj_size=0, backend="auto", layer_norm=False, zoneout=0.0,
            resets=None):
    """Shared body of the four public functions and of the modules' ``forward``.

    The order of the checks follows ``torch.nn``'s ``forward`` so that bad input meets the same
    error first. The variants (issue 14; :mod:`fusedrnn.ops.variant_layer` has the semantics):
    ``layer_norm`` (``weights`` then carry each direction's LayerNorm parameters, see
    :mod:`fusedrnn.layer_config`), ``zoneout`` p in [0, 1] and ``resets``, a bool tensor
    ``[T, B]`` (``[B, T]`` with ``batch_first``, ``[T]`` for unbatched input; for a
    ``PackedSequence`` T is the longest length and B in the caller's order).
    """
    weights = list(weights)
    is_lstm = mode == "LSTM"
    D = 2 if bidirectional else 1
    input_size = weights[0].shape[1]
    hidden_size = weights[1].shape[0] // GATES[mode]
    real_hidden = proj_size if proj_size > 0 else hidden_size
    validation.check_zoneout(zoneout)
    cfg = LayerConfig(mode, bidirectional, bias, proj_size > 0, layer_norm,
                      resets is not None, zoneout > 0)

    # --- input forms -> padded time-major x, lengths, and how to undo it -------------------
    packed = isinstance(input, PackedSequence)
    if packed:
        data, batch_sizes, sorted_indices, unsorted_indices = input
        check_input_data = data
        B = _packed_batch_size(batch_sizes, sorted_indices, hx, is_lstm)
        is_batched = True
    else:
        batch_sizes = sorted_indices = unsorted_indices = None
        if input.dim() not in (2, 3):
            kind = " tensor" if _NAMES[mode] == "RNN" else ""
            raise ValueError(
                f"{_NAMES[mode]}: Expected input to be 2D or 3D, got {input.dim()}D{kind} instead"
            )
        is_batched = input.dim() == 3
        batch_dim = 0 if batch_first else 1
        if not is_batched:
            input = input.unsqueeze(batch_dim)
        check_input_data = input
        B = input.size(0) if batch_first else input.size(1)

    # --- initial state: torch's dimension checks, then zeros or the permuted given state ----
    def zeros(width):
        return torch.zeros(num_layers * D, B, width, dtype=check_input_data.dtype,
                           device=check_input_data.device)

    state_widths = [real_hidden, hidden_size] if is_lstm else [hidden_size]
    if hx is None and B is None:
        # Packed input inside a compiled graph, nothing giving B without reading batch_sizes.
        states = list(torch.ops.fusedrnn.packed_initial_states(
            batch_sizes, num_layers * D, state_widths, check_input_data.dtype,
            check_input_data.device))
        B = states[0].shape[1]
    elif hx is None:
        states = [zeros(w) for w in state_widths]
    elif is_lstm:
        if not packed:
            want = 3 if is_batched else 2
            if hx[0].dim() != want or hx[1].dim() != want:
                kind = "batched 3-D" if is_batched else "unbatched 2-D"
                raise RuntimeError(
                    f"For {kind} input, hx and cx should also be {want}-D but got "
                    f"({hx[0].dim()}-D, {hx[1].dim()}-D) tensors"
                )
            if not is_batched:
                hx = (hx[0].unsqueeze(1), hx[1].unsqueeze(1))
        states = [hx[0], hx[1]]
    else:
        if not packed:
            want = 3 if is_batched else 2
            if hx.dim() != want:
                kind = "batched 3-D" if is_batched else "unbatched 2-D"
                raise RuntimeError(
                    f"For {kind} input, hx should also be {want}-D but got {hx.dim()}-D tensor"
                )
            if not is_batched:
                hx = hx.unsqueeze(1)
        states = [hx]
    if sorted_indices is not None and hx is not None:
        states = [_apply_permutation(s, sorted_indices) for s in states]

    validation.check_input(check_input_data, batch_sizes, input_size, weights[0].dtype)
    msgs = ("Expected hidden[0] size {}, got {}", "Expected hidden[1] size {}, got {}") if is_lstm \
        else ("Expected hidden size {}, got {}",)
    widths = (real_hidden, hidden_size) if is_lstm else (hidden_size,)
    for s, width, msg in zip(states, widths, msgs):
        validation.check_hidden_size(s, (num_layers * D, B, width), msg)

    T = len(batch_sizes) if packed else check_input_data.shape[1 if batch_first else 0]
    validation.check_sequence_length(T)
    if resets is not None:
        resets = validation.time_major_resets(resets, T, B, batch_first, is_batched,
                                              check_input_data.device)
        if sorted_indices is not None:
            resets = resets.index_select(1, sorted_indices.to(resets.device))
    backend_obj = backend_registry.resolve(backend, cfg, check_input_data, weights)

    # --- "torch" in eager mode: torch's own entry point, nothing repacked or re-padded. While
    # torch.jit traces (the TorchScript ONNX exporter) every backend takes it, so the trace holds
    # aten::lstm & co., which that exporter turns into ONNX LSTM/GRU/RNN operators; ONNX's LSTM
    # has no projection, so an LSTM with proj_size traces the composite layer instead.
    tracing = torch.jit.is_tracing()
    if (backend_obj.name == "torch" or tracing) and not (tracing and proj_size > 0) and \
            not cfg.is_variant and torch_native.can_pass_through():
        validation.check_state_tensors(check_input_data, states)
        validation.check_weights_device(check_input_data, weights)
        validation.check_weights_dtype(weights)
        output, final_states = torch_native.run_stack(
            mode, input if not packed else data, batch_sizes, states, weights,
            num_layers=num_layers, bias=bias, batch_first=batch_first, dropout=dropout,
            training=training, bidirectional=bidirectional)
        batch_first = False   # _VF already returned the caller's layout
        lengths = None
    else:
        # Packed input inside a compiled graph enters the layers as it is (ops/packed_layer.py).
        packed_in_graph = packed and torch.compiler.is_compiling() and not cfg.is_variant
        if packed_in_graph:
            x, lengths = data, batch_sizes
        elif packed:
            x, lengths = pad_packed_sequence(PackedSequence(data, batch_sizes))
        else:
            x, lengths = (input.transpose(0, 1) if batch_first else input), None

        # --- autocast: torch's policy per device and cell (see _AUTOCAST_MODES) ---------------
        device_type = x.device.type
        autocast_on = torch.is_autocast_enabled(device_type)
        if (autocast_on and mode in _AUTOCAST_MODES.get(device_type, ())
                and x.dtype in (torch.float32, torch.float16, torch.bfloat16)):
            low = torch.get_autocast_dtype(device_type)
            x, states, weights = x.to(low), [s.to(low) for s in states], [w.to(low) for w in weights]
        validation.check_state_tensors(x, states)
        validation.check_weights_device(x, weights)
        validation.check_weights_dtype(weights)
        # A cell off the autocast list (CPU GRU) keeps autocast on for backend "torch", whose
        # composite CPU kernel then runs its matmuls in the low dtype exactly as torch.nn does;
        # the fused backends run in the dtype chosen above.
        run_one = run_packed_layer if packed_in_graph else run_layer
        if cfg.is_variant:
            run_one = functools.partial(_run_variant, resets=resets, zoneout=zoneout,
                                        training=training)
        # No autocast context at all when autocast is off: under torch.export even a disabled
        # one leaves a wrap_with_autocast node in the graph.
        if autocast_on and backend_obj.name != "torch":
            with torch.autocast(device_type, enabled=False):
                output, final_states = _run_stack(cfg, backend_obj.name, x, lengths, states,
                                                  weights, num_layers, dropout if training else 0.0,
                                                  run_one)
        else:
            output, final_states = _run_stack(cfg, backend_obj.name, x, lengths, states, weights,
                                              num_layers, dropout if training else 0.0, run_one)
        if packed_in_graph:
            lengths = None   # the output is packed already

    # --- back to the caller's form -----------------------------------------------------------
    if unsorted_indices is not None:
        final_states = [_apply_permutation(h, unsorted_indices) for h in final_states]
    if packed:
        out_data = output if lengths is None else pack_padded_sequence(
            output, lengths, enforce_sorted=True).data
        output = PackedSequence(out_data, batch_sizes, sorted_indices, unsorted_indices)
    else:
        if batch_first:
            output = output.transpose(0, 1)
        if not is_batched:
            output = output.squeeze(batch_dim)
            final_states = [h.squeeze(1) for h in final_states]
    return output, (tuple(final_states) if is_lstm else final_states[0])


def _packed_batch_size(batch_sizes, sorted_indices, hx, is_lstm):
    """B of packed input: ``batch_sizes[0]`` in eager mode. In a compiled graph reading it would
    break the graph, so B comes from a shape instead (the permutation, else the given state;
    torch's hidden-size check then cannot catch a wrong B), or None when neither exists."""
    if not torch.compiler.is_compiling():
        return int(batch_sizes[0])
    if sorted_indices is not None:
        return sorted_indices.shape[0]
    if hx is not None:
        return (hx[0] if is_lstm else hx).shape[1]
    return None


def _run_variant(cfg, backend, x, lengths, h0, c0, weights, *, resets, zoneout, training):
    """One variant layer; zoneout's keep mask drawn here, from torch's generator, so that every
    backend sees the same mask under one seed (eval mode: the expectation, every entry p)."""
    keep = None
    if zoneout > 0:
        T, B = x.shape[0], x.shape[1]
        Hr = h0.shape[-1]
        keep = torch.full((cfg.directions, T, B, Hr), float(zoneout), dtype=torch.float32,
                          device=x.device)
        if training:
            keep = torch.bernoulli(keep)
    return run_variant_layer(cfg, backend, x, lengths, h0, c0, weights, resets=resets, keep=keep)


def _run_stack(cfg, backend, x, lengths, states, weights, num_layers, dropout, run_one=run_layer):
    """Layer after layer on padded time-major ``x`` with ``lengths`` (or, with
    ``run_one=run_packed_layer``, on packed rows ``x`` with ``batch_sizes``); ``F.dropout`` between
    layers when ``dropout > 0``. ``states`` is ``[h0]`` or ``[h0, c0]`` over all layers; returns
    ``(output, [h_n] or [h_n, c_n])``."""
    D = cfg.directions
    per_layer = len(weights) // num_layers
    finals = [[] for _ in states]
    layer_input = x
    for layer in range(num_layers):
        sl = slice(layer * D, (layer + 1) * D)
        y, h_n, c_n = run_one(cfg, backend, layer_input, lengths, states[0][sl],
                                states[1][sl] if cfg.has_cell_state else None,
                                weights[layer * per_layer:(layer + 1) * per_layer])
        for final, state in zip(finals, (h_n, c_n)):
            final.append(state)
        if dropout > 0 and layer < num_layers - 1:
            y = F.dropout(y, dropout, training=True)
        layer_input = y
    return layer_input, [torch.cat(f) if num_layers > 1 else f[0] for f in finals]
