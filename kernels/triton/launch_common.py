"""Host-side helpers shared by the step launchers: block sizes, dot mode, state operands."""

import os

import torch
import triton

# Block-size rule: tl.dot needs every tile side ≥ 16 on NVIDIA GPUs; 16 rows cover the small
# batches recurrent models run at, 32 hidden units × 32-wide K chunks keep register use low.
# Untuned first rule (no GPU measurement yet); a benchmark must replace it.
BB, BH, BK = 16, 32, 32


def interpreting():
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def dot_mode(dtype):
    """``(DOT_FP32, PRECISION)``: fp32 operands under the interpreter (its bf16 dot is wrong) and
    for fp32 models; fp32 dots use TF32 exactly when cuDNN would (``cudnn.allow_tf32``)."""
    fp32 = interpreting() or dtype == torch.float32
    tf32 = dtype == torch.float32 and torch.backends.cudnn.allow_tf32 and not interpreting()
    return fp32, ("tf32" if tf32 else "ieee")


def state_operand(initial, sequence, s, D, B, width, column_offset=0, row_width=None):
    """Pointer tensor and (direction, time, row) strides of "the state before step s".

    ``initial [D, B, width]`` at s = 0 (time stride 0); otherwise ``sequence`` laid out
    ``[T, B, D*width]`` (row_width None) or ``[D, T, B, row_width]`` (a workspace column block
    starting at ``column_offset``).
    """
    if s == 0:
        return initial, B * width, 0, width
    if row_width is None:
        return sequence, width, B * D * width, D * width
    T = sequence.shape[1]
    return sequence[..., column_offset:], T * B * row_width, B * row_width, row_width


def grid(n_active, H, D):
    return (triton.cdiv(n_active, BB), triton.cdiv(H, BH), D)
