"""LSTM cell, one time step, forward and backward (float64 NumPy), torch's gate order i f g o.

    a       = x W_ihᵀ + b_ih + h_prev W_hhᵀ + b_hh          # [B, 4H], split into i f g o
    i, f, o = σ(a_i), σ(a_f), σ(a_o)      g = tanh(a_g)
    c       = f ⊙ c_prev + i ⊙ g                             # [B, H]
    m       = o ⊙ tanh(c)                                    # [B, H]
    h       = m            or, with a projection,   h = m W_hrᵀ   # [B, P]

Backward, given dh = ∂L/∂h and dc = ∂L/∂c arriving from step t+1:

    dm       = dh                  (projection: dm = dh W_hr,  dW_hr += dhᵀ m)
    do       = dm ⊙ tanh(c)
    dc_total = dc + dm ⊙ o ⊙ (1 - tanh²(c))
    di       = dc_total ⊙ g        df = dc_total ⊙ c_prev        dg = dc_total ⊙ i
    dc_prev  = dc_total ⊙ f
    da       = [di σ'(i), df σ'(f), dg tanh'(g), do σ'(o)]       # [B, 4H]
    dx       = da W_ih             dh_prev = da W_hh
    dW_ih   += daᵀ x               dW_hh  += daᵀ h_prev           db_ih = db_hh += Σ_b da

Parameters ``p``: ``w_ih [4H, In]``, ``w_hh [4H, P or H]``, ``b_ih``, ``b_hh [4H]`` and, with a
projection, ``w_hr [P, H]``.
"""

import numpy as np

from . import activations as act

name = "LSTM"
GATES = 4
HAS_CELL_STATE = True


def forward_step(p, x, h_prev, c_prev):
    a = x @ p["w_ih"].T + p["b_ih"] + h_prev @ p["w_hh"].T + p["b_hh"]
    a_i, a_f, a_g, a_o = np.split(a, 4, axis=1)
    i, f, g, o = act.sigmoid(a_i), act.sigmoid(a_f), act.tanh(a_g), act.sigmoid(a_o)
    c = f * c_prev + i * g
    tanh_c = act.tanh(c)
    m = o * tanh_c
    h = m @ p["w_hr"].T if "w_hr" in p else m
    return h, c, (x, h_prev, c_prev, i, f, g, o, tanh_c, m)


def backward_step(p, cache, dh, dc):
    x, h_prev, c_prev, i, f, g, o, tanh_c, m = cache
    grads = {}
    if "w_hr" in p:
        grads["w_hr"] = dh.T @ m
        dm = dh @ p["w_hr"]
    else:
        dm = dh
    do = dm * tanh_c
    dc_total = dc + dm * o * act.dtanh_from_output(tanh_c)
    di = dc_total * g
    df = dc_total * c_prev
    dg = dc_total * i
    dc_prev = dc_total * f
    da = np.concatenate([
        di * act.dsigmoid_from_output(i),
        df * act.dsigmoid_from_output(f),
        dg * act.dtanh_from_output(g),
        do * act.dsigmoid_from_output(o),
    ], axis=1)
    grads.update({
        "w_ih": da.T @ x,
        "w_hh": da.T @ h_prev,
        "b_ih": da.sum(0),
        "b_hh": da.sum(0),
    })
    return da @ p["w_ih"], da @ p["w_hh"], dc_prev, grads
