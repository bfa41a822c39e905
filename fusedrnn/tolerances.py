"""Relative error ``‖out − ref‖ / ‖ref‖`` allowed against the float64 reference, by dtype.

One table for the test suite (``tests/conftest.py``) and the GPU check
(``python -m fusedrnn gpucheck``), so both judge a kernel by the same numbers.
"""

import torch

TOLERANCES = {
    # float64 runs of the same math differ only by summation order: ~1e-15 per op, grown by
    # T steps of recurrence and a few layers; 1e-9 leaves six orders of headroom.
    torch.float64: 1e-9,
    # float32 unit roundoff 6e-8, amplified through the recurrence and the summed weight
    # gradients over T*B terms; DESIGN/issue target for kernel parity.
    torch.float32: 2e-4,
    # fp16 stores with 11-bit mantissa (5e-4 unit roundoff); accumulation is fp32.
    torch.float16: 5e-3,
    # bf16 stores with 8-bit mantissa (4e-3 unit roundoff); accumulation is fp32.
    torch.bfloat16: 3e-2,
}

# relu in bf16: a pre-activation within bf16 rounding of 0 flips relu' between kernel and
# oracle and moves a whole dh element (torch's own bf16 RNN reaches 8e-2 on small cases);
# the CuPy tests allow this for rnn_relu in bf16 only.
RELU_BF16_TOLERANCE = 0.2


def tolerance(dtype, mode=None):
    """The allowed relative error for ``dtype`` (and the layer ``mode``, for the relu case)."""
    if mode == "RNN_RELU" and dtype == torch.bfloat16:
        return RELU_BF16_TOLERANCE
    return TOLERANCES[dtype]


def rel_err(out, ref):
    """``‖out − ref‖ / ‖ref‖`` in float64 on the CPU (the plain norm of the difference where
    ``ref`` is zero)."""
    out, ref = out.detach().double().cpu(), ref.detach().double().cpu()
    denom = ref.norm()
    return ((out - ref).norm() / denom).item() if denom > 0 else (out - ref).norm().item()
