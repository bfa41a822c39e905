"""Phase e: the README's goal cases, timed for ``torch.nn`` (cuDNN) and every fused backend.

One item per (case, provider); a case's items share one worker process, torch.nn first, so
the ratio to torch.nn is measured in the same process. Each mode is timed with CUDA events
(the host clock on the CPU) around the same ``benchmark.Runner`` methods the pytest-benchmark
suite times, after warm-up runs that keep compilation out, as the median of at least
``MIN_ROUNDS`` runs. Records carry what ``python -m fusedrnn bench --from-json`` needs: the
report turns them into the bench JSON schema.
"""

import numpy
import torch

from .. import benchmark
from ..benchmark import Case
from ..kernels.timing import seconds_of
from .records import Skip

MIN_ROUNDS = 10
WARMUP = 3
TARGET_S = 1.0      # time per mode beyond the minimum rounds: more rounds for fast cases


def case_of(item):
    s = item["shape"]
    return Case(item["cell"], item["dtype"], s["B"], s["T"], s["In"], s["H"],
                bidirectional=item["bidirectional"], packed=item["packed"])


def providers():
    """torch.nn first (the ratios' baseline), fusedrnn on torch's own kernels (its overhead),
    then every fused backend, then FlashRNN where
    ``flashrnn`` imports."""
    fused = [f"fusedrnn:{b}" for b in ("triton-step", "triton-persistent", "cupy-step",
                                       "cupy-persistent")]
    return ["torch.nn", "fusedrnn:torch"] + fused + \
        (["flashrnn"] if "flashrnn" in benchmark.provider_names() else [])


def time_mode(device, runner, mode):
    """``(median seconds, all samples)`` of one mode (``fwd`` or ``fwdbwd``)."""
    fn = getattr(runner, f"run_{mode}")
    for _ in range(WARMUP):
        fn()
    samples = [seconds_of(fn, device)]
    rounds = max(MIN_ROUNDS, min(100, int(TARGET_S / max(samples[0], 1e-6))))
    samples += [seconds_of(fn, device) for _ in range(rounds - 1)]
    return float(numpy.median(samples)), samples


def run(item, device):
    """Time ``item["provider"]`` on the item's case for each of ``item["modes"]``."""
    case, provider = case_of(item), item["provider"]
    if device.type != "cuda" and provider.split(":")[-1].startswith(("triton", "cupy")):
        raise Skip("without a GPU fused kernels are interpreted or absent: not kernel speed")
    reason = benchmark.unsupported(case, provider, device)
    if reason is not None:
        raise Skip(reason)
    try:
        runner = benchmark.Runner(case, provider, device)
    except ValueError as exc:
        raise Skip(str(exc)) from exc
    peaks = item.get("peaks") or {}
    detail = {}
    for mode in item["modes"]:
        median, samples = time_mode(device, runner, mode)
        info = benchmark.extra_info(case, mode, provider, device, median,
                                    _peaks(peaks, case.dtype, device))
        detail[mode] = dict(ms=median * 1e3, rounds=len(samples),
                            min_ms=min(samples) * 1e3, max_ms=max(samples) * 1e3,
                            extra_info=info)
    return "pass", detail


def _peaks(peaks, dtype, device):
    """``(matmul FLOP/s, copy bytes/s)`` for the floors in ``extra_info``: the floors phase's
    measurements when it ran, else measured here."""
    if dtype in peaks:
        p = peaks[dtype]
        return p["matmul_flops"], p["copy_bytes_per_s"]
    return benchmark.measure_peaks(device, benchmark.DTYPES[dtype])


def cell_decode(item, device):
    """The cells' decode loop (``fusedrnn.cell_bench``): on a GPU the issue's grid (B 1 and 64,
    H = In = 1024, bf16, 256 steps, eager and CUDA-graph); on the CPU a tiny eager loop on
    ``"torch"`` (an interpreted Triton cell is not kernel speed), which checks the plumbing."""
    from .. import cell_bench

    if device.type == "cuda":
        grid = dict(cell_bench.ISSUE_GRID, cells=(item["cell"],))
        rows = cell_bench.decode_rows(device, **grid, modes=cell_bench.MODES,
                                      backend=item["backend"], runs=MIN_ROUNDS)
    else:
        s = item["shape"]
        rows = cell_bench.decode_rows(device, cells=(item["cell"],), batches=(s["B"],),
                                      hidden=s["H"], input_size=s["In"], steps=s["T"],
                                      dtype=torch.float32, modes=("eager",), backend="torch",
                                      runs=MIN_ROUNDS)
    return "pass", {"rows": rows}
