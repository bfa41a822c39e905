"""A GPU-check worker process: ``python -m fusedrnn.gpucheck.worker`` runs the items it reads
from standard input (one JSON object a line) in order, and reports on standard output, each
line prefixed with ``MARK`` so library prints cannot be mistaken for it:

    @@gpucheck {"event": "start", "id": ...}          before an item
    @@gpucheck {"event": "end", "record": {...}}      after it (the record to journal)

The orchestrator enforces each item's time limit from the ``start`` line: a hang or a crash
costs that item only, and the rest of the group goes to a fresh worker. After an error on a
GPU the worker exits, since a CUDA error (an illegal address) poisons the whole context.
"""

import json
import os
import sys
import time
import traceback

MARK = "@@gpucheck "


def _emit(event):
    sys.stdout.write(MARK + json.dumps(event, default=str) + "\n")
    sys.stdout.flush()


def _dispatch(item, device):
    from . import checks, env, floors, timing

    phase, kind = item["phase"], item["kind"]
    if phase == "selftest":
        return selftest(item)
    if phase == "env":
        return env.run(item, device)
    if phase == "floors":
        return "pass", floors.run(item, device)
    if kind == "aot_sm90":
        return aot_compile(item)
    if kind == "timing":
        return timing.run(item, device)
    if kind == "cell_decode":
        return timing.cell_decode(item, device)
    return checks.run(item, device)


def selftest(item):
    """Items that misbehave on purpose, so tests/test_gpucheck.py can show that a hang or a
    crash costs only its own item: ``sleep`` (``seconds``), ``exit`` (``code``, no record),
    ``raise``."""
    if item["kind"] == "sleep":
        time.sleep(item["seconds"])
        return "pass", {"slept": item["seconds"]}
    if item["kind"] == "exit":
        sys.stdout.flush()
        os._exit(item["code"])
    raise RuntimeError("selftest: raised on purpose")


def aot_compile(item):
    """Phase c without a GPU: every Triton specialization compiled to sm_90 in parallel, in a
    fresh Triton cache so the count and the time are real compiles, not cache hits."""
    import tempfile

    from ..kernels.triton import aot_compile as aot

    specs = aot.specializations(tuple(item["dtypes"]))
    jobs = os.cpu_count() or 1
    with tempfile.TemporaryDirectory(prefix="gpucheck-triton-cache-") as cache:
        os.environ["TRITON_CACHE_DIR"] = cache          # the spawned compilers inherit it
        t0 = time.perf_counter()
        rows = aot.compile_all(specs, jobs)
        seconds = time.perf_counter() - t0
    errors = [f"{r['name']}: {r['error'][:200]}" for r in rows if "error" in r]
    spills = [r["name"] for r in rows if r.get("stack_bytes") and r["family"] == "persistent"]
    detail = dict(compiles=len(rows), jobs=jobs, wall_s=round(seconds, 1),
                  compile_s=round(sum(r["seconds"] for r in rows), 1),
                  max_registers=max((r.get("registers") or 0 for r in rows), default=0),
                  errors=errors, persistent_spills=spills)
    return ("fail" if errors or spills else "pass"), detail


def _context_usable(torch):
    """After an error: a sticky CUDA error (an illegal address) makes every later call fail,
    so the worker must exit and leave the rest to a fresh one; an ordinary exception does not."""
    try:
        torch.cuda.synchronize()
        return True
    except Exception:
        return False


def main():
    import torch

    from .. import allocation
    from .records import Skip, record

    device = torch.device(os.environ.get("FUSEDRNN_GPUCHECK_DEVICE", "cpu"))
    items = [json.loads(line) for line in sys.stdin if line.strip()]
    for item in items:
        if time.time() > item["start_by"]:
            _emit({"event": "end", "record": record(item, "skip", "budget: the phase's share "
                                                    "of --budget-s was spent", 0)})
            continue
        _emit({"event": "start", "id": item["id"]})
        # Checks: every library output starts as NaN (an unwritten element fails) and fp32 dots
        # are IEEE, as in the test suite (TF32 would be judged against fp32's tolerance).
        # Timing: neither, so the fused backends run as a user runs them, as torch.nn does.
        timing = item["phase"] == "timing"
        allocation.POISON = not timing
        torch.backends.cudnn.allow_tf32 = timing
        t0 = time.perf_counter()
        fatal = False
        try:
            status, detail = _dispatch(item, device)
        except Skip as exc:
            status, detail = "skip", str(exc)
        except Exception as exc:
            status = "error"
            detail = f"{type(exc).__name__}: {exc}"[:1500] + "\n" + traceback.format_exc()[-1500:]
            fatal = device.type == "cuda" and not _context_usable(torch)
        _emit({"event": "end", "record": record(item, status, detail, time.perf_counter() - t0,
                                                pid=os.getpid())})
        if fatal:
            sys.exit(3)


if __name__ == "__main__":
    main()
