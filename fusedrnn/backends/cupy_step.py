"""Backend ``"cupy-step"``: the haste-style baseline. Per timestep one cuBLAS GEMM for the
recurrent product (``torch.bmm``, both directions batched) and one fused CUDA C pointwise kernel
(launched through CuPy on torch's current stream) that adds the projected input, applies the
cell and writes y, the state and the fp32 workspace; backward likewise in reverse time.

Everything around the per-step loop — input projection, workspace and gradient layouts, the
GEMMs after the loop, h_n/c_n — is ``"triton-step"``'s host code, reused unchanged; only the
kernel modules differ (``fusedrnn.kernels.cuda.<cell>_step``). LSTM projections are supported
(two more GEMMs and one small kernel per step).

Numerics: fp16/bf16 GEMMs on tensor cores with fp32 accumulation and an fp32 result. fp32 GEMMs
are cuBLAS's through ``torch.bmm`` and so follow ``torch.backends.cuda.matmul.allow_tf32``
(default False: full fp32), *not* ``torch.backends.cudnn.allow_tf32`` as DESIGN §4 says of the
fused Triton kernels: cuBLAS takes its setting from the matmul flag, and flipping a global flag
per call is not this backend's to do. The pointwise kernels compute in fp32 with denormals
flushed to zero (CuPy compiles with ``-ftz=true``, ``loader.CUPY_OPTIONS``); LSTM c stays fp32.

Needs CuPy (``pip install "fusedrnn[cuda13]"`` or ``"fusedrnn[cuda12]"``, which bring CuPy's
``[ctk]`` extra: NVRTC and the CUDA headers the kernels include): without it,
``unsupported_reason`` says so (so ``"auto"`` can fall back and an explicit request raises
``ValueError`` naming the extra), and asking for the kernels raises ``ImportError`` naming it.
CuPy is imported only when this backend runs, never by ``import fusedrnn``.
"""

import importlib.util

import torch

from .triton_step import TritonStepBackend

_SUPPORTED_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def _step_modules(mode):
    from ..kernels.cuda import gru_step, lstm_step, rnn_step

    return {"LSTM": lstm_step, "GRU": gru_step, "RNN_TANH": rnn_step.TANH,
            "RNN_RELU": rnn_step.RELU}[mode]


class CupyStepBackend(TritonStepBackend):
    name = "cupy-step"

    def _kernels(self, mode):
        from ..kernels.cuda.loader import require_cupy

        require_cupy(self.name)             # ImportError with the install hint, naming us
        return _step_modules(mode)

    def workspace_spec(self, cfg, x, hidden_size):
        # Shapes only (also used by the op's fake implementation): no CuPy needed for them.
        T, B, _ = x.shape
        cols = _step_modules(cfg.mode).WORKSPACE_COLUMNS
        shape = (cfg.directions, T, B, cols * hidden_size) if cols else (0,)
        return shape, torch.float32

    def unsupported_reason(self, cfg, x, weights):
        # Not TritonStepBackend's: that one accepts CPU tensors under TRITON_INTERPRET.
        if cfg.is_variant:   # optional in issue 14, not built: the Triton backends run them
            return "LayerNorm cells, zoneout and resets have no CUDA C kernels (use a Triton backend)"
        if x.device.type != "cuda":
            return "it needs CUDA tensors (CUDA C kernels launched through CuPy)"
        if x.dtype not in _SUPPORTED_DTYPES:
            return f"dtype {x.dtype} is not supported (float32, float16, bfloat16)"
        if importlib.util.find_spec("cupy") is None:     # finds, does not import
            from ..kernels.cuda.loader import INSTALL_HINT
            return f"CuPy is not installed; install it with: {INSTALL_HINT}"
        # Sizes reach the kernels as 32-bit ``int`` parameters (every offset built from them is
        # int64 inside); the grid covers n*H elements per direction with 64-bit indices.
        H, Hr = cfg.hidden_sizes(weights)
        T, B = x.shape[0], x.shape[1]
        largest = max(T, B, cfg.gates * H, Hr)
        if largest >= 2**31:
            return f"a size of {largest} exceeds the kernels' 32-bit int parameters"
        return None
