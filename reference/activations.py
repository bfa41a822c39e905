"""Activations and their derivatives written in terms of the activation's *output*.

Writing the derivative from the output (``σ' = σ(1-σ)``, ``tanh' = 1-tanh²``) is what the
kernels do too: backward needs only the saved activations, not the pre-activations.
"""

import numpy as np


def sigmoid(a):
    # Split by sign so exp never overflows for large |a|.
    out = np.empty_like(a)
    pos = a >= 0
    out[pos] = 1.0 / (1.0 + np.exp(-a[pos]))
    e = np.exp(a[~pos])
    out[~pos] = e / (1.0 + e)
    return out


def dsigmoid_from_output(s):
    return s * (1.0 - s)


def tanh(a):
    return np.tanh(a)


def dtanh_from_output(t):
    return 1.0 - t * t


def relu(a):
    return np.maximum(a, 0.0)


def drelu_from_output(r):
    # relu'(0) is taken as 0, as torch does.
    return (r > 0).astype(r.dtype)
