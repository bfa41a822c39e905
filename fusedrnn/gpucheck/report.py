"""The GPU check's summaries, rebuilt from the journal: ``gpucheck.md`` (for people) and the
timing results in the bench JSON schema (for ``python -m fusedrnn bench --from-json``, its
table, plot and ``--update-readme``).

Written after every phase, so a call killed at its limit still leaves a summary of what it
finished, and again on this machine from a fetched journal (``gpucheck --report FILE``).
"""

import datetime
import json
from collections import Counter, defaultdict
from pathlib import Path

from .. import benchmark
from .plan import CELLS, DTYPES, FUSED, PHASES
from .records import latest


def write(out_dir, records):
    """Write ``gpucheck.md`` and, when timing records exist, the bench JSON (and its plot where
    matplotlib imports) into ``out_dir``; returns the bench JSON's path or None."""
    out_dir = Path(out_dir)
    recs = latest(records)
    bench_path = None
    report = bench_report(recs)
    if report is not None:
        bench_path = out_dir / f"{_slug(report['fusedrnn']['device'])}-{report['datetime'][:10]}-" \
                               f"{report['fusedrnn']['commit']}.json"
        bench_path.write_text(json.dumps(report, indent=1, default=str))
        try:
            benchmark.plot(report, bench_path.with_suffix(".png"))
        except ImportError:
            pass            # the GPU machine may lack matplotlib: plot later with --report
    (out_dir / "gpucheck.md").write_text(markdown(recs, bench_path))
    return bench_path


def _slug(text):
    return "".join(ch if ch.isalnum() else "-" for ch in text.split(" (")[0])


def _device(recs):
    env = next((r for r in recs if r["phase"] == "env"), None)
    if env and isinstance(env["detail"], dict) and env["detail"].get("gpu"):
        return env["detail"]["gpu"]
    return benchmark.device_name(__import__("torch").device("cpu"))


def bench_report(recs):
    """The timing records as a pytest-benchmark-style report (``benchmarks`` with ``stats`` and
    ``extra_info``; ``vs_torch`` from torch.nn's median of the same case and mode)."""
    rows = []
    for r in recs:
        if r["kind"] != "timing" or r["status"] != "pass":
            continue
        for mode, m in r["detail"].items():
            info = dict(m["extra_info"], pid=r.get("pid"))
            rows.append({"name": f"gpucheck[{info['case']}-{r['provider']}-{mode}]",
                         "stats": {"median": m["ms"] / 1e3, "min": m["min_ms"] / 1e3,
                                   "max": m["max_ms"] / 1e3, "rounds": m["rounds"]},
                         "extra_info": info})
    if not rows:
        return None
    benchmark.add_ratios(rows)
    floors = {r["id"]: r for r in recs if r["phase"] == "floors" and r["status"] == "pass"}
    copy = next((r["detail"]["gb_per_s"] for r in floors.values() if r["kind"] == "hbm_copy"), 0)
    peaks = {r["dtype"]: {"matmul_flops": r["detail"]["tflops"] * 1e12,
                          "copy_bytes_per_s": copy * 1e9}
             for r in floors.values() if r["kind"] == "matmul"}
    env = next((r["detail"] for r in recs if r["phase"] == "env"
                and isinstance(r["detail"], dict)), {})
    when = env.get("measured_at") or datetime.datetime.now(datetime.timezone.utc).isoformat()
    return {"benchmarks": rows, "datetime": when,
            "fusedrnn": {"device": _device(recs), "peaks": peaks, "floors": floor_summary(recs),
                         "commit": env.get("commit") or benchmark.current_commit(),
                         "source": "gpucheck"}}


def floor_summary(recs):
    """The floors a per-step time is judged against, by name (what README quotes)."""
    out = {}
    for r in recs:
        if r["phase"] != "floors" or r["status"] != "pass":
            continue
        d = r["detail"]
        if r["kind"] == "l2_read":
            out["l2_read_gb_per_s"] = d["gb_per_s"]
        elif r["kind"] == "hbm_copy":
            out["hbm_copy_gb_per_s"] = d["gb_per_s"]
        elif r["kind"].startswith("launch_"):
            out[f"{r['kind']}_us"] = d["us_per_launch"]
        elif r["kind"].startswith("barrier_"):
            out[f"{r['kind']}_{d['programs']}_us"] = d["us_per_barrier"]
    return out


def _fmt(detail, limit=110):
    if isinstance(detail, dict):
        if "worst" in detail:
            return f"worst {detail['worst']:.2e} (tol {detail['tolerance']:.0e}), ran {detail.get('ran')}"
        text = json.dumps(detail, default=str)
    else:
        text = str(detail)
    text = text.replace("|", "/").replace("\n", " ")
    return text[:limit] + ("…" if len(text) > limit else "")


