"""Host-side pieces shared by the ``cupy-step`` launchers (``kernels/cuda/<cell>_step.py``).

The haste-style step: per timestep one cuBLAS GEMM for the recurrent product (``torch.bmm`` on
torch's current stream, both directions in one batched call) and one CUDA C pointwise kernel
(launched by :mod:`.loader` on the same stream, so the two are ordered without any sync).

Why the per-step *state buffers* (``[D, B, width]``, contiguous): rows of the reverse direction
sit at different times at the same step (row b at ``len_b - 1 - s``), so "the previous h of the
active rows" is not a strided slice of y. The pointwise kernel writes it (and, in backward, the
step's dG) to a buffer indexed by row; the next GEMM reads ``buffer[:, :n]``, the active rows
being a prefix of the length-sorted batch. Both directions have the same active rows at every
step (row b runs steps ``0 … len_b - 1`` in either direction), so one ``bmm`` serves both.
"""

import numpy
import torch

from . import loader

# Threads per block of the pointwise kernels (one thread per (row, unit) of a direction): a
# multiple of the 32-thread warp, and the usual choice for memory-bound elementwise kernels.
# A first rule, not yet measured on a GPU: each step moves only B*G*H elements, so launch
# latency, not this choice, is expected to dominate.
BLOCK = 256

# Tests set this: scratch buffers then start as NaN, so a kernel or GEMM reading an element no
# step wrote fails loudly (as fusedrnn.allocation.POISON does for the outputs).
POISON = False


def ints(*values):
    """The kernels' ``int`` parameters (CuPy passes numpy.int32 as 4 bytes)."""
    return tuple(numpy.int32(v) for v in values)


def flag(value):
    """A kernel ``bool`` parameter (1 byte)."""
    return numpy.bool_(bool(value))


def launch_rows(fn, n, width, D, args):
    """Launch ``fn`` with one thread per (row < n, unit < width), ``blockIdx.y`` = direction."""
    loader.launch(fn, ((n * width + BLOCK - 1) // BLOCK, D), (BLOCK,), args)


def empty(shape, dtype, device):
    """An uninitialised buffer (NaN-filled under ``POISON``)."""
    if POISON and dtype.is_floating_point:
        return torch.full(shape, float("nan"), dtype=dtype, device=device)
    return torch.empty(shape, dtype=dtype, device=device)


def scratch(D, rows, width, device):
    """A flat fp32 buffer large enough for any ``[D, rows' ≤ rows, width]`` GEMM output."""
    return empty((D * rows * width,), torch.float32, device)


def product(a, w, buf):
    """``a [D, rows, K] @ w [D, K, N]`` → ``[D, rows, N]`` fp32, a contiguous view of ``buf``.

    fp16/bf16 operands run on tensor cores with fp32 accumulation *and* an fp32 result
    (``torch.bmm(..., out_dtype=torch.float32)``), so the gate math sees the unrounded product,
    as in the Triton step kernels. fp32 operands follow torch's fp32 matmul setting
    (``torch.backends.cuda.matmul.allow_tf32``, IEEE by default).
    """
    D, rows, _ = a.shape
    N = w.shape[2]
    out = buf[:D * rows * N].view(D, rows, N)
    if rows == 0:
        return out
    if a.dtype == torch.float32 and w.dtype == torch.float32:
        torch.bmm(a, w, out=out)
    else:
        torch.bmm(a, w, torch.float32, out=out)
    return out


def rows_after(n_active, s):
    """Rows that have a step after s (their dG at s+1 feeds step s's recurrent gradient)."""
    return n_active[s + 1] if s + 1 < len(n_active) else 0


def model_dtype(*tensors, dtype):
    """``tensors`` in the model dtype, contiguous (no copy when they already are)."""
    return [t.to(dtype).contiguous() for t in tensors]
