"""LayerNorm GRU cell, one time step, forward and backward (float64 NumPy), gate order r z n.

LN (``reference/layer_norm.py``) runs over all 3H gates of each product; then torch's GRU,
the reset gate scaling the recurrent half of the candidate after the matmul:

    nx      = LN(x W_ihᵀ)             nh = LN(h_prev W_hhᵀ)                # [B, 3H]
    gi      = nx ⊙ γ_ih + b_ih        gh = nh ⊙ γ_hh + b_hh                # [B, 3H] -> r z n
    r       = σ(gi_r + gh_r)          z  = σ(gi_z + gh_z)
    n       = tanh(gi_n + r ⊙ gh_n)
    h       = (1 − z) ⊙ n + z ⊙ h_prev

(``fusedrnn.ops.composite._cell_step``; the layer there normalises x W_ihᵀ for all steps at
once, the same per-row computation.)

Backward, given dh = ∂L/∂h:

    dn_pre  = dh ⊙ (1 − z) ⊙ (1 − n²)
    dz_pre  = dh ⊙ (h_prev − n) ⊙ σ'(z)
    dr_pre  = dn_pre ⊙ gh_n ⊙ σ'(r)
    dgi     = [dr_pre, dz_pre, dn_pre]        dgh = [dr_pre, dz_pre, dn_pre ⊙ r]
    db_ih  += Σ_b dgi                         db_hh += Σ_b dgh
    dγ_ih  += Σ_b dgi ⊙ nx                    dγ_hh += Σ_b dgh ⊙ nh
    dpx     = LN_bwd(dgi ⊙ γ_ih, nx)          dph   = LN_bwd(dgh ⊙ γ_hh, nh)   # of the products
    dx      = dpx W_ih                        dh_prev = dh ⊙ z + dph W_hh
    dW_ih  += dpxᵀ x                          dW_hh  += dphᵀ h_prev

with LN_bwd(dn, n) = rstd ⊙ (dn − mean(dn) − n ⊙ mean(dn ⊙ n)).

Parameters ``p``: ``w_ih [3H, In]``, ``w_hh [3H, H]``, ``b_ih``, ``b_hh [3H]``, ``ln_ih``,
``ln_hh [3H]`` (γ_ih, γ_hh).
"""

import numpy as np

from . import activations as act
from . import layer_norm as ln

name = "GRU"
GATES = 3
HAS_CELL_STATE = False
LAYER_NORM = True


def forward_step(p, x, h_prev, c_prev=None):
    nx, rstd_x = ln.forward(x @ p["w_ih"].T)                 # [B, 3H], [B, 1]
    nh, rstd_h = ln.forward(h_prev @ p["w_hh"].T)
    gi = nx * p["ln_ih"] + p["b_ih"]
    gh = nh * p["ln_hh"] + p["b_hh"]
    gi_r, gi_z, gi_n = np.split(gi, 3, axis=1)
    gh_r, gh_z, gh_n = np.split(gh, 3, axis=1)
    r = act.sigmoid(gi_r + gh_r)
    z = act.sigmoid(gi_z + gh_z)
    n = act.tanh(gi_n + r * gh_n)
    h = (1.0 - z) * n + z * h_prev
    return h, None, (x, h_prev, nx, rstd_x, nh, rstd_h, r, z, n, gh_n)


def backward_step(p, cache, dh, dc=None):
    x, h_prev, nx, rstd_x, nh, rstd_h, r, z, n, gh_n = cache
    dn_pre = dh * (1.0 - z) * act.dtanh_from_output(n)
    dz_pre = dh * (h_prev - n) * act.dsigmoid_from_output(z)
    dr_pre = dn_pre * gh_n * act.dsigmoid_from_output(r)
    dgi = np.concatenate([dr_pre, dz_pre, dn_pre], axis=1)       # [B, 3H]
    dgh = np.concatenate([dr_pre, dz_pre, dn_pre * r], axis=1)
    dpx = ln.backward(dgi * p["ln_ih"], nx, rstd_x)
    dph = ln.backward(dgh * p["ln_hh"], nh, rstd_h)
    grads = {
        "w_ih": dpx.T @ x,
        "w_hh": dph.T @ h_prev,
        "b_ih": dgi.sum(0),
        "b_hh": dgh.sum(0),
        "ln_ih": (dgi * nx).sum(0),
        "ln_hh": (dgh * nh).sum(0),
    }
    return dpx @ p["w_ih"], dh * z + dph @ p["w_hh"], None, grads
