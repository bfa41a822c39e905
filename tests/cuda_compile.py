"""Compile the CUDA C kernels (``kernels/cuda/*.cu``) to sm_90 PTX without a GPU.

Used by ``test_cuda_compile.py`` (CI) and by hand::

    python tests/cuda_compile.py            # registers / spills of every kernel (nvcc -Xptxas -v)

Compilers: ``nvcc`` when it is on PATH, and NVRTC through ``cuda-bindings``
(``pip install cuda-bindings nvidia-cuda-nvrtc``) when ``cuda.bindings.nvrtc`` is importable;
every available one is used, because CuPy compiles with NVRTC at run time and NVRTC has no host
compiler headers, so something nvcc accepts can still fail there. With neither, the test fails
and says what to install.

Options are exactly what CuPy's NVRTC compile gets at run time: the loader's
(``loader.compile_options``: ``-std=c++17 -I<kernels/cuda> -DFUSEDRNN_DTYPE=<0|1|2>`` plus a file's
defines), for each dtype, and what CuPy appends itself (``loader.CUPY_OPTIONS``: ``-ftz=true``).
The cooperative sources (``persistent_launch.COOPERATIVE_SOURCES``) are also built as older CuPy
builds them, as relocatable device code (``rdc=True``: NVRTC ``--device-c``, nvcc ``-rdc=true``).

**Per-file variants.** A ``.cu`` file whose kernels need defines names its variants on its first
line; variants are separated by ``|``, each is a space-separated list of flags::

    // fusedrnn-compile: -DFUSEDRNN_RELU=0 | -DFUSEDRNN_RELU=1
    // fusedrnn-compile: -DCELL=0 -DPROJ=0 | -DCELL=0 -DPROJ=1 | -DCELL=1

Without that line a file is compiled once per dtype with no extra defines. Every kernel a file
declares (``extern "C" __global__``) must appear as a PTX ``.entry`` in every variant.
"""

import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from fusedrnn.kernels.cuda import loader, persistent_launch, probe

ARCH = 90                                   # H100 / H200, the project's target GPUs
DTYPES = {0: "fp32", 1: "fp16", 2: "bf16"}
INSTALL_HINT = ("no CUDA compiler found: install the CUDA toolkit (nvcc on PATH) or "
                "`pip install cuda-bindings nvidia-cuda-nvrtc` (NVRTC; it also needs the CUDA "
                "headers, found through CUDA_HOME / CUDA_PATH or /usr/local/cuda)")
_VARIANTS = re.compile(r"^\s*//\s*fusedrnn-compile:(.*)$")


def sources():
    """Every ``.cu`` file of the package, sorted."""
    return sorted(Path(loader.source_dir()).glob("*.cu"))


def variants(path):
    """The define sets ``path`` asks to be compiled with (``[()]`` if it names none)."""
    first = Path(path).read_text(encoding="utf-8").split("\n", 1)[0]
    match = _VARIANTS.match(first)
    if not match:
        return [()]
    sets = [tuple(v.split()) for v in match.group(1).split("|")]
    if not all(sets):
        raise ValueError(f"{path}: empty variant in {first!r}")
    return sets


def cooperative(path):
    """Whether the loader compiles ``path`` with ``enable_cooperative_groups=True``."""
    return Path(path).name in persistent_launch.COOPERATIVE_SOURCES | probe.COOPERATIVE_SOURCES


def cupy_options(dtype, defines=(), compiler="nvcc", rdc=False):
    """The options of one instantiation as CuPy compiles it (module docstring); ``rdc`` adds
    relocatable device code in ``compiler``'s spelling (nvcc's ``-ptx`` refuses ``--device-c``,
    which also means "compile only")."""
    extra = (("-rdc=true",) if compiler == "nvcc" else (loader.CUPY_RDC_OPTION,)) if rdc else ()
    return (*loader.compile_options(dtype, defines), *loader.CUPY_OPTIONS, *extra)


def kernel_names(path):
    return sorted(loader.parse_signatures(Path(path).read_text(encoding="utf-8")))


def nvcc():
    return shutil.which("nvcc")


def nvrtc_module():
    try:
        from cuda.bindings import nvrtc
    except ImportError:
        return None
    return nvrtc


def compilers():
    """Names of the available compilers (``"nvcc"``, ``"nvrtc"``)."""
    return [name for name, ok in (("nvcc", nvcc()), ("nvrtc", nvrtc_module())) if ok]


