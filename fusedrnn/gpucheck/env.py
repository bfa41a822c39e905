"""Phase a, the environment: what machine and software the results come from, and the one
CUDA C compile that every CuPy backend depends on (a missing NVRTC header must show here, in
the first seconds, not inside a backend)."""

import os
import platform
import subprocess

import numpy
import torch

from .records import Skip


def _version(module):
    try:
        return __import__(module).__version__
    except ImportError as exc:
        return f"not importable ({exc})"


def _nvidia_smi():
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total,"
                              "clocks.max.sm", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"nvidia-smi failed: {exc}"
    return out.stdout.strip() or out.stderr.strip()


def report(device):
    """``(status, detail)``: versions, and on a GPU its name, driver, SMs, L2 and the CuPy
    probe's result (``error`` if the probe cannot compile or computes wrong)."""
    import datetime

    import triton

    from ..benchmark import current_commit

    # When and from which commit: the report names its JSON after these, not after the day
    # and checkout it is rebuilt on.
    detail = dict(measured_at=datetime.datetime.now(datetime.timezone.utc).isoformat(),
                  commit=current_commit(), python=platform.python_version(), torch=torch.__version__,
                  triton=triton.__version__, numpy=numpy.__version__, cupy=_version("cupy"),
                  cpu_count=os.cpu_count(), interpret=os.environ.get("TRITON_INTERPRET", "0"))
    from ..kernels.triton.launch_common import INTERPRETER_FIXED

    detail["interpreter_numpy_fix"] = bool(INTERPRETER_FIXED)   # kernels/triton/interpreter_compat
    if device.type != "cuda":
        detail["device"] = "cpu (dry run: no GPU)"
        return "pass", detail
    props = torch.cuda.get_device_properties(device)
    detail.update(gpu=props.name, sms=props.multi_processor_count, l2_bytes=props.L2_cache_size,
                  memory_bytes=props.total_memory, capability=f"{props.major}.{props.minor}",
                  cuda=torch.version.cuda, nvidia_smi=_nvidia_smi(),
                  cudnn=torch.backends.cudnn.version())
    try:
        from ..kernels.cuda import probe

        detail["cupy_bf16_mma_rel_err"] = probe.bf16_mma_error(device)
    except Exception as exc:    # reported, not swallowed: the record's status says error
        detail["cupy_probe"] = f"{type(exc).__name__}: {exc}"[:2000]
        return "error", detail
    # bf16 products of bf16 inputs, summed in fp32: only the accumulation order differs.
    return ("pass" if detail["cupy_bf16_mma_rel_err"] < 1e-5 else "fail"), detail


def run(item, device):
    if item["kind"] != "env":
        raise Skip(f"unknown env item {item['kind']!r}")
    return report(device)
