"""The single-step op behind the cell modules: ``torch.ops.fusedrnn.cell_forward``.

Registered with ``torch.library.custom_op`` so that ``torch.compile(fullgraph=True)`` of a
Python loop over a cell sees one opaque node per step (with a fake implementation for
shapes), and autograd calls the backend's own backward, itself the op ``cell_backward``.

Contract of one call (G gates, mode one of LSTM, GRU, RNN_TANH, RNN_RELU):

    x      [B, In]    h [B, H]    c [B, H] for the LSTM, else None
    w_ih   [G*H, In]  w_hh [G*H, H]    b_ih, b_hh [G*H] or None (bias=False)
  returns
    h'     [B, H]     c' [B, H] (an empty tensor for cells without a cell state)
    workspace         what the backend saves for backward (``backend.workspace_spec``);
                      empty with ``save=False``, which the caller passes when no gradient
                      is wanted (the op's backward then refuses to run)

``cell_backward(dh', dc', x, h, c, weights, workspace, mode, backend, needs)`` returns the
gradients of ``(x, h, c, w_ih, w_hh, b_ih, b_hh)``; ``needs`` (7 flags, autograd's
``needs_input_grad``) names those wanted, the others come back empty and the backend skips
their GEMMs. ``cell_backward`` is differentiable (any order) through a composite torch-ops
cell (:mod:`fusedrnn.ops.cell_second_order`). In eager mode :func:`run_cell` calls both ops
through ``autograd.Function`` twins with ``setup_context`` (:mod:`fusedrnn.ops.cell_autograd`),
which ``torch.func.grad``/``vjp`` need; both ops have batching rules for ``torch.func.vmap``
(:mod:`fusedrnn.ops.cell_vmap`). Bad shapes are refused before the op, with torch's own
messages (:func:`check_step`), so the op itself never sees them.
"""

import torch

from . import cell_autocast, cell_second_order
from ..backends.cell import registry as cell_registry
from ..backends.cell.torch_native import run as torch_step

_Tensor = torch.Tensor
PRIMALS = cell_second_order.PRIMAL_NAMES   # x, h, c, w_ih, w_hh, b_ih, b_hh


def _contiguous(*tensors):
    # The kernels index raw memory; gradients in particular arrive with any strides.
    return [None if t is None else t.contiguous() for t in tensors]


@torch.library.custom_op("fusedrnn::cell_forward", mutates_args=())
def cell_forward(
    x: _Tensor, h: _Tensor, c: _Tensor | None, w_ih: _Tensor, w_hh: _Tensor,
    b_ih: _Tensor | None, b_hh: _Tensor | None, mode: str, backend: str, save: bool,
) -> tuple[_Tensor, _Tensor, _Tensor]:
    args = _contiguous(x, h, c, w_ih, w_hh, b_ih, b_hh)
    return cell_registry.AVAILABLE[backend].forward(mode, *args, save)


@cell_forward.register_fake
def _(x, h, c, w_ih, w_hh, b_ih, b_hh, mode, backend, save):
    shape, dtype = cell_registry.AVAILABLE[backend].workspace_spec(mode, x, h.shape[1], save)
    c_out = c.new_empty(c.shape) if c is not None else x.new_empty(0)
    return h.new_empty(h.shape), c_out, x.new_empty(shape, dtype=dtype)


@torch.library.custom_op("fusedrnn::cell_backward", mutates_args=())
def cell_backward(
    dh: _Tensor, dc: _Tensor | None, x: _Tensor, h: _Tensor, c: _Tensor | None, w_ih: _Tensor,
    w_hh: _Tensor, b_ih: _Tensor | None, b_hh: _Tensor | None, workspace: _Tensor, mode: str,
    backend: str, needs: list[bool],
) -> tuple[_Tensor, _Tensor, _Tensor, _Tensor, _Tensor, _Tensor, _Tensor]:
    dh, dc, x, h, c, w_ih, w_hh, b_ih, b_hh, workspace = _contiguous(
        dh, dc, x, h, c, w_ih, w_hh, b_ih, b_hh, workspace)
    wanted = [n and t is not None for n, t in zip(needs, (x, h, c, w_ih, w_hh, b_ih, b_hh))]
    grads = cell_registry.AVAILABLE[backend].backward(
        mode, x, h, c, w_ih, w_hh, b_ih, b_hh, workspace, dh, dc, wanted)
    # Backends that compute everything anyway (reference, torch) are trimmed to the contract.
    return tuple(g if w else x.new_empty(0) for g, w in zip(grads, wanted))


@cell_backward.register_fake
def _(dh, dc, x, h, c, w_ih, w_hh, b_ih, b_hh, workspace, mode, backend, needs):
    inputs = (x, h, c, w_ih, w_hh, b_ih, b_hh)
    return tuple(t.new_empty(t.shape) if n and t is not None else x.new_empty(0)
                 for n, t in zip(needs, inputs))


def first_order(ctx_needs, save, dh, dc, primals, workspace, mode, backend, call):
    """The backward of ``cell_forward``, shared by the op's autograd and
    :class:`~fusedrnn.ops.cell_autograd.CellForward`: ``call`` is ``cell_backward`` (the op
    or its ``autograd.Function``). Returns the 7 primal gradients, None where not wanted."""
    if not save:
        raise RuntimeError("fusedrnn::cell_forward ran with save=False (nothing saved for "
                           "backward); call it with save=True to differentiate it")
    needs = [bool(n) and t is not None for n, t in zip(ctx_needs, primals)]
    c = primals[2]
    grads = call(dh, dc if c is not None else None, *primals, workspace, mode, backend, needs)
    return tuple(g if n else None for g, n in zip(grads, needs))


