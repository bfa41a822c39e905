"""Batching rules (``torch.func.vmap``) for ``fusedrnn::cell_forward`` and ``cell_backward``.

N is the vmapped size; the op's own dimensions are as in :mod:`fusedrnn.ops.cell`
(x [B, In], h/c [B, H], w_ih [G*H, In], w_hh [G*H, H], b [G*H]).

* ``cell_forward`` with weights shared by all N samples: the vmapped dimension is folded into
  the batch (one launch on N*B rows). The workspace is per row, so it unfolds to
  ``[N, B, ...]`` like the outputs (an empty one, as the reference and torch backends and
  ``save=False`` return, stays unbatched: nothing reads it).
* Per-sample weights, and every ``cell_backward``: one op call per sample, results stacked.
  The backward cannot fold: its weight gradients are sums over the batch, and a vmapped caller
  (per-sample gradients, ``jacrev``) wants one per sample.
"""

import torch


def _take(t, bdim, i):
    return t if t is None or bdim is None else t.select(bdim, i)


def _folded(t, bdim, n):
    """``t [.., B, ..]`` with its vmapped dimension (or an expansion to ``n``) folded into the
    rows: ``[N*B, ...]``, sample-major."""
    t = t.movedim(bdim, 0) if bdim is not None else t.expand(n, *t.shape)
    return t.flatten(0, 1)


def _forward_rule(info, in_dims, x, h, c, w_ih, w_hh, b_ih, b_hh, mode, backend, save):
    n = info.batch_size
    xd, hd, cd, *wd = in_dims[:7]
    if any(d is not None for d in wd):
        return _per_sample(torch.ops.fusedrnn.cell_forward, n, in_dims,
                           (x, h, c, w_ih, w_hh, b_ih, b_hh, mode, backend, save))
    rows = [_folded(t, d, n) if t is not None else None for t, d in ((x, xd), (h, hd), (c, cd))]
    B = rows[0].shape[0] // n
    h_new, c_new, ws = torch.ops.fusedrnn.cell_forward(*rows, w_ih, w_hh, b_ih, b_hh, mode,
                                                       backend, save)

    def unfold(t):   # an empty placeholder (c' without a cell state, no workspace) stays as is
        return (t.unflatten(0, (n, B)), 0) if t.dim() == 2 and t.shape[0] == n * B else (t, None)

    (h_out, h_dim), (c_out, c_dim), (ws_out, ws_dim) = unfold(h_new), unfold(c_new), unfold(ws)
    return (h_out, c_out, ws_out), (h_dim, c_dim, ws_dim)


def _per_sample(op, n, in_dims, args):
    """One ``op`` call per sample, every output stacked on dimension 0."""
    outs = [op(*(_take(a, d, i) if isinstance(a, torch.Tensor) else a
                 for a, d in zip(args, in_dims))) for i in range(n)]
    stacked = tuple(torch.stack(parts) for parts in zip(*outs))
    return stacked, (0,) * len(stacked)


def _backward_rule(info, in_dims, *args):
    return _per_sample(torch.ops.fusedrnn.cell_backward, info.batch_size, in_dims, args)


torch.library.register_vmap("fusedrnn::cell_forward", _forward_rule)
torch.library.register_vmap("fusedrnn::cell_backward", _backward_rule)