def cuda_include_dir():
    """Where ``cuda_fp16.h`` lives (NVRTC needs it on the include path; nvcc knows it)."""
    candidates = [os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH")]
    if nvcc():
        candidates.append(str(Path(nvcc()).resolve().parent.parent))
    candidates += ["/usr/local/cuda"]
    for root in filter(None, candidates):
        inc = Path(root) / "include"
        if (inc / "cuda_fp16.h").exists():
            return str(inc)
    raise RuntimeError("NVRTC needs the CUDA headers (cuda_fp16.h): set CUDA_HOME, or install "
                       "the CUDA toolkit or `pip install nvidia-cuda-runtime`")


def compile_ptx(path, dtype, defines=(), compiler="nvcc", rdc=False):
    """PTX text of ``path`` for ``dtype`` (FUSEDRNN_DTYPE code) and ``defines`` (``rdc``: as
    relocatable device code); raises ``RuntimeError`` with the compiler log on failure."""
    options = cupy_options(dtype, defines, compiler, rdc)
    if compiler == "nvcc":
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "out.ptx"
            run = subprocess.run([nvcc(), f"-arch=sm_{ARCH}", "-ptx", *options, str(path), "-o", str(out)],
                                 capture_output=True, text=True)
            if run.returncode != 0:
                raise RuntimeError(f"nvcc failed on {path.name} {options}:\n{run.stderr}")
            return out.read_text()
    if compiler == "nvrtc":
        # As CuPy does at run time: the toolkit headers, and CCCL first (libcu++'s
        # <cuda/std/...>, which cooperative_groups.h includes; CUDA 13 keeps it in include/cccl).
        inc = cuda_include_dir()
        cccl = [f"-I{inc}/cccl"] if Path(inc, "cccl").is_dir() else []
        return _nvrtc_ptx(path, (*cccl, *options, f"-I{inc}", f"-arch=compute_{ARCH}"))
    raise ValueError(compiler)


def _nvrtc_ptx(path, options):
    nvrtc = nvrtc_module()
    ok = nvrtc.nvrtcResult.NVRTC_SUCCESS
    err, prog = nvrtc.nvrtcCreateProgram(Path(path).read_bytes(), path.name.encode(), 0, [], [])
    assert err == ok, err
    try:
        opts = [o.encode() for o in options]
        (err,) = nvrtc.nvrtcCompileProgram(prog, len(opts), opts)
        if err != ok:
            _, size = nvrtc.nvrtcGetProgramLogSize(prog)
            log = b" " * size
            nvrtc.nvrtcGetProgramLog(prog, log)
            raise RuntimeError(f"NVRTC failed on {path.name} {options}:\n{log.decode(errors='replace')}")
        _, size = nvrtc.nvrtcGetPTXSize(prog)
        ptx = b" " * size
        nvrtc.nvrtcGetPTX(prog, ptx)
        return ptx.rstrip(b"\0 ").decode()
    finally:
        nvrtc.nvrtcDestroyProgram(prog)


def resource_usage(path, dtype, defines=()):
    """``{kernel: (registers, spill store bytes, spill load bytes)}`` from
    ``nvcc -cubin -Xptxas -v`` (nvcc only)."""
    options = cupy_options(dtype, defines)
    with tempfile.TemporaryDirectory() as tmp:
        run = subprocess.run([nvcc(), f"-arch=sm_{ARCH}", "-cubin", "-Xptxas", "-v", *options,
                              str(path), "-o", str(Path(tmp) / "out.cubin")],
                             capture_output=True, text=True)
    if run.returncode != 0:
        raise RuntimeError(f"nvcc failed on {path.name}:\n{run.stderr}")
    usage, kernel, spills = {}, None, (0, 0)
    for line in run.stderr.splitlines():
        if m := re.search(r"Compiling entry function '(\w+)'", line):
            kernel = m.group(1)
        elif m := re.search(r"(\d+) bytes spill stores, (\d+) bytes spill loads", line):
            spills = (int(m.group(1)), int(m.group(2)))
        elif (m := re.search(r"Used (\d+) registers", line)) and kernel:
            usage[kernel] = (int(m.group(1)), *spills)
            kernel, spills = None, (0, 0)
    return usage


def main():
    if not nvcc():
        sys.exit(INSTALL_HINT)
    for path in sources():
        for defines in variants(path):
            for code, name in DTYPES.items():
                for kernel, (regs, st, ld) in sorted(resource_usage(path, code, defines).items()):
                    print(f"{path.name:28s} {' '.join(defines) or '-':16s} {name:5s} {kernel:28s} "
                          f"{regs:3d} registers, spills {st}/{ld} bytes (store/load)")


if __name__ == "__main__":
    main()
