"""LayerNorm over the last dimension, forward and backward (float64 NumPy), torch's form.

    μ    = mean(v)            var = mean((v − μ)²)          (biased, as torch.nn.LayerNorm)
    rstd = 1 / sqrt(var + ε)  n   = (v − μ) ⊙ rstd          ε = 1e-5

The gain and bias (``n ⊙ γ + β``) are applied by the caller, so this is the normalisation alone.

Backward, given dn = ∂L/∂n (N = the normalised width; the ε term drops out of the form):

    dv = rstd ⊙ (dn − mean(dn) − n ⊙ mean(dn ⊙ n))
"""

import numpy as np

EPS = 1e-5   # torch.nn.LayerNorm's default; fusedrnn.ops.composite.LN_EPS


def forward(v):
    """``v [B, N]`` -> ``(n [B, N], rstd [B, 1])``."""
    mu = v.mean(axis=-1, keepdims=True)
    centred = v - mu
    rstd = 1.0 / np.sqrt((centred * centred).mean(axis=-1, keepdims=True) + EPS)
    return centred * rstd, rstd


def backward(dn, n, rstd):
    """``∂L/∂v [B, N]`` from ``dn [B, N]`` and the forward's ``n``, ``rstd``."""
    return rstd * (dn - dn.mean(axis=-1, keepdims=True) - n * (dn * n).mean(axis=-1, keepdims=True))
