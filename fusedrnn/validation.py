"""Input checks that raise exactly what ``torch.nn.RNN/LSTM/GRU`` raise (type and text).

The texts are copied from ``torch/nn/modules/rnn.py`` (torch 2.11–2.13) and from ``_VF``'s
C++ checks (the zero-length sequence); ``tests/test_bad_input.py`` compares every one of them
with torch's own at run time, so a torch release that changes a message fails loudly.
"""

import torch


def check_input(input, batch_sizes, input_size, weight_dtype):
    if input.dtype != weight_dtype and not torch._C._is_any_autocast_enabled():
        raise ValueError(
            f"RNN input dtype ({input.dtype}) does not match weight dtype ({weight_dtype}). "
            f"Convert input: input.to({weight_dtype}), or convert model: model.to({input.dtype})"
        )
    expected_input_dim = 2 if batch_sizes is not None else 3
    if input.dim() != expected_input_dim:
        raise RuntimeError(f"input must have {expected_input_dim} dimensions, got {input.dim()}")
    if input_size != input.size(-1):
        raise RuntimeError(
            f"input.size(-1) must be equal to input_size. Expected {input_size}, got {input.size(-1)}"
        )


def check_hidden_size(hx, expected, msg="Expected hidden size {}, got {}"):
    if hx.size() != expected:
        raise RuntimeError(msg.format(expected, list(hx.size())))


def check_sequence_length(seq_len):
    if seq_len == 0:
        raise RuntimeError("Expected sequence length to be larger than 0 in RNN")


def check_state_tensors(input, states):
    """Device and dtype agreement of the initial states with the input.

    torch has no Python-level check for these; its kernels fail with messages that differ per
    device and cell (e.g. "get_mkldnn_dtype: unsupported data type" for a float32 ``h0`` with a
    float64 LSTM on CPU), and its CPU LSTM even casts a mismatched ``c0`` silently. We raise the
    type torch raises for ``h0``, RuntimeError, with one clear text, for every state.
    """
    for s in states:
        if s.device != input.device:
            raise RuntimeError(
                "Input and hidden tensors are not at the same device, found input tensor at "
                f"{input.device} and hidden tensor at {s.device}"
            )
        if s.dtype != input.dtype:
            raise RuntimeError(
                f"Input and hidden tensors must have the same dtype, got input {input.dtype} "
                f"and hidden {s.dtype}"
            )


def check_weights_device(input, weights):
    for w in weights:
        if w.device != input.device:
            raise RuntimeError(
                "Input and parameter tensors are not at the same device, found input tensor at "
                f"{input.device} and parameter tensor at {w.device}"
            )


def check_weights_dtype(weights):
    """One dtype for all of a stack's weights. torch checks only the first (its kernels then fail
    with device-dependent texts, RuntimeError on CPU); the kernels here would silently promote."""
    dtypes = {w.dtype for w in weights}
    if len(dtypes) > 1:
        raise RuntimeError(
            f"RNN weights must all have one dtype, got {', '.join(sorted(map(str, dtypes)))}"
        )


def check_zoneout(p):
    """zoneout is a probability, as dropout is (torch's dropout check, worded for zoneout)."""
    if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0 <= p <= 1:
        raise ValueError("zoneout should be a number in range [0, 1] representing the "
                         f"probability of an element of h keeping its previous value, got {p!r}")


def time_major_resets(resets, T, B, batch_first, is_batched, device):
    """``resets`` as a ``[T, B]`` bool tensor on ``device``, after checking it is a bool tensor of
    the input's layout: ``[T, B]``, ``[B, T]`` with ``batch_first``, ``[T]`` unbatched."""
    if not is_batched:
        want, name = (T,), "(T,)"
    elif batch_first:
        want, name = (B, T), "(B, T)"
    else:
        want, name = (T, B), "(T, B)"
    if not isinstance(resets, torch.Tensor) or resets.dtype != torch.bool:
        got = resets.dtype if isinstance(resets, torch.Tensor) else type(resets).__name__
        raise ValueError(f"resets must be a torch.bool tensor, got {got}")
    if tuple(resets.shape) != want:
        raise ValueError(f"resets must have shape {name} = {want} for this input, got "
                         f"{tuple(resets.shape)}")
    if not is_batched:
        resets = resets[:, None]
    elif batch_first:
        resets = resets.t()
    return resets.to(device)
