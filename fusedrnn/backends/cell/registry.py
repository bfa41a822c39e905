"""Backend names for the single-step cells (``fusedrnn.LSTMCell`` and friends) and selection.

A cell backend implements the one-step contract (see :mod:`fusedrnn.ops.cell`):

* ``unsupported_reason(mode, x) -> str | None``: why it cannot run this step, or None;
* ``workspace_spec(mode, x, hidden_size, save) -> (shape, dtype)``: what forward saves for
  backward (nothing needs to be saved when ``save`` is false: no backward will follow);
* ``forward(mode, x, h, c, w_ih, w_hh, b_ih, b_hh, save) -> (h', c', workspace)``;
* ``backward(mode, x, h, c, w_ih, w_hh, b_ih, b_hh, workspace, dh, dc, needs)
  -> (dx, dh_prev, dc_prev, dw_ih, dw_hh, db_ih, db_hh)``; ``needs`` (7 bools, in that order)
  names the gradients wanted: a backend may skip the others' work (what it returns for them
  is dropped by the op).

Absent tensors (``c`` and its gradients for cells without a cell state, biases with
``bias=False``) are None on the way in and empty tensors on the way out.

The names (``fusedrnn.CELL_BACKENDS``) are those of the sequence modules (``fusedrnn.BACKENDS``)
that have a single-step meaning. The persistent and CuPy
backends exist to keep state on chip *across* timesteps; one step has nothing to keep, so
naming them for a cell is a ``ValueError`` that says so rather than a silent substitute.
"""

from .reference import CellReferenceBackend
from .torch_native import CellTorchBackend
from .triton_step import CellTritonStepBackend

AVAILABLE = {b.name: b for b in (CellReferenceBackend(), CellTorchBackend(),
                                 CellTritonStepBackend())}
NAMES = ("auto",) + tuple(AVAILABLE)
_NO_SINGLE_STEP = {
    "triton-persistent": "it runs a whole sequence in one launch",
    "cupy-persistent": "it runs a whole sequence in one launch",
    "cupy-step": "its step kernel is driven by the sequence launcher",
}


def check_name(name):
    """Raise ``ValueError`` unless ``name`` is a backend a cell can run on."""
    choices = ", ".join(repr(n) for n in NAMES)
    if name in _NO_SINGLE_STEP:
        raise ValueError(f"backend {name!r} has no single-step form ({_NO_SINGLE_STEP[name]}); "
                         f"cells run on {choices}")
    if name not in NAMES:
        raise ValueError(f"unknown backend {name!r}; cells run on {choices}")


def pick(name):
    """The backend object ``name`` stands for (``"auto"`` is ``"torch"``, see :func:`resolve`),
    before asking whether it can run a particular step."""
    check_name(name)
    return AVAILABLE["torch" if name == "auto" else name]


def resolve(name, mode, x):
    """The cell backend that runs one ``mode`` step on ``x`` for the requested ``name``.

    ``"auto"`` is ``"torch"`` until a GPU measurement shows the fused step faster (the decode
    benchmark in :mod:`fusedrnn.cell_bench`). A named backend that cannot run the step raises
    ``ValueError`` with its reason.
    """
    backend = pick(name)
    reason = backend.unsupported_reason(mode, x)
    if reason is not None:
        raise ValueError(f"backend {name!r} cannot run this cell: {reason}")
    return backend
