"""LayerNorm LSTM cell, one time step, forward and backward (float64 NumPy), gate order i f g o.

LN (``reference/layer_norm.py``) runs over all 4H gates of each product, then over H for c:

    nx      = LN(x W_ihᵀ)             nh = LN(h_prev W_hhᵀ)                # [B, 4H]
    a       = nx ⊙ γ_ih + b_ih + nh ⊙ γ_hh + b_hh                        # [B, 4H] -> i f g o
    i, f, o = σ(a_i), σ(a_f), σ(a_o)      g = tanh(a_g)
    c       = f ⊙ c_prev + i ⊙ g                                          # [B, H], carried raw
    nc      = LN(c)                   u  = tanh(nc ⊙ γ_c + β_c)           # [B, H]
    h       = o ⊙ u

(``fusedrnn.ops.composite._cell_step``; the layer there normalises x W_ihᵀ for all steps at
once, which is the same per-row computation done here step by step.)

Backward, given dh = ∂L/∂h and dc = ∂L/∂c arriving from step t+1:

    do       = dh ⊙ u              du_pre = dh ⊙ o ⊙ (1 − u²)             # ∂L/∂(nc ⊙ γ_c + β_c)
    dγ_c    += Σ_b du_pre ⊙ nc     dβ_c  += Σ_b du_pre
    dc_total = dc + LN_bwd(du_pre ⊙ γ_c, nc)
    di       = dc_total ⊙ g        df = dc_total ⊙ c_prev        dg = dc_total ⊙ i
    dc_prev  = dc_total ⊙ f
    da       = [di σ'(i), df σ'(f), dg tanh'(g), do σ'(o)]                # [B, 4H]
    db_ih    = db_hh += Σ_b da
    dγ_ih   += Σ_b da ⊙ nx         dgx = LN_bwd(da ⊙ γ_ih, nx)            # ∂L/∂(x W_ihᵀ)
    dγ_hh   += Σ_b da ⊙ nh         dgh = LN_bwd(da ⊙ γ_hh, nh)            # ∂L/∂(h_prev W_hhᵀ)
    dx       = dgx W_ih            dh_prev = dgh W_hh
    dW_ih   += dgxᵀ x              dW_hh  += dghᵀ h_prev

with LN_bwd(dn, n) = rstd ⊙ (dn − mean(dn) − n ⊙ mean(dn ⊙ n)).

Parameters ``p``: ``w_ih [4H, In]``, ``w_hh [4H, H]``, ``b_ih``, ``b_hh [4H]``, ``ln_ih``,
``ln_hh [4H]`` (γ_ih, γ_hh), ``ln_cell_w``, ``ln_cell_b [H]`` (γ_c, β_c). No projection.
"""

import numpy as np

from . import activations as act
from . import layer_norm as ln

name = "LSTM"
GATES = 4
HAS_CELL_STATE = True
LAYER_NORM = True


def forward_step(p, x, h_prev, c_prev):
    nx, rstd_x = ln.forward(x @ p["w_ih"].T)                 # [B, 4H], [B, 1]
    nh, rstd_h = ln.forward(h_prev @ p["w_hh"].T)
    a = nx * p["ln_ih"] + p["b_ih"] + nh * p["ln_hh"] + p["b_hh"]
    a_i, a_f, a_g, a_o = np.split(a, 4, axis=1)
    i, f, g, o = act.sigmoid(a_i), act.sigmoid(a_f), act.tanh(a_g), act.sigmoid(a_o)
    c = f * c_prev + i * g                                   # [B, H]
    nc, rstd_c = ln.forward(c)
    u = act.tanh(nc * p["ln_cell_w"] + p["ln_cell_b"])
    h = o * u
    return h, c, (x, h_prev, c_prev, nx, rstd_x, nh, rstd_h, i, f, g, o, nc, rstd_c, u)


def backward_step(p, cache, dh, dc):
    x, h_prev, c_prev, nx, rstd_x, nh, rstd_h, i, f, g, o, nc, rstd_c, u = cache
    do = dh * u
    du_pre = dh * o * act.dtanh_from_output(u)
    dc_total = dc + ln.backward(du_pre * p["ln_cell_w"], nc, rstd_c)
    di = dc_total * g
    df = dc_total * c_prev
    dg = dc_total * i
    dc_prev = dc_total * f
    da = np.concatenate([
        di * act.dsigmoid_from_output(i),
        df * act.dsigmoid_from_output(f),
        dg * act.dtanh_from_output(g),
        do * act.dsigmoid_from_output(o),
    ], axis=1)                                               # [B, 4H]
    dgx = ln.backward(da * p["ln_ih"], nx, rstd_x)
    dgh = ln.backward(da * p["ln_hh"], nh, rstd_h)
    grads = {
        "w_ih": dgx.T @ x,
        "w_hh": dgh.T @ h_prev,
        "b_ih": da.sum(0),
        "b_hh": da.sum(0),
        "ln_ih": (da * nx).sum(0),
        "ln_hh": (da * nh).sum(0),
        "ln_cell_w": (du_pre * nc).sum(0),
        "ln_cell_b": du_pre.sum(0),
    }
    return dgx @ p["w_ih"], dgh @ p["w_hh"], dc_prev, grads
