"""Bad input to the cells: fusedrnn raises what ``torch.nn``'s cells raise, type and message,
captured at run time from the torch twin fed the same arguments (nothing hard-coded)."""

import pytest
import torch

import fusedrnn
from cell_cases import CELLS, assert_same_error, is_lstm, twins

BACKENDS = ["reference", "torch", "triton-step"]
IN, H, B = 10, 20, 3


def randn(*shape):
    return torch.randn(*shape, dtype=torch.float32)


def state(cell, h, c=None):
    """hx for ``cell`` from h (and c, default a good one) shapes."""
    if is_lstm(cell):
        return (randn(*h), randn(*(c or h)))
    return randn(*h)


def bad_calls(cell):
    """``name -> (input, hx)`` pairs torch refuses, covering the issue's list (wrong input
    size, mismatched batch, wrongly shaped state, 3-D input) and torch's own cell tests
    (``test_RNN_cell_no_broadcasting``, ``test_LSTM_cell_forward_input_size`` /
    ``_hidden_size``, the ModuleInfo error inputs)."""
    cases = {
        "input_size": (randn(B, IN + 1), state(cell, (B, H))),
        "input_size_broadcastable": (randn(B, 1), state(cell, (B, H))),
        "batch": (randn(B, IN), state(cell, (5, H))),
        "batch_broadcastable": (randn(B, IN), state(cell, (1, H))),
        "hidden_size": (randn(B, IN), state(cell, (B, H + 1))),
        "hidden_size_broadcastable": (randn(B, IN), state(cell, (B, 1))),
        "input_3d": (randn(1, B, IN), None),
        "input_0d": (randn(()), None),
        "hidden_3d": (randn(B, IN), state(cell, (1, B, H))),
        "hidden_4d": (randn(B, IN), state(cell, (B, 1, 1, H))),
        "unbatched_input_batched_hidden": (randn(IN), state(cell, (1, H))),
        "unbatched_input_wrong_width": (randn(IN + 2), state(cell, (H,))),
        "unbatched_hidden_wrong_width": (randn(IN), state(cell, (H - 1,))),
    }
    if is_lstm(cell):
        cases.update({
            "cell_state_size": (randn(B, IN), state(cell, (B, H), (B, H + 1))),
            "cell_state_batch": (randn(B, IN), state(cell, (B, H), (1, H))),
            "cell_state_3d": (randn(B, IN), state(cell, (B, H), (1, B, H))),
            "one_state": (randn(B, IN), (randn(B, H),)),
            "three_states": (randn(B, IN), (randn(B, H),) * 3),
            "unbatched_one_state": (randn(IN), (randn(H),)),
            # a stacked [2, B, H] tensor: torch's argument parser wants a tuple
            "stacked_state_tensor": (randn(B, IN), randn(2, B, H)),
            "stacked_state_tensor_3": (randn(B, IN), randn(3, B, H)),
        })
    return cases


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("cell", CELLS)
def test_bad_forward_input_raises_torchs_error(cell, backend):
    # On the CPU everywhere: every error is raised before a backend runs.
    ref, ours = twins(cell, IN, H, backend, dtype=torch.float32, device="cpu")
    for name, (inp, hx) in bad_calls(cell).items():
        try:
            assert_same_error(lambda: ref(inp, hx), lambda: ours(inp, hx))
        except AssertionError as e:
            raise AssertionError(f"case {name}: {e}") from None


@pytest.mark.parametrize("cell", CELLS)
def test_bad_constructor_arguments_raise_torchs_error(cell):
    torch_cls, fused_cls, kw, _ = CELLS[cell]
    for args, kwargs in [((IN,), {}), ((IN, H), {"proj_size": 2}), ((IN, H), {"batch_first": True}),
                         ((-1, H), {}), ((IN, H), {"dtype": torch.int64})]:
        assert_same_error(lambda: torch_cls(*args, **kw, **kwargs),
                          lambda: fused_cls(*args, **kw, **kwargs))


def test_unknown_nonlinearity_raises_torchs_error():
    # torch accepts the name at construction and refuses it in forward; so do we.
    ref = torch.nn.RNNCell(IN, H, nonlinearity="gelu")
    ours = fusedrnn.RNNCell(IN, H, nonlinearity="gelu")
    assert_same_error(lambda: ref(randn(B, IN)), lambda: ours(randn(B, IN)))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("cell", CELLS)
def test_mixed_dtypes_raise_torchs_error(cell, backend):
    ref, ours = twins(cell, IN, H, backend, dtype=torch.float32, device="cpu")
    x64 = torch.randn(B, IN, dtype=torch.float64)
    h64 = state(cell, (B, H))
    h64 = tuple(t.double() for t in h64) if is_lstm(cell) else h64.double()
    for inp, hx in [(x64, None), (torch.randn(B, IN), h64)]:
        assert_same_error(lambda: ref(inp, hx), lambda: ours(inp, hx))


@pytest.mark.parametrize("backend", ["reference", "triton-step"])
def test_mixture_torch_accepts_is_refused_with_the_reason(backend):
    # torch's LSTM cell promotes a float64 c against float32 gates (pointwise type promotion,
    # c' comes out float64); the kernels take one dtype, so the fused backends refuse it.
    ref, ours = twins("lstm", IN, H, backend, dtype=torch.float32, device="cpu")
    x, hx = randn(B, IN), (randn(B, H), randn(B, H).double())
    assert ref(x, hx)[1].dtype == torch.float64
    with pytest.raises(ValueError, match=f"backend '{backend}' needs the input, states and "
                                         "weights in one dtype on one device"):
        ours(x, hx)
