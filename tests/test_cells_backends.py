"""Cell backend names, the single-step op called directly, and ``convert`` on cells."""

import pytest
import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

import fusedrnn
from cell_cases import DEVICE, CELLS, ieee_fp32, is_lstm, make_inputs, run_module, twins  # noqa: F401
from conftest import assert_rel_close

F64 = torch.float64
pytestmark = pytest.mark.usefixtures("ieee_fp32")


@pytest.mark.parametrize("backend", ["triton-persistent", "cupy-persistent", "cupy-step"])
@pytest.mark.parametrize("cell", CELLS)
def test_backends_without_a_single_step_form_are_refused_by_name(cell, backend):
    # ValueError even where CuPy is missing: the reason is the missing step form, not CuPy.
    with pytest.raises(ValueError, match=f"backend '{backend}' has no single-step form"):
        CELLS[cell][1](3, 5, **CELLS[cell][2], backend=backend)


def test_cell_backends_are_the_sequence_backends_with_a_single_step_form():
    assert fusedrnn.CELL_BACKENDS == ("auto", "reference", "torch", "triton-step")
    assert set(fusedrnn.CELL_BACKENDS) < set(fusedrnn.BACKENDS)


def test_unknown_backend_lists_the_cell_backends():
    with pytest.raises(ValueError, match="unknown backend 'cudnn'; cells run on 'auto', "
                                         "'reference', 'torch', 'triton-step'$"):
        fusedrnn.LSTMCell(3, 5, backend="cudnn")


def test_triton_step_refuses_float64_with_the_reason():
    cell = fusedrnn.GRUCell(3, 5, backend="triton-step").to(DEVICE, F64)
    with pytest.raises(ValueError, match="cannot run this cell: dtype torch.float64 is not supported"):
        cell(torch.randn(2, 3, dtype=F64, device=DEVICE))


def test_auto_runs_torch_on_cpu():
    assert fusedrnn.LSTMCell(3, 5).resolved_backend() == "torch"


@pytest.mark.parametrize("backend", ["reference", "torch", "triton-step"])
@pytest.mark.parametrize("cell", CELLS)
def test_op_called_directly_matches_torch(cell, backend):
    """``torch.ops.fusedrnn.cell_forward`` + its autograd on each backend (``"torch"`` is only
    reached this way: the modules call torch's cells directly for it)."""
    dtype = torch.float32
    ref, _ = twins(cell, 4, 6, "torch", dtype=dtype)
    x, hx, leaves = make_inputs(cell, 2, 4, 6, dtype=dtype)
    mode = CELLS[cell][3]

    def via_op(inp, state):
        h, c = (state if is_lstm(cell) else (state, None))
        h_new, c_new, _ = torch.ops.fusedrnn.cell_forward(
            inp, h, c, ref.weight_ih, ref.weight_hh, ref.bias_ih, ref.bias_hh, mode, backend, True)
        return (h_new, c_new) if is_lstm(cell) else h_new

    via_op.named_parameters = ref.named_parameters
    got, got_grads = run_module(via_op, x, hx, leaves)
    want, want_grads = run_module(ref, x, hx, leaves)
    for a, b in zip(got, want, strict=True):
        assert_rel_close(a, b, dtype, f"{cell} {backend} output")
    for name, want_grad in want_grads.items():
        assert_rel_close(got_grads[name], want_grad, dtype, f"{cell} {backend} grad {name}")


def test_op_fake_kernel_shapes():
    from torch._subclasses.fake_tensor import FakeTensorMode

    weights = [p.detach() for p in fusedrnn.LSTMCell(3, 5).parameters()]
    with FakeTensorMode() as mode:
        x, h, c = (mode.from_tensor(t) for t in (torch.randn(2, 3), torch.zeros(2, 5),
                                                 torch.zeros(2, 5)))
        w = [mode.from_tensor(p) for p in weights]
        h2, c2, ws = torch.ops.fusedrnn.cell_forward(x, h, c, *w, "LSTM", "triton-step", True)
        _, _, nothing = torch.ops.fusedrnn.cell_forward(x, h, c, *w, "LSTM", "triton-step", False)
    assert (tuple(h2.shape), tuple(c2.shape), tuple(ws.shape)) == ((2, 5), (2, 5), (2, 25))
    assert ws.dtype == torch.float32 and tuple(nothing.shape) == (0,)


class Decoder(nn.Module):
    def __init__(self):
        super().__init__()
        self.enc = nn.GRU(3, 5)
        self.lstm = nn.LSTMCell(5, 5)
        self.inner = nn.Sequential(nn.GRUCell(5, 4), nn.RNNCell(4, 4, bias=False, nonlinearity="relu"))

    def forward(self, x):
        _, h = self.enc(x)
        h, c = self.lstm(h[0])
        return self.inner[1](self.inner[0](h))


