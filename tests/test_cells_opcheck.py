"""``torch.library.opcheck`` on the cell ops: schema, autograd registration, fake tensors and
AOT dispatch, for every mode × backend × bias (``"torch"`` is reachable through the op when it
is called directly)."""

import pytest
import torch

from cell_cases import CELLS, ieee_fp32  # noqa: F401 (a fixture)

pytestmark = pytest.mark.usefixtures("ieee_fp32")
BACKENDS = ["reference", "torch", "triton-step"]
MODES = [CELLS[c][3] for c in CELLS]
B, IN, H = 2, 3, 5   # H odd: a partial hidden tile in the kernels


def _args(mode, bias, seed=0):
    """``[x, h, c or None, w_ih, w_hh, b_ih, b_hh]`` fp32, requiring grad."""
    g = torch.Generator().manual_seed(seed)
    G = {"LSTM": 4, "GRU": 3}.get(mode, 1)

    def randn(*shape):
        return torch.randn(*shape, generator=g).requires_grad_()

    c = randn(B, H) if mode == "LSTM" else None
    biases = (randn(G * H), randn(G * H)) if bias else (None, None)
    return [randn(B, IN), randn(B, H), c, randn(G * H, IN), randn(G * H, H), *biases]


@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("mode", MODES)
def test_opcheck_cell_forward(mode, backend, bias):
    torch.library.opcheck(torch.ops.fusedrnn.cell_forward.default,
                          (*_args(mode, bias), mode, backend, True))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("mode", MODES)
def test_opcheck_cell_backward(mode, backend):
    """With some gradients unwanted (empty outputs); its autograd is the double backward."""
    primals = _args(mode, True)
    with torch.no_grad():
        h2, c2, ws = torch.ops.fusedrnn.cell_forward(*primals, mode, backend, True)
    dh = torch.randn_like(h2).requires_grad_()
    dc = torch.randn_like(c2).requires_grad_() if mode == "LSTM" else None
    needs = [True, False, mode == "LSTM", True, False, True, False]
    # "torch"'s backward differentiates torch's cell with torch.func.vjp inside the op (autograd
    # is off in an op's kernel); test_schema's, test_faketensor's and test_aot_dispatch_dynamic's
    # wrapper tensors are opaque to torch.func ("Cannot access storage of TensorWrapper"). Eager
    # and torch.func calls of it work (test_cells_higher_order goes through the op), and the
    # cells never reach it (they call torch's cell directly for "torch").
    utils = ("test_autograd_registration",) \
        if backend == "torch" else torch.library._OPCHECK_DEFAULT_UTILS
    torch.library.opcheck(torch.ops.fusedrnn.cell_backward.default,
                          (dh, dc, *primals, ws, mode, backend, needs), test_utils=utils)
