"""Compile every Triton kernel to sm_90 without a GPU (run in a subprocess by
``test_ptx_compile.py``; TRITON_INTERPRET must be off so the kernels are real JIT functions).

Usage: ``python ptx_compile.py fp32|fp16|bf16`` prints one line per kernel variant:
``<kernel> <constexprs> <bytes of PTX> <registers> <stack bytes>``, the last two read from
the cubin by Triton's bundled cuobjdump (stack > 0 means register spills).
"""

import itertools
import os
import re
import subprocess
import sys
import tempfile

import torch
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from fusedrnn.kernels.triton import (gru_persistent, gru_persistent_split, gru_step,
                                     lstm_persistent, lstm_persistent_split, lstm_step,
                                     rnn_persistent, rnn_persistent_split, rnn_step, split_common)
from fusedrnn.kernels.triton.launch_common import BB, BH, BK, dot_mode
from fusedrnn.kernels.triton.persistent_common import dot_key, padded_hidden

CUOBJDUMP = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")

FP32_BUFFERS = {"p_ws", "p_dg", "p_dgi", "p_dgh", "p_dc", "p_carry", "p_dh", "p_c"}

KERNELS = [  # (kernel, extra constexpr choices)
    (lstm_step.lstm_step_fwd_kernel, {"HAS_PROJ": (False, True)}),
    (lstm_step.lstm_proj_fwd_kernel, {}),
    (lstm_step.lstm_proj_bwd_dh_kernel, {}),
    (lstm_step.lstm_step_bwd_kernel, {"HAS_PROJ": (False, True)}),
    (gru_step.gru_step_fwd_kernel, {"HAS_BHN": (False, True)}),
    (gru_step.gru_step_bwd_kernel, {}),
    (rnn_step.rnn_step_fwd_kernel, {"RELU": (False, True)}),
    (rnn_step.rnn_step_bwd_kernel, {"RELU": (False, True)}),
]
# Persistent kernels at their largest supported width for every dot configuration the launch
# can use, with the launch's warp count and the launch's own (DOT_FP32, PRECISION): these must
# compile without spills (the MAX_HIDDEN tables were chosen from exactly this check).
PERSISTENT = [  # (kernel, module, backward?, extra constexpr choices)
    (lstm_persistent.lstm_persistent_fwd_kernel, lstm_persistent, False, {}),
    (lstm_persistent.lstm_persistent_bwd_kernel, lstm_persistent, True, {}),
    (gru_persistent.gru_persistent_fwd_kernel, gru_persistent, False, {"HAS_BHN": (True,)}),
    (gru_persistent.gru_persistent_bwd_kernel, gru_persistent, True, {}),
    (rnn_persistent.rnn_persistent_fwd_kernel, rnn_persistent, False, {"RELU": (False,)}),
    (rnn_persistent.rnn_persistent_bwd_kernel, rnn_persistent, True, {"RELU": (False,)}),
]
# Hidden-split kernels: the step tile bodies in a time loop with a grid barrier, compiled as
# launched (cooperative grid, the launch's warps and dot configuration).
SPLIT = [  # (kernel, backward?, extra constexpr choices)
    (lstm_persistent_split.lstm_persistent_split_fwd_kernel, False, {"HAS_PROJ": (False, True)}),
    (lstm_persistent_split.lstm_persistent_split_bwd_kernel, True, {"HAS_PROJ": (False, True)}),
    (gru_persistent_split.gru_persistent_split_fwd_kernel, False, {"HAS_BHN": (True,)}),
    (gru_persistent_split.gru_persistent_split_bwd_kernel, True, {}),
    (rnn_persistent_split.rnn_persistent_split_fwd_kernel, False, {"RELU": (False,)}),
    (rnn_persistent_split.rnn_persistent_split_bwd_kernel, True, {"RELU": (False,)}),
]
# dtype argument -> the dot keys it covers, with the cudnn.allow_tf32 setting that selects each
KEYS = {"fp32": [("fp32-tf32", True), ("fp32-ieee", False)], "fp16": [("fp16", True)],
        "bf16": [("bf16", True)]}


