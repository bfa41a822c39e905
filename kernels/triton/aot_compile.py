"""Compile every Triton kernel specialization to sm_90 ahead of time, without a GPU.

``triton.compile(ASTSource(...), target=GPUTarget("cuda", 90, 32))`` runs Triton's whole
pipeline (TTIR → TTGIR → LLVM → PTX → ptxas cubin) on the CPU. Used by the PTX checks
(``tests/ptx_compile.py``: the PTX is real, the persistent kernels do not spill, the grid
barrier lowers to the intended atomics) and by ``python -m fusedrnn gpucheck`` (compile
warm-up: how many specializations, and how long they take).

Which specializations: each kernel at the configuration its launcher uses on a GPU.
* step kernels: ``launch_common``'s BB/BH/BK, 4 warps (Triton's default), the launch's dot mode
  (forward and backward differ for fp16) for every dot key of the dtype;
* batch-tiled persistent kernels: ``HP`` of the cell's ``MAX_HIDDEN`` for each dot key (the
  widest, i.e. the most register pressure, that the launch accepts), the module's warps;
* hidden-split kernels: ``split_common.SLICE_WIDTH`` columns, its warps, cooperative launch.

Dimension legend (constexprs): BB batch rows per program, BH hidden units per program, BK
K-chunk of the step kernels' dots, HP padded hidden size of the persistent kernels.

A spec is a frozen dataclass of plain values, so it pickles into the ``spawn`` workers of
``compile_all``. Compiling needs real ``JITFunction`` kernels: ``TRITON_INTERPRET`` must be
unset where the kernel modules are imported (``compile_all``'s workers see it unset).
"""

import contextlib
import dataclasses
import importlib
import inspect
import itertools
import multiprocessing
import os
import re
import subprocess
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor

import torch
import triton

DTYPES = ("fp32", "fp16", "bf16")
TORCH_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
# dtype -> its dot keys (persistent_common.DOT_KEYS), with the cudnn.allow_tf32 that selects each
DOT_KEYS = {"fp32": (("fp32-tf32", True), ("fp32-ieee", False)), "fp16": (("fp16", True),),
            "bf16": (("bf16", True),)}
PACKAGE = "fusedrnn.kernels.triton"

# Buffers the kernels keep in fp32 whatever the model's dtype (workspaces, gate gradients,
# carries, LSTM c); every other pointer has the model's dtype.
FP32_BUFFERS = {"p_ws", "p_dg", "p_dgi", "p_dgh", "p_dc", "p_carry", "p_dh", "p_c"}
INT_BUFFERS = {"p_len": "*i64", "p_nact": "*i32", "p_bar": "*i32"}

# (module, kernel, backward?, constexpr switches compiled in every combination)
STEP = [
    ("lstm_step", "lstm_step_fwd_kernel", False, {"HAS_PROJ": (False, True)}),
    ("lstm_step", "lstm_proj_fwd_kernel", False, {}),
    ("lstm_step", "lstm_proj_bwd_dh_kernel", True, {}),
    ("lstm_step", "lstm_step_bwd_kernel", True, {"HAS_PROJ": (False, True)}),
    ("gru_step", "gru_step_fwd_kernel", False, {"HAS_BHN": (False, True)}),
    ("gru_step", "gru_step_bwd_kernel", True, {}),
    ("rnn_step", "rnn_step_fwd_kernel", False, {"RELU": (False, True)}),
    ("rnn_step", "rnn_step_bwd_kernel", True, {"RELU": (False, True)}),
]
# Switches that do not change register pressure are compiled one way only (HAS_BHN=True and
# RELU=False are the heavier or equal sides).
PERSISTENT = [
    ("lstm_persistent", "lstm_persistent_fwd_kernel", False, {}),
    ("lstm_persistent", "lstm_persistent_bwd_kernel", True, {}),
    ("gru_persistent", "gru_persistent_fwd_kernel", False, {"HAS_BHN": (True,)}),
    ("gru_persistent", "gru_persistent_bwd_kernel", True, {}),
    ("rnn_persistent", "rnn_persistent_fwd_kernel", False, {"RELU": (False,)}),
    ("rnn_persistent", "rnn_persistent_bwd_kernel", True, {"RELU": (False,)}),
]
SPLIT = [
    ("lstm_persistent_split", "lstm_persistent_split_fwd_kernel", False,
     {"HAS_PROJ": (False, True)}),
    ("lstm_persistent_split", "lstm_persistent_split_bwd_kernel", True,
     {"HAS_PROJ": (False, True)}),
    ("gru_persistent_split", "gru_persistent_split_fwd_kernel", False, {"HAS_BHN": (True,)}),
    ("gru_persistent_split", "gru_persistent_split_bwd_kernel", True, {}),
    ("rnn_persistent_split", "rnn_persistent_split_fwd_kernel", False, {"RELU": (False,)}),
    ("rnn_persistent_split", "rnn_persistent_split_bwd_kernel", True, {"RELU": (False,)}),
]

