"""pytest-benchmark plumbing for the throughput suite: device, measured peaks, ratios."""

import pytest
import torch

from fusedrnn import benchmark as B

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")


@pytest.fixture(scope="session")
def peaks():
    """``peaks(dtype) -> (matmul FLOP/s, copy bytes/s)``, measured once per dtype."""
    cache = {}

    def get(dtype):
        if dtype not in cache:
            cache[dtype] = B.measure_peaks(DEVICE, B.DTYPES[dtype])
        return cache[dtype]

    yield get
    PEAKS.update({k: {"matmul_flops": v[0], "copy_bytes_per_s": v[1]} for k, v in cache.items()})


PEAKS = {}


def pytest_benchmark_update_json(config, benchmarks, output_json):
    B.add_ratios(output_json["benchmarks"])
    output_json["fusedrnn"] = {"device": B.device_name(DEVICE), "peaks": PEAKS,
                               "commit": B.current_commit()}
