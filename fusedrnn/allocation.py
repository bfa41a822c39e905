"""Output allocation for backends, with NaN poisoning for tests.

Backends allocate their outputs through :func:`new_empty`. Tests switch ``POISON`` on, so an
element a kernel forgot to write is NaN and fails every comparison instead of passing by
luck with whatever the allocator left behind.
"""

import torch

POISON = False


def new_empty(shape, *, dtype, device):
    if POISON and (dtype.is_floating_point or dtype.is_complex):
        return torch.full(shape, float("nan"), dtype=dtype, device=device)
    return torch.empty(shape, dtype=dtype, device=device)
