"""The cells behave as ``torch.nn``'s: constructor, parameters and their initialisation,
``state_dict``, repr, and the behaviours of PyTorch's own cell tests (``test_nn.py``:
``test_RNN_cell``, ``test_LSTM_cell``, ``test_RNN_cell_forward_zero_hidden_size``,
``test_lstmcell_backward_only_one_output_grad``; ``common_modules.py``: the no-batch-dim
samples of ``module_inputs_torch_nn_RNN_GRU_Cell`` / ``_LSTMCell``), each on every backend.
The error cases of those tests are in ``test_cells_bad_input.py``."""

import pytest
import torch

import fusedrnn
from cell_cases import DEVICE, CELLS, ieee_fp32, is_lstm, make_inputs, run_module, twins  # noqa: F401
from conftest import assert_rel_close

BACKENDS = ["reference", "torch", "triton-step"]
F64 = torch.float64
pytestmark = pytest.mark.usefixtures("ieee_fp32")


def dtype_for(backend):
    # triton-step has no float64 kernels (it refuses them); fp32 it is, with fp32's tolerance.
    return torch.float32 if backend == "triton-step" else F64


@pytest.mark.parametrize("cell", CELLS)
def test_constructor_parameters_initialisation_and_state_dict(cell):
    torch_cls, fused_cls, kw, _ = CELLS[cell]
    for args, kwargs in [((5, 7), {}), ((5, 7), {"bias": False}), ((5, 7, True), {}),
                         ((3, 0), {}), ((5, 7), {"dtype": F64})]:
        torch.manual_seed(0)
        ref = torch_cls(*args, **kw, **kwargs)
        torch.manual_seed(0)
        ours = fused_cls(*args, **kw, **kwargs)
        assert isinstance(ours, torch_cls)
        assert list(ours.state_dict()) == list(ref.state_dict())
        for (n1, p1), (n2, p2) in zip(ref.named_parameters(), ours.named_parameters(), strict=True):
            assert n1 == n2 and p1.dtype == p2.dtype and torch.equal(p1, p2), n1
        for name in ("input_size", "hidden_size", "bias"):
            assert getattr(ours, name) == getattr(ref, name)
        assert repr(ours) == repr(ref)
        assert ours.backend == "auto" and ours.resolved_backend() == "torch"


def test_rnn_cell_positional_nonlinearity_and_repr_with_backend():
    ours = fusedrnn.RNNCell(4, 6, False, "relu", backend="reference")
    assert (ours.nonlinearity, ours.bias) == ("relu", False)
    assert repr(ours) == "RNNCell(4, 6, bias=False, nonlinearity=relu, backend='reference')"
    assert ours.resolved_backend() == "reference"


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("cell", CELLS)
def test_six_step_loop_matches_torch(cell, backend):
    """PyTorch's test_RNN_cell / test_LSTM_cell: six steps fed back, with and without bias,
    then backward through all of them — here compared with torch, outputs and gradients."""
    dtype = dtype_for(backend)
    for bias in (True, False):
        ref, ours = twins(cell, 10, 20, backend, bias=bias, dtype=dtype)
        x, hx, leaves = make_inputs(cell, 3, 10, 20, dtype=dtype)

        def loop(module):
            state = hx
            for _ in range(6):
                state = module(x, state)
            return state

        want, want_grads = _loop_grads(loop, ref, leaves)
        got, got_grads = _loop_grads(loop, ours, leaves)
        for a, b in zip(got, want, strict=True):
            assert_rel_close(a, b, dtype, f"{cell} {backend} bias={bias} output")
        for name in want_grads:
            assert_rel_close(got_grads[name], want_grads[name], dtype, f"{cell} grad {name}")


def _loop_grads(loop, module, leaves):
    outs = loop(module)
    outs = list(outs) if isinstance(outs, tuple) else [outs]
    params = dict(module.named_parameters())
    grads = torch.autograd.grad(sum(o.sum() for o in outs), leaves + list(params.values()))
    return [o.detach() for o in outs], dict(zip([f"input{i}" for i in range(len(leaves))] +
                                                list(params), grads))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("cell", CELLS)
def test_zero_hidden_size(cell, backend):
    """test_RNN_cell_forward_zero_hidden_size (extended to the LSTM and to backward)."""
    ref, ours = twins(cell, 10, 0, backend, dtype=dtype_for(backend))
    x, hx, leaves = make_inputs(cell, 3, 10, 0, dtype=dtype_for(backend))
    got, grads = run_module(ours, x, hx, leaves)
    want, want_grads = run_module(ref, x, hx, leaves)
    assert [o.shape for o in got] == [o.shape for o in want] == [torch.Size([3, 0])] * len(got)
    assert torch.equal(grads["input0"], torch.zeros_like(x))   # nothing depends on x
    assert grads.keys() == want_grads.keys()


@pytest.mark.parametrize("backend", BACKENDS)
def test_lstmcell_backward_only_one_output_grad(backend):
    """Undefined gradients (only h' or only c' used) do not hamper the backward."""
    dtype = dtype_for(backend)
    ref, ours = twins("lstm", 2, 3, backend, dtype=dtype)
    for i in range(2):
        s = torch.randn(1, 2, dtype=dtype, device=DEVICE, requires_grad=True)
        ours(s)[i].sum().backward()
        assert s.grad is not None and s.grad.abs().sum().item() != 0
        want = torch.autograd.grad(ref(s)[i].sum(), s)[0]
        assert_rel_close(s.grad, want, dtype, f"grad of input through output {i}")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("cell", CELLS)
def test_no_batch_dim_matches_batch_of_one(cell, backend):
    """The ModuleInfo samples: ``(5, 10)`` cells (bias default and True; relu for RNNCell)
    fed unbatched ``[5]`` / ``[10]`` match the batch-of-one call squeezed, and torch."""
    dtype = dtype_for(backend)
    ref, ours = twins(cell, 5, 10, backend, dtype=dtype)
    x, hx, leaves = make_inputs(cell, None, 5, 10, dtype=dtype)
    got, _ = run_module(ours, x, hx, leaves)
    batched_hx = tuple(t.unsqueeze(0) for t in hx) if is_lstm(cell) else hx.unsqueeze(0)
    one = ours(x.unsqueeze(0), batched_hx)
    one = list(one) if isinstance(one, tuple) else [one]
    want, _ = run_module(ref, x, hx, leaves)
    for a, b, c in zip(got, one, want, strict=True):
        assert a.shape == torch.Size([10])
        assert_rel_close(a, b.squeeze(0), dtype, "unbatched vs batch of one")
        assert_rel_close(a, c, dtype, "unbatched vs torch")


@pytest.mark.parametrize("cell", CELLS)
def test_deepcopy_and_pickle_keep_weights_and_backend(cell):
    import copy
    import pickle

    _, ours = twins(cell, 4, 6, "reference")
    x, hx, _ = make_inputs(cell, 2, 4, 6)
    want = ours(x, hx)
    for clone in (copy.deepcopy(ours), pickle.loads(pickle.dumps(ours))):
        assert type(clone) is type(ours) and clone.backend == "reference"
        got = clone(x, hx)
        for a, b in zip(got if is_lstm(cell) else [got], want if is_lstm(cell) else [want]):
            assert torch.equal(a, b)
