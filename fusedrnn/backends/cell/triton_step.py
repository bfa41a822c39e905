"""Cell backend ``"triton-step"``: one fused Triton launch per step forward, one for the gate
part of backward (``fusedrnn.kernels.triton.cell_step``); the rest of backward is GEMMs:

    dx    = dG_in W_ih               dh_prev = dG_hid W_hh (+ dh' z for the GRU)
    dW_ih = dG_inᵀ x                 dW_hh   = dG_hidᵀ h
    db_ih = Σ_b dG_in                db_hh   = Σ_b dG_hid

on :func:`_operand_dtype` operands with fp32 accumulation, cast to each input's dtype at the
end. Nothing here reads a device value back to the host, so a loop of steps can be captured in
a CUDA graph.
"""

import torch

from ...allocation import new_empty

_SUPPORTED_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def _kernels():
    # Imported on first use: the Triton modules must be imported after TRITON_INTERPRET is set.
    from ...kernels.triton import cell_step

    return cell_step


def _operand_dtype(dtype):
    """The GEMM operand dtype for a model in ``dtype``. fp32 stays fp32. bf16 has fp32's range,
    so the fp32 gate gradients round to bf16 and the GEMMs read the bf16 weights as they are
    (converting W_ih and W_hh to fp32 every step would move 3x their bytes). fp16 gate
    gradients could underflow (< 6e-8) or overflow (> 65504 under GradScaler), as in
    ``launch_common.dot_mode``: fp16 models pay for fp32 operands."""
    return torch.bfloat16 if dtype == torch.bfloat16 else torch.float32


def _alloc(device):
    return lambda shape, dtype: new_empty(shape, dtype=dtype, device=device)


class CellTritonStepBackend:
    name = "triton-step"

    def unsupported_reason(self, mode, x):
        from ...kernels.triton.launch_common import interpreting

        if x.device.type != "cuda" and not interpreting():
            return "it needs CUDA tensors (CPU tensors only under TRITON_INTERPRET=1)"
        if x.dtype not in _SUPPORTED_DTYPES:
            return f"dtype {x.dtype} is not supported (float32, float16, bfloat16)"
        return None

    def workspace_spec(self, mode, x, hidden_size, save):
        if not save:
            return (0,), torch.float32
        cols = _kernels().WORKSPACE_COLUMNS[mode]
        return (x.shape[0], cols * hidden_size), torch.float32

    def forward(self, mode, x, h, c, w_ih, w_hh, b_ih, b_hh, save):
        kern = _kernels()
        B, H = h.shape
        alloc = _alloc(x.device)
        h_out = alloc((B, H), h.dtype)
        c_out = alloc((B, H), c.dtype) if c is not None else x.new_empty(0)
        shape, dtype = self.workspace_spec(mode, x, H, save)
        ws = alloc(shape, dtype)
        kern.forward(mode, x, h, c, w_ih, w_hh, b_ih, b_hh, h_out, c_out, ws if save else None)
        return h_out, c_out, ws

    def backward(self, mode, x, h, c, w_ih, w_hh, b_ih, b_hh, workspace, dh, dc, needs):
        need_x, need_h, _, need_w_ih, need_w_hh, need_b_ih, need_b_hh = needs
        dg_in, dg_hid, bypass = _kernels().backward_gates(mode, workspace, h, c, dh, dc,
                                                          _alloc(x.device))
        op = _operand_dtype(x.dtype)
        g_in = dg_in.to(op)                                                       # [B, G*H]
        g_hid = g_in if dg_hid is dg_in else dg_hid.to(op)
        empty = x.new_empty(0)
        # Only the GEMMs of wanted gradients run (frozen weights, an input that needs none).
        dx = (g_in @ w_ih.to(op)).to(x.dtype) if need_x else empty                # [B, In]
        if need_h:
            dh_prev = g_hid @ w_hh.to(op)                                         # [B, H]
            if mode == "GRU":
                dh_prev = dh_prev.float() + bypass
            dh_prev = dh_prev.to(h.dtype)
        else:
            dh_prev = empty
        return (dx, dh_prev,
                bypass if mode == "LSTM" else empty,
                (g_in.t() @ x.to(op)).to(w_ih.dtype) if need_w_ih else empty,
                (g_hid.t() @ h.to(op)).to(w_hh.dtype) if need_w_hh else empty,
                dg_in.sum(0).to(b_ih.dtype) if need_b_ih else empty,
                dg_hid.sum(0).to(b_hh.dtype) if need_b_hh else empty)
