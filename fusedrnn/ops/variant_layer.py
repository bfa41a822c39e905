"""The one-layer op of the cell variants: ``torch.ops.fusedrnn.variant_layer_forward``.

A layer with LayerNorm, resets or zoneout (``LayerConfig.is_variant``, issue 14) runs here, never
through the classic op, so the classic kernels and their contract stay exactly as they were.
The contract is :mod:`fusedrnn.ops.layer`'s, plus two tensors:

    starts [D, T, B] bool   True where step (d, t, b) begins from the initial state h0 (c0):
                            each row's first step in direction d and every reset; False at
                            padded positions (t ≥ lengths[b]). Always given (built from
                            ``lengths`` when there are no resets), so a backend has one path.
    keep   [D, T, B, Hr]    zoneout's keep mask, float32, or None without zoneout: 1 keeps the
                            previous h, 0 takes the new one; in eval mode every entry is p.

One step (d, t, b) of a valid position, whatever the backend:

    h_in, c_in = (h0, c0)[d, b] if starts[d, t, b] else the state after the previous step
    h', c'     = cell(x_t, h_in, c_in)        (LayerNorm cells: see ops/composite._cell_step)
    h_t        = keep ⊙ h_in + (1 − keep) ⊙ h'        (h_t = h' without zoneout)
    y[t, b, d] = h_t, and (h_t, c') is the state the next step of the row carries

so no gradient flows from a step that starts afresh into the step before it, and
``∂L/∂h0 = Σ_t starts · ∂L/∂h_in(t)``.

Resets (``resets [T, B]``, the user's form): the forward direction starts afresh at t where
``resets[t]``; the reverse direction crosses the same boundary between t and t − 1 of its own
order, so it starts afresh at t − 1. Every episode is then independent in both directions.

Backends implement ``forward(cfg, x, lengths, h0, c0, weights, starts=, keep=)`` and
``backward(..., dy, dh_n, dc_n, starts=, keep=)`` with the classic signatures otherwise, and
refuse what they cannot run through ``unsupported_reason(cfg, x, weights)``, ``cfg`` carrying
``layer_norm``, ``has_resets`` and ``has_zoneout``.
"""

import torch

from . import composite
from ..backends import registry as backend_registry
from ..layer_config import LayerConfig


def starts_from(resets, lengths, T, B, directions, device):
    """``starts [D, T, B]`` (see the module docstring) from ``resets [T, B]`` bool or None and
    ``lengths [B]`` (CPU int64) or None."""
    t = torch.arange(T, device=device)[:, None]                              # [T, 1]
    lens = (torch.full((B,), T, dtype=torch.int64) if lengths is None else lengths).to(device)
    valid = t < lens[None, :]                                                # [T, B]
    fwd = t == 0
    rev = t == lens[None, :] - 1
    if resets is not None:
        r = resets.to(device=device, dtype=torch.bool)
        fwd = fwd | r
        # Reverse order crosses the boundary before t between t and t - 1: t - 1 starts afresh.
        rev = rev | torch.cat([r[1:], torch.zeros_like(r[:1])])
    out = [fwd & valid, rev & valid][:directions]
    return torch.stack(out)


def _config(mode, bidirectional, has_bias, layer_norm, has_resets, has_zoneout):
    return LayerConfig(mode, bidirectional, has_bias, False, layer_norm, has_resets, has_zoneout)


def _contiguous(*tensors):
    return [None if t is None else t.contiguous() for t in tensors]


