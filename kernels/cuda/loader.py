"""Compile and launch the CUDA C kernels of ``fusedrnn.kernels.cuda`` through CuPy.

CuPy is imported lazily, only by :func:`require_cupy`: importing fusedrnn, or using any
non-CuPy backend, never imports it.

* :func:`require_cupy` — the ``cupy`` module, or an ``ImportError`` naming the extra to install.
* :func:`get_function` — a compiled kernel (:class:`Kernel`), cached per (source, kernel, dtype,
  defines, cooperative, device), compiled and loaded on the device of the tensors it will run on.
  Sources are read from the installed package (``importlib.resources``) and compiled by NVRTC
  (CuPy's default backend) with ``-std=c++17 -I<this folder> -DFUSEDRNN_DTYPE=<0 fp32 | 1 fp16 |
  2 bf16>`` plus the caller's defines; CuPy appends ``-ftz=true`` (:data:`CUPY_OPTIONS`).
* :func:`launch` — runs a kernel on PyTorch's current stream of the tensors' device, so it is
  ordered with torch's own kernels (the cuBLAS GEMMs) without any synchronisation.
* :func:`max_cooperative_blocks` — occupancy × SM count: the largest grid a cooperative launch
  of this kernel can have; a launcher refuses a larger one with ``ValueError``.

Toolkit pieces NVRTC needs. The kernels include ``cuda_fp16.h`` / ``cuda_bf16.h`` (and the
persistent family ``cooperative_groups.h`` and ``mma.h``, which includes ``crt/mma.h``): toolkit
headers that NVRTC does not carry (``cooperative_groups.h`` also wants CCCL's ``nv/target``, which
CuPy bundles and puts on the path). CuPy passes ``-I<CUDA path>/include`` itself when it finds a
toolkit (``cupy.cuda.get_cuda_path()``: a local CUDA, ``CUDA_PATH``, or the CUDA 13 pip layout
``nvidia/cu13``); where that lacks :data:`TOOLKIT_HEADERS` (e.g. CUDA 12's split pip wheels, which
give CuPy no CUDA path) :func:`toolkit_include_dir` looks elsewhere and :func:`get_function` adds
the ``-I``. ``fusedrnn[cuda13]`` installs CuPy's ``[ctk]`` extra (NVRTC, the cudart wheel's
headers) and ``cuda-toolkit[crt]``; ``[cuda12]`` the ``[ctk]`` extra only (its ``crt/`` headers
come with a local CUDA 12 toolkit). A compile that cannot open a header raises ``RuntimeError``
saying so.

Argument passing. CuPy passes each argument by its *numpy* type's size (a Python int goes as
int64, a Python float as float64), so a mismatch with the kernel's C signature is silent
garbage. :func:`launch` therefore checks every argument against the signature parsed from the
``extern "C" __global__`` declaration in the source: tensors for pointer parameters (dtype,
device and contiguity checked), and numpy scalars of exactly the declared type for scalar
parameters (``int`` → ``numpy.int32``, ``long long`` → ``numpy.int64``, ``float`` →
``numpy.float32``, ``bool`` → ``numpy.bool_``); plain Python numbers are refused.

Tensors are passed as their raw device address (``numpy.uint64(t.data_ptr())``, 8 bytes like a
pointer), not through ``cupy.from_dlpack``: CuPy has no bfloat16 dtype (its DLPack import raises
for bf16 unless the optional ml_dtypes is installed, cupy/cupy#7527, #9670), and a per-step
kernel takes ~10 tensor arguments per launch, so a DLPack round trip per argument would add host
time to every timestep. Zero-copy either way; contiguity is checked instead of carrying strides.
"""

import functools
import hashlib
import importlib.resources
import math
import os
import re
from dataclasses import dataclass

import numpy
import torch

# FUSEDRNN_DTYPE codes (kernels/cuda/common.cuh selects scalar_t from them).
DTYPE_CODES = {torch.float32: 0, torch.float16: 1, torch.bfloat16: 2}
_CODE_DTYPES = {code: dtype for dtype, code in DTYPE_CODES.items()}

INSTALL_HINT = ('pip install "fusedrnn[cuda13]" (CUDA 13) or "fusedrnn[cuda12]" (CUDA 12), which '
                'install CuPy with the CUDA toolkit pieces it compiles the kernels with (NVRTC and '
                'the headers; its [ctk] extra), or CuPy alone next to a local CUDA toolkit')


