"""Every Triton kernel compiles to sm_90 PTX for fp32, fp16 and bf16 — no GPU needed — and the
persistent ones (both forms) do not spill. CI runs this file with the installed Triton (3.9)
and again in a Triton 3.6 venv (the GPU machine's version, see ``.ci/run``)."""

import pickle

import pytest

from fusedrnn.kernels.triton import aot_compile

# Per dot key: step kernels × their constexpr switches (13), batch-tiled persistent kernels at
# MAX_HIDDEN (6), hidden-split variants (8). fp32 has two dot keys (TF32 and IEEE).
EXPECTED = {"step": 13, "persistent": 6, "split": 8}
KEYS_PER_DTYPE = {"fp32": 2, "fp16": 1, "bf16": 1}
# The hidden-split kernels keep no weights in registers; in a few variants ptxas keeps one value
# of the time loop on the stack (8 bytes, one STL + one LDL per step; measured: the fp16/bf16
# GRU forward with Triton 3.9, the IEEE-fp32 LSTM/GRU backward with 3.6). More would be real
# register pressure.
SPLIT_STACK_ALLOWANCE = 8


@pytest.fixture(scope="module")
def rows():
    """All specializations compiled once, on 2 workers (CI's cores); Triton's cache makes a
    rerun fast."""
    with pytest.MonkeyPatch.context() as mp:
        # today's default, stated to silence Triton 3.9's notice about it
        mp.setenv("TRITON_DEFAULT_FP_FUSION", "1")
        specs = aot_compile.specializations()
        return dict(zip(specs, aot_compile.compile_all(specs, jobs=2)))


def test_specializations_are_picklable_and_distinct():
    specs = aot_compile.specializations()
    assert pickle.loads(pickle.dumps(specs)) == specs
    assert len(set(specs)) == len(specs)
    assert len({s.name + s.dtype for s in specs}) == len(specs)


@pytest.mark.parametrize("dtype", ["fp32", "fp16", "bf16"])
def test_kernels_compile_to_sm90_and_persistent_ones_do_not_spill(rows, dtype):
    mine = [r for s, r in rows.items() if s.dtype == dtype and s.family != "probe"]
    report = "\n".join(str(r) for r in mine)
    assert [r for r in mine if "error" in r] == [], report
    for family, n in EXPECTED.items():
        assert sum(r["family"] == family for r in mine) == n * KEYS_PER_DTYPE[dtype], report
    assert all(r["sm90"] and r["ptx_bytes"] > 10_000 for r in mine), report       # real PTX
    # Registers hold W_hh for the whole sequence only if nothing spills to local memory.
    assert all(r["stack_bytes"] == 0 for r in mine if r["family"] == "persistent"), report
    assert all(r["stack_bytes"] <= SPLIT_STACK_ALLOWANCE for r in mine if r["family"] == "split"), \
        report
    assert all(r["barrier"] for r in mine if r["family"] == "split"), report


def test_the_gpu_checks_probes_compile_and_the_barrier_probe_lowers_like_the_split_kernels(rows):
    probes = {r["kernel"]: r for s, r in rows.items() if s.family == "probe"}
    assert set(probes) == {"probe_empty_kernel", "probe_barrier_kernel", "probe_read_kernel"}
    assert all("error" not in r and r["sm90"] and r["stack_bytes"] == 0
               for r in probes.values()), probes
    assert probes["probe_barrier_kernel"]["barrier"], probes["probe_barrier_kernel"]


def test_specializations_follow_the_launch_configuration():
    """The fp16 backward runs its dots on fp32 operands with TF32 (launch_common.dot_mode);
    persistent kernels compile at the padded MAX_HIDDEN of their dot key."""
    from fusedrnn.kernels.triton import lstm_persistent

    by_name = {(s.dtype, s.name): s for s in aot_compile.specializations(["fp16", "fp32"])}
    bwd = dict(by_name["fp16", "lstm_step_bwd_kernel[fp16]HAS_PROJ=False"].constexprs)
    fwd = dict(by_name["fp16", "lstm_step_fwd_kernel[fp16]HAS_PROJ=False"].constexprs)
    assert (bwd["DOT_FP32"], bwd["PRECISION"]) == (True, "tf32")
    assert (fwd["DOT_FP32"], fwd["PRECISION"]) == (False, "ieee")
    ieee = by_name["fp32", "lstm_persistent_bwd_kernel[fp32-ieee]-"]
    assert dict(ieee.constexprs)["HP"] == lstm_persistent.MAX_HIDDEN["fp32-ieee"]
    assert dict(ieee.constexprs)["PRECISION"] == "ieee"
    assert dict(ieee.options) == {"num_warps": lstm_persistent.NUM_WARPS}


def test_a_failing_compile_is_reported_in_its_row_not_hidden():
    """compile_all returns the error of a broken specialization (here a pointer of an unknown
    element type) beside the others' results; in this process (TRITON_INTERPRET=1 on CPU) the
    kernels are interpreted, which compile_one refuses by name."""
    import dataclasses
    import os

    good = aot_compile.specializations(["fp16"], families=("step",))[-1]      # rnn_step_bwd
    broken = dataclasses.replace(good, signature=tuple(
        (k, "*fp99" if k == "p_whh" else v) for k, v in good.signature))
    rows = aot_compile.compile_all([broken, good], jobs=1)
    assert "error" in rows[0] and "fp99" in rows[0]["error"], rows[0]
    assert "error" not in rows[1] and rows[1]["sm90"], rows[1]
    if os.environ.get("TRITON_INTERPRET") == "1":
        with pytest.raises(RuntimeError, match="not a JITFunction"):
            aot_compile.compile_one(good)


def test_a_spec_that_leaves_out_a_constexpr_is_refused():
    """Left out, a constexpr would compile as a runtime i32 argument: another kernel than the
    launch runs, whose registers would be reported as if they were its. compile_one refuses it
    with the missing name (measured once: a split variant spec without PHASES compiled, and
    reported 56 bytes of stack its real kernel does not have)."""
    import dataclasses

    good = aot_compile.specializations(["fp16"], families=("step",))[-1]      # rnn_step_bwd
    missing = dataclasses.replace(good, constexprs=tuple(
        (k, v) for k, v in good.constexprs if k != "RELU"),
        signature=tuple((k, "i32" if k == "RELU" else v) for k, v in good.signature))
    (row,) = aot_compile.compile_all([missing], jobs=1)
    assert "error" in row and "missing ['RELU']" in row["error"], row
