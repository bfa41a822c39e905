"""Cell backend ``"reference"``: one step of the NumPy float64 oracle (``reference/<cell>.py``).

Forward and backward run ``forward_step`` / ``backward_step`` on the CPU in float64 whatever
the input's device and dtype; results are cast back. The backward recomputes the forward (the
oracle keeps no state between calls), so the workspace is empty.
"""

import numpy as np
import torch

from ... import reference
from ...allocation import new_empty


def _np(t):
    return None if t is None else t.detach().to("cpu", torch.float64).numpy()


def _to_torch(a, like):
    out = new_empty(a.shape, dtype=like.dtype, device=like.device)
    out.copy_(torch.from_numpy(np.ascontiguousarray(a)))
    return out


def _params(w_ih, w_hh, b_ih, b_hh):
    p = {"w_ih": _np(w_ih), "w_hh": _np(w_hh)}
    # The oracle always adds biases; without them (bias=False) they are zero.
    G_H = w_ih.shape[0]
    p["b_ih"] = _np(b_ih) if b_ih is not None else np.zeros(G_H)
    p["b_hh"] = _np(b_hh) if b_hh is not None else np.zeros(G_H)
    return p


class CellReferenceBackend:
    name = "reference"

    def unsupported_reason(self, mode, x):
        return None

    def workspace_spec(self, mode, x, hidden_size, save):
        return (0,), x.dtype

    def forward(self, mode, x, h, c, w_ih, w_hh, b_ih, b_hh, save):
        p = _params(w_ih, w_hh, b_ih, b_hh)
        h_new, c_new, _ = reference.CELLS[mode].forward_step(p, _np(x), _np(h), _np(c))
        c_out = _to_torch(c_new, c) if c is not None else x.new_empty(0)
        return _to_torch(h_new, h), c_out, x.new_empty(0)

    def backward(self, mode, x, h, c, w_ih, w_hh, b_ih, b_hh, workspace, dh, dc, needs):
        # The oracle's backward is all or nothing; the op drops what ``needs`` does not name.
        cell = reference.CELLS[mode]
        p = _params(w_ih, w_hh, b_ih, b_hh)
        _, _, cache = cell.forward_step(p, _np(x), _np(h), _np(c))
        dx, dh_prev, dc_prev, grads = cell.backward_step(p, cache, _np(dh), _np(dc))
        return (_to_torch(dx, x), _to_torch(dh_prev, h),
                _to_torch(dc_prev, c) if c is not None else x.new_empty(0),
                _to_torch(grads["w_ih"], w_ih), _to_torch(grads["w_hh"], w_hh),
                _to_torch(grads["b_ih"], b_ih) if b_ih is not None else x.new_empty(0),
                _to_torch(grads["b_hh"], b_hh) if b_hh is not None else x.new_empty(0))
