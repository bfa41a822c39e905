"""``LayerNormLSTM`` and ``LayerNormGRU``: recurrent cells cuDNN cannot run (issue 14).

The constructor and ``forward`` are :class:`fusedrnn.LSTM`'s / :class:`fusedrnn.GRU`'s (layers,
bidirectional, batch_first, dropout, PackedSequence, h0/c0, ``backend=``, ``zoneout=``,
``resets=``), without ``proj_size``. Per layer and direction, LN(v) = (v − mean v) /
sqrt(var v + 1e-5) over the last dimension (biased variance, as ``torch.nn.LayerNorm``):

    LSTM   a  = LN(x W_ihᵀ) ⊙ γ_ih + LN(h W_hhᵀ) ⊙ γ_hh + b_ih + b_hh     LN over all 4H gates
           c' = σ(a_f) ⊙ c + σ(a_i) ⊙ tanh(a_g)
           h' = σ(a_o) ⊙ tanh(LN(c') ⊙ γ_c + β_c)                          LN over H
    GRU    a_x = LN(x W_ihᵀ) ⊙ γ_ih + b_ih      a_h = LN(h W_hhᵀ) ⊙ γ_hh + b_hh   (3H each)
           r = σ(a_x,r + a_h,r)   z = σ(a_x,z + a_h,z)   n = tanh(a_x,n + r ⊙ a_h,n)
           h' = (1 − z) ⊙ n + z ⊙ h

This is haste's LayerNormLSTM (Ba et al., 2016) with its one stacked bias split into torch's
two. Parameters: torch's (``weight_ih_l{k}``, …) plus ``ln_ih_weight_l{k}``,
``ln_hh_weight_l{k}`` (G*H) and, for the LSTM, ``ln_cell_weight_l{k}``, ``ln_cell_bias_l{k}`` (H),
each with ``_reverse`` for the reverse direction; gains start at 1, ``ln_cell_bias`` at 0.

The LayerNorm parameters are kept out of torch's ``_flat_weights``: ``flatten_parameters`` hands
that list to cuDNN on CUDA, which knows nothing of them.
"""

import torch
from torch import nn

from .modules import GRU, LSTM


class _LayerNormMixin:
    layer_norm = True

    def _ln_shapes(self):
        """``{suffix: size}`` of one direction's LayerNorm parameters, in flat order."""
        G = self._gates
        shapes = {"ln_ih_weight": G * self.hidden_size, "ln_hh_weight": G * self.hidden_size}
        if self.mode == "LSTM":
            shapes.update({"ln_cell_weight": self.hidden_size, "ln_cell_bias": self.hidden_size})
        return shapes

    def _add_layer_norm_parameters(self, device, dtype):
        if self.proj_size:
            raise ValueError(f"{type(self).__name__} has no projection (proj_size must be 0)")
        self._ln_names = []
        for layer in range(self.num_layers):
            for suffix in ("", "_reverse")[: 2 if self.bidirectional else 1]:
                names = []
                for base, size in self._ln_shapes().items():
                    name = f"{base}_l{layer}{suffix}"
                    setattr(self, name, nn.Parameter(torch.empty(size, device=device, dtype=dtype)))
                    names.append(name)
                self._ln_names.append(names)
        self._reset_layer_norm_parameters()

    def _reset_layer_norm_parameters(self):
        with torch.no_grad():
            for names in getattr(self, "_ln_names", ()):
                for name in names:
                    getattr(self, name).fill_(0.0 if name.startswith("ln_cell_bias") else 1.0)

    def reset_parameters(self):
        super().reset_parameters()          # torch's uniform init of the torch parameters ...
        self._reset_layer_norm_parameters()  # ... and LayerNorm's own: gains 1, bias 0

    def _flat_weights_now(self):
        """Per layer and direction: torch's weights, then that direction's LayerNorm ones."""
        torch_weights = super()._flat_weights_now()
        per_dir = len(torch_weights) // len(self._ln_names)
        out = []
        for k, names in enumerate(self._ln_names):
            out += torch_weights[k * per_dir:(k + 1) * per_dir]
            out += [getattr(self, n) for n in names]
        return out


class LayerNormLSTM(_LayerNormMixin, LSTM):
    """LayerNorm LSTM (see the module docstring for the equations).

    ``LayerNormLSTM(input_size, hidden_size, num_layers=1, bias=True, batch_first=False,
    dropout=0.0, bidirectional=False, device=None, dtype=None, backend='auto', zoneout=0.0)``
    """

    _gates = 4

    def __init__(self, *args, device=None, dtype=None, **kwargs):
        super().__init__(*args, device=device, dtype=dtype, **kwargs)
        self._add_layer_norm_parameters(device, dtype)


class LayerNormGRU(_LayerNormMixin, GRU):
    """LayerNorm GRU (see the module docstring for the equations).

    ``LayerNormGRU(input_size, hidden_size, num_layers=1, bias=True, batch_first=False,
    dropout=0.0, bidirectional=False, device=None, dtype=None, backend='auto', zoneout=0.0)``
    """

    _gates = 3

    def __init__(self, *args, device=None, dtype=None, **kwargs):
        super().__init__(*args, device=device, dtype=dtype, **kwargs)
        self._add_layer_norm_parameters(device, dtype)
