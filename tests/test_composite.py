"""The composite torch-ops layer (fusedrnn.ops.composite) against the float64 NumPy reference."""

import pytest
import torch

from fusedrnn.ops import composite
from conftest import assert_rel_close
from layer_cases import CONFIGS, layer_inputs, leaves_of, op_call, outputs


@pytest.mark.parametrize("cfg", CONFIGS, ids=str)
@pytest.mark.parametrize("shape,lengths", [((4, 3), [4, 2, 1]), ((4, 3), None), ((1, 1), None),
                                           ((3, 2), [3, 3])], ids=["var", "full", "T1B1", "equal"])
def test_composite_matches_reference_outputs_and_grads(cfg, shape, lengths):
    T, B = shape
    x, lens, h0, c0, weights = layer_inputs(cfg, T=T, B=B, lengths=lengths)
    leaves = leaves_of(x, h0, c0, weights)
    got = outputs(composite.layer(cfg, x, lens, h0, c0, weights))
    want = outputs(op_call(cfg, "reference", x, lens, h0, c0, weights))
    g = torch.Generator().manual_seed(1)
    cot = [torch.randn(o.shape, generator=g, dtype=o.dtype) for o in want]
    for i, (a, b) in enumerate(zip(got, want)):
        assert_rel_close(a, b, torch.float64, f"output {i}")
    for i, (a, b) in enumerate(zip(torch.autograd.grad(got, leaves, cot),
                                   torch.autograd.grad(want, leaves, cot))):
        assert_rel_close(a, b, torch.float64, f"grad {i}")
    if lens is not None:
        for b, n in enumerate(lens.tolist()):
            assert torch.all(got[0][n:, b] == 0), "padded positions must be zero"
