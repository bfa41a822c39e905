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

Saved for backward: the inputs and the workspace. Gradients are returned for every tensor
input; double backward is not supported. Bad shapes are refused before the op, with torch's
own messages (:func:`check_step`), so the op itself never sees them.
"""

import torch

from ..backends.cell import registry as cell_registry
from ..backends.cell.torch_native import run as torch_step

_Tensor = torch.Tensor


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
    backend: str,
) -> tuple[_Tensor, _Tensor, _Tensor, _Tensor, _Tensor, _Tensor, _Tensor]:
    dh, dc, x, h, c, w_ih, w_hh, b_ih, b_hh, workspace = _contiguous(
        dh, dc, x, h, c, w_ih, w_hh, b_ih, b_hh, workspace)
    return tuple(cell_registry.AVAILABLE[backend].backward(
        mode, x, h, c, w_ih, w_hh, b_ih, b_hh, workspace, dh, dc))


@cell_backward.register_fake
def _(dh, dc, x, h, c, w_ih, w_hh, b_ih, b_hh, workspace, mode, backend):
    def like(t):
        return t.new_empty(t.shape) if t is not None else x.new_empty(0)

    return tuple(like(t) for t in (x, h, c, w_ih, w_hh, b_ih, b_hh))


def _setup_context(ctx, inputs, output):
    *tensors, mode, backend, save = inputs
    ctx.save_for_backward(*tensors, output[2])
    ctx.config = (mode, backend, save)


def _backward(ctx, dh, dc, _dworkspace):
    x, h, c, w_ih, w_hh, b_ih, b_hh, workspace = ctx.saved_tensors
    mode, backend, save = ctx.config
    if not save:
        raise RuntimeError("fusedrnn::cell_forward ran with save=False (nothing saved for "
                           "backward); call it with save=True to differentiate it")
    grads = torch.ops.fusedrnn.cell_backward(
        dh, dc if c is not None else None, x, h, c, w_ih, w_hh, b_ih, b_hh, workspace,
        mode, backend)
    inputs = (x, h, c, w_ih, w_hh, b_ih, b_hh)
    return tuple(g if t is not None else None for g, t in zip(grads, inputs)) + (None,) * 3


cell_forward.register_autograd(_backward, setup_context=_setup_context)


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
    ``backends/cell/torch_native.py``); everything else goes through the op.
    """
    check_step(x, [h] if c is None else [h, c], w_ih, w_hh)
    chosen = cell_registry.pick(backend)
    if chosen.name == "torch":
        return torch_step(mode, x, h, c, w_ih, w_hh, b_ih, b_hh)
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
    h_new, c_new, _ = torch.ops.fusedrnn.cell_forward(x, h, c, w_ih, w_hh, b_ih, b_hh, mode,
                                                      chosen.name, save)
    return h_new, (c_new if c is not None else None)
