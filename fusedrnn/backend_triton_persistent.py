"""Backend ``"triton-persistent"``: one Triton launch per layer and direction for the whole
sequence, recurrent weights and state held in registers (the batch-tiled form; see
``fusedrnn.kernels.triton.persistent_common``).

Everything around the kernels — input projection, workspace and gradient layouts, the GEMMs
after the loop, h_n/c_n — is shared with ``"triton-step"``; only the kernels differ.
"""

from .backend_triton_step import TritonStepBackend


def _persistent_kernels(mode):
    # Imported on first use: the Triton modules must be imported after TRITON_INTERPRET is set.
    from .kernels.triton import gru_persistent, lstm_persistent, rnn_persistent

    return {"LSTM": lstm_persistent, "GRU": gru_persistent, "RNN_TANH": rnn_persistent.TANH,
            "RNN_RELU": rnn_persistent.RELU}[mode]


class TritonPersistentBackend(TritonStepBackend):
    name = "triton-persistent"

    def _kernels(self, mode):
        return _persistent_kernels(mode)

    def unsupported_reason(self, cfg, x, weights):
        reason = super().unsupported_reason(cfg, x, weights)
        if reason is not None:
            return reason
        kern = self._kernels(cfg.mode)
        if cfg.has_proj:
            return "LSTM projections (proj_size > 0) have no persistent kernel yet"
        from .kernels.triton.persistent_common import dot_key

        H, _ = cfg.hidden_sizes(weights)
        key = dot_key(x.dtype)
        if H > kern.MAX_HIDDEN[key]:
            return (f"hidden_size {H} exceeds the register-resident limit {kern.MAX_HIDDEN[key]} "
                    f"of the batch-tiled form for {key} dots (the hidden-split form is not "
                    f"built yet)")
        return None
