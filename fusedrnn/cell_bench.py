"""Decode-loop benchmark for the cells (issue 13, item 6): a 256-step Python loop over one cell,
the fusedrnn cell against ``torch.nn``'s, eager and captured in a CUDA graph.

    python -m fusedrnn.cell_bench [--out results.json] [--runs 10]

:func:`issue_cases` times what the issue asks for (LSTM and GRU, B ∈ {1, 64}, H = In = 1024,
bf16, 256 steps, inference) on a CUDA device and refuses any other device; :func:`decode_rows`
is the general form (any sizes, and an eager-only CPU variant for tests). Every timing is the
median of ``runs`` timed loops after warm-up, taken with CUDA events on a GPU (perf_counter
on the CPU). Rows: ``{case, provider, mode, ms, vs_torch}``, where ``vs_torch`` is torch.nn's
median over this one in the same mode (> 1: fusedrnn is faster).
"""

import argparse
import json
import statistics

import torch

from .cells import GRUCell, LSTMCell, RNNCell
from .kernels.timing import seconds_of

FUSED = {"lstm": LSTMCell, "gru": GRUCell, "rnn": RNNCell}
TORCH = {"lstm": torch.nn.LSTMCell, "gru": torch.nn.GRUCell, "rnn": torch.nn.RNNCell}
MODES = ("eager", "cuda-graph")
ISSUE_GRID = dict(cells=("lstm", "gru"), batches=(1, 64), hidden=1024, input_size=1024,
                  steps=256, dtype=torch.bfloat16)


def _decode_loop(cell, is_lstm, xs, h, c):
    """``len(xs)`` steps, the state fed back; returns the final state."""
    state = (h, c) if is_lstm else h
    for t in range(xs.shape[0]):
        state = cell(xs[t], state)
    return state


def _graphed(loop, device):
    """Capture ``loop`` (static inputs inside) into a CUDA graph; returns its replay."""
    side = torch.cuda.Stream(device)
    side.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(side):
        for _ in range(3):   # warm-up: kernel compilation and allocator pools stay outside
            loop()
    torch.cuda.current_stream(device).wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        loop()
    return graph.replay


def time_case(cell, is_lstm, batch, input_size, hidden, steps, dtype, device, mode, runs,
              warmup=3):
    """Median ms of ``runs`` timed decode loops of ``cell`` (inference, no autograd)."""
    g = torch.Generator(device="cpu").manual_seed(0)
    xs = torch.randn(steps, batch, input_size, generator=g).to(device, dtype)
    h = torch.randn(batch, hidden, generator=g).to(device, dtype)
    c = torch.randn(batch, hidden, generator=g).to(device, dtype)

    def loop():
        return _decode_loop(cell, is_lstm, xs, h, c)

    with torch.no_grad():
        fn = _graphed(loop, device) if mode == "cuda-graph" else loop
        for _ in range(warmup):
            fn()
        return statistics.median(seconds_of(fn, device) * 1e3 for _ in range(runs))


def decode_rows(device, cells=("lstm", "gru"), batches=(1, 64), hidden=1024, input_size=1024,
                steps=256, dtype=torch.bfloat16, modes=MODES, backend="triton-step", runs=10):
    """Time every (cell, batch, mode) for the fusedrnn cell on ``backend`` and for torch.nn.

    Returns rows ``{case, provider, mode, ms, vs_torch}``. ``"cuda-graph"`` needs a CUDA
    device (``ValueError`` otherwise).
    """
    device = torch.device(device)
    if "cuda-graph" in modes and device.type != "cuda":
        raise ValueError(f"mode 'cuda-graph' captures CUDA graphs; device {str(device)!r} is not "
                         "a CUDA device (pass modes=('eager',) to time the CPU)")
    rows = []
    for name in cells:
        torch.manual_seed(0)
        baseline = TORCH[name](input_size, hidden).to(device, dtype)
        fused = FUSED[name](input_size, hidden, backend=backend).to(device, dtype)
        fused.load_state_dict(baseline.state_dict())
        for batch in batches:
            case = (f"{name}cell-decode-{str(dtype).removeprefix('torch.')}-B{batch}-In{input_size}"
                    f"-H{hidden}-T{steps}")
            providers = (("torch.nn", baseline), (f"fusedrnn:{backend}", fused))
            for mode in modes:
                ms = {provider: time_case(cell, name == "lstm", batch, input_size, hidden, steps,
                                          dtype, device, mode, runs)
                      for provider, cell in providers}
                rows += [dict(case=case, provider=p, mode=mode, ms=v, vs_torch=ms["torch.nn"] / v)
                         for p, v in ms.items()]
    return rows


def issue_cases(device, runs=10):
    """The issue's grid (see ``ISSUE_GRID``) on a CUDA ``device``, eager and graph-captured."""
    device = torch.device(device)
    if device.type != "cuda":
        raise ValueError(f"the cell decode benchmark times CUDA kernels with CUDA events and "
                         f"CUDA graphs; device {str(device)!r} is not a CUDA device")
    return decode_rows(device, **ISSUE_GRID, modes=MODES, runs=runs)


def table(rows):
    lines = ["| case | mode | provider | ms | vs torch.nn |", "|---|---|---|---:|---:|"]
    lines += [f"| {r['case']} | {r['mode']} | {r['provider']} | {r['ms']:.3f} | "
              f"{r['vs_torch']:.2f}x |" for r in rows]
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m fusedrnn.cell_bench",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--out", default=None, help="write the rows (and the device) as JSON")
    args = parser.parse_args(argv)
    rows = issue_cases(args.device, runs=args.runs)
    print(table(rows))
    if args.out:
        from .benchmark import current_commit, device_name

        report = dict(device=device_name(torch.device(args.device)), commit=current_commit(),
                      torch=torch.__version__, runs=args.runs, rows=rows)
        with open(args.out, "w") as f:
            json.dump(report, f, indent=1)


if __name__ == "__main__":
    main()
