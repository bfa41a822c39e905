"""Cell backend ``"torch"``: torch's own cell functions, what ``torch.nn.LSTMCell`` calls.

:func:`run` is what the cell modules call, eagerly *and* under ``torch.compile``: the ``_VF``
cells are composite ops (two ``linear`` calls and pointwise math) that dynamo traces and
inductor fuses, so hiding them behind the opaque custom op would only cost speed. The
backend object below serves the op contract all the same (direct calls of
``torch.ops.fusedrnn.cell_forward``), with a backward that re-runs the step under
``torch.func.vjp``, since nothing of torch's autograd graph crosses the op boundary.
"""

import torch
from torch import _VF

_VF_CELL = {"LSTM": _VF.lstm_cell, "GRU": _VF.gru_cell, "RNN_TANH": _VF.rnn_tanh_cell,
            "RNN_RELU": _VF.rnn_relu_cell}


def run(mode, x, h, c, w_ih, w_hh, b_ih, b_hh):
    """One step; differentiable. ``x [B, In]``, ``h``/``c [B, H]``. Returns ``(h', c' or None)``."""
    if mode == "LSTM":
        h_new, c_new = _VF.lstm_cell(x, (h, c), w_ih, w_hh, b_ih, b_hh)
        return h_new, c_new
    return _VF_CELL[mode](x, h, w_ih, w_hh, b_ih, b_hh), None


class CellTorchBackend:
    name = "torch"

    def unsupported_reason(self, mode, x):
        return None

    def workspace_spec(self, mode, x, hidden_size, save):
        return (0,), x.dtype

    def forward(self, mode, x, h, c, w_ih, w_hh, b_ih, b_hh, save):
        with torch.no_grad():
            h_new, c_new = run(mode, x, h, c, w_ih, w_hh, b_ih, b_hh)
        return h_new, (c_new if c_new is not None else x.new_empty(0)), x.new_empty(0)

    def backward(self, mode, x, h, c, w_ih, w_hh, b_ih, b_hh, workspace, dh, dc, needs):
        # The wanted inputs in a fixed order; the others (absent c and biases, frozen weights)
        # are constants of the VJP, so autograd computes nothing for them.
        names = ["x", "h", "c", "w_ih", "w_hh", "b_ih", "b_hh"]
        given = dict(zip(names, (x, h, c, w_ih, w_hh, b_ih, b_hh)))
        present = [n for n, want in zip(names, needs) if want]

        def step(*tensors):
            args = {**given, **dict(zip(present, tensors))}
            h_new, c_new = run(mode, *(args[n] for n in names))
            return (h_new, c_new) if c_new is not None else (h_new,)

        _, vjp = torch.func.vjp(step, *(given[n] for n in present))
        grads = dict(zip(present, vjp((dh, dc) if mode == "LSTM" else (dh,))))
        return tuple(grads.get(n, x.new_empty(0)) for n in names)
