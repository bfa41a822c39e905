"""Compile the single-step cell kernels (``kernels/triton/cell_step.py``) to sm_90 without a GPU
(run in a subprocess by ``test_cell_ptx_compile.py``, TRITON_INTERPRET off).

Usage: ``python cell_ptx_compile.py fp32|fp16|bf16`` prints one line per kernel variant:
``<kernel> <constexprs> <bytes of PTX> <registers> <stack bytes>``.
"""

import sys

import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from fusedrnn.kernels.triton import cell_step
from fusedrnn.kernels.triton.launch_common import BB, BH, BK
from fusedrnn.kernels.triton.aot_compile import resources

# Buffers that are fp32 whatever the model's dtype: the workspace and the gate gradients.
FP32_BUFFERS = {"p_ws", "p_dg", "p_dgi", "p_dgh", "p_direct"}
# (kernel, constexpr variants): every switch in both positions at least once, not the full
# product (each variant costs about 3 s of CI on two cores).
_FWD = [dict(HAS_BIAS=False, SAVE=True), dict(HAS_BIAS=True, SAVE=True),
        dict(HAS_BIAS=True, SAVE=False)]
KERNELS = [
    (cell_step.lstm_cell_fwd_kernel, _FWD),
    (cell_step.gru_cell_fwd_kernel, _FWD),
    (cell_step.rnn_cell_fwd_kernel,
     [dict(v, RELU=relu) for v, relu in zip(_FWD, (False, True, False))]),
    (cell_step.lstm_cell_bwd_kernel, [{}]),
    (cell_step.gru_cell_bwd_kernel, [{}]),
    (cell_step.rnn_cell_bwd_kernel, [dict(RELU=False), dict(RELU=True)]),
]


def signature(fn, dtype, constexprs):
    return {name: ("constexpr" if name in constexprs else
                   ("*fp32" if name in FP32_BUFFERS else f"*{dtype}") if name.startswith("p_")
                   else "i32") for name in fn.arg_names}


def main(dtype):
    # A launch's dot configuration (cell_step.cell_dot_mode on a GPU): fp32 operands with TF32
    # for fp32 models (under torch.backends.cuda.matmul.allow_tf32; its IEEE default lowers
    # the same dot without the TF32 instruction), native fp16/bf16 operands otherwise.
    base = {"BB": BB, "BH": BH, "BK": BK, "DOT_FP32": dtype == "fp32",
            "PRECISION": "tf32" if dtype == "fp32" else "ieee"}
    for fn, variants in KERNELS:
        for variant in variants:
            constexprs = {k: v for k, v in {**base, **variant}.items() if k in fn.arg_names}
            compiled = triton.compile(ASTSource(fn, signature(fn, dtype, constexprs), constexprs),
                                      target=GPUTarget("cuda", 90, 32))
            ptx = compiled.asm["ptx"]
            assert ".target sm_90" in ptx, fn.__name__
            regs, stack = resources(compiled.asm["cubin"])
            flags = ",".join(f"{k}={v}" for k, v in variant.items()) or "-"
            print(fn.__name__, flags, len(ptx), regs, stack, flush=True)


if __name__ == "__main__":
    main(sys.argv[1])
