"""Device-side loops over a cell: ``torch.compile(fullgraph=True)`` of a Python decode loop
(CPU; fullgraph turns any graph break into an error) and CUDA-graph capture (``cuda``)."""

import pytest
import torch

import fusedrnn
from cell_cases import DEVICE, CELLS, ieee_fp32, is_lstm  # noqa: F401
from conftest import assert_rel_close

T, B, IN, H = 4, 2, 3, 5


def make_loop(cell, name):
    def loop(x, h):
        state = (h, torch.zeros_like(h)) if is_lstm(name) else h
        for t in range(x.shape[0]):
            state = cell(x[t], state)
        out = state[0] if is_lstm(name) else state
        return out.square().sum()
    return loop


def compiled_matches_eager(name, backend, compile_backend):
    torch._dynamo.reset()
    torch.manual_seed(0)
    cell = CELLS[name][1](IN, H, **CELLS[name][2], backend=backend).to(DEVICE)
    loop = make_loop(cell, name)
    x = torch.randn(T, B, IN, device=DEVICE)
    h = torch.randn(B, H, device=DEVICE, requires_grad=True)

    eager = loop(x, h)
    eager.backward()
    want = {n: p.grad.clone() for n, p in cell.named_parameters()} | {"h": h.grad.clone()}
    cell.zero_grad()
    h.grad = None

    loss = torch.compile(loop, fullgraph=True, backend=compile_backend)(x, h)
    loss.backward()
    got = {n: p.grad for n, p in cell.named_parameters()} | {"h": h.grad}
    assert_rel_close(loss, eager, torch.float32, f"{name} {backend} compiled loss")
    for n in want:
        assert_rel_close(got[n], want[n], torch.float32, f"{name} {backend} compiled grad {n}")


@pytest.mark.usefixtures("ieee_fp32")
@pytest.mark.parametrize("name,backend", [("lstm", "torch"), ("gru", "triton-step")])
def test_compiled_decode_loop_inductor(name, backend):
    """Inductor, forward and backward. ``triton-step`` compiles too, under the interpreter:
    the op is opaque to dynamo, so the interpreted kernel runs inside the compiled graph."""
    compiled_matches_eager(name, backend, "inductor")


@pytest.mark.usefixtures("ieee_fp32")
@pytest.mark.parametrize("name,backend", [("lstm", "reference"), ("rnn_relu", "triton-step"),
                                          ("gru", "torch")])
def test_compiled_decode_loop_one_graph_one_node_per_step(name, backend):
    """One graph for the whole loop, and for the op backends exactly one op node per step."""
    graphs = []

    def record(gm, example_inputs):
        graphs.append(gm)
        return gm.forward

    compiled_matches_eager(name, backend, record)
    assert len(graphs) == 1
    ops = [n for n in graphs[0].graph.nodes if n.target is torch.ops.fusedrnn.cell_forward]
    assert len(ops) == (0 if backend == "torch" else T)


def graphed_decode(cell, name, x, h, c):
    """Capture a T-step decode loop in a CUDA graph; return (graph, static inputs, outputs)."""
    static = [x.clone(), h.clone(), c.clone()]

    def loop():
        state = (static[1], static[2]) if is_lstm(name) else static[1]
        for t in range(static[0].shape[0]):
            state = cell(static[0][t], state)
        return state

    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.no_grad(), torch.cuda.stream(side):
        for _ in range(2):   # warm-up compiles the kernels outside the capture
            loop()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.no_grad(), torch.cuda.graph(graph):
        out = loop()
    return graph, static, out, loop


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("name", CELLS)
def test_cuda_graph_captures_a_decode_loop(name, dtype):
    torch.manual_seed(0)
    cell = CELLS[name][1](64, 96, **CELLS[name][2], backend="triton-step").to("cuda", dtype)
    mk = lambda *s: torch.randn(*s, device="cuda", dtype=dtype)   # noqa: E731
    graph, static, out, loop = graphed_decode(cell, name, mk(16, 8, 64), mk(8, 96), mk(8, 96))
    for _ in range(2):   # replay with new inputs copied into the static buffers
        new = [mk(16, 8, 64), mk(8, 96), mk(8, 96)]
        for s, n in zip(static, new):
            s.copy_(n)
        graph.replay()
        with torch.no_grad():
            want = loop()
        outs = out if isinstance(out, tuple) else (out,)
        wants = want if isinstance(want, tuple) else (want,)
        for a, b in zip(outs, wants, strict=True):
            assert torch.equal(a, b), f"{name} {dtype}: graph replay differs from eager"


def test_readme_cells_snippet_runs(monkeypatch):
    import re
    from pathlib import Path

    # fullgraph as written, but aot_eager in place of inductor: inductor's code generation for
    # the unrolled loop costs ~30 s of CI here, and the inductor path is covered above.
    compile_ = torch.compile
    monkeypatch.setattr(torch, "compile", lambda fn, **kw: compile_(fn, **kw, backend="aot_eager"))
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    cells_part = readme.split("**Cells.**", 1)[1]
    code = re.search(r"```python\n(.*?)```", cells_part, re.S).group(1)
    torch._dynamo.reset()
    scope = {"torch": torch, "fusedrnn": fusedrnn}
    exec(compile(code, "README.md (Cells)", "exec"), scope)
    assert scope["h_T"].shape == (8, 64)


@pytest.mark.cuda
@pytest.mark.parametrize("name", CELLS)
def test_eager_decode_loop_never_synchronises_the_host(name):
    """torch's sync debug mode turns any device→host synchronisation (``.item()``, ``.tolist()``,
    a blocking copy) into an error: forward and backward of a loop of steps have none."""
    torch.manual_seed(0)
    cell = CELLS[name][1](16, 24, **CELLS[name][2], backend="triton-step").cuda()
    x = torch.randn(8, 4, 16, device="cuda")
    h = torch.randn(4, 24, device="cuda", requires_grad=True)
    loop = make_loop(cell, name)
    loop(x, h).backward()                 # warm-up: kernel compilation may synchronise
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        loop(x, h).backward()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    torch.cuda.synchronize()
    assert torch.isfinite(h.grad).all()