def markdown(recs, bench_path=None):
    lines = ["# fusedrnn gpucheck", ""]
    env = next((r for r in recs if r["phase"] == "env"), None)
    if env:
        lines += ["## Environment", "", "```", json.dumps(env["detail"], indent=1, default=str),
                  "```", ""]
    counts = defaultdict(Counter)
    for r in recs:
        counts[r["phase"]][r["status"]] += 1
    lines += ["## Status by phase", "", "| phase | pass | fail | error | hang | skip |",
              "|---|---:|---:|---:|---:|---:|"]
    for phase in PHASES:
        c = counts.get(phase, Counter())
        lines.append(f"| {phase} | " + " | ".join(str(c[s]) for s in
                                                   ("pass", "fail", "error", "hang", "skip")) + " |")
    bad = [r for r in recs if r["status"] in ("fail", "error", "hang")]
    lines += ["", f"## Failures ({len(bad)})", ""]
    lines += [f"- `{r['id']}` **{r['status']}**: {_fmt(r['detail'], 300)}" for r in bad] or ["none"]
    floors = [r for r in recs if r["phase"] == "floors"]
    if floors:
        lines += ["", "## Device floors", "", "| floor | status | measured |", "|---|---|---|"]
        lines += [f"| {r['kind']}{' ' + r['dtype'] if r.get('dtype') else ''}"
                  f"{' ' + str(r['programs']) if r.get('programs') else ''} | {r['status']} | "
                  f"{_fmt(r['detail'])} |" for r in floors]
    lines += _matrix(recs)
    other = [r for r in recs if r["phase"] in ("compile", "correctness")
             and r["kind"] not in ("parity", "warm")]
    if other:
        lines += ["", "## Limits, determinism, eval-mode backward, compile", "",
                  "| item | status | detail | s |", "|---|---|---|---:|"]
        lines += [f"| `{r['id']}` | {r['status']} | {_fmt(r['detail'])} | {r['seconds']:.1f} |"
                  for r in other]
    warm = [r for r in recs if r["kind"] == "warm"]
    if warm:
        c = Counter(r["status"] for r in warm)
        lines += ["", f"Compile warm-up: {len(warm)} runs ({dict(c)}), "
                      f"{sum(r['seconds'] for r in warm):.0f} s of worker time."]
    report = bench_report(recs)
    if report:
        lines += ["", "## Timing", ""]
        if bench_path:
            lines += [f"Bench JSON: `{Path(bench_path).name}` (publish with `python -m fusedrnn "
                      f"bench --from-json <it> --update-readme`).", ""]
        lines += ["```", benchmark.table(report), "```"]
    decode = [row for r in recs if r["kind"] == "cell_decode" and r["status"] == "pass"
              for row in r["detail"]["rows"]]
    if decode:
        from ..cell_bench import table as decode_table

        lines += ["", "## Cell decode loop (256 steps; vs torch.nn > 1: fusedrnn faster)", "",
                  decode_table(decode)]
    skipped = Counter(_fmt(r["detail"], 90) for r in recs if r["status"] == "skip")
    if skipped:
        lines += ["", "## Skips by reason", ""]
        lines += [f"- {n} × {reason}" for reason, n in skipped.most_common()]
    return "\n".join(lines) + "\n"


def _matrix(recs):
    parity = {(r["cell"], r["dtype"], r["bidirectional"], r["packed"], r["backend"]): r
              for r in recs if r["kind"] == "parity"}
    if not parity:
        return []
    lines = ["", "## Correctness matrix (worst relative error over outputs and all gradients)",
             "", "| cell | dtype | dir | input | " + " | ".join(FUSED) + " |",
             "|---|---|---|---|" + "---|" * len(FUSED)]
    for cell in CELLS:
        for dtype in DTYPES:
            for bi in (False, True):
                for packed in (False, True):
                    cells = []
                    for b in FUSED:
                        r = parity.get((cell, dtype, bi, packed, b))
                        if r is None:
                            cells.append("—")
                        elif r["status"] in ("pass", "fail") and isinstance(r["detail"], dict):
                            cells.append(f"{r['status']} {r['detail']['worst']:.1e}")
                        else:
                            cells.append(r["status"])
                    lines.append(f"| {cell} | {dtype} | {'bi' if bi else 'uni'} | "
                                 f"{'packed' if packed else 'padded'} | " + " | ".join(cells) + " |")
    return lines
