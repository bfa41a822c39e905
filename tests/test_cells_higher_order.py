"""Derivatives of the cells beyond first order, and ``torch.func``, on every cell backend.

* ``gradgradcheck`` in float64 on ``"reference"`` and ``"torch"``, through both routes into the
  op: the op's registered autograd (what ``torch.compile`` uses) and the eager
  ``autograd.Function`` twins (``fusedrnn/ops/cell_autograd.py``).
* ``"triton-step"`` (the interpreter) double backward against ``torch.nn``'s cells in fp32.
* ``torch.func.grad`` over the input and over the parameters (``functional_call``) and
  ``torch.func.vjp`` on every backend, against ``torch.nn``'s cells.
"""

import pytest
import torch
from torch.func import functional_call, grad, vjp

from cell_cases import CELLS, ieee_fp32, is_lstm, twins  # noqa: F401 (a fixture)
from conftest import assert_rel_close
from fusedrnn.ops.cell_autograd import CellForward

F64, F32 = torch.float64, torch.float32
pytestmark = pytest.mark.usefixtures("ieee_fp32")
BACKENDS = ["reference", "torch", "triton-step"]


def _leaves(cell, B, In, H, bias, dtype, seed=0):
    """``[x, h, c or None, w_ih, w_hh, b_ih or None, b_hh or None]``, all requiring grad.
    Weights scaled to 0.5 so that no relu pre-activation sits near its kink (finite
    differences at 1e-6 would straddle it)."""
    g = torch.Generator().manual_seed(seed)
    G = {"lstm": 4, "gru": 3}.get(cell, 1)

    def randn(*shape, scale=1.0):
        return (scale * torch.randn(*shape, generator=g, dtype=F64)).to(dtype).requires_grad_()

    c = randn(B, H) if is_lstm(cell) else None
    b = (randn(G * H, scale=0.5), randn(G * H, scale=0.5)) if bias else (None, None)
    return [randn(B, In), randn(B, H), c, randn(G * H, In, scale=0.5),
            randn(G * H, H, scale=0.5), *b]


def _step_fn(cell, backend, route, leaves):
    """``(*present leaves) -> (h', [c'])`` through ``route``: "op" or "function"."""
    mode = CELLS[cell][3]
    present = [k for k, t in enumerate(leaves) if t is not None]

    def step(*tensors):
        args = list(leaves)
        for k, t in zip(present, tensors):
            args[k] = t
        if route == "op":
            h, c, _ = torch.ops.fusedrnn.cell_forward(*args, mode, backend, True)
        else:
            h, c, _ = CellForward.apply(mode, backend, True, *args)
        return (h, c) if is_lstm(cell) else h
    return step, [leaves[k] for k in present]


@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize("route", ["op", "function"])
@pytest.mark.parametrize("backend", ["reference", "torch"])
@pytest.mark.parametrize("cell", CELLS)
def test_gradgradcheck_float64(cell, backend, route, bias):
    # B=2, In=3, H=5: H not a power of two; batch > 1 so weight gradients sum over rows.
    step, inputs = _step_fn(cell, backend, route, _leaves(cell, 2, 3, 5, bias, F64))
    assert torch.autograd.gradcheck(step, inputs)
    assert torch.autograd.gradgradcheck(step, inputs)


def _double_backward(step, inputs, seed=2):
    """Second-order results of a scalar loss: ``∂/∂inputs ‖∂L/∂inputs‖²`` with
    ``L = Σ w_k · out_k`` (seeded weights, so every output and every element counts)."""
    outs = step(*inputs)
    outs = outs if isinstance(outs, tuple) else (outs,)
    g = torch.Generator().manual_seed(seed)
    loss = sum((torch.randn(o.shape, generator=g).to(o) * o).sum() for o in outs)
    first = torch.autograd.grad(loss, inputs, create_graph=True)
    second = torch.autograd.grad(sum((f ** 2).sum() for f in first), inputs)
    return first, second


