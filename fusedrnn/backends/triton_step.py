"""Backend ``"triton-step"``: one fused Triton kernel launch per timestep, forward and backward.

Around the per-step kernels (``fusedrnn.kernels.triton.<cell>_step``) everything that is not
sequential is one large GEMM (DESIGN.md §4):

    before the loop   xproj = x W_ihᵀ + biases                    [T, B, D*G*H]
    after the loop    dx    = Σ_d dG_in[d] W_ih[d]                [T, B, In]
                      dW_ih = dG_inᵀ x      dW_hh = dG_hidᵀ h_prev    db = Σ_{t,b} dG

``dG_in``/``dG_hid`` are the gate pre-activation gradients seen by the input and the recurrent
product (the same tensor except for the GRU, whose reset gate scales the recurrent part of n).
Variable length: rows are sorted by length, so only the first ``n_active[s]`` rows are
launched at step s, and padded positions of dG stay zero so the GEMMs ignore them.

Saved for backward (the op's workspace): the cell's fp32 activations ``[D, T, B, W*H]``
(LSTM: i f g o c; GRU: r z n and the recurrent part of n; RNN: none, h is read back from y).
With an LSTM projection the per-step ∂L/∂h is kept too, for ``dW_hr = Σ dhᵀ (o ⊙ tanh c)``.
"""

import torch

from ..allocation import new_empty
from ..layer_config import GATES

_SUPPORTED_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def _step_kernels(mode):
    # Imported on first use: the Triton modules must be imported after TRITON_INTERPRET is set.
    from ..kernels.triton import gru_step, lstm_step, rnn_step

    return {"LSTM": lstm_step, "GRU": gru_step, "RNN_TANH": rnn_step.TANH, "RNN_RELU": rnn_step.RELU}[mode]


def _lengths(lengths, T, B, device):
    """Device lengths ``[B]`` int64 and the host list ``n_active[s]`` of rows running at step s."""
    if lengths is None:
        return torch.full((B,), T, dtype=torch.int64, device=device), [B] * T
    n_active = (lengths[None, :] > torch.arange(T)[:, None]).sum(1).tolist()
    return lengths.to(device=device, dtype=torch.int64), n_active


def _last_times(lens, d):
    """Time index of each row's last processed step in direction ``d`` (forward order)."""
    return lens - 1 if d == 0 else torch.zeros_like(lens)


def _first_times(lens, d):
    return torch.zeros_like(lens) if d == 0 else lens - 1


def _h_prev_sequence(y_d, h0_d, lens, d):
    """``[T, B, Hr]``: the hidden state each step of direction ``d`` started from."""
    T = y_d.shape[0]
    if d == 0:
        return torch.cat([h0_d[None], y_d[:-1]])
    t = torch.arange(T, device=lens.device)[:, None]
    shifted = torch.cat([y_d[1:], torch.zeros_like(y_d[:1])])
    return torch.where((t + 1 < lens[None, :])[..., None], shifted, h0_d[None])


