"""The batch-tiled persistent variant kernels (``kernels/triton/variants/<cell>_persistent``)
as sm_90 compile specializations (``fusedrnn.kernels.triton.aot_compile.Specialization``), at
``padded_hidden(MAX_HIDDEN[dot key])`` (or a given HP) with the heaviest switches (LayerNorm
and zoneout on, GRU b_hh present, tanh): what ``test_variant_ptx_compile.py`` compiles.

Usage: ``python tests/variant_ptx_specs.py [HP] [--jobs N]`` prints registers and stack bytes
of each (stack > 0: spills), to measure a MAX_HIDDEN candidate.
"""

import importlib
import sys

from fusedrnn.kernels.triton import aot_compile, launch_common, persistent_common

PACKAGE = "fusedrnn.kernels.triton.variants"
WARPS = None   # override of the modules' NUM_WARPS (measuring)
# (module, kernel, backward?, switches)
KERNELS = [
    ("lstm_persistent", "lstm_variant_persistent_fwd_kernel", False,
     {"LAYER_NORM": True, "ZONEOUT": True, "EPS": 1e-5}),
    ("lstm_persistent", "lstm_variant_persistent_bwd_kernel", True,
     {"LAYER_NORM": True, "ZONEOUT": True}),
    ("gru_persistent", "gru_variant_persistent_fwd_kernel", False,
     {"HAS_BHH": True, "LAYER_NORM": True, "ZONEOUT": True, "EPS": 1e-5}),
    ("gru_persistent", "gru_variant_persistent_bwd_kernel", True,
     {"LAYER_NORM": True, "ZONEOUT": True}),
    ("rnn_persistent", "rnn_variant_persistent_fwd_kernel", False, {"RELU": False, "ZONEOUT": True}),
    ("rnn_persistent", "rnn_variant_persistent_bwd_kernel", True, {"RELU": False, "ZONEOUT": True}),
]
# fp32 whatever the model's dtype: the host's xproj, the zoneout mask, workspaces, gradients.
FP32 = {"p_xproj", "p_keep", "p_ws", "p_dgin", "p_dghid", "p_dh0", "p_dc0", "p_dgain", "p_dgc",
        "p_dbc", "p_dbhh", "p_dg"}
INTS = {"p_len": "*i64", "p_starts": "*u8"}


def _signature(fn, dtype, constexprs):
    sig = {}
    for name in fn.arg_names:
        if name in constexprs:
            sig[name] = "constexpr"
        elif name in INTS:
            sig[name] = INTS[name]
        elif name.startswith("p_"):
            sig[name] = "*fp32" if name in FP32 else f"*{dtype}"
        else:
            sig[name] = "i32"
    return tuple(sig.items())


def specializations(hp=None, dtypes=aot_compile.DTYPES):
    specs = []
    for dtype in dtypes:
        torch_dtype = aot_compile.TORCH_DTYPES[dtype]
        for dot_key, allow_tf32 in aot_compile.DOT_KEYS[dtype]:
            for module, kernel, backward, switches in KERNELS:
                mod = importlib.import_module(f"{PACKAGE}.{module}")
                fn = getattr(mod, kernel)
                fp32, precision = launch_common.compiled_dot_mode(torch_dtype, backward,
                                                                  allow_tf32)
                if backward and hasattr(mod, "backward_dot_mode"):
                    fp32, precision = mod.backward_dot_mode(torch_dtype)
                size = hp or persistent_common.padded_hidden(mod.MAX_HIDDEN[dot_key])
                constexprs = {**switches, "HP": size, "BB": mod.BB, "DOT_FP32": fp32,
                              "PRECISION": precision}
                specs.append(aot_compile.Specialization(
                    f"{PACKAGE}.{module}", kernel, "persistent", dtype, dot_key,
                    (("HP", size),), tuple(constexprs.items()),
                    _signature(fn, dtype, constexprs), (("num_warps", WARPS or mod.NUM_WARPS),)))
    return specs


if __name__ == "__main__":
    args = sys.argv[1:]
    jobs = int(args[args.index("--jobs") + 1]) if "--jobs" in args else 2
    hp = int(args[0]) if args and args[0] != "--jobs" else None
    if "--warps" in args:
        WARPS = int(args[args.index("--warps") + 1])
    for row in aot_compile.compile_all(specializations(hp), jobs):
        print(row["name"], row.get("error") or (row["registers"], row["stack_bytes"],
                                                f"{row['seconds']:.1f}s"), flush=True)
