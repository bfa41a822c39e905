"""``fusedrnn::layer_export``: the one-layer op as ``torch.export`` records it, with an aten
decomposition that ``ExportedProgram.run_decompositions()`` applies by default.

Under ``torch.export`` :func:`fusedrnn.ops.layer.run_layer` emits this op instead of
``layer_forward``. It has the same arguments and returns ``(y, h_n, c_n)`` (no workspace: an
exported program does not run backward through the fused kernels). Its kernels:

* CPU/CUDA (the custom op's own): the chosen backend's forward, so ``ep.module()`` runs the
  fused kernels while fusedrnn is imported;
* ``CompositeImplicitAutograd``: the composite layer (:mod:`fusedrnn.ops.composite`: one GEMM for the
  input projection, then the unrolled time loop). ``run_decompositions()`` lowers every custom op
  that has such a kernel, so the decomposed program holds aten ops only and saves, loads and
  runs where fusedrnn is not installed, and differentiates through those aten ops.

The op itself has no autograd formula: a program that is *not* decomposed runs forward only
(``backward`` through ``ep.module()`` raises "no autograd formula was registered"); decompose
it to fine-tune it.

Why not a decomposition on ``layer_forward`` itself: inductor copies every
``CompositeImplicitAutograd`` kernel into its own decomposition table when it is imported, so
``torch.compile`` would stop calling the fused kernels (and drop the workspace they save).
"""

import torch

from . import composite
from ..backends import registry as backend_registry
from ..layer_config import LayerConfig
from .layer import _check_lengths, _contiguous


@torch.library.custom_op("fusedrnn::layer_export", mutates_args=())
def layer_export(
    x: torch.Tensor, lengths: torch.Tensor | None, h0: torch.Tensor, c0: torch.Tensor | None,
    weights: list[torch.Tensor], mode: str, backend: str, bidirectional: bool, has_bias: bool,
    has_proj: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    cfg = LayerConfig(mode, bidirectional, has_bias, has_proj)
    _check_lengths(lengths, x)
    x, h0, c0, *weights = _contiguous(x, h0, c0, *weights)
    y, h_n, c_n, _ = backend_registry.AVAILABLE[backend].forward(cfg, x, lengths, h0, c0, weights)
    return y, h_n, c_n


@layer_export.register_fake
def _(x, lengths, h0, c0, weights, mode, backend, bidirectional, has_bias, has_proj):
    cfg = LayerConfig(mode, bidirectional, has_bias, has_proj)
    _, Hr = cfg.hidden_sizes(weights)
    T, B, _ = x.shape
    c_n = c0.new_empty(c0.shape) if cfg.has_cell_state else x.new_empty(0)
    return x.new_empty((T, B, cfg.directions * Hr)), h0.new_empty(h0.shape), c_n


def layer_export_decomposition(x, lengths, h0, c0, weights, mode, backend, bidirectional,
                               has_bias, has_proj):
    """``layer_export`` in aten ops; same arguments and outputs."""
    cfg = LayerConfig(mode, bidirectional, has_bias, has_proj)
    y, h_n, c_n = composite.layer(cfg, x, lengths, h0, c0, weights)
    return y, h_n, (c_n if cfg.has_cell_state else x.new_zeros(0))


torch.library.impl("fusedrnn::layer_export", "CompositeImplicitAutograd")(layer_export_decomposition)
