"""``python -m fusedrnn gpucheck``: the orchestration (hangs, crashes, budget, resume) with
items that misbehave on purpose, and the real dry run on the CPU, which must pass every Triton
backend × cell item (a script that has never run is the likeliest way to waste a GPU session)."""

import json
import subprocess
import sys
import time

import pytest
import torch

from fusedrnn import benchmark
from fusedrnn.gpucheck import plan, report
from fusedrnn.gpucheck.orchestrator import Orchestrator
from fusedrnn.gpucheck.records import latest, load

FIELDS = {"phase", "backend", "cell", "dtype", "bidirectional", "packed", "shape", "status",
          "detail", "seconds"}


def _selftest(kind, n, limit_s=30, **extra):
    return dict(id=f"selftest/{kind}/{n}", phase="selftest", kind=kind, backend=None, cell=None,
                dtype=None, bidirectional=False, packed=False, shape={}, limit_s=limit_s,
                group="g", **extra)


def _orchestrator(tmp_path, budget_s=120, **kw):
    return Orchestrator(tmp_path, budget_s, dry_run=True, phases=[], log=lambda msg: None, **kw)


def test_a_hang_or_a_crash_costs_only_its_own_item(tmp_path):
    items = [_selftest("sleep", 0, seconds=0), _selftest("sleep", 1, limit_s=2, seconds=60),
             _selftest("sleep", 2, seconds=0), _selftest("exit", 3, code=139),
             _selftest("raise", 4), _selftest("sleep", 5, seconds=0)]
    t0 = time.time()
    _orchestrator(tmp_path).run_phase("selftest", items)
    recs = {r["id"]: r for r in load(tmp_path / "gpucheck.jsonl")}
    assert time.time() - t0 < 50, "the hung item was not killed at its limit"
    status = [recs[it["id"]]["status"] for it in items]
    assert status == ["pass", "hang", "pass", "error", "error", "pass"], status
    assert "code 139" in recs["selftest/exit/3"]["detail"]
    assert "raised on purpose" in recs["selftest/raise/4"]["detail"]
    for r in recs.values():
        assert FIELDS <= set(r), set(r) ^ FIELDS


def test_items_past_the_budget_are_recorded_as_skipped(tmp_path):
    items = [_selftest("sleep", 0, seconds=3), _selftest("sleep", 1, seconds=0)]
    orch = _orchestrator(tmp_path, budget_s=1)
    orch.run_phase("selftest", items)
    recs = {r["id"]: r for r in load(tmp_path / "gpucheck.jsonl")}
    assert recs["selftest/sleep/1"]["status"] == "skip"
    assert "budget" in recs["selftest/sleep/1"]["detail"]


def test_an_item_running_when_its_phase_ends_is_a_budget_skip_that_resume_reruns(tmp_path):
    items = [_selftest("sleep", 0, seconds=60)]
    first = tmp_path / "first"
    _orchestrator(first, budget_s=3).run_phase("selftest", items)
    rec = load(first / "gpucheck.jsonl")[0]
    assert rec["status"] == "skip" and rec["budget"] and "budget" in rec["detail"]
    second = tmp_path / "second"
    _orchestrator(second, resume=first / "gpucheck.jsonl").run_phase(
        "selftest", [_selftest("sleep", 0, seconds=0)])
    assert latest(load(second / "gpucheck.jsonl"))[0]["status"] == "pass"


def test_a_backend_that_hangs_twice_is_not_launched_again(tmp_path):
    items = [dict(_selftest("sleep", n, limit_s=1, seconds=30), backend="x") for n in range(4)]
    items.append(dict(_selftest("sleep", 9, seconds=0), backend="y"))
    _orchestrator(tmp_path).run_phase("selftest", items)
    recs = {r["id"]: r for r in load(tmp_path / "gpucheck.jsonl")}
    assert [recs[f"selftest/sleep/{n}"]["status"] for n in range(4)] == ["hang", "hang", "skip",
                                                                         "skip"]
    assert "hung 2 times" in recs["selftest/sleep/2"]["detail"]
    assert recs["selftest/sleep/9"]["status"] == "pass"


