"""NumPy float64 reference for fusedrnn: forward and hand-written BPTT, no autograd.

This package is the oracle every kernel is checked against. It imports numpy only.

* ``rnn_cell``, ``lstm_cell``, ``gru_cell``: one time step of each cell, forward and backward.
* ``ln_lstm_cell``, ``ln_gru_cell``: the LayerNorm cells (issue 14), the same interface;
  ``layer_norm``: the normalisation they share. ``cell_for(mode, layer_norm)`` picks a cell.
* ``layer``: one layer (one or two directions) over a padded, time-major sequence with
  per-sequence lengths, and optionally state resets (``starts``) and zoneout (``keep``).
* ``stack``: several layers, with an explicit dropout mask between them.
"""

from . import gru_cell, ln_gru_cell, ln_lstm_cell, lstm_cell, rnn_cell
from .layer import layer_backward, layer_forward, reverse_padded
from .stack import stack_backward, stack_forward

CELLS = {
    "LSTM": lstm_cell,
    "GRU": gru_cell,
    "RNN_TANH": rnn_cell.TANH,
    "RNN_RELU": rnn_cell.RELU,
}

LN_CELLS = {"LSTM": ln_lstm_cell, "GRU": ln_gru_cell}


def cell_for(mode, layer_norm=False):
    """The cell module of ``mode`` (``fusedrnn.layer_config.MODES``), its LayerNorm form when
    ``layer_norm`` (LSTM and GRU only)."""
    if not layer_norm:
        return CELLS[mode]
    if mode not in LN_CELLS:
        raise ValueError(f"layer_norm is defined for LSTM and GRU, not {mode}")
    return LN_CELLS[mode]


__all__ = [
    "CELLS",
    "LN_CELLS",
    "cell_for",
    "gru_cell",
    "ln_gru_cell",
    "ln_lstm_cell",
    "layer_backward",
    "layer_forward",
    "lstm_cell",
    "reverse_padded",
    "rnn_cell",
    "stack_backward",
    "stack_forward",
]
