"""Phase b, device floors: what the kernels' times are judged against.

* ``matmul``: dense matmul rate (bf16 and fp32; fp32 as the kernels run it, TF32 exactly when
  ``cudnn.allow_tf32``), random operands (METHOD: zeros run faster than real data);
* ``hbm_copy``: device-to-device copy of 1 GiB, bytes read + written per second;
* ``l2_read``: one kernel passing 50 times over a buffer a quarter of the L2, so it is
  served from L2 — the bandwidth at which the hidden-split kernels re-read their W_hh slice;
* ``launch_triton`` / ``launch_cupy``: microseconds per empty-kernel launch, back to back;
* ``barrier_triton`` / ``barrier_cuda``: microseconds per grid barrier (the split kernels'
  atomic barrier; CUDA's ``grid.sync()``) at 132 and 264 programs.

On the CPU (``--dry-run``) the first three are measured on small buffers and the rest skip
with their reason, since an interpreted launch or barrier says nothing about a GPU's.
"""

import torch

from ..benchmark import DTYPES
from ..kernels.timing import median_seconds
from .records import Skip


REPEATS = 10


def matmul(device, dtype):
    n = 8192 if device.type == "cuda" else 512
    g = torch.Generator(device=device).manual_seed(0)
    a = torch.randn(n, n, device=device, generator=g).to(DTYPES[dtype])
    b = torch.randn(n, n, device=device, generator=g).to(DTYPES[dtype])
    before = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32
    try:
        s = median_seconds(lambda: a @ b, device, REPEATS)
    finally:
        torch.backends.cuda.matmul.allow_tf32 = before
    return {"tflops": 2 * n ** 3 / s / 1e12, "n": n,
            "tf32": bool(dtype == "fp32" and torch.backends.cudnn.allow_tf32)}


def hbm_copy(device):
    size = 2 ** 30 if device.type == "cuda" else 2 ** 26
    src = torch.randint(0, 255, (size,), dtype=torch.uint8, device=device)
    dst = torch.empty_like(src)
    s = median_seconds(lambda: dst.copy_(src), device, REPEATS)
    return {"gb_per_s": 2 * size / s / 1e9, "bytes": size}


def l2_read(device):
    if device.type == "cuda":
        # One Triton kernel passing over the buffer many times: separate reductions would
        # measure the launch gaps, not the cache.
        from ..kernels.triton import probe

        size = torch.cuda.get_device_properties(device).L2_cache_size // 4
        return {"gb_per_s": probe.l2_read_gbps(device, size), "bytes": size}
    size, passes = 2 ** 22, 10
    buf = torch.randn(size // 4, device=device)

    def reads():
        for _ in range(passes):
            buf.sum()
    return {"gb_per_s": size * passes / median_seconds(reads, device, REPEATS) / 1e9, "bytes": size}


def launch_triton(device):
    if device.type != "cuda":
        raise Skip("an interpreted launch is a Python call, not a GPU launch")
    from ..kernels.triton import probe

    return {"us_per_launch": probe.empty_launch_us(device)}


def launch_cupy(device):
    if device.type != "cuda":
        raise Skip("CuPy needs CUDA")
    from ..kernels.cuda import probe

    return {"us_per_launch": probe.empty_launch_us(device)}


def barrier_triton(device, programs):
    if device.type != "cuda":
        raise Skip("the interpreter runs programs one after another: no barrier to time")
    from ..kernels.triton import probe

    return {"us_per_barrier": probe.barrier_us(device, programs), "programs": programs}


def barrier_cuda(device, programs):
    if device.type != "cuda":
        raise Skip("CuPy needs CUDA")
    from ..kernels.cuda import probe

    return {"us_per_barrier": probe.grid_sync_us(device, programs), "programs": programs}


def run(item, device):
    kind = item["kind"]
    if kind == "matmul":
        return matmul(device, item["dtype"])
    if kind in ("hbm_copy", "l2_read", "launch_triton", "launch_cupy"):
        return globals()[kind](device)
    if kind in ("barrier_triton", "barrier_cuda"):
        return globals()[kind](device, item["programs"])
    raise ValueError(f"unknown floor {kind!r}")