def require_cupy(backend_name):
    """The ``cupy`` module; ``ImportError`` naming the extra to install if it cannot be imported."""
    try:
        import cupy
    except ImportError as exc:
        raise ImportError(f"backend {backend_name!r} needs CuPy, which is not importable ({exc}); "
                          f"install it with: {INSTALL_HINT}") from exc
    return cupy


# ---------------------------------------------------------------------------------------------
# Sources and signatures (pure Python: also used by the CPU tests).

def _package():
    return importlib.resources.files(__package__)


def source_dir():
    """The folder holding the ``.cu`` / ``.cuh`` files (passed to the compiler as ``-I``)."""
    return str(_package())


@functools.lru_cache(maxsize=None)
def read_source(name):
    """Text of the package file ``name`` (e.g. ``"lstm_step.cu"``)."""
    return _package().joinpath(name).read_text(encoding="utf-8")


@functools.lru_cache(maxsize=None)
def headers_digest():
    """SHA-256 over every ``.cuh`` of the package. CuPy's kernel cache (in memory and on disk)
    is keyed by the source text and options only, not by included files; appending this digest
    to the source makes an edited header recompile."""
    digest = hashlib.sha256()
    for entry in sorted(_package().iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".cuh"):
            digest.update(entry.name.encode())
            digest.update(entry.read_bytes())
    return digest.hexdigest()


_KERNEL_DECL = re.compile(
    r'extern\s+"C"\s+__global__\s+(?:__launch_bounds__\s*\([^)]*\)\s*)?void\s+'
    r'(?:__launch_bounds__\s*\([^)]*\)\s*)?(\w+)\s*\(([^)]*)\)', re.S)
_COMMENTS = re.compile(r"//[^\n]*|/\*.*?\*/", re.S)
_QUALIFIERS = {"const", "__restrict__", "volatile"}


@dataclass(frozen=True)
class Param:
    """One kernel parameter: ``ctype`` without qualifiers (``"scalar_t"``, ``"long long"``),
    ``pointer`` whether it is ``ctype *``, ``name`` its name."""
    ctype: str
    pointer: bool
    name: str


def _parse_param(text):
    text = text.replace("*", " * ")
    tokens = [t for t in text.split() if t not in _QUALIFIERS]
    if len(tokens) < 2:
        raise ValueError(f"cannot parse kernel parameter {text.strip()!r}")
    pointer = "*" in tokens
    base = [t for t in tokens[:-1] if t != "*"]
    return Param(ctype=" ".join(base), pointer=pointer, name=tokens[-1])


def parse_signatures(source):
    """``{kernel name: [Param, ...]}`` of every ``extern "C" __global__`` kernel in ``source``."""
    code = _COMMENTS.sub(" ", source)
    kernels = {}
    for match in _KERNEL_DECL.finditer(code):
        params = [p for p in match.group(2).split(",") if p.strip() and p.strip() != "void"]
        kernels[match.group(1)] = [_parse_param(p) for p in params]
    return kernels


# Scalar C types and the numpy type CuPy must receive for each.
SCALAR_TYPES = {"int": numpy.int32, "unsigned int": numpy.uint32, "long long": numpy.int64,
                "unsigned long long": numpy.uint64, "float": numpy.float32, "bool": numpy.bool_}
# Pointer element types whose torch dtype does not depend on the compiled dtype.
POINTER_DTYPES = {"float": torch.float32, "int": torch.int32, "long long": torch.int64,
                  "__nv_bfloat16": torch.bfloat16}