def test_resume_skips_what_is_recorded_and_only_failed_reruns_the_failures(tmp_path):
    items = [_selftest("sleep", 0, seconds=0), _selftest("raise", 1)]
    first = tmp_path / "first"
    _orchestrator(first).run_phase("selftest", items)
    second = tmp_path / "second"
    _orchestrator(second, resume=first / "gpucheck.jsonl").run_phase("selftest", items)
    assert len(load(second / "gpucheck.jsonl")) == 2        # the old lines, nothing rerun
    third = tmp_path / "third"
    _orchestrator(third, resume=first / "gpucheck.jsonl", only_failed=True).run_phase(
        "selftest", items)
    recs = load(third / "gpucheck.jsonl")
    assert [r["id"] for r in recs] == ["selftest/sleep/0", "selftest/raise/1", "selftest/raise/1"]
    assert latest(recs)[1]["status"] == "error"


def test_the_plan_covers_the_matrix_the_issue_asks_for():
    items = plan.items_for("correctness", dry_run=False)
    classic = [it for it in items if it["kind"] == "parity" and it["cell"] in plan.CELLS]
    parity = [it for it in classic if it["shape"]["H"] == 256]
    # 5 cells x 3 dtypes x 2 directions x 2 forms x 4 backends, less cupy-persistent's projection
    assert len(parity) == 5 * 3 * 2 * 2 * 4 - 3 * 2 * 2
    assert {it["shape"]["T"] for it in parity} == {64} and len({it["id"] for it in items}) == len(items)
    # ... and triton-persistent's batch-tiled form, which H=256 is past, at H=32
    tiled = [it for it in classic if it["shape"]["H"] == 32]
    assert len(tiled) == 5 * 3 * 2 * 2 and {it["backend"] for it in tiled} == {"triton-persistent"}
    # the variants (issue 14): LayerNorm cells in every dtype, zoneout+resets in bf16, on
    # triton-step at H=256 and on triton-persistent at H=256 (hidden-split form) and at
    # VARIANT_TILED_H (batch-tiled form)
    variants = [it for it in items if it["kind"] == "parity" and it["cell"] in plan.VARIANT_CELLS]
    assert {(it["backend"], it["shape"]["H"]) for it in variants} == {
        ("triton-step", 256), ("triton-persistent", 256),
        ("triton-persistent", plan.VARIANT_TILED_H)}
    from fusedrnn.backends.triton_persistent import variant_batch_tiled_fits
    assert not any(variant_batch_tiled_fits(m, 256, torch.bfloat16) for m in ("LSTM", "GRU"))
    from fusedrnn.kernels.triton.variants import gru_persistent, lstm_persistent, rnn_persistent
    assert plan.VARIANT_TILED_H <= min(min(m.MAX_HIDDEN.values()) for m in (
        lstm_persistent, gru_persistent, rnn_persistent))
    assert len(variants) == 3 * (2 * 3 * 2 * 2 + 2 * 1 * 2 * 2)
    limits = [it for it in items if it["kind"] == "limit"]
    assert {(it["form"], it["at"]) for it in limits} == {
        (f, a) for f in ("batch_tiled", "split", "cupy") for a in ("limit", "past")}
    assert {it["backend"] for it in items if it["kind"] == "determinism"} == set(plan.FUSED)
    assert "auto" in {it["backend"] for it in items if it["kind"] == "eval_backward"}
    timing = [it for it in plan.items_for("timing", dry_run=False) if it["kind"] == "timing"]
    cases = {(it["cell"], it["shape"]["B"], it["shape"]["T"], it["shape"]["H"], it["packed"],
              tuple(it["modes"])) for it in timing}
    assert ("lstm", 16, 1024, 768, False, ("fwd", "fwdbwd")) in cases
    assert ("gru", 64, 1024, 768, True, ("fwdbwd",)) in cases
    assert ("lstm", 256, 256, 1024, False, ("fwdbwd",)) in cases
    assert {("lstm", 1, 1024, H, False, ("fwd",)) for H in (256, 768)} <= cases
    assert ("ln_lstm", 16, 1024, 768, False, ("fwd", "fwdbwd")) in cases
    # every timing item's provider list starts with torch.nn, the ratios' baseline
    assert timing[0]["provider"] == "torch.nn"
    decode = [it for it in plan.items_for("timing", dry_run=False) if it["kind"] == "cell_decode"]
    assert {it["cell"] for it in decode} == {"lstm", "gru"}


