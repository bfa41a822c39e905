"""Batching rules (``torch.func.vmap``) for ``fusedrnn::layer_forward`` and ``layer_backward``.

N is the vmapped size; the op's own dimensions are as in :mod:`fusedrnn.ops.layer`
(x [T, B, In], lengths [B], h0 [D, B, Hr], c0 [D, B, H]).

* ``layer_forward`` with weights shared by all N samples: the vmapped dimension is folded into
  the batch (one call on B' = N*B rows). The op wants non-increasing lengths, so with lengths
  the folded rows are sorted (stably) and the outputs unsorted. Its workspace then describes
  all N*B rows at once and is returned unbatched; ``layer_backward``'s rule knows it and
  recomputes a per-sample workspace.
* Per-sample weights, and every ``layer_backward``: one op call per sample, results stacked.
  The backward cannot fold: its weight gradients are sums over the batch, and a vmapped caller
  (per-sample gradients, ``jacrev``) wants one per sample.
* ``layer_backward`` under the *legacy* vmap (``torch._vmap_internals``, which ``gradcheck``'s
  ``check_batched_grad`` and ``autograd.grad(..., is_grads_batched=True)`` use): its batched
  tensors cannot be unwrapped from Python, so the kernel for that dispatch key differentiates
  the composite layer, whose aten ops all batch.
"""

import torch

from . import composite
from ..layer_config import LayerConfig


def _take(t, bdim, i):
    return t if t is None or bdim is None else t.select(bdim, i)


def _batched(t, bdim, n):
    """``t`` with its vmapped dimension first, expanded to ``n`` where it had none."""
    return t.movedim(bdim, 0) if bdim is not None else t.expand(n, *t.shape)


def _fold(t, n, dim):
    """``[N, ..., B at dim, ...] -> [..., N*B at dim, ...]`` (sample-major rows)."""
    return t.movedim(0, dim).flatten(dim, dim + 1)


def _unfold(t, n, dim):
    return t.unflatten(dim, (n, -1))


def _forward_rule(info, in_dims, x, lengths, h0, c0, weights, *config):
    xd, ld, hd, cd, wd = in_dims[:5]
    n = info.batch_size
    if any(d is not None for d in wd):
        return _forward_per_sample(n, in_dims, x, lengths, h0, c0, weights, config)
    xf = _fold(_batched(x, xd, n), n, 1)                       # [T, N*B, In]
    hf = _fold(_batched(h0, hd, n), n, 1)                      # [D, N*B, Hr]
    cf = None if c0 is None else _fold(_batched(c0, cd, n), n, 1)
    order = None
    lf = None
    if lengths is not None:
        lf = _batched(lengths, ld, n).reshape(-1)              # [N*B]
        order = torch.sort(lf, descending=True, stable=True).indices
        lf = lf[order]
        dev_order = order.to(x.device)
        xf, hf = xf.index_select(1, dev_order), hf.index_select(1, dev_order)
        cf = None if cf is None else cf.index_select(1, dev_order)
    y, h_n, c_n, ws = torch.ops.fusedrnn.layer_forward(xf, lf, hf, cf, weights, *config)
    if order is not None:
        inverse = torch.empty_like(order)
        inverse[order] = torch.arange(order.numel())
        inverse = inverse.to(x.device)
        y, h_n = y.index_select(1, inverse), h_n.index_select(1, inverse)
        c_n = c_n.index_select(1, inverse) if c0 is not None else c_n
    c_out, c_dim = (_unfold(c_n, n, 1), 1) if c0 is not None else (c_n, None)
    return (_unfold(y, n, 1), _unfold(h_n, n, 1), c_out, ws), (1, 1, c_dim, None)


def _forward_per_sample(n, in_dims, x, lengths, h0, c0, weights, config):
    xd, ld, hd, cd, wd = in_dims[:5]
    outs = [torch.ops.fusedrnn.layer_forward(
        _take(x, xd, i), _take(lengths, ld, i), _take(h0, hd, i), _take(c0, cd, i),
        [_take(w, d, i) for w, d in zip(weights, wd)], *config) for i in range(n)]
    return tuple(torch.stack(parts) for parts in zip(*outs)), (0, 0, 0, 0)


def _backward_rule(info, in_dims, dy, dh_n, dc_n, x, lengths, h0, c0, weights, y, workspace,
                   *config):
    n = info.batch_size
    dyd, dhd, dcd, xd, ld, hd, cd, wd, yd, wsd = in_dims[:10]
    # The forward ran per sample (so its workspace matches each sample) when nothing it read
    # was batched or its workspace came back batched; otherwise it was folded.
    forward_batched = any(d is not None for d in (xd, ld, hd, cd, *wd))
    own_workspace = wsd is not None or not forward_batched
    results = []
    for i in range(n):
        xi, li, hi, ci = _take(x, xd, i), _take(lengths, ld, i), _take(h0, hd, i), _take(c0, cd, i)
        wi = [_take(w, d, i) for w, d in zip(weights, wd)]
        yi, wsi = _take(y, yd, i), _take(workspace, wsd, i)
        if not own_workspace:
            yi, _, _, wsi = torch.ops.fusedrnn.layer_forward(xi, li, hi, ci, wi, *config)
        dx, dh0, dc0, dw = torch.ops.fusedrnn.layer_backward(
            _take(dy, dyd, i), _take(dh_n, dhd, i), _take(dc_n, dcd, i), xi, li, hi, ci, wi, yi,
            wsi, *config)
        results.append((dx, dh0, dc0, dw))
    dx, dh0, dc0, dw = zip(*results)
    stacked = (torch.stack(dx), torch.stack(dh0), torch.stack(dc0),
               [torch.stack(parts) for parts in zip(*dw)])
    return stacked, (0, 0, 0, [0] * len(weights))


def _legacy_batched_backward(dy, dh_n, dc_n, x, lengths, h0, c0, weights, y, workspace, mode,
                             backend, bidirectional, has_bias, has_proj):
    cfg = LayerConfig(mode, bidirectional, has_bias, has_proj)
    lstm = cfg.has_cell_state
    with torch.enable_grad():
        leaves = [t.detach().requires_grad_() for t in [x, h0] + ([c0] if lstm else []) + list(weights)]
        k = 3 if lstm else 2
        outs = composite.layer(cfg, leaves[0], lengths, leaves[1], leaves[2] if lstm else None,
                               leaves[k:])
        grads = torch.autograd.grad([o for o in outs if o is not None], leaves,
                                    [dy, dh_n] + ([dc_n] if lstm else []))
    return grads[0], grads[1], (grads[2] if lstm else x.new_empty(0)), list(grads[k:])


torch.library.impl("fusedrnn::layer_backward", "Batched")(_legacy_batched_backward)
torch.library.register_vmap("fusedrnn::layer_forward", _forward_rule)
torch.library.register_vmap("fusedrnn::layer_backward", _backward_rule)