def check_args(kernel_name, params, args, dtype):
    """Raise ``TypeError`` unless ``args`` match ``params`` (see the module docstring);
    ``dtype`` is the torch dtype ``scalar_t`` was compiled as. Pure Python, no CuPy."""
    if len(args) != len(params):
        raise TypeError(f"{kernel_name}: {len(args)} arguments for {len(params)} parameters "
                        f"({', '.join(p.name for p in params)})")
    for p, a in zip(params, args):
        where = f"{kernel_name}({p.name})"
        if p.pointer:
            if not isinstance(a, torch.Tensor):
                raise TypeError(f"{where}: expected a tensor for {p.ctype} *, got {type(a).__name__}")
            want = dtype if p.ctype == "scalar_t" else POINTER_DTYPES.get(p.ctype)
            if want is None:
                raise TypeError(f"{where}: no tensor dtype known for {p.ctype} *")
            if a.dtype != want:
                raise TypeError(f"{where}: expected {want}, got {a.dtype}")
            if not a.is_contiguous():
                raise TypeError(f"{where}: tensor must be contiguous (the kernel assumes dense strides)")
        else:
            want = SCALAR_TYPES.get(p.ctype)
            if want is None:
                raise TypeError(f"{where}: unsupported scalar parameter type {p.ctype!r}")
            if type(a) is not want:
                raise TypeError(f"{where}: expected numpy.{want.__name__} for {p.ctype}, "
                                f"got {type(a).__name__} (CuPy passes an argument with its numpy "
                                f"type's size: a Python int or bool as 8 bytes, a float as 8)")


# ---------------------------------------------------------------------------------------------
# Compilation.

def dtype_code(dtype):
    """FUSEDRNN_DTYPE code of a torch dtype (or a code already)."""
    if isinstance(dtype, int):
        if dtype not in _CODE_DTYPES:
            raise ValueError(f"FUSEDRNN_DTYPE code must be 0, 1 or 2, got {dtype}")
        return dtype
    if dtype not in DTYPE_CODES:
        raise ValueError(f"the CUDA kernels support float32, float16 and bfloat16, not {dtype}")
    return DTYPE_CODES[dtype]


def compile_options(dtype, defines=()):
    """The compiler options of one instantiation (also what the compile test uses)."""
    return ("-std=c++17", f"-I{source_dir()}", f"-DFUSEDRNN_DTYPE={dtype_code(dtype)}", *defines)


# What CuPy itself appends to every NVRTC compile (cupy/cuda/compiler.py,
# _compile_with_cache_cuda, read in the cupy-cuda13x 14.2.0 wheel): fp32 denormals flush to zero
# in every kernel of both families. The compile test passes the same.
CUPY_OPTIONS = ("-ftz=true",)
# Older CuPy also compiled enable_cooperative_groups=True modules as relocatable device code
# (``--device-c``) and linked them with the toolkit's libcudadevrt.a; cupy/cupy#10023 (merged
# 2026-06) dropped both, and the 14.2.0 wheel's compiler.py has no --device-c. The first release
# with the change is not recorded here, so 14.2 is the first version trusted without the library
# (see cooperative_build_problem; the compile test builds the persistent kernels both ways).
CUPY_RDC_DROPPED_IN = (14, 2)
CUPY_RDC_OPTION = "--device-c"


# The toolkit headers the kernels reach (through cuda_fp16.h, cuda_bf16.h and mma.h), as the
# test for "this include folder will do".
TOOLKIT_HEADERS = ("cuda_fp16.h", "cuda_bf16.h", os.path.join("crt", "mma.h"))


def _has_headers(include_dir):
    return include_dir is not None and all(os.path.isfile(os.path.join(include_dir, h))
                                           for h in TOOLKIT_HEADERS)


def toolkit_include_dir(cuda_path):
    """The CUDA include folder to add with ``-I``, or None when none is needed or none exists.

    ``cuda_path`` is ``cupy.cuda.get_cuda_path()``: CuPy already passes ``<cuda_path>/include``,
    so nothing is added when that holds :data:`TOOLKIT_HEADERS`. Otherwise the first folder
    with them among ``$CUDA_HOME/include``, ``$CUDA_PATH/include``, ``/usr/local/cuda/include``
    and the NVIDIA pip wheels' (``cuda.pathfinder``, a CuPy 14 dependency); ours comes before
    CuPy's on the search path, so all toolkit headers then come from that one folder. None if
    nothing has them all: CuPy's own ``-I`` (if any) is all NVRTC gets."""
    if cuda_path is not None and _has_headers(os.path.join(cuda_path, "include")):
        return None
    roots = [os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), "/usr/local/cuda"]
    for root in filter(None, roots):
        if _has_headers(os.path.join(root, "include")):
            return os.path.join(root, "include")
    try:
        from cuda.pathfinder import find_nvidia_header_directory
        found = find_nvidia_header_directory("cudart")
    except (ImportError, RuntimeError):     # no pathfinder / a version without "cudart"
        found = None
    return found if _has_headers(found) else None


