"""Backend ``"cupy-persistent"``: CUDA C cooperative kernels launched through CuPy, one launch per
layer (both directions) for the whole sequence, forward and backward; W_hh stays in shared
memory, blocks meet at ``cooperative_groups::this_grid().sync()`` once per step.

Kernels: ``fusedrnn/kernels/cuda/<cell>_persistent.cu`` (shared machinery in
``persistent_common.cuh``, launch plan and limits in ``persistent_launch.py``). Everything around
them — the input projection, the workspace and gradient layouts, the GEMMs after the loop,
h_n/c_n — is ``"triton-step"``'s (this class only swaps the kernel module), so the host side of
all three fused backends is one piece of code.

Numerics: fp16/bf16 products on tensor cores (wmma m16n16k16) with fp32 accumulation; fp16
backward and all fp32 products on the FMA units in fp32 — IEEE with denormals flushed to zero,
because CuPy compiles every kernel with ``-ftz=true`` (``loader.CUPY_OPTIONS``). fp32 does not
follow ``torch.backends.cudnn.allow_tf32``: full fp32 products are never less exact than cuDNN's,
and the FMA path is not where this backend is fast (fp32 models are better served by the Triton
backends' TF32 dots). LSTM c stays fp32; the K split of the block GEMMs is summed in a fixed
order and nothing uses atomics, so results are bitwise reproducible run to run.

Limits: no LSTM projection; the hidden size and batch must fit in shared memory, see the table
in ``persistent_launch`` (e.g. bf16 LSTM H ≤ 1600 at B = 64, one direction, on an H100/H200); the
whole grid must be resident at once (``persistent_launch.residency_reason``). Needs CuPy (the
extras ``fusedrnn[cuda13]`` / ``[cuda12]``); CuPy before 14.2 also needs the CUDA toolkit's
``libcudadevrt.a`` (``loader.cooperative_build_problem``). Each is an ``unsupported_reason``.
"""

import importlib.util

import torch

from .triton_step import TritonStepBackend

_SUPPORTED_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def _cupy_missing():
    return importlib.util.find_spec("cupy") is None


def _launch():
    # Imported on first use, like the other kernel families (no CuPy import at fusedrnn import).
    from ..kernels.cuda import persistent_launch

    return persistent_launch


class CupyPersistentBackend(TritonStepBackend):
    name = "cupy-persistent"

    def _kernels(self, mode):
        return _launch().kernels(mode)

    def unsupported_reason(self, cfg, x, weights):
        if cfg.is_variant:   # optional in issue 14, not built: the Triton backends run them
            return "LayerNorm cells, zoneout and resets have no CUDA C kernels (use a Triton backend)"
        if x.device.type != "cuda":
            return "it needs CUDA tensors (the CuPy kernels have no CPU or interpreter mode)"
        if x.dtype not in _SUPPORTED_DTYPES:
            return f"dtype {x.dtype} is not supported (float32, float16, bfloat16)"
        if cfg.has_proj:
            return "LSTM projections (proj_size > 0) have no persistent CUDA kernel"
        from ..kernels.cuda import loader

        if _cupy_missing():
            return f"CuPy is not installed; install it with: {loader.INSTALL_HINT}"
        problem = loader.cooperative_build_problem()
        if problem is not None:
            return problem
        launch = _launch()
        H, _ = cfg.hidden_sizes(weights)
        B = x.shape[1]
        sms, smem = launch.device_limits(x.device)
        reason = launch.limit_reason(cfg.mode, H, B, cfg.directions, x.dtype, sms, smem)
        if reason is not None:
            return reason
        # The backward kernel is compiled and checked only when autograd will run it.
        needs_grad = torch.is_grad_enabled() and any(t.requires_grad for t in (x, *weights))
        return launch.residency_reason(cfg.mode, H, B, cfg.directions, x.dtype, x.device,
                                       backward=needs_grad)
