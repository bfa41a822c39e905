"""Backend ``"reference"``: the NumPy float64 oracle behind the layer contract.

Forward and backward run :mod:`fusedrnn.reference` on the CPU in float64 whatever the input's
device and dtype; results are cast back. Slow by design — it exists to be right.
The backward recomputes the forward (the oracle keeps no state between calls), so the
workspace is empty.

It runs every variant (issue 14): the LayerNorm cells (``reference.cell_for``; their gains
travel in the flat list, named by ``cfg.weight_names``), and ``starts``/``keep`` passed on to
:func:`fusedrnn.reference.layer_forward` as they come from the variant op.
"""

import numpy as np
import torch

from .. import reference
from ..allocation import new_empty


def _np(t):
    return None if t is None else t.detach().to("cpu", torch.float64).numpy()


def _params(cfg, weights):
    return [{k: _np(v) for k, v in d.items()} for d in cfg.split_weights(weights)]


def _to_torch(a, like):
    out = new_empty(a.shape, dtype=like.dtype, device=like.device)
    out.copy_(torch.from_numpy(np.ascontiguousarray(a)))
    return out


def _run_forward(cfg, x, lengths, h0, c0, weights, starts=None, keep=None):
    return reference.layer_forward(
        reference.cell_for(cfg.mode, cfg.layer_norm), _np(x),
        None if lengths is None else lengths.cpu().numpy(), _np(h0), _np(c0),
        _params(cfg, weights),
        starts=None if starts is None else starts.detach().to("cpu", torch.bool).numpy(),
        keep=_np(keep),
    )


class ReferenceBackend:
    name = "reference"

    def unsupported_reason(self, cfg, x, weights):
        return None

    def workspace_spec(self, cfg, x, hidden_size):
        return (0,), x.dtype

    def forward(self, cfg, x, lengths, h0, c0, weights, starts=None, keep=None):
        y, h_n, c_n, _ = _run_forward(cfg, x, lengths, h0, c0, weights, starts, keep)
        c_out = _to_torch(c_n, c0) if cfg.has_cell_state else x.new_empty(0)
        return _to_torch(y, x), _to_torch(h_n, h0), c_out, x.new_empty(0)

    def backward(self, cfg, x, lengths, h0, c0, weights, y, workspace, dy, dh_n, dc_n,
                 starts=None, keep=None):
        *_, cache = _run_forward(cfg, x, lengths, h0, c0, weights, starts, keep)
        dx, dh0, dc0, dparams = reference.layer_backward(
            cache, _np(dy), _np(dh_n), _np(dc_n) if cfg.has_cell_state else None
        )
        dweights = [
            _to_torch(dparams[d][k], w)
            for d in range(cfg.directions)
            for k, w in zip(cfg.weight_names, cfg.split_weights(weights)[d].values())
        ]
        dc0_out = _to_torch(dc0, c0) if cfg.has_cell_state else x.new_empty(0)
        return _to_torch(dx, x), _to_torch(dh0, h0), dc0_out, dweights
