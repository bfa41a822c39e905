"""Backend ``"torch"``: torch's own recurrent implementation (``_VF.lstm`` and friends).

Runs on any device and is the CPU default. In eager mode :func:`run_stack` calls ``_VF`` for
the whole stack as ``torch.nn`` does, and torch's autograd differentiates it. Under
``torch.compile`` or a ``torch.func`` transform each layer goes through the
``fusedrnn::layer_forward`` custom op instead (inductor cannot compile ``_VF.lstm`` on CPU), and
there the backward re-runs the forward under ``torch.func.vjp``, since nothing of torch's
autograd graph can cross the op boundary: ``_VF`` itself for padded input, the composite layer
(:mod:`fusedrnn.ops.composite`) for variable-length input, whose packed ``_VF`` path reads raw
data pointers that functorch's wrapped tensors do not have.
"""

import warnings

import torch
from torch import _VF
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

from ..ops import composite

_VF_FN = {"LSTM": _VF.lstm, "GRU": _VF.gru, "RNN_TANH": _VF.rnn_tanh, "RNN_RELU": _VF.rnn_relu}


def training_kernels(training, tensors):
    """The ``train`` flag handed to ``_VF``: the eval-mode backward routing rule.

    ``train`` only matters to cuDNN, whose backward needs the reserve space of its training-mode
    forward and otherwise refuses ("cudnn RNN backward can only be called in training mode").
    torch.nn passes ``module.training``; fusedrnn passes True also in eval mode whenever autograd
    will differentiate the call (grad mode on and any input requiring grad), so eval-mode
    backward (adversarial examples, Captum attributions) works. Dropout is decided separately
    (zero in eval mode), so the numbers are the eval-mode ones either way.
    """
    return training or (torch.is_grad_enabled() and any(t.requires_grad for t in tensors))


def can_pass_through():
    """Whether a stack on backend "torch" may call ``_VF`` directly (:func:`run_stack`): eager
    mode outside any ``torch.func`` transform. Under ``torch.compile``/``torch.export`` the
    layers go through the custom op; under a transform, through its ``autograd.Function`` (no
    batching rule exists for ``_VF.lstm``)."""
    return not torch.compiler.is_compiling() and torch._C._functorch.peek_interpreter_stack() is None


def run_stack(mode, input, batch_sizes, states, weights, *, num_layers, bias, batch_first,
              dropout, training, bidirectional):
    """The whole stack through torch's own ``_VF`` entry point, exactly as ``torch.nn`` calls it.

    ``input`` is what ``torch.nn``'s ``forward`` hands ``_VF``: the packed data [N, In] with
    ``batch_sizes``, or the (possibly batch-first) 3-D input; ``states`` are ``[h0]`` or
    ``[h0, c0]`` [L*D, B, ·], already permuted to the packed order. Returns ``(output,
    [h_n] or [h_n, c_n])`` with ``output`` in ``input``'s layout. Autocast, when on, is applied by
    ``_VF`` itself, as for ``torch.nn``.
    """
    fn = _VF_FN[mode]
    hx = (states[0], states[1]) if mode == "LSTM" else states[0]
    train = training_kernels(training, [input, *states, *weights])
    p = dropout if training else 0.0
    if batch_sizes is not None:
        out = fn(input, batch_sizes, hx, weights, bias, num_layers, p, train, bidirectional)
    else:
        out = fn(input, hx, weights, bias, num_layers, p, train, bidirectional, batch_first)
    return out[0], list(out[1:])


def run(cfg, x, lengths, h0, c0, weights):
    """One layer, both directions; differentiable. Returns ``(y, h_n, c_n or None)``.

    ``lengths`` (CPU int64, non-increasing) turns the padded input into torch's packed form so
    the reverse direction starts at each sequence's own end.
    """
    fn = _VF_FN[cfg.mode]
    hx = (h0, c0) if cfg.has_cell_state else h0
    # Dropout between layers is applied by the caller, so _VF's own dropout stays 0; `train`
    # follows the eval-mode backward routing rule (training_kernels), with the module's
    # training mode unknown here and so taken as False.
    train = training_kernels(False, [x, h0, *([c0] if c0 is not None else []), *weights])
    flags = (cfg.has_bias, 1, 0.0, train, cfg.bidirectional)
    if lengths is None:
        out = fn(x, hx, weights, *flags, False)
        y = out[0]
    else:
        packed = pack_padded_sequence(x, lengths, enforce_sorted=True)
        out = fn(packed.data, packed.batch_sizes, hx, weights, *flags)
        y, _ = pad_packed_sequence(PackedSequence(out[0], packed.batch_sizes), total_length=x.shape[0])
    c_n = out[2] if cfg.has_cell_state else None
    return y, out[1], c_n


class TorchBackend:
    name = "torch"

    def unsupported_reason(self, cfg, x, weights):
        return None

    def workspace_spec(self, cfg, x, hidden_size):
        return (0,), x.dtype

    def forward(self, cfg, x, lengths, h0, c0, weights, starts=None, keep=None):
        with torch.no_grad():
            if cfg.is_variant:   # no _VF form: the composite is the "torch" variant layer
                y, h_n, c_n = composite.layer(cfg, x, lengths, h0, c0, weights, starts, keep)
            else:
                y, h_n, c_n = run(cfg, x, lengths, h0, c0, weights)
        return y, h_n, (c_n if c_n is not None else x.new_empty(0)), x.new_empty(0)

    def backward(self, cfg, x, lengths, h0, c0, weights, y, workspace, dy, dh_n, dc_n,
                 starts=None, keep=None):
        # torch.func.vjp rather than torch.autograd.grad: inside a custom op's kernel the
        # autograd dispatch keys are excluded, but functorch's transform still records.
        if cfg.is_variant:
            def layer_fn(cfg, x, lengths, h0, c0, weights):
                return composite.layer(cfg, x, lengths, h0, c0, weights, starts, keep)
        else:
            layer_fn = run if lengths is None else composite.layer

        def layer(x, h0, weights, *c0):
            y, h_n, c_n = layer_fn(cfg, x, lengths, h0, c0[0] if c0 else None, weights)
            return (y, h_n, c_n) if cfg.has_cell_state else (y, h_n)

        primals = (x, h0, list(weights)) + ((c0,) if cfg.has_cell_state else ())
        # oneDNN's CPU RNN keeps a byte workspace that functorch cannot wrap
        # ("expected scalar type Byte"); torch's composite CPU path differentiates fine.
        with warnings.catch_warnings():
            # Toggling the oneDNN flags warns about Intel-GPU TF32 on every CPU build.
            warnings.filterwarnings("ignore", message="TF32 acceleration on top of oneDNN")
            with torch.backends.mkldnn.flags(enabled=False):
                outs, vjp = torch.func.vjp(layer, *primals)
        cotangents = (dy, dh_n, dc_n) if cfg.has_cell_state else (dy, dh_n)
        dx, dh0, dweights, *dc0 = vjp(tuple(c.to(o.dtype) for c, o in zip(cotangents, outs)))
        return dx, dh0, (dc0[0] if dc0 else x.new_empty(0)), list(dweights)
