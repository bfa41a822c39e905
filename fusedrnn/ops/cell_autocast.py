"""Autocast for the fused cell backends: the dtypes ``torch.nn``'s cells use, per device.

torch's cells are composites: two ``linear`` calls, then pointwise math. What autocast makes
of them (measured on the CPU with torch 2.13, bf16; ``tests/test_cells_autocast.py`` checks
it against torch at run time):

* CPU: only ``linear`` is on the autocast list, so the GEMM operands (x, h, weights, biases)
  are rounded to the autocast dtype and the gate pre-activations come out in it. The pointwise
  part then promotes: the RNN cells return the autocast dtype; the LSTM returns
  ``promote(low, c.dtype)`` for h' and c' (c enters ``f * c``); the GRU
  ``promote(low, h.dtype)`` (h enters ``z * h``). So fp32 states give fp32 LSTM/GRU outputs,
  bf16 states bf16 ones, fp16 states fp32 (bf16 and fp16 promote to fp32).
* CUDA: ``lstm_cell``, ``gru_cell``, ``rnn_tanh_cell`` and ``rnn_relu_cell`` are on CUDA's
  autocast list themselves (beside ``linear``): every input is cast to the autocast dtype and
  every cell returns it. Not measured here (no GPU); it is what torch's autocast list says.

The fused kernels take one dtype, so :func:`cast` returns every tensor in the output dtype,
with the GEMM operands first rounded through the autocast dtype as torch's ``linear`` rounds
them. Two deviations, both within the autocast dtype's tolerance: the kernel keeps the gate
pre-activations in fp32 where torch rounds them to the autocast dtype, and the CPU GRU's h
enters its GEMM unrounded (the kernel reads one h for both of its uses).
Only fp32, fp16 and bf16 tensors are cast (autocast leaves float64 alone).
"""

import torch

_ELIGIBLE = (torch.float32, torch.float16, torch.bfloat16)


def _eligible(t):
    return t is not None and t.dtype in _ELIGIBLE


def output_dtype(mode, device_type, low, h, c):
    """The dtype torch's cell returns under autocast to ``low`` on ``device_type``."""
    if device_type == "cuda" or mode in ("RNN_TANH", "RNN_RELU"):
        return low
    state = c if mode == "LSTM" else h
    return torch.promote_types(low, state.dtype) if _eligible(state) else state.dtype


def cast(mode, device_type, x, h, c, w_ih, w_hh, b_ih, b_hh):
    """``(x, h, c, w_ih, w_hh, b_ih, b_hh)`` as the fused step should read them under the
    enabled autocast of ``device_type``; unchanged on devices other than CPU and CUDA."""
    if device_type not in ("cpu", "cuda"):
        return x, h, c, w_ih, w_hh, b_ih, b_hh
    low = torch.get_autocast_dtype(device_type)
    out = output_dtype(mode, device_type, low, h, c)

    def gemm_operand(t):      # rounded to the autocast dtype, as linear's inputs are
        return t.to(low).to(out) if _eligible(t) else t

    def state(t):             # enters the pointwise math in its own (promoted) dtype
        return t.to(out) if _eligible(t) else t

    h_cast = state(h) if (mode == "GRU" and device_type == "cpu") else gemm_operand(h)
    return (gemm_operand(x), h_cast, state(c), gemm_operand(w_ih), gemm_operand(w_hh),
            gemm_operand(b_ih), gemm_operand(b_hh))
