"""Cells against the float64 reference: outputs and every gradient (input, states, weights,
biases), on every backend that has a single-step form — ``"triton-step"`` in the Triton
interpreter here, compiled on a GPU (the ``cuda`` test)."""

import pytest
import torch

from cell_cases import CELLS, make_inputs, oracle, run_module, twins
from conftest import TOLERANCES, assert_rel_close

# (B, In, H): B=1 with the odd sizes, a batch with H not a power of two and In < 16
# (one partial K chunk), and B=None for unbatched input.
SHAPES = [(1, 5, 3), (3, 2, 7), (None, 5, 3)]
BACKEND_DTYPES = {
    "reference": [torch.float64, torch.float32],
    "torch": [torch.float64, torch.float32],
    # bf16 runs in the interpreter because cell_step.cell_dot_mode feeds it fp32 operands there
    # (its bf16 dot is wrong); the bf16 tensor-core dot itself is covered by the cuda test.
    "triton-step": [torch.float32, torch.float16, torch.bfloat16],
}
CASES = [(b, d) for b, ds in BACKEND_DTYPES.items() for d in ds]


def check_against_reference(cell, backend, dtype, B, In, H, bias=True, with_state=True,
                            device="cpu", seed=0, tolerance_dtype=None):
    # device "cpu" by default: on a GPU machine the CPU cases still check reference and torch.
    """Outputs and every gradient of ``backend`` in ``dtype`` against the oracle, within
    ``TOLERANCES[tolerance_dtype or dtype]``."""
    tol = tolerance_dtype or dtype
    _, ours = twins(cell, In, H, backend, bias=bias, dtype=dtype, device=device, seed=seed)
    inp, hx, leaves = make_inputs(cell, B, In, H, with_state, dtype=dtype, device=device, seed=seed)
    got_outs, got_grads = run_module(ours, inp, hx, leaves)
    want_outs, want_grads = oracle(cell, ours, inp, hx, leaves)
    what = f"{cell} {backend} {dtype} B={B} In={In} H={H} bias={bias} state={with_state}"
    assert len(got_outs) == len(want_outs)
    for i, (a, b) in enumerate(zip(got_outs, want_outs)):
        assert a.dtype == dtype and a.device.type == torch.device(device).type, what
        assert_rel_close(a, b, tol, f"{what} output {i}")
    assert got_grads.keys() == want_grads.keys(), what
    for name, want in want_grads.items():
        assert got_grads[name].dtype == dtype, f"{what} grad {name}"
        assert_rel_close(got_grads[name], want, tol, f"{what} grad {name}")


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "B{}-In{}-H{}".format(*s))
@pytest.mark.parametrize("backend,dtype", CASES, ids=lambda v: str(v).replace("torch.", ""))
@pytest.mark.parametrize("cell", CELLS)
def test_cell_matches_reference(cell, backend, dtype, shape):
    if backend == "triton-step" and torch.cuda.is_available():
        pytest.skip("interpreter case; test_cell_matches_reference_cuda covers this machine")
    check_against_reference(cell, backend, dtype, *shape)


@pytest.mark.parametrize("backend", BACKEND_DTYPES)
@pytest.mark.parametrize("cell", CELLS)
def test_cell_without_bias_and_without_state(cell, backend):
    if backend == "triton-step" and torch.cuda.is_available():
        pytest.skip("interpreter case; the cuda test covers this machine")
    dtype = torch.float32
    check_against_reference(cell, backend, dtype, 2, 3, 5, bias=False, with_state=True)
    check_against_reference(cell, backend, dtype, 2, 3, 5, bias=True, with_state=False)
    check_against_reference(cell, backend, dtype, None, 3, 5, bias=False, with_state=False)


def test_multi_tile_grid_matches_reference():
    """More rows than one batch tile (BB=16) and more units than one hidden tile (BH=32), with
    In > BK=32: every program's masks and offsets, not only the first program's."""
    if torch.cuda.is_available():
        pytest.skip("interpreter case; the cuda test covers this machine")
    for cell in CELLS:
        check_against_reference(cell, "triton-step", torch.float32, 17, 33, 35)


@pytest.mark.cuda
@pytest.mark.parametrize("dtype,allow_tf32", [(torch.float32, False), (torch.float32, True),
                                              (torch.float16, True), (torch.bfloat16, True)],
                         ids=["fp32-ieee", "fp32-tf32", "fp16", "bf16"])
@pytest.mark.parametrize("cell", CELLS)
def test_cell_matches_reference_cuda(cell, dtype, allow_tf32, monkeypatch, matmul_tf32):
    # fp32 dots and GEMMs use TF32 exactly when torch.backends.cuda.matmul.allow_tf32 is on
    # (cell_step.cell_dot_mode), as torch's cuBLAS cells do; TF32 keeps fp16's 10-bit mantissa,
    # so that case gets fp16's tolerance. cuDNN's switch is set the other way round to show
    # that the cells do not read it.
    matmul_tf32(allow_tf32)
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", not allow_tf32)
    tolerance_dtype = torch.float16 if (dtype == torch.float32 and allow_tf32) else dtype
    # The multi-tile odd shape (17, 33, 35) beside the aligned (64, 96, 200): partial batch,
    # hidden and K tiles in one launch on the compiled kernel.
    for B, In, H in [(1, 5, 3), (3, 2, 7), (None, 5, 3), (17, 33, 35), (64, 96, 200)]:
        check_against_reference(cell, "triton-step", dtype, B, In, H, device="cuda",
                                tolerance_dtype=tolerance_dtype)
    check_against_reference(cell, "triton-step", dtype, 5, 7, 33, bias=False, with_state=False,
                            device="cuda", tolerance_dtype=tolerance_dtype)


@pytest.mark.parametrize("matmul_tf32_flag", [False, True])
@pytest.mark.parametrize("cudnn_tf32", [False, True])
def test_fp32_forward_dots_follow_the_matmul_tf32_flag(monkeypatch, matmul_tf32_flag, cudnn_tf32,
                                                       matmul_tf32):
    """What a compiled launch would use (the interpreter's answer forced off): fp32 follows
    ``torch.backends.cuda.matmul.allow_tf32`` whatever cuDNN's flag; fp16/bf16 dot natively."""
    from fusedrnn.kernels.triton import cell_step

    monkeypatch.setattr(cell_step, "interpreting", lambda: False)
    matmul_tf32(matmul_tf32_flag)
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", cudnn_tf32)
    assert cell_step.cell_dot_mode(torch.float32) == (True, "tf32" if matmul_tf32_flag else "ieee")
    assert cell_step.cell_dot_mode(torch.float16) == (False, "ieee")
    assert cell_step.cell_dot_mode(torch.bfloat16) == (False, "ieee")


def test_fp32_dots_are_ieee_under_the_interpreter(monkeypatch, matmul_tf32):
    from fusedrnn.kernels.triton import cell_step

    monkeypatch.setenv("TRITON_INTERPRET", "1")
    matmul_tf32(True)
    assert cell_step.cell_dot_mode(torch.float32) == (True, "ieee")
    assert cell_step.cell_dot_mode(torch.bfloat16) == (True, "ieee")


def test_tolerance_table_covers_every_case():
    assert all(d in TOLERANCES for _, d in CASES)
