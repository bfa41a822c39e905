"""NumPy float64 reference for fusedrnn: forward and hand-written BPTT, no autograd.

This package is the oracle every kernel is checked against. It imports numpy only.

* ``rnn_cell``, ``lstm_cell``, ``gru_cell``: one time step of each cell, forward and backward.
* ``layer``: one layer (one or two directions) over a padded, time-major sequence with
  per-sequence lengths.
* ``stack``: several layers, with an explicit dropout mask between them.
"""

from . import gru_cell, lstm_cell, rnn_cell
from .layer import layer_backward, layer_forward, reverse_padded
from .stack import stack_backward, stack_forward

CELLS = {
    "LSTM": lstm_cell,
    "GRU": gru_cell,
    "RNN_TANH": rnn_cell.TANH,
    "RNN_RELU": rnn_cell.RELU,
}

__all__ = [
    "CELLS",
    "gru_cell",
    "layer_backward",
    "layer_forward",
    "lstm_cell",
    "reverse_padded",
    "rnn_cell",
    "stack_backward",
    "stack_forward",
]
