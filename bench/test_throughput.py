"""Throughput of every provider on the fixed case grid (``fusedrnn.benchmark.grid``).

Not part of the default test run. ``python -m fusedrnn bench`` runs this file and turns its
JSON into a table and a plot; directly: ``pytest bench --benchmark-json=out.json``.
Environment: ``FUSEDRNN_BENCH_QUICK=1`` for the quick subset, ``FUSEDRNN_BENCH_CELLS=lstm,gru``.
"""

import os

import pytest

from conftest import DEVICE
from fusedrnn import benchmark as B

CASES = B.grid(DEVICE.type, quick=os.environ.get("FUSEDRNN_BENCH_QUICK") == "1",
               cells=[c for c in os.environ.get("FUSEDRNN_BENCH_CELLS", "").split(",") if c])
# GPU: enough rounds for a stable median; warm-up rounds keep compilation/autotuning out.
ROUNDS, WARMUP = (20, 3) if DEVICE.type == "cuda" else (10, 2)


@pytest.mark.parametrize("mode", B.MODES)
@pytest.mark.parametrize("provider", B.provider_names())
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_throughput(benchmark, case, provider, mode, peaks):
    reason = B.unsupported(case, provider, DEVICE)
    if reason is not None:
        pytest.skip(reason)
    runner = B.Runner(case, provider, DEVICE)
    if mode == "bwd":
        benchmark.pedantic(runner.run_bwd, setup=runner.setup_bwd, rounds=ROUNDS,
                           warmup_rounds=WARMUP)
    else:
        benchmark.pedantic(getattr(runner, f"run_{mode}"), rounds=ROUNDS, warmup_rounds=WARMUP,
                           iterations=1)
    median = benchmark.stats.stats.median
    assert median > 0
    benchmark.extra_info.update(B.extra_info(case, mode, provider, DEVICE, median, peaks(case.dtype)))