class TritonStepBackend:
    name = "triton-step"

    def _kernels(self, mode):
        """The cell's kernel module: ``forward``/``backward`` launchers over the whole sequence,
        ``split_biases``, ``GATES``, ``WORKSPACE_COLUMNS``."""
        return _step_kernels(mode)

    def _variant_kernels(self, mode):
        """The cell's variant kernel module (``kernels/triton/variants/<cell>_step.py``), driven
        by the shared host :mod:`.triton_variant`; the persistent backend overrides this."""
        from .triton_variant import variant_kernels

        return variant_kernels(mode, "step")

    def unsupported_reason(self, cfg, x, weights):
        from ..kernels.triton.launch_common import interpreting

        if x.device.type != "cuda" and not interpreting():
            return "it needs CUDA tensors (CPU tensors only under TRITON_INTERPRET=1)"
        if x.dtype not in _SUPPORTED_DTYPES:
            return f"dtype {x.dtype} is not supported (float32, float16, bfloat16)"
        if cfg.is_variant and cfg.has_proj:
            return ("its variant kernels (resets, zoneout) have no LSTM projection "
                    "(proj_size > 0); use backend='torch'")
        # Activation and gradient offsets are int64 in the kernels; offsets *within* one
        # direction's W_hh / W_hr stay int32, which caps G*H*Hr below 2³¹ (H ≈ 23k for an LSTM).
        H, Hr = cfg.hidden_sizes(weights)
        if max(cfg.gates * H * Hr, Hr * H) >= 2**31:
            return f"a recurrent weight with {cfg.gates * H * Hr} elements exceeds int32 offsets"
        # The variant row kernels index one step's [B, G*H] recurrent product with int32 row
        # offsets (o_b * G*H).
        if cfg.is_variant and x.shape[1] * cfg.gates * H >= 2**31:
            return (f"one step's recurrent product of {x.shape[1]} rows x {cfg.gates * H} "
                    "exceeds int32 offsets in the variant kernels")
        return None

    def workspace_spec(self, cfg, x, hidden_size):
        if cfg.is_variant:
            from . import triton_variant

            return triton_variant.workspace_spec(cfg, x, hidden_size)
        T, B, _ = x.shape
        cols = self._kernels(cfg.mode).WORKSPACE_COLUMNS
        shape = (cfg.directions, T, B, cols * hidden_size) if cols else (0,)
        return shape, torch.float32

    def forward(self, cfg, x, lengths, h0, c0, weights, starts=None, keep=None):
        if cfg.is_variant:
            from . import triton_variant

            return triton_variant.forward(self._variant_kernels(cfg.mode), cfg, x, lengths, h0,
                                          c0, weights, starts, keep)
        kern = self._kernels(cfg.mode)
        T, B, In = x.shape
        D, G = cfg.directions, GATES[cfg.mode]
        dirs = cfg.split_weights(weights)
        H, Hr = cfg.hidden_sizes(weights)
        w_ih = torch.cat([p["w_ih"] for p in dirs])                               # [D*G*H, In]
        w_hh = torch.stack([p["w_hh"] for p in dirs]).contiguous()               # [D, G*H, Hr]
        xbias, b_hh_kernel = kern.split_biases(dirs, H) if cfg.has_bias else (None, None)
        xproj = torch.addmm(xbias, x.reshape(T * B, In), w_ih.t()) if xbias is not None \
            else x.reshape(T * B, In) @ w_ih.t()
        lens, n_active = _lengths(lengths, T, B, x.device)
        y = new_empty((T, B, D * Hr), dtype=x.dtype, device=x.device)
        ws_shape, ws_dtype = self.workspace_spec(cfg, x, H)
        # Padded positions are never written but enter the after-loop GEMMs (0 · garbage
        # would be NaN when the garbage is NaN or inf), so they start at zero.
        ws = (torch.zeros if lengths is not None else new_empty)(ws_shape, dtype=ws_dtype,
                                                                 device=x.device)
        kern.forward(xproj.view(T, B, D * G * H), w_hh, b_hh_kernel, h0, c0, lens, n_active, y, ws,
                     **_projection(cfg, dirs))
        if lengths is not None:
            padded = torch.arange(T, device=x.device)[:, None] >= lens[None, :]
            y.masked_fill_(padded[..., None], 0)
        rows = torch.arange(B, device=x.device)
        h_n = torch.stack([y[_last_times(lens, d), rows, d * Hr:(d + 1) * Hr] for d in range(D)])
        if cfg.has_cell_state:
            c_n = torch.stack([ws[d, _last_times(lens, d), rows, 4 * H:] for d in range(D)]).to(x.dtype)
        else:
            c_n = x.new_empty(0)
        return y, h_n.contiguous(), c_n, ws

    def backward(self, cfg, x, lengths, h0, c0, weights, y, workspace, dy, dh_n, dc_n,
                 starts=None, keep=None):
        if cfg.is_variant:
            from . import triton_variant

            return triton_variant.backward(self._variant_kernels(cfg.mode), cfg, x, lengths, h0,
                                           c0, weights, y, workspace, dy, dh_n, dc_n, starts,
                                           keep)
        kern = self._kernels(cfg.mode)
        T, B, In = x.shape
        D, G = cfg.directions, GATES[cfg.mode]
        dirs = cfg.split_weights(weights)
        H, Hr = cfg.hidden_sizes(weights)
        w_hh = torch.stack([p["w_hh"] for p in dirs]).contiguous()
        lens, n_active = _lengths(lengths, T, B, x.device)
        # Padded positions of dG must be zero for the GEMMs below; dense input writes all.
        alloc = (lambda shape: torch.zeros(shape, dtype=torch.float32, device=x.device)) \
            if lengths is not None else \
            (lambda shape: new_empty(shape, dtype=torch.float32, device=x.device))
        g = kern.backward(dy, dh_n, dc_n, w_hh, workspace, y, h0, c0, lens, n_active, alloc,
                          **_projection(cfg, dirs))
        dg_in = g["dg_in"].view(D, T * B, G * H)
        dg_hid = g["dg_hid"].view(D, T * B, G * H)

        x2 = x.reshape(T * B, In).float()
        w_ih = torch.stack([p["w_ih"] for p in dirs]).float()                    # [D, G*H, In]
        dx = torch.bmm(dg_in, w_ih).sum(0).view(T, B, In)
        rows = torch.arange(B, device=x.device)
        dweights = []
        dh0 = []
        for d in range(D):
            h_prev = _h_prev_sequence(y[..., d * Hr:(d + 1) * Hr], h0[d], lens, d)
            grads = {
                "w_ih": dg_in[d].t() @ x2,
                "w_hh": dg_hid[d].t() @ h_prev.reshape(T * B, Hr).float(),
                "b_ih": dg_in[d].sum(0),
                "b_hh": dg_hid[d].sum(0),
            }
            if cfg.has_proj:   # dW_hr = Σ dhᵀ (o ⊙ tanh c)
                m = workspace[d, ..., 3 * H:4 * H] * torch.tanh(workspace[d, ..., 4 * H:])
                grads["w_hr"] = g["dh_proj"][d].reshape(T * B, Hr).t() @ m.reshape(T * B, H)
            dweights += [grads[k].to(w.dtype) for k, w in dirs[d].items()]
            first = g["dg_hid"][d, _first_times(lens, d), rows]                   # [B, G*H]
            dh0_d = first @ w_hh[d].float()
            if g.get("dh_carry") is not None:
                dh0_d = dh0_d + g["dh_carry"][d]
            dh0.append(dh0_d)
        dh0 = torch.stack(dh0).to(h0.dtype)
        dc0 = g["dc"].to(c0.dtype) if cfg.has_cell_state else x.new_empty(0)
        return dx.to(x.dtype), dh0, dc0, dweights


def _projection(cfg, dirs):
    return {"w_hr": torch.stack([p["w_hr"] for p in dirs]).contiguous()} if cfg.has_proj else {}