@pytest.mark.parametrize("backend", ["auto", "reference", "triton-step"])
def test_convert_replaces_cells_keeping_parameters(backend):
    torch.manual_seed(0)
    model = Decoder().train(False).to(DEVICE)
    x = torch.randn(4, 2, 3, device=DEVICE)
    want = model(x)
    params = dict(model.named_parameters())
    hook_calls = []
    model.lstm.register_forward_hook(lambda *_: hook_calls.append(1))
    fusedrnn.convert(model, backend=backend)
    assert type(model.lstm) is fusedrnn.LSTMCell and type(model.enc) is fusedrnn.GRU
    assert type(model.inner[0]) is fusedrnn.GRUCell and type(model.inner[1]) is fusedrnn.RNNCell
    assert (model.inner[1].nonlinearity, model.inner[1].bias) == ("relu", False)
    assert model.lstm.backend == backend and not model.lstm.training
    got_params = dict(model.named_parameters())
    assert got_params.keys() == params.keys()
    assert all(got_params[n] is p for n, p in params.items())   # the same Parameter objects
    assert_rel_close(model(x), want, torch.float32, "converted model output")
    assert hook_calls == [1]


def test_convert_a_cell_itself_and_refuse_persistent_for_cells():
    cell = nn.GRUCell(3, 4)
    new = fusedrnn.convert(cell, backend="reference")
    assert type(new) is fusedrnn.GRUCell and new.weight_ih is cell.weight_ih
    with pytest.raises(ValueError, match="has no single-step form"):
        fusedrnn.convert(nn.Sequential(nn.LSTMCell(3, 4)), backend="triton-persistent")
    seq = nn.Sequential(nn.LSTM(3, 4))
    assert type(fusedrnn.convert(seq, backend="triton-persistent")[0]) is fusedrnn.LSTM


@pytest.mark.parametrize("cell", CELLS)
def test_inference_skips_the_workspace_and_gives_the_same_step(cell):
    """Without gradients (``save=False``, what the cells pass under no_grad) the kernels store
    no activations; h' and c' are bit-identical to the training step's."""
    ref, _ = twins(cell, 4, 6, "torch", dtype=torch.float32)
    x, hx, _ = make_inputs(cell, 3, 4, 6, dtype=torch.float32)
    h, c = (hx if is_lstm(cell) else (hx, None))
    args = (x, h, c, ref.weight_ih, ref.weight_hh, ref.bias_ih, ref.bias_hh, CELLS[cell][3],
            "triton-step")
    h_train, c_train, ws_train = torch.ops.fusedrnn.cell_forward(*args, True)
    module = CELLS[cell][1](4, 6, **CELLS[cell][2], backend="triton-step").to(DEVICE)
    module.load_state_dict(ref.state_dict())
    with torch.no_grad():
        h_inf, c_inf, ws_inf = torch.ops.fusedrnn.cell_forward(*args, False)
        with SpySave() as no_grad_calls:
            module_out = module(x, hx)
    with SpySave() as training_calls:
        module(x, hx)
    # The module path asks the op for no workspace under no_grad, and for one in training.
    assert no_grad_calls.saves == [False] and training_calls.saves == [True]
    assert ws_train.numel() > 0 and ws_inf.numel() == 0
    assert torch.equal(h_inf, h_train.detach()) and torch.equal(c_inf, c_train.detach())
    first = module_out[0] if is_lstm(cell) else module_out
    assert torch.equal(first, h_train.detach())


class SpySave(TorchDispatchMode):
    """Records the ``save`` argument of every ``fusedrnn::cell_forward`` call inside it."""

    def __init__(self):
        super().__init__()
        self.saves = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func is torch.ops.fusedrnn.cell_forward.default:
            self.saves.append(args[-1])
        return func(*args, **(kwargs or {}))


def test_op_backward_refuses_a_step_that_saved_nothing():
    ref, _ = twins("gru", 4, 6, "torch", dtype=torch.float32)
    x, h, _ = make_inputs("gru", 3, 4, 6, dtype=torch.float32)
    h_new, _, _ = torch.ops.fusedrnn.cell_forward(x, h, None, ref.weight_ih, ref.weight_hh,
                                                  ref.bias_ih, ref.bias_hh, "GRU", "triton-step",
                                                  False)
    with pytest.raises(RuntimeError, match="ran with save=False"):
        h_new.sum().backward()