@pytest.mark.parametrize("shape", [(1, 3, 5), (3, 2, 7)], ids=["B1-In3-H5", "B3-In2-H7"])
@pytest.mark.parametrize("cell", CELLS)
def test_triton_step_double_backward_matches_torch(cell, shape):
    """fp32 in the interpreter; fp32's tolerance (IEEE dots there, the second order itself is
    the composite cell in fp32, so the two sides differ by fp32 rounding only)."""
    B, In, H = shape
    ref, ours = twins(cell, In, H, "triton-step", dtype=F32, device="cpu")
    leaves = _leaves(cell, B, In, H, True, F32)[:3]
    inputs = [t for t in leaves if t is not None]
    hx_of = (lambda s: (s[1], s[2])) if is_lstm(cell) else (lambda s: s[1])

    def run(module):
        # inputs, then the module's own parameters (which forward reads from the module)
        def step(*tensors):
            return module(tensors[0], hx_of(tensors))
        return _double_backward(step, inputs + list(module.parameters()))

    (want1, want2), (got1, got2) = run(ref), run(ours)
    for k, (a, b) in enumerate(zip(got1 + got2, want1 + want2, strict=True)):
        assert_rel_close(a, b, F32, f"{cell} {shape} {'first' if k < len(got1) else 'second'} "
                                    f"order, tensor {k % len(got1)}")


def _loss(module, params, x, hx):
    out = functional_call(module, params, (x, hx))
    outs = out if isinstance(out, tuple) else (out,)
    return sum(((k + 1) * o).sin().sum() for k, o in enumerate(outs))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("cell", CELLS)
def test_torch_func_grad_and_vjp(cell, backend):
    ref, ours = twins(cell, 3, 5, backend, dtype=F32, device="cpu")
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, 3, generator=g)
    hx = (torch.randn(2, 5, generator=g), torch.randn(2, 5, generator=g)) \
        if is_lstm(cell) else torch.randn(2, 5, generator=g)
    params = {k: v.detach() for k, v in ref.named_parameters()}
    # Over the parameters and the input at once, then over the input alone.
    want_p, want_x = grad(_loss, argnums=(1, 2))(ref, params, x, hx)
    got_p, got_x = grad(_loss, argnums=(1, 2))(ours, params, x, hx)
    assert_rel_close(got_x, want_x, F32, f"{cell} {backend} grad x")
    for k in params:
        assert_rel_close(got_p[k], want_p[k], F32, f"{cell} {backend} grad {k}")
    only_x = grad(lambda inp: _loss(ours, params, inp, hx))(x)
    assert_rel_close(only_x, want_x, F32, f"{cell} {backend} grad over x alone")
    # vjp of the step itself, cotangent ones.
    out_ref, vjp_ref = vjp(lambda inp: ref(inp, hx), x)
    out_ours, vjp_ours = vjp(lambda inp: ours(inp, hx), x)
    cot = tuple(torch.ones_like(o) for o in out_ref) if is_lstm(cell) else torch.ones_like(out_ref)
    assert_rel_close(vjp_ours(cot)[0], vjp_ref(cot)[0], F32, f"{cell} {backend} vjp")


@pytest.mark.parametrize("backend", ["reference", "triton-step"])
@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_third_order_matches_torch(cell, backend):
    """The second order is itself differentiable (torch.func results carry history)."""
    ref, ours = twins(cell, 3, 4, backend, dtype=F32, device="cpu")
    leaves = _leaves(cell, 2, 3, 4, False, F32)
    hx = (leaves[1].detach(), leaves[2].detach()) if is_lstm(cell) else leaves[1].detach()

    def third(module):
        x = leaves[0].detach().requires_grad_()
        out = module(x, hx)
        loss = sum(o.sin().sum() for o in (out if isinstance(out, tuple) else (out,)))
        g1, = torch.autograd.grad(loss, x, create_graph=True)
        g2, = torch.autograd.grad((g1 ** 2).sum(), x, create_graph=True)
        return torch.autograd.grad((g2 ** 3).sum(), x)[0]

    assert_rel_close(third(ours), third(ref), F32, f"{cell} {backend} third order")