# The GPU check's probes (kernels/triton/probe.py): dtype-independent, compiled once (fp32 key),
# as the check launches them: the barrier probe cooperatively with the split kernels' warps.
PROBE = [  # (kernel, signature, constexprs, options)
    ("probe_empty_kernel", (("p_unused", "*fp32"),), (), ()),
    ("probe_barrier_kernel", (("p_bar", "*i32"), ("p_out", "*i32"), ("rounds", "i32")), (),
     (("num_warps", 8), ("launch_cooperative_grid", True))),
    ("probe_read_kernel", (("p_buf", "*fp32"), ("p_out", "*fp32"), ("N", "i32"),
                           ("rounds", "i32"), ("BLOCK", "constexpr")), (("BLOCK", 4096),),
     (("num_warps", 8),)),
]

# The grid barrier as split_common documents it: arrival by a GPU-scope acq_rel atomic add,
# waiting by a GPU-scope acquire load, release of the flag by a GPU-scope release exchange,
# each issued by one thread (predicated) between CTA barriers.
BARRIER_PTX = (r"@%p\d+ atom\.global\.gpu\.acq_rel\.add", r"@%p\d+ ld\.global\.gpu\.acquire",
               r"@%p\d+ atom\.global\.gpu\.release\.exch", r"bar\.sync")


@dataclasses.dataclass(frozen=True)
class Specialization:
    """One kernel compile: everything ``triton.compile`` needs, as plain picklable values."""
    module: str          # "fusedrnn.kernels.triton.lstm_step"
    kernel: str          # "lstm_step_fwd_kernel"
    family: str          # "step" | "persistent" | "split" | "probe"
    dtype: str           # "fp32" | "fp16" | "bf16"
    dot_key: str         # persistent_common.DOT_KEYS entry the launch selects
    flags: tuple         # ((constexpr, value), ...): the switched constexprs of this variant
    constexprs: tuple    # ((constexpr, value), ...): all of them
    signature: tuple     # ((argument, type), ...) in argument order, "constexpr" for those
    options: tuple       # ((option, value), ...): num_warps, launch_cooperative_grid

    @property
    def name(self):
        flags = ",".join(f"{k}={v}" for k, v in self.flags) or "-"
        return f"{self.kernel}[{self.dot_key}]{flags}"


def signature(fn, dtype, constexprs):
    """Triton signature of ``fn``: pointers typed by buffer role, scalars i32."""
    sig = {}
    for name in fn.arg_names:
        if name in constexprs:
            sig[name] = "constexpr"
        elif name in INT_BUFFERS:
            sig[name] = INT_BUFFERS[name]
        elif name.startswith("p_"):
            sig[name] = "*fp32" if name in FP32_BUFFERS else f"*{dtype}"
        else:
            sig[name] = "i32"
    return sig


def _variants(module, kernel, family, dtype, dot_key, base, choices, options):
    fn = getattr(importlib.import_module(f"{PACKAGE}.{module}"), kernel)
    for values in itertools.product(*choices.values()):
        flags = tuple(zip(choices, values))
        constexprs = {k: v for k, v in {**base, **dict(flags)}.items() if k in fn.arg_names}
        yield Specialization(f"{PACKAGE}.{module}", kernel, family, dtype, dot_key, flags,
                             tuple(constexprs.items()),
                             tuple(signature(fn, dtype, constexprs).items()),
                             tuple(options.items()))


def specializations(dtypes=DTYPES, families=("step", "persistent", "split", "probe")):
    """Every specialization of the listed families for ``dtypes`` (subset of ``DTYPES``), in a
    stable order: the probes once, then per dtype, per dot key, step → persistent → split."""
    from . import launch_common, persistent_common, split_common

    specs = []
    if "probe" in families:
        specs += [Specialization(f"{PACKAGE}.probe", kernel, "probe", "fp32", "fp32-ieee", (),
                                 constexprs, signature, options)
                  for kernel, signature, constexprs, options in PROBE]
    for dtype in dtypes:
        torch_dtype = TORCH_DTYPES[dtype]
        for dot_key, allow_tf32 in DOT_KEYS[dtype]:
            def dots(backward):
                fp32, precision = launch_common.compiled_dot_mode(torch_dtype, backward, allow_tf32)
                return {"DOT_FP32": fp32, "PRECISION": precision}

            step_base = {"BB": launch_common.BB, "BH": launch_common.BH, "BK": launch_common.BK}
            if "step" in families:
                for module, kernel, backward, choices in STEP:
                    specs += _variants(module, kernel, "step", dtype, dot_key,
                                       {**step_base, **dots(backward)}, choices, {})
            if "persistent" in families:
                for module, kernel, backward, choices in PERSISTENT:
                    mod = importlib.import_module(f"{PACKAGE}.{module}")
                    hp = persistent_common.padded_hidden(mod.MAX_HIDDEN[dot_key])
                    specs += _variants(module, kernel, "persistent", dtype, dot_key,
                                       {"BB": mod.BB, "HP": hp, **dots(backward)}, choices,
                                       {"num_warps": mod.NUM_WARPS})
            if "split" in families:
                for module, kernel, backward, choices in SPLIT:
                    specs += _variants(module, kernel, "split", dtype, dot_key,
                                       {**step_base, "BH": split_common.SLICE_WIDTH,
                                        **dots(backward)}, choices,
                                       {"num_warps": split_common.NUM_WARPS,
                                        "launch_cooperative_grid": True})
    return specs