def test_dry_run_passes_every_triton_backend_and_cell(tmp_path):
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "fusedrnn", "gpucheck", "--dry-run", "--out",
                           str(out), "--budget-s", "600", "--phases", "env", "floors",
                           "correctness", "timing"],
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    recs = latest(load(out / "gpucheck.jsonl"))
    parity = [r for r in recs if r["kind"] == "parity" and r["backend"] in plan.TRITON]
    assert len(parity) == 2 * 5 * 3 * 2 * 2 + 2 * (2 * 3 * 2 * 2 + 2 * 1 * 2 * 2)
    assert {r["cell"] for r in parity} == set(plan.CELLS + plan.VARIANT_CELLS)
    bad = [(r["id"], r["detail"]) for r in parity if r["status"] != "pass"]
    assert not bad, bad
    for r in parity:           # every output and gradient was compared
        assert {"output", "h_n", "input", "h0"} <= set(r["detail"]["errors"]), r["id"]
        assert r["detail"]["worst"] <= r["detail"]["tolerance"]
    cupy = [r for r in recs if r["backend"] in ("cupy-step", "cupy-persistent")]
    assert cupy and all(r["status"] == "skip" for r in cupy)
    for kind in ("determinism", "eval_backward", "double_backward"):
        got = {r["backend"]: r["status"] for r in recs if r["kind"] == kind}
        assert all(got[b] == "pass" for b in plan.TRITON), (kind, got)
    tiled = [r for r in recs if r["kind"] == "limit" and r.get("form") == "batch_tiled"]
    assert len(tiled) == 6 and all(r["status"] == "pass" for r in tiled), tiled
    assert {r["detail"]["form"] for r in tiled} == {"batch-tiled", "hidden-split"}
    # the summary and the bench JSON exist, and the bench command reads the JSON back
    md = (out / "gpucheck.md").read_text()
    assert "## Correctness matrix" in md and "## Device floors" in md
    bench = [p for p in out.glob("*.json")]
    assert len(bench) == 1
    rep = json.loads(bench[0].read_text())
    assert benchmark.table(rep).count("torch.nn") >= 2
    assert any("vs_torch" in b["extra_info"] for b in rep["benchmarks"])


def test_report_rebuilds_the_summary_from_a_journal(tmp_path):
    recs = [dict(id="env/env", phase="env", kind="env", backend=None, cell=None, dtype=None,
                 bidirectional=False, packed=False, shape={}, status="pass",
                 detail={"gpu": "NVIDIA H200"}, seconds=1.0)]
    report.write(tmp_path, recs)
    assert "NVIDIA H200" in (tmp_path / "gpucheck.md").read_text()


def test_the_bench_report_carries_the_floors_and_the_readme_quotes_them():
    base = dict(backend=None, cell=None, dtype=None, bidirectional=False, packed=False, shape={},
                status="pass", seconds=1.0, phase="floors")
    recs = [dict(base, id="env/env", phase="env", kind="env",
                 detail={"gpu": "NVIDIA H200", "commit": "abc1234", "measured_at": "2026-12-01T10:00"}),
            dict(base, id="f1", kind="l2_read", detail={"gb_per_s": 9100.0, "bytes": 1}),
            dict(base, id="f2", kind="barrier_triton", programs=132,
                 detail={"us_per_barrier": 1.25, "programs": 132}),
            dict(base, id="f3", kind="matmul", dtype="bf16", detail={"tflops": 790.0}),
            dict(base, id="f4", kind="hbm_copy", detail={"gb_per_s": 4300.0})]
    info = dict(case="lstm-bf16-B16-T1024-H768", mode="fwd", provider="torch.nn",
                tokens_per_s=1.0, floor_ms=0.1)
    recs.append(dict(base, id="t1", phase="timing", kind="timing", provider="torch.nn",
                     detail={"fwd": dict(ms=2.0, rounds=10, min_ms=1.9, max_ms=2.2,
                                         extra_info=info)}))
    rep = report.bench_report(recs)
    assert rep["fusedrnn"]["commit"] == "abc1234" and rep["datetime"].startswith("2026-12-01")
    assert rep["fusedrnn"]["peaks"]["bf16"]["matmul_flops"] == 790e12
    text = benchmark.readme_section(rep, "x.json", "x.png")
    assert "L2-resident read 9100 GB/s" in text and "1.25 µs" in text
