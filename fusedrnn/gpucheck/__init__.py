"""``python -m fusedrnn gpucheck``: one device call that proves and times every fused backend.

Phases, in order (``plan.PHASES``): **env** (versions, GPU, one CuPy compile with cuda_bf16.h
and mma.h), **floors** (matmul rate, HBM and L2 bandwidth, launch latency, grid-barrier
latency), **compile** (every Triton and CuPy binary the later phases use, in parallel, before
anything is timed), **correctness** (every fused backend × cell × dtype × direction × input
form against the float64 reference; each persistent form at and just past its size limit;
bitwise determinism; backward in eval mode), **timing** (the README's goal cases against
torch.nn). Results: ``DIR/gpucheck.jsonl`` (one line per item, written as it ends),
``DIR/gpucheck.md``, and the timing in the bench JSON schema. See README's "GPU check".
"""

import argparse
import sys
from pathlib import Path

from . import plan


def add_arguments(parser):
    parser.add_argument("--out", default=None, help="results folder (default: $OUT if set, "
                        "else bench/results/gpucheck)")
    # 390 s: a 7-minute device call also pays the install, this process's imports and the
    # final report; the ceiling is 420.
    parser.add_argument("--budget-s", type=float, default=390.0,
                        help="wall-time budget of the phases, seconds (default 390; give the "
                        "device call about 60 s more)")
    parser.add_argument("--phases", nargs="+", choices=plan.PHASES, default=list(plan.PHASES))
    parser.add_argument("--resume", default=None, metavar="FILE",
                        help="a gpucheck.jsonl: skip the items it already records")
    parser.add_argument("--only-failed", action="store_true",
                        help="with --resume: rerun only its fail/error/hang items")
    parser.add_argument("--dry-run", action="store_true",
                        help="the same orchestration on the CPU: Triton interpreter, tiny shapes")
    parser.add_argument("--jobs", type=int, default=None,
                        help="worker processes at most (default: the CPU count)")
    parser.add_argument("--report", default=None, metavar="FILE",
                        help="no run: rebuild gpucheck.md and the bench JSON from a journal")


def run(args):
    import os

    import torch

    from . import report
    from .orchestrator import Orchestrator
    from .records import FAILED, latest, load

    out = Path(args.out or os.environ.get("OUT") or
               Path(__file__).resolve().parents[2] / "bench" / "results" / "gpucheck")
    out.mkdir(parents=True, exist_ok=True)
    if args.report:
        bench = report.write(out, load(args.report))
        print((out / "gpucheck.md").read_text())
        print(f"wrote {out / 'gpucheck.md'}" + (f" and {bench}" if bench else ""))
        return 0
    if args.only_failed and not args.resume:
        raise SystemExit("--only-failed needs --resume FILE")
    if not args.dry_run and not torch.cuda.is_available():
        raise SystemExit("no CUDA GPU here: run with --dry-run to check the orchestration on "
                         "the CPU")
    orch = Orchestrator(out, args.budget_s, args.dry_run, args.phases, resume=args.resume,
                        only_failed=args.only_failed, jobs=args.jobs,
                        log=lambda msg: print(msg, flush=True))
    recs = orch.run()
    summary = (out / "gpucheck.md").read_text()
    # The device call returns the end of the output: the status table and failures last.
    print("\n" + summary[summary.index("## Status by phase"):].split("\n## Device floors")[0])
    bad = [r for r in recs if r["status"] in FAILED]
    print(f"{len(recs)} items: " + ", ".join(f"{s} {sum(r['status'] == s for r in recs)}"
                                             for s in ("pass", "fail", "error", "hang", "skip")))
    print(f"journal {orch.journal_path}; summary {out / 'gpucheck.md'}")
    return 1 if bad else 0


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m fusedrnn gpucheck")
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