def second_order(dh, dc, primals, needs, grad_outputs, mode):
    """The backward of ``cell_backward``: ``(ddh', ddc' or None, 7 primal gradients)``."""
    given = dict(zip(PRIMALS, primals))
    gg = {n: g for n, g, want in zip(PRIMALS, grad_outputs, needs) if want}
    ddh, ddc, by_name = cell_second_order.backward_vjp(mode, given, (dh, dc), gg)
    return ddh, ddc, tuple(by_name.get(n) for n in PRIMALS)


def _setup_context(ctx, inputs, output):
    *tensors, mode, backend, save = inputs
    ctx.save_for_backward(*tensors, output[2])
    ctx.config = (mode, backend, save)


def _backward(ctx, dh, dc, _dworkspace):
    *primals, workspace = ctx.saved_tensors
    mode, backend, save = ctx.config
    grads = first_order(ctx.needs_input_grad[:7], save, dh, dc, primals, workspace, mode,
                        backend, torch.ops.fusedrnn.cell_backward)
    return grads + (None,) * 3


cell_forward.register_autograd(_backward, setup_context=_setup_context)


def _setup_backward_context(ctx, inputs, output):
    dh, dc, *primals, _workspace, mode, _backend, needs = inputs
    ctx.save_for_backward(dh, dc, *primals)
    ctx.config = (mode, needs)


def _backward_of_backward(ctx, *grad_outputs):
    dh, dc, *primals = ctx.saved_tensors
    mode, needs = ctx.config
    ddh, ddc, grads = second_order(dh, dc, primals, needs, grad_outputs, mode)
    return (ddh, ddc) + grads + (None,) * 4


cell_backward.register_autograd(_backward_of_backward, setup_context=_setup_backward_context)


def check_step(x, states, w_ih, w_hh):
    """torch's checks of one cell step (ATen's ``check_rnn_cell_forward_input`` and
    ``_hidden``), same order, same ``RuntimeError`` text; ``states`` is ``[h]`` or ``[h, c]``."""
    if x.size(1) != w_ih.size(1):
        raise RuntimeError(
            f"input has inconsistent input_size: got {x.size(1)} expected {w_ih.size(1)}")
    for k, state in enumerate(states):
        if x.size(0) != state.size(0):
            raise RuntimeError(f"Input batch size {x.size(0)} doesn't match hidden{k} batch size "
                               f"{state.size(0)}")
        if state.size(1) != w_hh.size(1):
            raise RuntimeError(f"hidden{k} has inconsistent hidden_size: got {state.size(1)}, "
                               f"expected {w_hh.size(1)}")


def run_cell(mode, backend, x, h, c, w_ih, w_hh, b_ih, b_hh):
    """One batched step ``x [B, In]``, ``h``/``c [B, H]`` on the named backend (``"auto"``
    resolved here). Returns ``(h', c')`` (``c'`` None without a cell state).

    ``"torch"`` calls torch's cell directly, eagerly and under ``torch.compile`` (see
    ``backends/cell/torch_native.py``), autocast included; everything else goes through the op,
    under autocast in the dtypes torch's cell would use (:mod:`fusedrnn.ops.cell_autocast`).
    """
    check_step(x, [h] if c is None else [h, c], w_ih, w_hh)
    chosen = cell_registry.pick(backend)
    if chosen.name == "torch":
        return torch_step(mode, x, h, c, w_ih, w_hh, b_ih, b_hh)
    device_type = x.device.type
    autocast_on = torch.is_autocast_enabled(device_type)
    if autocast_on:
        x, h, c, w_ih, w_hh, b_ih, b_hh = cell_autocast.cast(mode, device_type, x, h, c, w_ih,
                                                             w_hh, b_ih, b_hh)
    tensors = [t for t in (x, h, c, w_ih, w_hh, b_ih, b_hh) if t is not None]
    if len({(t.dtype, t.device) for t in tensors}) > 1:
        # The kernels take one dtype on one device. torch's cell refuses most mixtures with its
        # own message (e.g. "mat1 and mat2 must have the same dtype"): raise exactly that.
        torch_step(mode, x, h, c, w_ih, w_hh, b_ih, b_hh)
        raise ValueError(f"backend {chosen.name!r} needs the input, states and weights in one "
                         f"dtype on one device, got "
                         f"{sorted({f'{t.dtype} on {t.device}' for t in tensors})}")
    chosen = cell_registry.resolve(backend, mode, x)
    # Inference (decode loops under no_grad) saves nothing: the kernels skip the workspace.
    save = torch.is_grad_enabled() and any(t.requires_grad for t in tensors)
    args = (x, h, c, w_ih, w_hh, b_ih, b_hh)
    # The op itself when compiling (its registered autograd) and for inference outside any
    # torch.func transform (nothing to differentiate: no autograd.Function overhead per step);
    # otherwise its autograd.Function twin, which torch.func needs.
    if torch.compiler.is_compiling() or (
            not save and torch._C._functorch.peek_interpreter_stack() is None):
        def step():
            return torch.ops.fusedrnn.cell_forward(*args, mode, chosen.name, save)
    else:
        from .cell_autograd import CellForward   # here: that module imports this one

        def step():
            return CellForward.apply(mode, chosen.name, save, *args)
    # The inputs are in their autocast dtypes already. No autocast context at all when autocast
    # is off (export would record a node for it).
    if autocast_on:
        with torch.autocast(device_type, enabled=False):
            h_new, c_new, _ = step()
    else:
        h_new, c_new, _ = step()
    return h_new, (c_new if c is not None else None)


# The batching rules of both ops (torch.func.vmap, jacrev, per-sample gradients).
from . import cell_vmap  # noqa: E402,F401
