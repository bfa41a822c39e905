"""The cell decode-loop benchmark (``fusedrnn.cell_bench``): what runs without a GPU — its
refusals and a tiny eager CPU run — and a small graph-captured run on a GPU (``cuda``)."""

import pytest
import torch

from fusedrnn import cell_bench


def test_issue_cases_refuse_a_cpu_device():
    with pytest.raises(ValueError, match="device 'cpu' is not a CUDA device"):
        cell_bench.issue_cases("cpu")


def test_graph_mode_refuses_a_cpu_device():
    with pytest.raises(ValueError, match="mode 'cuda-graph' captures CUDA graphs"):
        cell_bench.decode_rows("cpu", modes=("cuda-graph",))


def check_rows(rows, cells, batches, modes, backend):
    assert [(r["case"].split("-")[0], r["mode"], r["provider"]) for r in rows] == [
        (f"{c}cell", m, p) for c in cells for _ in batches for m in modes
        for p in ("torch.nn", f"fusedrnn:{backend}")]
    for r in rows:
        assert set(r) == {"case", "provider", "mode", "ms", "vs_torch"}
        assert r["ms"] > 0
        if r["provider"] == "torch.nn":
            assert r["vs_torch"] == 1.0
    assert "| lstmcell-decode-float32-B1-In3-H5-T4 | eager |" in cell_bench.table(rows)


@pytest.mark.parametrize("backend", ["torch", "triton-step"])
def test_tiny_eager_cpu_run(backend):
    if backend == "triton-step" and torch.cuda.is_available():
        pytest.skip("triton-step runs on CPU tensors only in the interpreter; see the cuda test")
    kw = dict(cells=("lstm", "gru"), batches=(1, 2), hidden=5, input_size=3, steps=4,
              dtype=torch.float32, modes=("eager",), backend=backend, runs=2)
    check_rows(cell_bench.decode_rows("cpu", **kw), kw["cells"], kw["batches"], kw["modes"], backend)


@pytest.mark.cuda
def test_small_cuda_run_both_modes():
    kw = dict(cells=("lstm", "gru"), batches=(1,), hidden=5, input_size=3, steps=4,
              dtype=torch.float32, modes=cell_bench.MODES, backend="triton-step", runs=2)
    check_rows(cell_bench.decode_rows("cuda", **kw), kw["cells"], kw["batches"], kw["modes"],
               "triton-step")
