"""The variant LSTM step kernels (issue 14, ``kernels/triton/variants/lstm_step.py``) compile to
sm_90 for fp32 and bf16 at H = 768 (the GPU timing case's width) with LAYER_NORM and ZONEOUT on
and off — no GPU needed (``aot_compile.compile_all`` compiles in workers without
TRITON_INTERPRET). Spills: see the last test (measured numbers in its docstring)."""

import pytest
import triton

from fusedrnn.kernels.triton import aot_compile

H = 768
MODULE = "variants.lstm_step"
KERNELS = ("lstm_variant_fwd_kernel", "lstm_variant_bwd_kernel")
# Pointers the host hands over in fp32 whatever the model's dtype (xproj, the recurrent GEMM's
# output, carried state, keep, workspace, every gradient buffer but dy / dh_n / dc_n).
FP32 = {"p_rec", "p_xproj", "p_hs", "p_cs", "p_keep", "p_ws", "p_rdh", "p_dhc", "p_dcc",
        "p_dh0", "p_dc0", "p_dgin", "p_dghid", "p_dgs", "p_dgain", "p_dgc", "p_dbc"}
INTS = {"p_len": "*i64", "p_starts": "*u8"}


def _specs(dtype):
    import importlib

    from fusedrnn.kernels.triton.variants.step_common import block_rows

    mod = importlib.import_module(f"{aot_compile.PACKAGE}.{MODULE}")
    HP = triton.next_power_of_2(H)
    specs = []
    for kernel in KERNELS:
        fn = getattr(mod, kernel)
        for ln in (False, True):
            for zo in (False, True):
                const = {"LAYER_NORM": ln, "ZONEOUT": zo, "BB": block_rows(HP), "HP": HP}
                if "EPS" in fn.arg_names:
                    const["EPS"] = 1e-5
                sig = tuple((a, "constexpr" if a in const else INTS.get(a) or
                             ("*fp32" if a in FP32 else f"*{dtype}") if a.startswith("p_")
                             else "i32") for a in fn.arg_names)
                specs.append(aot_compile.Specialization(
                    f"{aot_compile.PACKAGE}.{MODULE}", kernel, "variant-step", dtype, dtype,
                    (("LAYER_NORM", ln), ("ZONEOUT", zo)), tuple(const.items()), sig, ()))
    return specs


@pytest.fixture(scope="module")
def rows():
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TRITON_DEFAULT_FP_FUSION", "1")
        specs = _specs("fp32") + _specs("bf16")
        return aot_compile.compile_all(specs, jobs=2)


def test_variant_lstm_step_kernels_compile_to_sm90(rows):
    report = "\n".join(str(r) for r in rows)
    print(report)
    assert len(rows) == 16
    assert [r for r in rows if "error" in r] == [], report
    assert all(r["sm90"] and r["ptx_bytes"] > 10_000 for r in rows), report


def test_variant_lstm_step_kernels_spill_only_in_the_layer_norm_backward(rows):
    """sm_90, H = 768, HP = 1024, BB = 2, 4 warps. Every forward and the plain/zoneout backward
    use <= 255 registers with no stack, with Triton 3.9 and 3.6 alike. The LAYER_NORM backward
    keeps da (4 blocks), n_hh (4 blocks) and the cell-LN blocks live across the two row means;
    its stack depends on the Triton version, measured: Triton 3.9 spills (fp32 112 / 136 bytes,
    bf16 200 / 152, ZONEOUT off / on, at 255 registers), Triton 3.6 (the GPU machine's, in
    .ci/run's 3.6 step) does not (255 registers, no stack). So no spill anywhere else, and at
    most the 3.9 amount there; removing it needs a smaller row tile or a split LN backward."""
    report = "\n".join(f"{r['name']}/{r['dtype']}: regs {r['registers']} "
                       f"stack {r['stack_bytes']}" for r in rows)
    print(report)
    for r in rows:
        ln_bwd = r["kernel"] == "lstm_variant_bwd_kernel" and r["flags"]["LAYER_NORM"]
        assert r["registers"] <= 255, report
        assert r["stack_bytes"] <= (200 if ln_bwd else 0), report