def _version_tuple(text):
    return tuple(int(p) for p in re.findall(r"\d+", text)[:2])


@functools.lru_cache(maxsize=None)
def cooperative_build_problem():
    """Why CuPy cannot build a cooperative kernel on this machine, or None.

    CuPy before 14.2 links cooperative modules with ``<cupy.cuda.get_cuda_path()>/lib64/`` (or
    ``lib/``) ``libcudadevrt.a`` and raises ``RuntimeError`` at compile time without it (CuPy's
    ``_get_cudadevrt_path``); the CUDA 12 pip wheels give no such path. CuPy 14.2+ links nothing."""
    cupy = require_cupy("cupy-persistent")
    if _version_tuple(cupy.__version__) >= CUPY_RDC_DROPPED_IN:
        return None
    root = cupy.cuda.get_cuda_path()
    if root is not None and any(os.path.isfile(os.path.join(root, sub, "libcudadevrt.a"))
                                for sub in ("lib64", "lib")):
        return None
    return (f"CuPy {cupy.__version__} links cooperative kernels with the CUDA toolkit's "
            f"libcudadevrt.a, which is not under {root or 'any CUDA path it found'} (lib64/ or "
            f"lib/): install the CUDA toolkit and set CUDA_PATH, or upgrade CuPy to 14.2 or later")


@dataclass
class Kernel:
    """A compiled kernel: ``raw`` is CuPy's ``RawKernel`` (its attributes, e.g.
    ``raw.num_regs`` or the settable ``raw.max_dynamic_shared_size_bytes``, are CuPy's, per
    current device); ``params`` its parsed signature; ``dtype`` the torch dtype of ``scalar_t``."""
    raw: object
    name: str
    params: list
    dtype: torch.dtype
    cooperative: bool


@functools.lru_cache(maxsize=None)
def _module(source, code, defines, cooperative):
    cupy = require_cupy("cupy")
    text = read_source(source) + f"\n// fusedrnn headers sha256 {headers_digest()}\n"
    include = toolkit_include_dir(cupy.cuda.get_cuda_path())
    options = compile_options(code, defines) + ((f"-I{include}",) if include else ())
    return cupy.RawModule(code=text, options=options, enable_cooperative_groups=cooperative)


@functools.lru_cache(maxsize=None)
def _kernel(source, kernel, code, defines, cooperative, device_index):
    signatures = parse_signatures(read_source(source))
    if kernel not in signatures:
        raise ValueError(f"{source} declares no extern \"C\" __global__ kernel {kernel!r} "
                         f"(it declares {sorted(signatures)})")
    cupy = require_cupy("cupy")
    # RawModule.get_function compiles and loads the module on the *current* device (CuPy's
    # RawKernel caches per device); make that the tensors' device, not whichever is current.
    with cupy.cuda.Device(device_index):
        try:
            raw = _module(source, code, defines, cooperative).get_function(kernel)
        except Exception as exc:            # CuPy's CompileException carries NVRTC's log
            if "cannot open source file" not in str(exc):
                raise
            raise RuntimeError(
                f"NVRTC could not find a CUDA header compiling {source} (log below): install the "
                f"CUDA headers with {INSTALL_HINT}, or point CUDA_PATH at a CUDA toolkit of "
                f"NVRTC's version\n{exc}") from exc
    return Kernel(raw=raw, name=kernel, params=signatures[kernel], dtype=_CODE_DTYPES[code],
                  cooperative=cooperative)


def _device_index(device):
    if isinstance(device, int):
        return device
    device = torch.device("cuda") if device is None else torch.device(device)
    if device.type != "cuda":
        raise TypeError(f"kernels are compiled for a CUDA device, not {device}")
    return device.index if device.index is not None else torch.cuda.current_device()


