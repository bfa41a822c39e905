"""Workspace layout and launcher interface shared by every variant kernel (step and persistent).

Dimension legend: T steps, B rows, D directions, H hidden units, G gates (LSTM 4, GRU 3, RNN 1).

**Workspace** ``ws [D, T, B, W]`` float32, one row of width W per (direction, time, row); the
offsets below are in elements. What backward needs, written by forward:

    LSTM       i f g o (4H) | c' (H)                                   W = 5H
    + LN       | ĉ = LN(c') unscaled (H) | n_hh = LN(h_in W_hhᵀ) unscaled (4H)
               | rstd_hh (1) | rstd_c (1)                               W = 10H + 2
    GRU        r z n (3H) | a_hn = recurrent part of n, incl. b_hh_n (H) W = 4H
    + LN       | n_hh (3H) | rstd_hh (1)                                W = 7H + 1
    RNN        h' = act(a) before zoneout (H)                           W = H

``rstd = 1 / sqrt(var + 1e-5)`` with the biased variance over the normalised width (G*H, or H
for the cell state).

**Launchers** (module-level functions of every ``<cell>_step`` / ``<cell>_persistent``):

    forward(xproj, w_hh, b_hh, ln, h0, c0, starts, keep, lens, n_active, y, ws)
    backward(dy, dh_n, dc_n, w_hh, b_hh, ln, ws, y, h0, c0, starts, keep, lens, n_active,
             alloc) -> dict

    xproj  [T, B, D*G*H]  the input part of the pre-activations, for all steps:
                          x W_ihᵀ (LN: LN(x W_ihᵀ) ⊙ γ_ih per direction) + b_ih, and for the
                          LSTM and RNN also + b_hh (GRU: b_hh stays inside, for r ⊙ a_hn)
    w_hh   [D, G*H, H]    b_hh [D, G*H] (GRU with bias) or None
    ln     None or {"ln_hh": [D, G*H], "ln_cell_w": [D, H], "ln_cell_b": [D, H]} (LSTM has all)
    h0, c0 [D, B, H]      (c0 None but for the LSTM)
    starts [D, T, B] bool (see fusedrnn/ops/variant_layer.py; always given)
    keep   [D, T, B, H] float32 or None (zoneout)
    lens   [B] int64 on the device; n_active[s] rows (a prefix, rows sorted by length) run at
           step s; y [T, B, D*H] (written at valid positions: h_t after zoneout)
    alloc(shape) -> float32 tensor, zero-filled when padded positions exist

backward returns (all float32; padded positions of the [D, T, B, ·] tensors zero):

    "dg_in"      [D, T, B, G*H]  ∂L/∂xproj
    "dg_hid"     [D, T, B, G*H]  ∂L/∂(h_in W_hhᵀ), the raw recurrent product (after LN backward)
    "dh0_direct" [D, B, H]       Σ over steps that start from h0 of the elementwise part of
                                 ∂L/∂h_in (zoneout's keep ⊙ dh, the GRU's z ⊙ dh'); the host adds
                                 (Σ_t starts ⊙ dg_hid) @ W_hh
    "dc0"        [D, B, H]       ∂L/∂c0 (LSTM), else None
    "dgain_hh"   [D, B, G*H]     Σ_t ∂L/∂(n_hh ⊙ γ_hh) ⊙ n_hh per row (LN), else None
    "db_hh"      [D, B, G*H]     Σ_t ∂L/∂a_h per row (GRU), else None
    "dgain_c", "dbias_c" [D, B, H]  Σ_t of the cell-state LN's gain/bias gradients (LN LSTM)
"""

LN_EPS = 1e-5


def columns(mode, layer_norm, H):
    """Offsets (elements) of each workspace block, and the row width ``"W"``."""
    if mode == "LSTM":
        c = {"i": 0, "f": H, "g": 2 * H, "o": 3 * H, "c": 4 * H, "W": 5 * H}
        if layer_norm:
            c.update({"c_hat": 5 * H, "n_hh": 6 * H, "rstd_hh": 10 * H, "rstd_c": 10 * H + 1,
                      "W": 10 * H + 2})
        return c
    if mode == "GRU":
        c = {"r": 0, "z": H, "n": 2 * H, "a_hn": 3 * H, "W": 4 * H}
        if layer_norm:
            c.update({"n_hh": 4 * H, "rstd_hh": 7 * H, "W": 7 * H + 1})
        return c
    return {"h_new": 0, "W": H}


def lstm_ln_operands(ln, dummy):
    """The LSTM kernels' three LayerNorm pointers ``(ln_hh, ln_cell_w, ln_cell_b)``, or
    ``dummy`` three times without LayerNorm (never read then)."""
    if ln is None:
        return dummy, dummy, dummy
    return ln["ln_hh"], ln["ln_cell_w"], ln["ln_cell_b"]
