"""Host-side helpers shared by the step launchers: block sizes, dot mode, state operands."""

import os

import torch
import triton

from .interpreter_compat import ensure_interpreter_works

# Before any kernel launches: Triton < 3.8's interpreter needs a fix to run with NumPy >= 2.4.
INTERPRETER_FIXED = ensure_interpreter_works()

# Block-size rule: tl.dot needs every tile side ≥ 16 on NVIDIA GPUs; 16 rows cover the small
# batches recurrent models run at, 32 hidden units × 32-wide K chunks keep register use low.
# Untuned first rule (no GPU measurement yet); a benchmark must replace it.
BB, BH, BK = 16, 32, 32


def interpreting():
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def dot_mode(dtype, backward=False):
    """``(DOT_FP32, PRECISION)`` for the kernels' ``tl.dot``.

    fp32 operands under the interpreter (its bf16 dot is wrong) and for fp32 models, where
    TF32 is used exactly when cuDNN would use it (``cudnn.allow_tf32``). In fp16 *backward* the
    dot's left operand is a gate gradient, which rounded to fp16 can underflow (< 6e-8) or
    overflow (> 65504, reachable under GradScaler); it runs on fp32 operands with TF32 instead
    (same 10-bit mantissa, fp32's range; the fp16 weight converts exactly). bf16 has fp32's
    range, so its dots stay in bf16.
    """
    if interpreting():
        return True, "ieee"
    return compiled_dot_mode(dtype, backward, torch.backends.cudnn.allow_tf32)


def compiled_dot_mode(dtype, backward, allow_tf32):
    """``dot_mode`` on a GPU, with cuDNN's TF32 switch given (``aot_compile`` enumerates both)."""
    if dtype == torch.float32:
        return True, ("tf32" if allow_tf32 else "ieee")
    if dtype == torch.float16 and backward:
        return True, "tf32"
    return False, "ieee"


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
