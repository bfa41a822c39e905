"""The custom ops every backend sits behind, and what makes them behave as torch's own:

* ``layer`` — ``torch.ops.fusedrnn.layer_forward`` / ``layer_backward`` (one recurrent layer,
  both directions, variable lengths), their fake kernels and autograd; ``run_layer`` routes a
  call (eager, compile, export, ONNX, tracing);
* ``packed_layer`` — the same for packed rows and ``batch_sizes`` (``torch.compile`` with
  ``PackedSequence``);
* ``cell`` — ``cell_forward`` / ``cell_backward``, one step of a cell module, with
  ``cell_autocast`` (torch's autocast dtypes for the fused cells), ``cell_second_order`` (the
  composite cell that double backward differentiates), ``cell_autograd`` (``torch.func``-ready
  autograd.Functions) and ``cell_vmap`` (batching rules);
* ``composite`` — one layer in differentiable torch ops, the op's composite form, which
  ``second_order`` (double backward and forward mode), ``layer_vmap`` (batching rules),
  ``layer_autograd`` (``torch.func``-ready autograd.Functions), ``layer_decomposition``
  (``torch.export``) and ``onnx_layer`` (ONNX operators) build on.
"""
