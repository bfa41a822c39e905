"""Double backward on every backend: gradgradcheck in float64 (reference, torch), and second-order
results of the Triton backends against torch.nn in float32 under the interpreter."""

import pytest
import torch

import fusedrnn
from fusedrnn.ops.layer_autograd import LayerForward
from fusedrnn.layer_config import LayerConfig
from conftest import assert_rel_close
from layer_cases import layer_inputs, leaves_of

SMALL_CONFIGS = [LayerConfig("LSTM", True, True, True), LayerConfig("GRU", True, False, False),
                 LayerConfig("RNN_TANH", False, True, False)]


def _layer_fn(cfg, backend, lengths, route):
    """The layer as a function of its differentiable tensors, through one of the two autograd
    routes: the eager ``autograd.Function`` or the custom op's own registered autograd."""
    def f(x, h0, *rest):
        c0, weights = (rest[0], rest[1:]) if cfg.has_cell_state else (None, rest)
        if route == "function":
            y, h_n, c_n, _ = LayerForward.apply(cfg, backend, x, lengths, h0, c0, *weights)
        else:
            y, h_n, c_n, _ = torch.ops.fusedrnn.layer_forward(
                x, lengths, h0, c0, list(weights), cfg.mode, backend, cfg.bidirectional,
                cfg.has_bias, cfg.has_proj)
        return (y, h_n, c_n) if cfg.has_cell_state else (y, h_n)
    return f


@pytest.mark.parametrize("backend", ["reference", "torch"])
@pytest.mark.parametrize("route", ["function", "custom_op"])
@pytest.mark.parametrize("cfg", SMALL_CONFIGS, ids=str)
@pytest.mark.parametrize("lengths", [None, [2, 1]], ids=["full", "var"])
def test_gradgradcheck_float64(backend, route, cfg, lengths):
    # T=2, B=2 with lengths [2, 1] covers a padded step and the reverse direction's late start;
    # H=3 is not a power of two.
    x, lens, h0, c0, weights = layer_inputs(cfg, T=2, B=2, In=2, H=3, P=2, lengths=lengths)
    f = _layer_fn(cfg, backend, lens, route)
    inputs = tuple(leaves_of(x, h0, c0, weights))
    assert torch.autograd.gradcheck(f, inputs, fast_mode=True, check_batched_grad=True)
    assert torch.autograd.gradgradcheck(f, inputs, fast_mode=True, check_batched_grad=True)


def test_gradgradcheck_full_jacobian_on_one_case():
    """Without fast_mode (every Jacobian entry) on the smallest LSTM: T=1, B=1."""
    cfg = LayerConfig("LSTM", False, True, False)
    x, lens, h0, c0, weights = layer_inputs(cfg, T=1, B=1, In=2, H=3)
    assert torch.autograd.gradgradcheck(_layer_fn(cfg, "reference", None, "function"),
                                        tuple(leaves_of(x, h0, c0, weights)))


def _gradient_penalty_grads(module, x, h0):
    """Loss with a gradient-norm penalty (needs create_graph), then backward: the second-order
    quantities a user meets (WGAN-GP, input-gradient regularisation)."""
    params = [p for _, p in module.named_parameters()]
    out, hidden = module(x, h0)
    h_n = hidden[0] if isinstance(hidden, tuple) else hidden
    loss = (out * torch.linspace(-1, 1, out.shape[-1], dtype=out.dtype)).sum() + h_n.square().sum()
    gx, *gparams = torch.autograd.grad(loss, [x] + params, create_graph=True)
    penalty = gx.square().sum() + sum(g.square().sum() for g in gparams)
    return torch.autograd.grad(penalty, [x, h0[0] if isinstance(h0, tuple) else h0] + params)


@pytest.mark.parametrize("backend", ["reference", "triton-step", "triton-persistent"])
@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_second_order_matches_torch_nn(backend, cell):
    torch_cls, fused_cls = {"lstm": (torch.nn.LSTM, fusedrnn.LSTM), "gru": (torch.nn.GRU, fusedrnn.GRU),
                            "rnn": (torch.nn.RNN, fusedrnn.RNN)}[cell]
    # Triton backends refuse float64; fp32 is their dtype, compared to torch.nn in float64.
    dtype = torch.float64 if backend == "reference" else torch.float32
    torch.manual_seed(0)
    ref = torch_cls(2, 3, bidirectional=True).double()
    ours = fused_cls(2, 3, bidirectional=True, backend=backend).to(dtype)
    ours.load_state_dict({k: v.to(dtype) for k, v in ref.state_dict().items()})
    g = torch.Generator().manual_seed(1)
    x64 = torch.randn(3, 2, 2, generator=g, dtype=torch.float64)
    h64 = torch.randn(2, 2, 3, generator=g, dtype=torch.float64)
    h0_64 = (h64, torch.randn(2, 2, 3, generator=g, dtype=torch.float64)) if cell == "lstm" else h64

    def leaves(dt):
        x = x64.to(dt).requires_grad_()
        h0 = tuple(t.to(dt).requires_grad_() for t in h0_64) if cell == "lstm" else h64.to(dt).requires_grad_()
        return x, h0

    want = _gradient_penalty_grads(ref, *leaves(torch.float64))
    got = _gradient_penalty_grads(ours, *leaves(dtype))
    for i, (a, b) in enumerate(zip(got, want)):
        assert_rel_close(a, b, dtype, f"{backend} {cell} second-order grad {i}")


@pytest.mark.parametrize("backend", ["reference", "triton-step"])
def test_third_order_and_hessian_match_torch_nn(backend):
    """Orders beyond two: the composite's backward is itself differentiable."""
    from torch.func import jacrev

    dtype = torch.float64 if backend == "reference" else torch.float32
    torch.manual_seed(0)
    ref = torch.nn.GRU(2, 3).double()
    ours = fusedrnn.GRU(2, 3, backend=backend).to(dtype)
    ours.load_state_dict({k: v.to(dtype) for k, v in ref.state_dict().items()})
    x64 = torch.randn(2, 1, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(3))

    def third(module, x):
        x = x.clone().requires_grad_()
        (g1,) = torch.autograd.grad(module(x)[0].square().sum(), x, create_graph=True)
        (g2,) = torch.autograd.grad(g1.square().sum(), x, create_graph=True)
        return torch.autograd.grad(g2.sum(), x)[0]

    def hessian(module, x):
        return jacrev(jacrev(lambda x: module(x)[0].square().sum()))(x)

    assert_rel_close(third(ours, x64.to(dtype)), third(ref, x64), dtype, "third order")
    assert_rel_close(hessian(ours, x64.to(dtype)), hessian(ref, x64), dtype, "hessian")
