"""The one-layer op every backend sits behind: ``torch.ops.fusedrnn.layer_forward``.

Registered with ``torch.library.custom_op`` so that ``torch.compile(fullgraph=True)`` sees one
opaque node per layer (with a fake implementation for shapes) and autograd calls the backend's
own backward (``register_autograd``), which is itself the op ``layer_backward``.

Contract of one call (D directions, H cell width, Hr = P with a projection, else H):

    x        [T, B, In]   padded, time-major
    lengths  [B] int64 on the CPU, non-increasing, or None (every sequence has T steps)
    h0       [D, B, Hr]   c0 [D, B, H] for the LSTM, else None
    weights  the layer's flat weights (see :mod:`fusedrnn.layer_config`)
  returns
    y        [T, B, D*Hr] zero at padded positions
    h_n      [D, B, Hr]   state after each sequence's own last step
    c_n      [D, B, H]    (an empty tensor for cells without a cell state)
    workspace             whatever the backend saves for backward (shape and dtype
                          from ``backend.workspace_spec``; empty for backends that recompute)

Saved for backward (the autograd contract): the inputs ``x, lengths, h0, c0, weights`` and the
outputs ``y`` and ``workspace``; nothing else. Gradients are returned for ``x``, ``h0``, ``c0``
and every weight.

``layer_backward`` is differentiable too (any order): its autograd formula differentiates the
composite torch-ops layer (:mod:`fusedrnn.ops.second_order`), the same for every backend. Both ops
have batching rules for ``torch.func.vmap`` (:mod:`fusedrnn.ops.layer_vmap`). In eager mode
:func:`run_layer` calls the ops through ``torch.autograd.Function`` twins with
``setup_context`` (:mod:`fusedrnn.ops.layer_autograd`), which is what ``torch.func.grad``/``vjp``/
``jacrev`` need and a custom op's own autograd does not offer.

Sibling ops with the same contract: ``fusedrnn::layer_export`` (what ``torch.export`` records,
with an aten decomposition; :mod:`fusedrnn.ops.layer_decomposition`) and
``fusedrnn::packed_layer_forward``/``packed_layer_backward`` (packed rows and ``batch_sizes``
in, for ``torch.compile`` with ``PackedSequence`` input; :mod:`fusedrnn.ops.packed_layer`).
"""

import torch

from . import second_order
from ..backends import registry as backend_registry
from ..layer_config import LayerConfig

def _config(mode, bidirectional, has_bias, has_proj):
    return LayerConfig(mode, bidirectional, has_bias, has_proj)


def _contiguous(*tensors):
    # The kernels index raw memory: every tensor that reaches a backend is dense. Gradients in
    # particular arrive with any strides (e.g. stride 0 from `c_n.sum()`).
    return [None if t is None else t.contiguous() for t in tensors]


def _check_lengths(lengths, x):
    """The contract for ``lengths``: CPU int64 ``[B]``, each in [1, T], non-increasing."""
    if lengths is None:
        return
    T, B = x.shape[0], x.shape[1]
    if lengths.device.type != "cpu" or lengths.dtype != torch.int64 or lengths.shape != (B,):
        raise ValueError(f"lengths must be a CPU int64 tensor of shape ({B},), got "
                         f"{lengths.dtype} {tuple(lengths.shape)} on {lengths.device}")
    if B and (lengths.min() < 1 or lengths.max() > T or (lengths[1:] > lengths[:-1]).any()):
        raise ValueError(f"lengths must be non-increasing and within [1, {T}], got {lengths.tolist()}")


