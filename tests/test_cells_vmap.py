"""``torch.func.vmap`` over the fused cells (the ops' batching rules, ``ops/cell_vmap.py``):
shared weights fold the vmapped dimension into the batch, per-sample weights loop; ``jacrev``
and per-sample gradients (``vmap(grad)``) go through ``cell_backward``'s rule. Compared with
``torch.nn``'s cells run sample by sample (``torch.nn.LSTMCell`` itself has no batching rule:
"Batching rule not implemented for aten::lstm_cell"), in fp32 (fp32's tolerance: the same
math per sample, IEEE dots in the interpreter)."""

import pytest
import torch
from torch.func import functional_call, grad, jacrev, vmap

from cell_cases import CELLS, ieee_fp32, is_lstm, twins  # noqa: F401 (a fixture)
from conftest import assert_rel_close

F32 = torch.float32
pytestmark = pytest.mark.usefixtures("ieee_fp32")
N, B, IN, H = 3, 2, 3, 5   # N vmapped samples of B rows; H odd


def _state(cell, h):
    return (h, h.cos()) if is_lstm(cell) else h


def _outs(result):
    return list(result) if isinstance(result, tuple) else [result]


def _data(cell, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(N, B, IN, generator=g), torch.randn(N, B, H, generator=g)


@pytest.mark.parametrize("backend", ["reference", "triton-step"])
@pytest.mark.parametrize("cell", CELLS)
def test_vmap_forward_with_shared_and_per_sample_weights(cell, backend):
    ref, ours = twins(cell, IN, H, backend, dtype=F32, device="cpu")
    x, h = _data(cell)
    want = [torch.stack(parts) for parts in
            zip(*(_outs(ref(x[i], _state(cell, h[i]))) for i in range(N)))]
    got = _outs(vmap(lambda xi, hi: ours(xi, _state(cell, hi)))(x, h))
    for k, (a, b) in enumerate(zip(got, want, strict=True)):
        assert_rel_close(a, b, F32, f"{cell} {backend} shared weights, output {k}")
    # Per-sample weights (a model ensemble): sample i gets weights scaled by (1 + i/10).
    scale = 1 + torch.arange(N, dtype=F32) / 10
    params = {k: torch.stack([v.detach() * s for s in scale]) for k, v in ref.named_parameters()}
    got = _outs(vmap(lambda p, xi, hi: functional_call(ours, p, (xi, _state(cell, hi))))(
        params, x, h))
    want = [torch.stack(parts) for parts in zip(*(
        _outs(functional_call(ref, {k: v[i] for k, v in params.items()},
                              (x[i], _state(cell, h[i])))) for i in range(N)))]
    for k, (a, b) in enumerate(zip(got, want, strict=True)):
        assert_rel_close(a, b, F32, f"{cell} {backend} per-sample weights, output {k}")


@pytest.mark.parametrize("backend", ["reference", "triton-step"])
@pytest.mark.parametrize("cell", CELLS)
def test_jacrev_and_per_sample_gradients(cell, backend):
    ref, ours = twins(cell, IN, H, backend, dtype=F32, device="cpu")
    x, h = _data(cell)
    hx = _state(cell, h[0])

    def first_output(module):
        return lambda inp: _outs(module(inp, hx))[0]

    want = torch.autograd.functional.jacobian(first_output(ref), x[0])
    assert_rel_close(jacrev(first_output(ours))(x[0]), want, F32, f"{cell} {backend} jacrev")
    params = {k: v.detach() for k, v in ref.named_parameters()}

    def loss(module):
        def per_sample(p, xi, hi):   # one row per sample
            outs = _outs(functional_call(module, p, (xi[None], _state(cell, hi[None]))))
            return sum(((k + 1) * o).sin().sum() for k, o in enumerate(outs))
        return per_sample

    got = vmap(grad(loss(ours)), in_dims=(None, 0, 0))(params, x[:, 0], h[:, 0])
    for name in params:
        want = torch.stack([grad(loss(ref))(params, x[i, 0], h[i, 0])[name] for i in range(N)])
        assert_rel_close(got[name], want, F32, f"{cell} {backend} per-sample grad {name}")
