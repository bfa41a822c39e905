"""GRU cell, one time step, forward and backward (float64 NumPy), torch's gate order r z n.

The reset gate multiplies the recurrent product *after* the matmul (torch's and cuDNN's
variant), so the input and recurrent halves of the candidate are kept apart:

    gi      = x W_ihᵀ + b_ih          # [B, 3H] = [gi_r, gi_z, gi_n]
    gh      = h_prev W_hhᵀ + b_hh     # [B, 3H] = [gh_r, gh_z, gh_n]
    r       = σ(gi_r + gh_r)      z = σ(gi_z + gh_z)
    n       = tanh(gi_n + r ⊙ gh_n)
    h       = (1 - z) ⊙ n + z ⊙ h_prev

Backward, given dh = ∂L/∂h:

    dn_pre  = dh ⊙ (1 - z) ⊙ (1 - n²)
    dz_pre  = dh ⊙ (h_prev - n) ⊙ σ'(z)
    dr_pre  = dn_pre ⊙ gh_n ⊙ σ'(r)
    dgi     = [dr_pre, dz_pre, dn_pre]           (gradient of gi)
    dgh     = [dr_pre, dz_pre, dn_pre ⊙ r]       (gradient of gh: the reset gate scales n's part)
    dx      = dgi W_ih            dh_prev = dh ⊙ z + dgh W_hh
    dW_ih  += dgiᵀ x              dW_hh  += dghᵀ h_prev
    db_ih  += Σ_b dgi             db_hh  += Σ_b dgh

Parameters ``p``: ``w_ih [3H, In]``, ``w_hh [3H, H]``, ``b_ih``, ``b_hh [3H]``.
"""

import numpy as np

from . import activations as act

name = "GRU"
GATES = 3
HAS_CELL_STATE = False


def forward_step(p, x, h_prev, c_prev=None):
    gi = x @ p["w_ih"].T + p["b_ih"]
    gh = h_prev @ p["w_hh"].T + p["b_hh"]
    gi_r, gi_z, gi_n = np.split(gi, 3, axis=1)
    gh_r, gh_z, gh_n = np.split(gh, 3, axis=1)
    r = act.sigmoid(gi_r + gh_r)
    z = act.sigmoid(gi_z + gh_z)
    n = act.tanh(gi_n + r * gh_n)
    h = (1.0 - z) * n + z * h_prev
    return h, None, (x, h_prev, r, z, n, gh_n)


def backward_step(p, cache, dh, dc=None):
    x, h_prev, r, z, n, gh_n = cache
    dn_pre = dh * (1.0 - z) * act.dtanh_from_output(n)
    dz_pre = dh * (h_prev - n) * act.dsigmoid_from_output(z)
    dr_pre = dn_pre * gh_n * act.dsigmoid_from_output(r)
    dgi = np.concatenate([dr_pre, dz_pre, dn_pre], axis=1)
    dgh = np.concatenate([dr_pre, dz_pre, dn_pre * r], axis=1)
    grads = {
        "w_ih": dgi.T @ x,
        "w_hh": dgh.T @ h_prev,
        "b_ih": dgi.sum(0),
        "b_hh": dgh.sum(0),
    }
    return dgi @ p["w_ih"], dh * z + dgh @ p["w_hh"], None, grads