@torch.library.custom_op("fusedrnn::layer_forward", mutates_args=())
def layer_forward(
    x: torch.Tensor, lengths: torch.Tensor | None, h0: torch.Tensor, c0: torch.Tensor | None,
    weights: list[torch.Tensor], mode: str, backend: str, bidirectional: bool, has_bias: bool,
    has_proj: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    cfg = _config(mode, bidirectional, has_bias, has_proj)
    _check_lengths(lengths, x)
    x, h0, c0, *weights = _contiguous(x, h0, c0, *weights)
    return backend_registry.AVAILABLE[backend].forward(cfg, x, lengths, h0, c0, weights)


@layer_forward.register_fake
def _(x, lengths, h0, c0, weights, mode, backend, bidirectional, has_bias, has_proj):
    cfg = _config(mode, bidirectional, has_bias, has_proj)
    H, Hr = cfg.hidden_sizes(weights)
    T, B, _ = x.shape
    y = x.new_empty((T, B, cfg.directions * Hr))
    c_n = c0.new_empty(c0.shape) if cfg.has_cell_state else x.new_empty(0)
    ws_shape, ws_dtype = backend_registry.AVAILABLE[backend].workspace_spec(cfg, x, H)
    workspace = x.new_empty(ws_shape, dtype=ws_dtype)
    return y, h0.new_empty(h0.shape), c_n, workspace


@torch.library.custom_op("fusedrnn::layer_backward", mutates_args=())
def layer_backward(
    dy: torch.Tensor, dh_n: torch.Tensor, dc_n: torch.Tensor | None,
    x: torch.Tensor, lengths: torch.Tensor | None, h0: torch.Tensor, c0: torch.Tensor | None,
    weights: list[torch.Tensor], y: torch.Tensor, workspace: torch.Tensor,
    mode: str, backend: str, bidirectional: bool, has_bias: bool, has_proj: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, list[torch.Tensor]]:
    cfg = _config(mode, bidirectional, has_bias, has_proj)
    dy, dh_n, dc_n, x, h0, c0, y, workspace, *weights = _contiguous(
        dy, dh_n, dc_n, x, h0, c0, y, workspace, *weights)
    dx, dh0, dc0, dweights = backend_registry.AVAILABLE[backend].backward(
        cfg, x, lengths, h0, c0, weights, y, workspace, dy, dh_n, dc_n
    )
    return dx, dh0, dc0, list(dweights)


@layer_backward.register_fake
def _(dy, dh_n, dc_n, x, lengths, h0, c0, weights, y, workspace, mode, backend, bidirectional,
      has_bias, has_proj):
    dc0 = c0.new_empty(c0.shape) if c0 is not None else x.new_empty(0)
    return x.new_empty(x.shape), h0.new_empty(h0.shape), dc0, [w.new_empty(w.shape) for w in weights]


def _setup_context(ctx, inputs, output):
    x, lengths, h0, c0, weights, *config = inputs
    y, _, _, workspace = output
    ctx.save_for_backward(x, lengths, h0, c0, y, workspace, *weights)
    ctx.config = config


def _backward(ctx, dy, dh_n, dc_n, _dworkspace):
    x, lengths, h0, c0, y, workspace, *weights = ctx.saved_tensors
    mode = ctx.config[0]
    dc_n = dc_n if mode == "LSTM" else None
    dx, dh0, dc0, dweights = torch.ops.fusedrnn.layer_backward(
        dy, dh_n, dc_n, x, lengths, h0, c0, weights, y, workspace,
        *ctx.config,
    )
    return dx, None, dh0, (dc0 if c0 is not None else None), dweights, None, None, None, None, None


layer_forward.register_autograd(_backward, setup_context=_setup_context)


def _setup_backward_context(ctx, inputs, output):
    dy, dh_n, dc_n, x, lengths, h0, c0, weights, _y, _workspace, *config = inputs
    ctx.save_for_backward(dy, dh_n, dc_n, x, lengths, h0, c0, *weights)
    ctx.config = config


def _backward_of_backward(ctx, gdx, gdh0, gdc0, gdweights):
    dy, dh_n, dc_n, x, lengths, h0, c0, *weights = ctx.saved_tensors
    cfg = _config(ctx.config[0], *ctx.config[2:])
    ddy, ddh_n, ddc_n, gx, gh0, gc0, gweights = second_order.backward_vjp(
        cfg, lengths, dy, dh_n, dc_n, x, h0, c0, weights, gdx, gdh0,
        gdc0 if cfg.has_cell_state else None, gdweights)
    return (ddy, ddh_n, ddc_n, gx, None, gh0, gc0, gweights, None, None,
            None, None, None, None, None)


layer_backward.register_autograd(_backward_of_backward, setup_context=_setup_backward_context)


def run_layer(cfg, backend, x, lengths, h0, c0, weights):
    """Run one layer through ``backend`` (a name already resolved). Returns ``(y, h_n, c_n)``.

    Five routes, one contract:

    * ``torch.jit`` tracing: the composite layer (plain torch ops the tracer records);
    * the dynamo ONNX exporter: ONNX's LSTM/GRU/RNN operator (:mod:`fusedrnn.ops.onnx_layer`), the
      export route below for an LSTM with a projection;
    * exporting: ``fusedrnn::layer_export``, which ``run_decompositions()`` lowers to aten ops
      (:mod:`fusedrnn.ops.layer_decomposition`);
    * compiling: the custom op itself (one opaque node, its registered autograd);
    * eager ``"torch"`` outside any ``torch.func`` transform: ``_VF`` directly, so torch's
      autograd differentiates it (no recompute);
    * otherwise: the op through :class:`fusedrnn.ops.layer_autograd.LayerForward`, whose
      ``setup_context`` and generated vmap rule make ``torch.func`` work.
    """
    if torch.jit.is_tracing():
        from . import composite   # traceable torch ops (see functional.forward)
        return composite.layer(cfg, x, lengths, h0, c0, weights)
    if torch.compiler.is_exporting() and torch.onnx.is_in_onnx_export() and not cfg.has_proj:
        from . import onnx_layer   # ONNX's own LSTM/GRU/RNN operator
        return onnx_layer.layer(cfg, x, lengths, h0, c0, weights)
    if torch.compiler.is_exporting():
        y, h_n, c_n = torch.ops.fusedrnn.layer_export(
            x, lengths, h0, c0, list(weights), cfg.mode, backend, cfg.bidirectional, cfg.has_bias,
            cfg.has_proj,
        )
    elif torch.compiler.is_compiling():
        y, h_n, c_n, _ = torch.ops.fusedrnn.layer_forward(
            x, lengths, h0, c0, list(weights), cfg.mode, backend, cfg.bidirectional, cfg.has_bias,
            cfg.has_proj,
        )
    elif backend == "torch" and torch._C._functorch.peek_interpreter_stack() is None:
        from ..backends.torch_native import run
        return run(cfg, x, lengths, h0, c0, weights)
    else:
        from .layer_autograd import LayerForward
        y, h_n, c_n, _ = LayerForward.apply(cfg, backend, x, lengths, h0, c0, *weights)
    return y, h_n, (c_n if cfg.has_cell_state else None)


# The batching rules of both ops, and the export twin of layer_forward with its decomposition.
from . import layer_decomposition, layer_vmap  # noqa: E402,F401
