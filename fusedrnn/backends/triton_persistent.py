"""Backend ``"triton-persistent"``: one Triton launch per layer (both directions) for the whole
sequence, in one of two forms:

* **batch-tiled** (``<cell>_persistent``): a program owns a batch tile and all hidden units,
  ``W_hh``, h and c live in registers, no synchronisation. Only while ``W_hh`` fits in one
  program's registers: ``H ≤ MAX_HIDDEN[dot key]`` of the cell, no projection.
* **hidden-split** (``<cell>_persistent_split``): a program owns a hidden slice of every gate
  for all rows, programs meet at a grid barrier each step; any H, and LSTM projections, as long
  as the grid is co-resident (``cdiv(H, SLICE_WIDTH) × D`` programs; at most one per SM is
  assumed when choosing, so the limit is ``H ≤ SLICE_WIDTH × SMs / D`` — 4224 for one
  direction on a 132-SM H200; the launch checks the exact occupancy).

Variants (LayerNorm, resets, zoneout; ``cfg.is_variant``) have both forms too, in
``kernels/triton/variants/`` and driven by the shared host :mod:`.triton_variant`: batch-tiled
(``<cell>_persistent``) while ``H ≤ MAX_HIDDEN`` of that module, else hidden-split
(``<cell>_persistent_split``: per step the recurrent product by hidden slice, a barrier, then
whole rows per program so the LayerNorm statistics stay in-register reductions, a barrier), with
the classic split form's co-residency limit.

Everything around the kernels — input projection, workspace and gradient layouts, the GEMMs
after the loop, h_n/c_n — is shared with ``"triton-step"``; only the kernels differ.
"""

from types import SimpleNamespace

import torch

from .triton_step import TritonStepBackend


def _forms(mode):
    # Imported on first use: the Triton modules must be imported after TRITON_INTERPRET is set.
    from ..kernels.triton import (gru_persistent, gru_persistent_split, lstm_persistent,
                                 lstm_persistent_split, rnn_persistent, rnn_persistent_split)

    return {"LSTM": (lstm_persistent, lstm_persistent_split),
            "GRU": (gru_persistent, gru_persistent_split),
            "RNN_TANH": (rnn_persistent.TANH, rnn_persistent_split.TANH),
            "RNN_RELU": (rnn_persistent.RELU, rnn_persistent_split.RELU)}[mode]


def batch_tiled_fits(mode, H, dtype, has_proj):
    """Whether the batch-tiled form runs this layer (else the hidden-split form does)."""
    from ..kernels.triton.persistent_common import dot_key

    tiled, _ = _forms(mode)
    return not has_proj and H <= tiled.MAX_HIDDEN[dot_key(dtype)]


def _dispatching_module(mode):
    """A kernel module (the interface ``TritonStepBackend`` drives) that sends each call to the
    form that fits, decided from ``W_hh``'s shape and dtype."""
    tiled, split = _forms(mode)

    def pick(w_hh, projection):
        H = w_hh.shape[1] // tiled.GATES
        return tiled if batch_tiled_fits(mode, H, w_hh.dtype, bool(projection)) else split

    def forward(xproj, w_hh, b_hh, h0, c0, lens, n_active, y, ws, **projection):
        return pick(w_hh, projection).forward(xproj, w_hh, b_hh, h0, c0, lens, n_active, y, ws,
                                              **projection)

    def backward(dy, dh_n, dc_n, w_hh, ws, y, h0, c0, lens, n_active, alloc, **projection):
        return pick(w_hh, projection).backward(dy, dh_n, dc_n, w_hh, ws, y, h0, c0, lens,
                                               n_active, alloc, **projection)

    return SimpleNamespace(GATES=tiled.GATES, WORKSPACE_COLUMNS=tiled.WORKSPACE_COLUMNS,
                           split_biases=tiled.split_biases, forward=forward, backward=backward)


class TritonPersistentBackend(TritonStepBackend):
    name = "triton-persistent"

    def _kernels(self, mode):
        return _dispatching_module(mode)

    def _variant_kernels(self, mode):
        return _dispatching_variant_module(mode)

    def unsupported_reason(self, cfg, x, weights):
        reason = super().unsupported_reason(cfg, x, weights)
        if reason is not None:
            return reason
        H, Hr = cfg.hidden_sizes(weights)
        tiled = variant_batch_tiled_fits(cfg.mode, H, x.dtype) if cfg.is_variant \
            else batch_tiled_fits(cfg.mode, H, x.dtype, cfg.has_proj)
        if tiled or x.device.type != "cuda":
            return None        # the interpreter runs the split form as one program per direction
        sms = torch.cuda.get_device_properties(x.device).multi_processor_count
        return split_form_limit_reason(H, Hr, cfg.directions, sms)


def variant_batch_tiled_fits(mode, H, dtype):
    """Whether the batch-tiled variant kernels run this layer (else the hidden-split ones do):
    ``H ≤ MAX_HIDDEN`` of ``variants/<cell>_persistent``, the same on a GPU and under the
    interpreter (the form must not depend on where the code runs)."""
    from ..kernels.triton.persistent_common import dot_key
    from .triton_variant import variant_kernels

    return H <= variant_kernels(mode, "persistent").MAX_HIDDEN[dot_key(dtype)]


def _dispatching_variant_module(mode):
    """The variant launcher interface (``variants/layout``) sending each call to the form that
    fits, decided from ``W_hh``'s shape and dtype."""
    from .triton_variant import variant_kernels

    tiled, split = variant_kernels(mode, "persistent"), variant_kernels(mode, "persistent_split")

    def pick(w_hh):
        return tiled if variant_batch_tiled_fits(mode, w_hh.shape[2], w_hh.dtype) else split

    def forward(xproj, w_hh, *rest):
        return pick(w_hh).forward(xproj, w_hh, *rest)

    def backward(dy, dh_n, dc_n, w_hh, *rest):
        return pick(w_hh).backward(dy, dh_n, dc_n, w_hh, *rest)

    return SimpleNamespace(GATES=tiled.GATES, forward=forward, backward=backward)


def split_form_limit_reason(H, Hr, directions, sms):
    """Why the hidden-split form cannot run this width on a GPU with ``sms`` SMs, or None."""
    from ..kernels.triton.split_common import SLICE_WIDTH

    width = max(H, Hr)
    programs = -(-width // SLICE_WIDTH) * directions
    if programs <= sms:
        return None
    return (f"hidden size {width} needs {programs} co-resident programs in the hidden-split "
            f"form ({SLICE_WIDTH} units each, {directions} direction(s)) but the GPU has {sms} "
            f"SMs: the limit is {SLICE_WIDTH * sms // directions}")
