"""Elman RNN cell, one time step, forward and backward (float64 NumPy).

    a  = x W_ihᵀ + b_ih + h_prev W_hhᵀ + b_hh        # [B, H]
    h  = act(a)                                      # act = tanh or relu

Backward, given dh = ∂L/∂h:

    da      = dh ⊙ act'(a)          (act' written from h: 1-h² for tanh, [h>0] for relu)
    dx      = da W_ih                dh_prev = da W_hh
    dW_ih  += daᵀ x                  dW_hh  += daᵀ h_prev
    db_ih  += Σ_b da                 db_hh  += Σ_b da

Parameters ``p`` are a dict with ``w_ih [H, In]``, ``w_hh [H, H]``, ``b_ih [H]``, ``b_hh [H]``.
The cell has no memory cell, so the ``c`` slots of the common cell interface stay ``None``.
"""

from types import SimpleNamespace

from . import activations as act

GATES = 1


def _make(name, f, df_from_output):
    def forward_step(p, x, h_prev, c_prev=None):
        a = x @ p["w_ih"].T + p["b_ih"] + h_prev @ p["w_hh"].T + p["b_hh"]
        h = f(a)
        return h, None, (x, h_prev, h)

    def backward_step(p, cache, dh, dc=None):
        x, h_prev, h = cache
        da = dh * df_from_output(h)
        grads = {
            "w_ih": da.T @ x,
            "w_hh": da.T @ h_prev,
            "b_ih": da.sum(0),
            "b_hh": da.sum(0),
        }
        return da @ p["w_ih"], da @ p["w_hh"], None, grads

    return SimpleNamespace(
        name=name, GATES=GATES, HAS_CELL_STATE=False,
        forward_step=forward_step, backward_step=backward_step,
    )


TANH = _make("RNN_TANH", act.tanh, act.dtanh_from_output)
RELU = _make("RNN_RELU", act.relu, act.drelu_from_output)
