"""Backward computes only the gradients autograd asks for (``ctx.needs_input_grad``): frozen
weights get no gradient and cost no GEMM, input gradients are unchanged."""

import pytest
import torch

from cell_cases import CELLS, ieee_fp32, is_lstm, make_inputs, twins  # noqa: F401 (a fixture)

pytestmark = pytest.mark.usefixtures("ieee_fp32")
BACKENDS = ["reference", "torch", "triton-step"]
B, IN, H = 3, 4, 5


class CountMatmuls:
    """Counts the ``@`` products run inside the context (the GEMMs of the triton-step
    backward; a dispatch mode would not see them: they run inside the opaque custom op)."""

    def __init__(self, monkeypatch):
        self.count = 0
        matmul = torch.Tensor.__matmul__

        def counting(a, b):
            self.count += 1
            return matmul(a, b)
        self._patch = (monkeypatch, counting)

    def __enter__(self):
        monkeypatch, counting = self._patch
        monkeypatch.setattr(torch.Tensor, "__matmul__", counting)
        return self

    def __exit__(self, *exc):
        self._patch[0].undo()


def _backward(cell, backend, freeze_weights, x_needs_grad, monkeypatch=None):
    """``(leaf grads, parameter grads, GEMMs run in backward or None)`` of one step."""
    _, ours = twins(cell, IN, H, backend, dtype=torch.float32, device="cpu")
    ours.requires_grad_(not freeze_weights)
    x, hx, leaves = make_inputs(cell, B, IN, H, dtype=torch.float32, device="cpu")
    x.requires_grad_(x_needs_grad)
    out = ours(x, hx)
    outs = out if isinstance(out, tuple) else (out,)
    loss = sum(((k + 1) * o).sum() for k, o in enumerate(outs))
    if monkeypatch is None:
        loss.backward()
        return [t.grad for t in leaves], [p.grad for p in ours.parameters()], None
    with CountMatmuls(monkeypatch) as gemms:
        loss.backward()
    return [t.grad for t in leaves], [p.grad for p in ours.parameters()], gemms.count


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("cell", CELLS)
def test_frozen_weights_get_no_gradient_and_the_same_input_gradients(cell, backend):
    full_leaves, full_params, _ = _backward(cell, backend, False, True)
    leaves, params, _ = _backward(cell, backend, True, True)
    assert all(p is None for p in params)
    assert all(g is not None for g in full_params)
    for got, want in zip(leaves, full_leaves, strict=True):
        assert torch.equal(got, want)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("cell", CELLS)
def test_input_without_grad_gets_none_and_the_same_weight_gradients(cell, backend):
    _, full_params, _ = _backward(cell, backend, False, True)
    leaves, params, _ = _backward(cell, backend, False, False)
    assert leaves[0] is None and all(g is not None for g in leaves[1:])
    for got, want in zip(params, full_params, strict=True):
        assert torch.equal(got, want)


@pytest.mark.parametrize("cell", CELLS)
def test_triton_step_backward_runs_only_the_wanted_gemms(cell, monkeypatch):
    """Four GEMMs (dx, dh, dW_ih, dW_hh) with everything trainable; frozen weights leave dx and
    dh; an input without grad as well leaves dh alone."""
    assert _backward(cell, "triton-step", False, True, monkeypatch)[2] == 4
    assert _backward(cell, "triton-step", True, True, monkeypatch)[2] == 2
    assert _backward(cell, "triton-step", True, False, monkeypatch)[2] == 1


@pytest.mark.parametrize("backend", ["reference", "torch", "triton-step"])
def test_op_returns_empty_tensors_for_unwanted_gradients(backend):
    ref, _ = twins("lstm", IN, H, "torch", dtype=torch.float32, device="cpu")
    x, (h, c), _ = make_inputs("lstm", B, IN, H, dtype=torch.float32, device="cpu")
    weights = [p.detach() for p in ref.parameters()]
    h2, c2, ws = torch.ops.fusedrnn.cell_forward(x, h, c, *weights, "LSTM", backend, True)
    needs = [True, False, True, False, True, False, True]
    grads = torch.ops.fusedrnn.cell_backward(torch.ones_like(h2), torch.ones_like(c2), x, h, c,
                                             *weights, ws, "LSTM", backend, needs)
    for g, t, want in zip(grads, [x, h, c, *weights], needs, strict=True):
        assert tuple(g.shape) == (tuple(t.shape) if want else (0,))