def signature(fn, dtype, constexprs):
    sig = {}
    for name in fn.arg_names:
        if name in constexprs:
            sig[name] = "constexpr"
        elif name == "p_len":
            sig[name] = "*i64"
        elif name in ("p_nact", "p_bar"):
            sig[name] = "*i32"
        elif name.startswith("p_"):
            sig[name] = "*fp32" if name in FP32_BUFFERS else f"*{dtype}"
        else:
            sig[name] = "i32"
    return sig


def resources(compiled):
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(compiled.asm["cubin"])
        f.flush()
        out = subprocess.run([CUOBJDUMP, "--dump-resource-usage", f.name], capture_output=True,
                             text=True, check=True).stdout
    m = re.search(r"REG:(\d+).*?STACK:(\d+)", out, re.S)
    return int(m.group(1)), int(m.group(2))


# The grid barrier as split_common documents it: arrival by a GPU-scope acq_rel atomic add,
# waiting by a GPU-scope acquire load, release of the flag by a GPU-scope release exchange,
# each issued by one thread (predicated) between CTA barriers.
BARRIER_PTX = [r"@%p\d+ atom\.global\.gpu\.acq_rel\.add", r"@%p\d+ ld\.global\.gpu\.acquire",
               r"@%p\d+ atom\.global\.gpu\.release\.exch", r"bar\.sync"]


def check_grid_barrier(name, ptx):
    for pattern in BARRIER_PTX:
        assert re.search(pattern, ptx), f"{name}: no {pattern!r} in the PTX"


def compile_variants(fn, dtype, base, choices, options):
    target = GPUTarget("cuda", 90, 32)
    for values in itertools.product(*choices.values()):
        constexprs = {**base, **dict(zip(choices, values))}
        constexprs = {k: v for k, v in constexprs.items() if k in fn.arg_names}
        compiled = triton.compile(ASTSource(fn, signature(fn, dtype, constexprs), constexprs),
                                  target=target, options=options)
        ptx = compiled.asm["ptx"]
        assert ".target sm_90" in ptx, fn.__name__
        if "split" in fn.__name__:
            check_grid_barrier(fn.__name__, ptx)
        flags = ",".join(f"{k}={v}" for k, v in zip(choices, values)) or "-"
        regs, stack = resources(compiled)
        print(fn.__name__, flags, len(ptx), regs, stack, flush=True)


def main(dtype):
    base = {"BB": BB, "BH": BH, "BK": BK, "DOT_FP32": dtype == "fp32",
            "PRECISION": "tf32" if dtype == "fp32" else "ieee"}
    for fn, choices in KERNELS:
        compile_variants(fn, dtype, base, choices, {})
    torch_dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[dtype]
    for key, allow_tf32 in KEYS[dtype]:
        torch.backends.cudnn.allow_tf32 = allow_tf32
        assert dot_key(torch_dtype) == key
        for fn, module, backward, choices in PERSISTENT:
            limits = module.MAX_HIDDEN
            dot_fp32, precision = dot_mode(torch_dtype, backward=backward)
            compile_variants(fn, dtype, {**base, "BB": module.BB, "HP": padded_hidden(limits[key]),
                                         "DOT_FP32": dot_fp32, "PRECISION": precision},
                             choices, {"num_warps": module.NUM_WARPS})
        for fn, backward, choices in SPLIT:
            dot_fp32, precision = dot_mode(torch_dtype, backward=backward)
            compile_variants(fn, dtype, {**base, "BH": split_common.SLICE_WIDTH,
                                         "DOT_FP32": dot_fp32, "PRECISION": precision},
                             choices, {"num_warps": split_common.NUM_WARPS,
                                       "launch_cooperative_grid": True})


if __name__ == "__main__":
    main(sys.argv[1])