@torch.library.custom_op("fusedrnn::variant_layer_forward", mutates_args=())
def variant_layer_forward(
    x: torch.Tensor, lengths: torch.Tensor | None, h0: torch.Tensor, c0: torch.Tensor | None,
    weights: list[torch.Tensor], starts: torch.Tensor, keep: torch.Tensor | None, mode: str,
    backend: str, bidirectional: bool, has_bias: bool, layer_norm: bool, has_resets: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    cfg = _config(mode, bidirectional, has_bias, layer_norm, has_resets, keep is not None)
    x, h0, c0, starts, keep, *weights = _contiguous(x, h0, c0, starts, keep, *weights)
    return backend_registry.AVAILABLE[backend].forward(cfg, x, lengths, h0, c0, weights,
                                                       starts=starts, keep=keep)


@variant_layer_forward.register_fake
def _(x, lengths, h0, c0, weights, starts, keep, mode, backend, bidirectional, has_bias,
      layer_norm, has_resets):
    cfg = _config(mode, bidirectional, has_bias, layer_norm, has_resets, keep is not None)
    H, Hr = cfg.hidden_sizes(weights)
    T, B, _ = x.shape
    y = x.new_empty((T, B, cfg.directions * Hr))
    c_n = c0.new_empty(c0.shape) if cfg.has_cell_state else x.new_empty(0)
    ws_shape, ws_dtype = backend_registry.AVAILABLE[backend].workspace_spec(cfg, x, H)
    return y, h0.new_empty(h0.shape), c_n, x.new_empty(ws_shape, dtype=ws_dtype)


@torch.library.custom_op("fusedrnn::variant_layer_backward", mutates_args=())
def variant_layer_backward(
    dy: torch.Tensor, dh_n: torch.Tensor, dc_n: torch.Tensor | None, x: torch.Tensor,
    lengths: torch.Tensor | None, h0: torch.Tensor, c0: torch.Tensor | None,
    weights: list[torch.Tensor], starts: torch.Tensor, keep: torch.Tensor | None, y: torch.Tensor,
    workspace: torch.Tensor, mode: str, backend: str, bidirectional: bool, has_bias: bool,
    layer_norm: bool, has_resets: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, list[torch.Tensor]]:
    cfg = _config(mode, bidirectional, has_bias, layer_norm, has_resets, keep is not None)
    dy, dh_n, dc_n, x, h0, c0, starts, keep, y, workspace, *weights = _contiguous(
        dy, dh_n, dc_n, x, h0, c0, starts, keep, y, workspace, *weights)
    dx, dh0, dc0, dweights = backend_registry.AVAILABLE[backend].backward(
        cfg, x, lengths, h0, c0, weights, y, workspace, dy, dh_n, dc_n, starts=starts, keep=keep)
    return dx, dh0, dc0, list(dweights)


@variant_layer_backward.register_fake
def _(dy, dh_n, dc_n, x, lengths, h0, c0, weights, starts, keep, y, workspace, *config):
    dc0 = c0.new_empty(c0.shape) if c0 is not None else x.new_empty(0)
    return x.new_empty(x.shape), h0.new_empty(h0.shape), dc0, [w.new_empty(w.shape) for w in weights]


def _setup_context(ctx, inputs, output):
    x, lengths, h0, c0, weights, starts, keep, *config = inputs
    y, _, _, workspace = output
    ctx.save_for_backward(x, lengths, h0, c0, starts, keep, y, workspace, *weights)
    ctx.config = config


def _backward(ctx, dy, dh_n, dc_n, _dworkspace):
    x, lengths, h0, c0, starts, keep, y, workspace, *weights = ctx.saved_tensors
    dc_n = dc_n if ctx.config[0] == "LSTM" else None
    dx, dh0, dc0, dweights = torch.ops.fusedrnn.variant_layer_backward(
        dy, dh_n, dc_n, x, lengths, h0, c0, weights, starts, keep, y, workspace, *ctx.config)
    return (dx, None, dh0, (dc0 if c0 is not None else None), dweights, None, None,
            *([None] * len(ctx.config)))


variant_layer_forward.register_autograd(_backward, setup_context=_setup_context)


def _setup_backward_context(ctx, inputs, output):
    dy, dh_n, dc_n, x, lengths, h0, c0, weights, starts, keep, _y, _ws, *config = inputs
    ctx.save_for_backward(dy, dh_n, dc_n, x, lengths, h0, c0, starts, keep, *weights)
    ctx.config = config


def _backward_of_backward(ctx, gdx, gdh0, gdc0, gdweights):
    """Double backward, the same for every backend: differentiate the composite layer's
    vector-Jacobian product (as :mod:`fusedrnn.ops.second_order` does for the classic op)."""
    dy, dh_n, dc_n, x, lengths, h0, c0, starts, keep, *weights = ctx.saved_tensors
    mode, _backend, bidirectional, has_bias, layer_norm, has_resets = ctx.config
    cfg = _config(mode, bidirectional, has_bias, layer_norm, has_resets, keep is not None)
    has_c = cfg.has_cell_state
    primals = [x, h0, *weights] + ([c0] if has_c else [])
    cotangents = [dy, dh_n] + ([dc_n] if has_c else [])
    with torch.enable_grad():
        leaves = [p.detach().requires_grad_() for p in primals]
        ct = [c.detach().requires_grad_() for c in cotangents]
        n_w = len(weights)
        y, h_n, c_n = composite.layer(cfg, leaves[0], lengths, leaves[1], leaves[-1] if has_c else None,
                                      leaves[2:2 + n_w], starts, keep)
        outs = [y, h_n] + ([c_n] if has_c else [])
        grads = torch.autograd.grad(outs, leaves, ct, create_graph=True, allow_unused=True)
        grads = [torch.zeros_like(l) if g is None else g for g, l in zip(grads, leaves)]
        # The first-order results in the primal order (x, h0, *weights, [c0]), and what came
        # back for each of the backward op's outputs (dx, dh0, dc0, dweights).
        incoming = [gdx, gdh0, *gdweights] + ([gdc0] if has_c else [])
        pairs = [(g, v) for g, v in zip(grads, incoming) if v is not None]
        second = torch.autograd.grad([g for g, _ in pairs], leaves + ct, [v for _, v in pairs],
                                     allow_unused=True)
    second = [torch.zeros_like(l) if g is None else g for g, l in zip(second, leaves + ct)]
    g_x, g_h0, *rest = second[:len(leaves)]
    g_w = rest[:n_w]
    g_c0 = rest[n_w] if has_c else None
    g_ct = second[len(leaves):]
    return (g_ct[0], g_ct[1], g_ct[2] if has_c else None, g_x, None, g_h0, g_c0, g_w,
            None, None, None, None, *([None] * len(ctx.config)))


variant_layer_backward.register_autograd(_backward_of_backward,
                                         setup_context=_setup_backward_context)


def run_variant_layer(cfg, backend, x, lengths, h0, c0, weights, resets=None, keep=None):
    """One variant layer: ``(y, h_n, c_n or None)``. ``resets [T, B]`` bool or None; ``keep
    [D, T, B, Hr]`` float32 or None.

    Tracing and exporting record the composite layer (plain torch ops, so ``torch.export``'s
    program and the TorchScript exporter need nothing of fusedrnn); ``"torch"`` in eager mode
    differentiates the composite directly; everything else runs the custom op.
    """
    T, B = x.shape[0], x.shape[1]
    starts = starts_from(resets, lengths, T, B, cfg.directions, x.device)
    if torch.jit.is_tracing() or torch.compiler.is_exporting() or (
            backend == "torch" and not torch.compiler.is_compiling()):
        return composite.layer(cfg, x, lengths, h0, c0, weights, starts, keep)
    y, h_n, c_n, _ = torch.ops.fusedrnn.variant_layer_forward(
        x, lengths, h0, c0, list(weights), starts, keep, cfg.mode, backend, cfg.bidirectional,
        cfg.has_bias, cfg.layer_norm, cfg.has_resets)
    return y, h_n, (c_n if cfg.has_cell_state else None)
