"""Drop-in single-step cells: ``RNNCell``, ``LSTMCell``, ``GRUCell``.

Each class derives from its ``torch.nn`` twin, so the constructor, parameter names, shapes,
initialisation, ``state_dict`` keys and ``isinstance`` checks are torch's own. ``forward``
follows torch's line by line (dimension checks, unbatched input, zero default state) and
hands the batched step to :func:`fusedrnn.ops.cell.run_cell`, which applies torch's shape
checks with torch's messages and runs the chosen backend. The one addition is the keyword
``backend`` (``"auto"``, ``"reference"``, ``"torch"``, ``"triton-step"``; see
``backends/cell_registry.py``).

Shapes: input ``[B, In]`` or unbatched ``[In]``; states ``[B, H]`` or ``[H]``.
"""

import torch
from torch import _VF, nn

from .backends.cell import registry as cell_registry
from .ops.cell import run_cell


class _FusedCell:
    """The part the three cells share: the backend keyword, its repr and resolution."""

    def _set_backend(self, backend):
        cell_registry.check_name(backend)
        self.backend = backend

    def resolved_backend(self, device=None):
        """The backend a step on ``device`` (default: the parameters') runs on."""
        x = torch.empty(1, self.input_size, device=device or self.weight_ih.device,
                        dtype=self.weight_ih.dtype)
        return cell_registry.resolve(self.backend, self._mode(), x).name

    def extra_repr(self):
        s = super().extra_repr()
        return s if self.backend == "auto" else f"{s}, backend={self.backend!r}"

    def _step(self, input, h, c):
        return run_cell(self._mode(), self.backend, input, h, c, self.weight_ih, self.weight_hh,
                        self.bias_ih, self.bias_hh)


def _zeros(module, input):
    return torch.zeros(input.size(0), module.hidden_size, dtype=input.dtype, device=input.device)


class RNNCell(_FusedCell, nn.RNNCell):
    """Elman cell, signature of ``torch.nn.RNNCell`` plus ``backend="auto"``.

    ``RNNCell(input_size, hidden_size, bias=True, nonlinearity='tanh', device=None, dtype=None,
    backend='auto')``; ``forward(input [B, In] or [In], hx [B, H] or [H] = zeros) -> h'``.
    """

    def __init__(self, *args, backend="auto", **kwargs):
        super().__init__(*args, **kwargs)
        self._set_backend(backend)

    def _mode(self):
        return {"tanh": "RNN_TANH", "relu": "RNN_RELU"}.get(self.nonlinearity)

    def forward(self, input, hx=None):
        if input.dim() not in (1, 2):
            raise ValueError(f"RNNCell: Expected input to be 1D or 2D, got {input.dim()}D instead")
        if hx is not None and hx.dim() not in (1, 2):
            raise ValueError(f"RNNCell: Expected hidden to be 1D or 2D, got {hx.dim()}D instead")
        is_batched = input.dim() == 2
        if not is_batched:
            input = input.unsqueeze(0)
        hx = _zeros(self, input) if hx is None else (hx if is_batched else hx.unsqueeze(0))
        if self._mode() is None:
            raise RuntimeError(f"Unknown nonlinearity: {self.nonlinearity}")
        ret, _ = self._step(input, hx, None)
        return ret if is_batched else ret.squeeze(0)


class LSTMCell(_FusedCell, nn.LSTMCell):
    """LSTM cell, signature of ``torch.nn.LSTMCell`` plus ``backend="auto"``.

    ``LSTMCell(input_size, hidden_size, bias=True, device=None, dtype=None, backend='auto')``;
    ``forward(input [B, In] or [In], hx=(h [B, H], c [B, H]) = zeros) -> (h', c')``.
    """

    def __init__(self, *args, backend="auto", **kwargs):
        super().__init__(*args, **kwargs)
        self._set_backend(backend)

    def _mode(self):
        return "LSTM"

    def forward(self, input, hx=None):
        if input.dim() not in (1, 2):
            raise ValueError(f"LSTMCell: Expected input to be 1D or 2D, got {input.dim()}D instead")
        if hx is not None:
            for idx, value in enumerate(hx):
                if value.dim() not in (1, 2):
                    raise ValueError(f"LSTMCell: Expected hx[{idx}] to be 1D or 2D, got "
                                     f"{value.dim()}D instead")
        is_batched = input.dim() == 2
        if not is_batched:
            input = input.unsqueeze(0)
        if hx is None:
            zeros = _zeros(self, input)
            hx = (zeros, zeros)
        elif not is_batched:
            hx = (hx[0].unsqueeze(0), hx[1].unsqueeze(0))
        elif isinstance(hx, torch.Tensor):
            # A stacked [2, B, H] state: torch's argument parser refuses it (a TypeError); let
            # torch's cell say so in its own words. (Unbatched, torch's forward has made the
            # tuple itself above, and so have we.)
            _VF.lstm_cell(input, hx, self.weight_ih, self.weight_hh, self.bias_ih, self.bias_hh)
        if len(hx) != 2:   # ATen's check in lstm_cell, before the shape checks
            raise RuntimeError("lstm_cell expects two hidden states")
        ret = self._step(input, hx[0], hx[1])
        return ret if is_batched else (ret[0].squeeze(0), ret[1].squeeze(0))


class GRUCell(_FusedCell, nn.GRUCell):
    """GRU cell (reset gate after the recurrent matmul), signature of ``torch.nn.GRUCell`` plus
    ``backend="auto"``.

    ``GRUCell(input_size, hidden_size, bias=True, device=None, dtype=None, backend='auto')``;
    ``forward(input [B, In] or [In], hx [B, H] or [H] = zeros) -> h'``.
    """

    def __init__(self, *args, backend="auto", **kwargs):
        super().__init__(*args, **kwargs)
        self._set_backend(backend)

    def _mode(self):
        return "GRU"

    def forward(self, input, hx=None):
        if input.dim() not in (1, 2):
            raise ValueError(f"GRUCell: Expected input to be 1D or 2D, got {input.dim()}D instead")
        if hx is not None and hx.dim() not in (1, 2):
            raise ValueError(f"GRUCell: Expected hidden to be 1D or 2D, got {hx.dim()}D instead")
        is_batched = input.dim() == 2
        if not is_batched:
            input = input.unsqueeze(0)
        hx = _zeros(self, input) if hx is None else (hx if is_batched else hx.unsqueeze(0))
        ret, _ = self._step(input, hx, None)
        return ret if is_batched else ret.squeeze(0)
