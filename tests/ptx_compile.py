"""Compile every Triton step kernel to sm_90 PTX without a GPU (run in a subprocess by
``test_ptx_compile.py``; TRITON_INTERPRET must be off so the kernels are real JIT functions).

Usage: ``python ptx_compile.py fp32|fp16|bf16`` prints one line per kernel variant:
``<kernel> <constexprs> <bytes of PTX>``.
"""

import itertools
import sys

import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from fusedrnn.kernels.triton import gru_step, lstm_step, rnn_step
from fusedrnn.kernels.triton.launch_common import BB, BH, BK

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


def signature(fn, dtype, constexprs):
    sig = {}
    for name in fn.arg_names:
        if name in constexprs:
            sig[name] = "constexpr"
        elif name == "p_len":
            sig[name] = "*i64"
        elif name.startswith("p_"):
            sig[name] = "*fp32" if name in FP32_BUFFERS else f"*{dtype}"
        else:
            sig[name] = "i32"
    return sig


def main(dtype):
    target = GPUTarget("cuda", 90, 32)
    base = {"BB": BB, "BH": BH, "BK": BK, "DOT_FP32": dtype == "fp32",
            "PRECISION": "tf32" if dtype == "fp32" else "ieee"}
    for fn, choices in KERNELS:
        for values in itertools.product(*choices.values()):
            constexprs = {**base, **dict(zip(choices, values))}
            constexprs = {k: v for k, v in constexprs.items() if k in fn.arg_names}
            compiled = triton.compile(ASTSource(fn, signature(fn, dtype, constexprs), constexprs),
                                      target=target)
            ptx = compiled.asm["ptx"]
            assert ".target sm_90" in ptx, fn.__name__
            flags = ",".join(f"{k}={v}" for k, v in zip(choices, values)) or "-"
            print(fn.__name__, flags, len(ptx))


if __name__ == "__main__":
    main(sys.argv[1])