def resources(cubin):
    """``(registers, stack bytes)`` per thread, read from the cubin by Triton's bundled
    cuobjdump (stack > 0 means ptxas spilled registers to local memory)."""
    cuobjdump = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin",
                             "cuobjdump")
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(cubin)
        f.flush()
        out = subprocess.run([cuobjdump, "--dump-resource-usage", f.name], capture_output=True,
                             text=True, check=True).stdout
    m = re.search(r"REG:(\d+).*?STACK:(\d+)", out, re.S)
    return int(m.group(1)), int(m.group(2))


def grid_barrier_lowered(ptx):
    """Whether every instruction of the grid barrier (``BARRIER_PTX``) is in ``ptx``."""
    return all(re.search(pattern, ptx) for pattern in BARRIER_PTX)


def compile_one(spec):
    """Compile ``spec`` for sm_90. Returns ``dict(name, kernel, family, dtype, dot_key, flags,
    ptx_bytes, sm90, registers, stack_bytes, barrier, seconds)``: ``sm90`` whether the PTX
    targets sm_90, ``barrier`` whether the grid barrier lowered as intended (None outside the
    split family), ``seconds`` the compile's wall time (a hit in Triton's cache is fast)."""
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource
    from triton.runtime.jit import JITFunction

    fn = getattr(importlib.import_module(spec.module), spec.kernel)
    if not isinstance(fn, JITFunction):
        raise RuntimeError(f"{spec.kernel} is not a JITFunction (imported with "
                           f"TRITON_INTERPRET=1?): compile in a process without it, e.g. "
                           f"with compile_all")
    # A constexpr parameter the spec leaves out would compile as a runtime i32 argument: a
    # different kernel than the launch runs, measured without a word. Refuse it instead.
    wanted = {name for name, p in inspect.signature(fn.fn).parameters.items()
              if "constexpr" in str(p.annotation)}
    if wanted != {name for name, _ in spec.constexprs}:
        raise ValueError(f"{spec.kernel}: the spec's constexprs differ from the kernel's "
                         f"(missing {sorted(wanted - dict(spec.constexprs).keys())}, extra "
                         f"{sorted(dict(spec.constexprs).keys() - wanted)})")
    start = time.perf_counter()
    compiled = triton.compile(ASTSource(fn, dict(spec.signature), dict(spec.constexprs)),
                              target=GPUTarget("cuda", 90, 32), options=dict(spec.options))
    seconds = time.perf_counter() - start
    ptx = compiled.asm["ptx"]
    registers, stack = resources(compiled.asm["cubin"])
    return {"name": spec.name, "kernel": spec.kernel, "family": spec.family, "dtype": spec.dtype,
            "dot_key": spec.dot_key, "flags": dict(spec.flags), "ptx_bytes": len(ptx),
            "sm90": ".target sm_90" in ptx, "registers": registers, "stack_bytes": stack,
            "barrier": grid_barrier_lowered(ptx) if spec.kernel == "probe_barrier_kernel"
            or spec.family == "split" else None,
            "seconds": seconds}


def _compile_or_report(spec):
    # One broken kernel must not hide the others' results: its row carries the error instead.
    start = time.perf_counter()
    try:
        return compile_one(spec)
    except Exception as e:   # reported in the row, never swallowed
        return {"name": spec.name, "kernel": spec.kernel, "family": spec.family,
                "dtype": spec.dtype, "dot_key": spec.dot_key, "flags": dict(spec.flags),
                "error": f"{type(e).__name__}: {e}"[-2000:], "seconds": time.perf_counter() - start}


@contextlib.contextmanager
def _environment_without(name):
    """``os.environ`` without ``name`` while spawned workers start (they copy the environment)."""
    saved = os.environ.pop(name, None)
    try:
        yield
    finally:
        if saved is not None:
            os.environ[name] = saved


def compile_all(specs, jobs=None):
    """Compile ``specs`` in ``jobs`` spawned processes (default: all CPU cores), in order.

    ``specs`` a list of ``Specialization``; returns a list of the same length.

    Returns one dict per spec as ``compile_one``'s, or with ``error`` (the exception's type and
    message) in place of the measurements where a compile failed. Workers start with
    ``TRITON_INTERPRET`` unset, so they import real ``JITFunction`` kernels: it is removed from
    ``os.environ`` while the pool runs (a spawned child copies the parent's environment and may
    import the parent's main module before any initializer could unset it), so do not launch
    interpreted kernels from another thread meanwhile (``launch_common.interpreting`` reads it).
    """
    jobs = max(1, min(jobs or os.cpu_count(), len(specs)))   # each worker imports torch: ~2 s
    context = multiprocessing.get_context("spawn")
    with _environment_without("TRITON_INTERPRET"), \
            ProcessPoolExecutor(max_workers=jobs, mp_context=context) as pool:
        return list(pool.map(_compile_or_report, specs))