def get_function(source, kernel, dtype, defines=(), cooperative=False, device=None):
    """Kernel ``kernel`` of package file ``source`` compiled for ``dtype`` (torch dtype or
    FUSEDRNN_DTYPE code) with extra ``defines`` (e.g. ``("-DCELL=1",)``); ``cooperative``
    compiles for and launches with ``cuLaunchCooperativeKernel``; ``device`` (a torch device or
    index; default torch's current one) is where it will run: the module is compiled (CuPy
    keeps the binary on disk) and loaded there, once per (source, dtype, defines, cooperative,
    device) and process."""
    require_cupy("cupy")                    # first: without CuPy, fail with the install hint
    return _kernel(source, kernel, dtype_code(dtype), tuple(defines), bool(cooperative),
                   _device_index(device))


# ---------------------------------------------------------------------------------------------
# Launching.

def _device_of(args):
    for a in args:
        if isinstance(a, torch.Tensor):
            return a.device
    raise TypeError("launch needs at least one tensor argument (to know the device and stream)")


def _raw_arg(a):
    # 8-byte device address, exactly what a `T *` parameter receives.
    return numpy.uint64(a.data_ptr()) if isinstance(a, torch.Tensor) else a


def launch(fn, grid, block, args, shared_mem=0, cooperative=None):
    """Launch ``fn`` (from :func:`get_function`) with ``grid`` / ``block`` (tuples of up to 3
    ints) on PyTorch's current stream of the tensors' device. ``args`` are checked against the
    kernel's signature (module docstring). ``cooperative`` defaults to how ``fn`` was compiled;
    passing a value that differs from it is an error. An empty grid launches nothing."""
    if cooperative is not None and bool(cooperative) != fn.cooperative:
        raise ValueError(f"{fn.name} was compiled with cooperative={fn.cooperative}")
    check_args(fn.name, fn.params, args, fn.dtype)
    grid, block = tuple(int(g) for g in grid), tuple(int(b) for b in block)
    if min(grid) <= 0:
        return                              # B = 0 or T = 0: nothing to do (CUDA rejects 0)
    device = _device_of(args)
    if device.type != "cuda":
        raise TypeError(f"{fn.name}: tensors must be on a CUDA device, not {device}")
    for a in args:
        if isinstance(a, torch.Tensor) and a.device != device:
            raise TypeError(f"{fn.name}: all tensors must be on {device}, one is on {a.device}")
    cupy = require_cupy("cupy")
    if fn.cooperative:
        # CuPy itself would shrink an oversized 1-D cooperative grid with only a warning
        # (cupy/cuda/function.pyx), silently skipping blocks: refuse instead.
        limit = max_cooperative_blocks(fn, block, shared_mem, device)
        if math.prod(grid) > limit:
            raise ValueError(f"{fn.name}: a cooperative grid of {grid} blocks exceeds the {limit} "
                             f"that can be resident at once on {device}")
    stream = torch.cuda.current_stream(device)
    # ``stream=`` is not in RawKernel.__call__'s documented signature, but CuPy forwards its
    # keyword arguments to Function.__call__(grid, block, args, shared_mem, stream, ...)
    # (cupy/_core/raw.pyx); the CUDA tests assert every launch's stream (cupy_gpu).
    with cupy.cuda.Device(device.index):
        fn.raw(grid, block, tuple(_raw_arg(a) for a in args), shared_mem=int(shared_mem),
               stream=_external_stream(cupy, stream.cuda_stream, device.index))


@functools.lru_cache(maxsize=64)
def _external_stream(cupy, handle, device_index):
    # ExternalStream only wraps the handle (no ownership); cached because a per-step launcher
    # asks for the same stream thousands of times.
    return cupy.cuda.ExternalStream(handle, device_index)


def max_cooperative_blocks(fn, block, shared_mem=0, device=None):
    """The most blocks of ``fn`` (``block`` threads, ``shared_mem`` dynamic bytes) that can be
    resident at once on ``device`` (default: torch's current device): occupancy per SM × SMs.
    A cooperative launch with a larger grid fails; launchers check this first."""
    cupy = require_cupy("cupy")
    device = torch.device("cuda") if device is None else torch.device(device)
    if device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    threads = 1
    for b in (block if isinstance(block, tuple) else (block,)):
        threads *= int(b)
    with cupy.cuda.Device(device.index):
        per_sm = cupy.cuda.driver.occupancyMaxActiveBlocksPerMultiprocessor(
            fn.raw.kernel.ptr, threads, int(shared_mem))
    return per_sm * torch.cuda.get_device_properties(device).multi_processor_count
