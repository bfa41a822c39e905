"""``torch.autograd.Function`` twins of the two cell ops, for eager mode.

A ``torch.library.custom_op``'s registered autograd is an ``autograd.Function`` without
``setup_context``, which ``torch.func`` transforms refuse ("must override the setup_context
staticmethod"). These Functions call the very same ops below autograd, with ``setup_context``,
and ``generate_vmap_rule`` (the ops' batching rules, :mod:`fusedrnn.ops.cell_vmap`, do the
vmapping), so ``torch.func.grad``, ``vjp``, ``vmap`` and ``jacrev`` compose with every cell
backend. The backward of
:class:`CellBackward` differentiates the composite cell (:mod:`fusedrnn.ops.cell_second_order`),
so double backward and higher orders work too. Tensors are as in :mod:`fusedrnn.ops.cell`.
"""

import torch

from . import cell as cell_op


class CellForward(torch.autograd.Function):
    """``(mode, backend, save, x, h, c, w_ih, w_hh, b_ih, b_hh) -> (h', c', workspace)``."""

    generate_vmap_rule = True   # the ops' own batching rules (fusedrnn/ops/cell_vmap.py)

    @staticmethod
    def forward(mode, backend, save, x, h, c, w_ih, w_hh, b_ih, b_hh):
        return torch.ops.fusedrnn.cell_forward(x, h, c, w_ih, w_hh, b_ih, b_hh, mode, backend,
                                               save)

    @staticmethod
    def setup_context(ctx, inputs, output):
        mode, backend, save, *primals = inputs
        ctx.save_for_backward(*primals, output[2])
        ctx.config = (mode, backend, save)
        ctx.mark_non_differentiable(output[2])
        if primals[2] is None:
            ctx.mark_non_differentiable(output[1])   # the empty c' placeholder

    @staticmethod
    def backward(ctx, dh, dc, _dworkspace):
        *primals, workspace = ctx.saved_tensors
        mode, backend, save = ctx.config
        grads = cell_op.first_order(ctx.needs_input_grad[3:], save, dh, dc, primals, workspace,
                                    mode, backend, CellBackward.apply)
        return (None, None, None) + grads


class CellBackward(torch.autograd.Function):
    """``(dh', dc', x, h, c, w_ih, w_hh, b_ih, b_hh, workspace, mode, backend, needs)
    -> the 7 primal gradients`` (empty where not needed); differentiable in the cotangents and
    the primals. The argument order is the op's, so :func:`fusedrnn.ops.cell.first_order`
    calls either the same way."""

    generate_vmap_rule = True

    @staticmethod
    def forward(dh, dc, x, h, c, w_ih, w_hh, b_ih, b_hh, workspace, mode, backend, needs):
        return torch.ops.fusedrnn.cell_backward(dh, dc, x, h, c, w_ih, w_hh, b_ih, b_hh,
                                                workspace, mode, backend, needs)

    @staticmethod
    def setup_context(ctx, inputs, output):
        dh, dc, *rest = inputs
        primals, mode, needs = rest[:7], rest[8], rest[10]
        ctx.save_for_backward(dh, dc, *primals)
        ctx.config = (mode, needs)
        ctx.mark_non_differentiable(*(g for g, n in zip(output, needs) if not n))

    @staticmethod
    def backward(ctx, *grad_outputs):
        dh, dc, *primals = ctx.saved_tensors
        mode, needs = ctx.config
        ddh, ddc, grads = cell_op.second_order(dh, dc, primals, needs, grad_outputs, mode)
        return (ddh, ddc) + grads + (None,) * 4
