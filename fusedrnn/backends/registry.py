"""Backend names and selection.

Every backend implements the one-layer contract (see :mod:`fusedrnn.ops.layer`):

* ``unsupported_reason(cfg, x, weights) -> str | None``: why it cannot run this layer, or None;
* ``forward(cfg, x, lengths, h0, c0, weights) -> (y, h_n, c_n, workspace)``;
* ``backward(cfg, x, lengths, h0, c0, weights, y, workspace, dy, dh_n, dc_n)
  -> (dx, dh0, dc0, dweights)``;
* ``workspace_spec(cfg, x, hidden_size) -> (shape, dtype)``: what forward saves for backward.

A variant layer (``cfg.is_variant``: LayerNorm, resets, zoneout) calls the same ``forward`` and
``backward`` with the keywords ``starts`` and ``keep`` (:mod:`fusedrnn.ops.variant_layer`).
"""

from .cupy_persistent import CupyPersistentBackend
from .cupy_step import CupyStepBackend
from .reference import ReferenceBackend
from .torch_native import TorchBackend
from .triton_persistent import TritonPersistentBackend
from .triton_step import TritonStepBackend

AVAILABLE = {b.name: b for b in (ReferenceBackend(), TorchBackend(), TritonStepBackend(),
                                 TritonPersistentBackend(), CupyPersistentBackend(),
                                 CupyStepBackend())}
# Backends whose kernels are launched through CuPy, an optional dependency.
NEEDS_CUPY = ("cupy-persistent", "cupy-step")
NAMES = ("auto",) + tuple(AVAILABLE)


def check_name(name):
    """Raise ``ValueError`` unless ``name`` is a backend name, and ``ImportError`` naming the
    extra to install when it is a CuPy backend and CuPy cannot be imported."""
    if name not in NAMES:
        raise ValueError(f"unknown backend {name!r}; choose from "
                         f"{', '.join(repr(n) for n in NAMES)}")
    if name in NEEDS_CUPY:
        from ..kernels.cuda.loader import require_cupy

        require_cupy(name)


def resolve(name, cfg, x, weights):
    """The backend object that runs ``cfg`` on ``x`` for the requested ``name``.

    ``"auto"`` picks the fastest backend that supports the layer on ``x``'s device. Until a GPU
    benchmark has shown a fused backend faster than cuDNN for a case (issue 7), that is
    ``"torch"`` everywhere. An explicitly named backend that cannot run the layer raises
    ``ValueError`` with its reason.
    """
    check_name(name)
    if name == "auto":
        return AVAILABLE["torch"]
    backend = AVAILABLE[name]
    reason = backend.unsupported_reason(cfg, x, weights)
    if reason is not None:
        raise ValueError(f"backend {name!r} cannot run this layer: {reason}")
    return backend
