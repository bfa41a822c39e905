"""``torch.autograd.Function`` twins of the two layer ops, for eager mode.

A ``torch.library.custom_op``'s registered autograd is an ``autograd.Function`` without
``setup_context``, which ``torch.func`` transforms refuse ("must override the setup_context
staticmethod"). These Functions call the very same ops below autograd, with ``setup_context``
and ``generate_vmap_rule = True`` (the ops' own batching rules, :mod:`fusedrnn.ops.layer_vmap`, do
the vmapping), so ``torch.func.grad``, ``vjp``, ``jacrev`` and ``vmap`` compose with every
backend. The backward of :class:`LayerBackward` differentiates the composite layer
(:mod:`fusedrnn.ops.second_order`), so any order of derivative is available.
"""

import torch

from . import second_order


class LayerForward(torch.autograd.Function):
    """``(cfg, backend, x, lengths, h0, c0, *weights) -> (y, h_n, c_n, workspace)``."""

    generate_vmap_rule = True

    @staticmethod
    def forward(cfg, backend, x, lengths, h0, c0, *weights):
        return torch.ops.fusedrnn.layer_forward(x, lengths, h0, c0, list(weights), cfg.mode,
                                                backend, cfg.bidirectional, cfg.has_bias,
                                                cfg.has_proj)

    @staticmethod
    def setup_context(ctx, inputs, output):
        cfg, backend, x, lengths, h0, c0, *weights = inputs
        y, _, _, workspace = output
        ctx.save_for_backward(x, lengths, h0, c0, y, workspace, *weights)
        ctx.save_for_forward(x, lengths, h0, c0, *weights)
        ctx.cfg, ctx.backend = cfg, backend
        ctx.mark_non_differentiable(workspace)

    @staticmethod
    def jvp(ctx, _cfg, _backend, x_t, _lengths_t, h0_t, c0_t, *weights_t):
        x, lengths, h0, c0, *weights = ctx.saved_tensors
        cfg = ctx.cfg
        tangents = second_order.forward_jvp(
            cfg, lengths, second_order.pack_primals(cfg, x, h0, c0, weights),
            second_order.pack_primals(cfg, x_t, h0_t, c0_t, weights_t))
        c_t = tangents[2] if cfg.has_cell_state else x.new_zeros(0)
        return tangents[0], tangents[1], c_t, None

    @staticmethod
    def backward(ctx, dy, dh_n, dc_n, _dworkspace):
        x, lengths, h0, c0, y, workspace, *weights = ctx.saved_tensors
        cfg = ctx.cfg
        dx, dh0, dc0, *dweights = LayerBackward.apply(
            cfg, ctx.backend, dy, dh_n, dc_n if cfg.has_cell_state else None, x, lengths, h0, c0,
            y, workspace, *weights)
        return (None, None, dx, None, dh0, dc0 if cfg.has_cell_state else None, *dweights)


class LayerBackward(torch.autograd.Function):
    """``(cfg, backend, dy, dh_n, dc_n, x, lengths, h0, c0, y, workspace, *weights)
    -> (dx, dh0, dc0, *dweights)``; differentiable in the cotangents and the primals."""

    generate_vmap_rule = True

    @staticmethod
    def forward(cfg, backend, dy, dh_n, dc_n, x, lengths, h0, c0, y, workspace, *weights):
        dx, dh0, dc0, dweights = torch.ops.fusedrnn.layer_backward(
            dy, dh_n, dc_n, x, lengths, h0, c0, list(weights), y, workspace, cfg.mode, backend,
            cfg.bidirectional, cfg.has_bias, cfg.has_proj)
        return (dx, dh0, dc0, *dweights)

    @staticmethod
    def setup_context(ctx, inputs, output):
        cfg, backend, dy, dh_n, dc_n, x, lengths, h0, c0, _y, _workspace, *weights = inputs
        ctx.save_for_backward(dy, dh_n, dc_n, x, lengths, h0, c0, *weights)
        ctx.save_for_forward(dy, dh_n, dc_n, x, lengths, h0, c0, *weights)
        ctx.cfg = cfg
        if not cfg.has_cell_state:
            ctx.mark_non_differentiable(output[2])   # the empty dc0 placeholder

    @staticmethod
    def jvp(ctx, _cfg, _backend, dy_t, dh_n_t, dc_n_t, x_t, _lengths_t, h0_t, c0_t, _y_t,
            _workspace_t, *weights_t):
        dy, dh_n, dc_n, x, lengths, h0, c0, *weights = ctx.saved_tensors
        cfg = ctx.cfg
        tangents = second_order.backward_jvp(
            cfg, lengths, second_order.pack_primals(cfg, x, h0, c0, weights),
            second_order.pack_cotangents(cfg, dy, dh_n, dc_n),
            second_order.pack_primals(cfg, x_t, h0_t, c0_t, weights_t),
            second_order.pack_cotangents(cfg, dy_t, dh_n_t, dc_n_t))
        k = 3 if cfg.has_cell_state else 2
        dc0_t = tangents[2] if cfg.has_cell_state else None
        return (tangents[0], tangents[1], dc0_t, *tangents[k:])

    @staticmethod
    def backward(ctx, gdx, gdh0, gdc0, *gdweights):
        dy, dh_n, dc_n, x, lengths, h0, c0, *weights = ctx.saved_tensors
        cfg = ctx.cfg
        ddy, ddh_n, ddc_n, gx, gh0, gc0, gweights = second_order.backward_vjp(
            cfg, lengths, dy, dh_n, dc_n, x, h0, c0, weights, gdx, gdh0,
            gdc0 if cfg.has_cell_state else None, gdweights)
        return (None, None, ddy, ddh_n, ddc_n, gx, None, gh0, gc0, None, None, *gweights)
