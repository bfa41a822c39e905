"""The GPU check's one orchestrating process: phases in order, items in worker processes,
every item's record journalled the moment it ends.

Per phase the items are grouped (``item["group"]``); each group runs in one worker process
(``worker.py``), several groups at once where the phase allows (``PARALLEL``). The orchestrator
reads the worker's ``start``/``end`` lines and kills it when an item overruns its
``limit_s`` (status ``hang``) or dies (``error``, with the tail of its stderr); the group's
remaining items then go to a fresh worker. Items that cannot start before their phase's share
of the budget is spent are recorded as ``skip`` (budget), so the journal always accounts for
every item.
"""

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from . import plan, report
from .records import FAILED, Journal, latest, load, record
from .worker import MARK

# Worker processes at once, per phase. Compile warm-up and correctness are CPU-bound (Triton
# compiles, the float64 oracle) and their kernels tiny, so they share the GPU; floors and timing
# measure it, so they run alone.
PARALLEL = {"env": 1, "floors": 1, "compile": 16, "correctness": 8, "timing": 1}


class Orchestrator:
    def __init__(self, out_dir, budget_s, dry_run, phases, resume=None, only_failed=False,
                 jobs=None, log=print):
        self.out = Path(out_dir)
        self.out.mkdir(parents=True, exist_ok=True)
        (self.out / "logs").mkdir(exist_ok=True)
        self.journal_path = self.out / "gpucheck.jsonl"
        self.budget_s, self.dry_run, self.phases = budget_s, dry_run, phases
        self.only_failed, self.log = only_failed, log
        self.jobs = jobs or os.cpu_count() or 1
        self.previous = latest(load(resume)) if resume else []
        if resume and Path(resume).resolve() != self.journal_path.resolve():
            # The new journal starts with the old one, so one file tells the whole story.
            with open(self.journal_path, "a") as f:
                for rec in load(resume):
                    f.write(json.dumps(rec, sort_keys=True, default=str) + "\n")
        self.journal = Journal(self.journal_path)
        self.t0 = time.time()
        self.device = "cpu" if dry_run else "cuda"

    # ------------------------------------------------------------------ selection and budget

    def _selected(self, items):
        done = {r["id"]: r["status"] for r in self.previous}
        if self.only_failed:
            return [it for it in items if done.get(it["id"]) in FAILED]
        return [it for it in items if it["id"] not in done]

    def _end_of_budget(self):
        return self.t0 + self.budget_s

    def _peaks(self):
        """Matmul rate and copy bandwidth per dtype from the floors records (this run's or a
        resumed one's), for the timing records' floors."""
        recs = {r["id"]: r for r in latest(load(self.journal_path)) if r["phase"] == "floors"
                and r["status"] == "pass"}
        copy = next((r["detail"]["gb_per_s"] for r in recs.values() if r["kind"] == "hbm_copy"),
                    None)
        peaks = {}
        for r in recs.values():
            if r["kind"] == "matmul" and copy:
                peaks[r["dtype"]] = {"matmul_flops": r["detail"]["tflops"] * 1e12,
                                     "copy_bytes_per_s": copy * 1e9}
        if "bf16" in peaks:
            peaks.setdefault("fp16", peaks["bf16"])   # the same tensor-core rate on Hopper
        return peaks

    # ------------------------------------------------------------------------------ running

    def run(self):
        for phase in self.phases:
            before, t_phase = _binaries(), time.time()
            self.run_phase(phase, plan.items_for(phase, self.dry_run, peaks=self._peaks()))
            if phase == "compile" and not self.dry_run:
                # How many binaries the warm-up compiled, and how long the phase took.
                after = _binaries()
                summary = dict(id="compile/summary", phase="compile", kind="summary",
                               backend=None, cell=None, dtype=None, bidirectional=False,
                               packed=False, shape={})
                self._finish(record(summary, "pass", {k: after[k] - before[k] for k in after},
                                    time.time() - t_phase))
                report.write(self.out, load(self.journal_path))
        return latest(load(self.journal_path))

    def run_phase(self, phase, items):
        """Run one phase's ``items`` (after ``--resume`` selection) and rewrite the summary."""
        items = list(OrderedDict((it["id"], it) for it in items).values())    # dedupe
        items = self._selected(items)
        start_by = self.t0 + plan.PHASE_END.get(phase, 1.0) * self.budget_s
        for it in items:
            it["start_by"] = start_by
        width = max(1, min(PARALLEL.get(phase, 2), self.jobs))
        slots = _slots(items, width)
        self.log(f"[{time.time() - self.t0:6.1f}s] phase {phase}: {len(items)} items in "
                 f"{len(slots)} worker(s)")
        with ThreadPoolExecutor(max_workers=width) as pool:
            list(pool.map(lambda job: self._run_slot(*job, phase=phase), enumerate(slots)))
        report.write(self.out, load(self.journal_path))

    def _env(self, phase, items):
        env = dict(os.environ, PYTHONUNBUFFERED="1", FUSEDRNN_GPUCHECK_DEVICE=self.device)
        threads = max(1, self.jobs // PARALLEL.get(phase, 2))
        env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
        if self.dry_run and not any(it["kind"] == "aot_sm90" for it in items):
            env["TRITON_INTERPRET"] = "1"
        else:
            env.pop("TRITON_INTERPRET", None)
        return env

    def _run_slot(self, slot, items, phase):
        pending = list(items)
        while pending:
            if time.time() > self._end_of_budget():
                for it in pending:
                    self._finish(record(it, "skip", "budget: --budget-s was spent", 0))
                return
            pending = self._run_worker(phase, slot, pending)

    def _run_worker(self, phase, slot, items):
        """Run ``items`` in one worker until it finishes or fails; return the items left."""
        log_path = self.out / "logs" / f"{phase}-{slot}.log"
        stderr = open(log_path, "a")
        proc = subprocess.Popen([sys.executable, "-m", "fusedrnn.gpucheck.worker"],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr,
                                text=True, env=self._env(phase, items), start_new_session=True)
        proc.stdin.write("".join(json.dumps(it) + "\n" for it in items))
        proc.stdin.close()
        lines = queue.Queue()
        threading.Thread(target=_pump, args=(proc.stdout, lines), daemon=True).start()
        by_id = {it["id"]: it for it in items}
        finished, current, started = set(), None, None
        try:
            while True:
                if current is not None:
                    kill_at = min(started + by_id[current]["limit_s"], self._end_of_budget())
                    timeout = max(0.0, kill_at - time.time())
                else:
                    timeout = max(0.0, self._end_of_budget() + 30 - time.time())
                try:
                    line = lines.get(timeout=timeout)
                except queue.Empty:
                    if current is not None:
                        item = by_id[current]
                        self._finish(record(item, "hang", f"no result within "
                                            f"{time.time() - started:.0f} s (limit "
                                            f"{item['limit_s']} s); worker killed",
                                            time.time() - started))
                        finished.add(current)
                    _kill(proc)
                    break
                if line is None:                         # the worker's stdout closed
                    code = proc.wait()
                    if current is not None and current not in finished:
                        self._finish(record(by_id[current], "error",
                                            f"worker exited with code {code} mid-item; stderr "
                                            f"tail:\n{_tail(log_path)}", time.time() - started))
                        finished.add(current)
                    elif not finished:
                        # Died before its first item (an import error, say): a fresh worker
                        # would die the same way, so every item gets the error.
                        for item in items:
                            self._finish(record(item, "error", f"worker exited with code {code} "
                                                f"before any item; stderr tail:\n"
                                                f"{_tail(log_path)}", 0))
                            finished.add(item["id"])
                    break
                event = json.loads(line)
                if event["event"] == "start":
                    current, started = event["id"], time.time()
                elif event["event"] == "end":
                    self._finish(event["record"])
                    finished.add(event["record"]["id"])
                    current = None
        finally:
            _kill(proc)
            stderr.close()
        return [it for it in items if it["id"] not in finished]

    def _finish(self, rec):
        self.journal.append(rec)
        what = " ".join(str(rec[k]) for k in ("kind", "backend", "cell", "dtype") if rec.get(k))
        flag = "" if rec["status"] in ("pass", "skip") else "   <-- " + _short(rec["detail"])
        self.log(f"[{time.time() - self.t0:6.1f}s] {rec['phase']:11} {rec['status']:5} {what}"
                 f"{' bi' if rec.get('bidirectional') else ''}"
                 f"{' packed' if rec.get('packed') else ''} ({rec['seconds']:.1f}s){flag}")


def _slots(items, width):
    """Items dealt to ``width`` workers a group at a time (a group's items stay together and in
    order, so they share what the worker caches, e.g. the oracle), the largest groups first,
    each to the worker with the fewest items so far. One worker runs many groups: a worker's
    start (torch, Triton, a CUDA context) costs seconds."""
    groups = OrderedDict()
    for it in items:
        groups.setdefault(it["group"], []).append(it)
    slots = [[] for _ in range(min(width, len(groups)))]
    for group in sorted(groups.values(), key=len, reverse=True):
        min(slots, key=len).extend(group)
    return slots


def _binaries():
    """Compiled kernels on disk: Triton's cubins (its cache: TRITON_CACHE_DIR, default
    ~/.triton/cache) and CuPy's (CUPY_CACHE_DIR, default ~/.cupy/kernel_cache)."""
    home = Path.home()
    triton_dir = Path(os.environ.get("TRITON_CACHE_DIR", home / ".triton" / "cache"))
    cupy_dir = Path(os.environ.get("CUPY_CACHE_DIR", home / ".cupy" / "kernel_cache"))
    return {"triton_cubins": sum(1 for _ in triton_dir.rglob("*.cubin")) if triton_dir.exists() else 0,
            "cupy_binaries": sum(1 for p in cupy_dir.rglob("*") if p.is_file()) if cupy_dir.exists() else 0}


def _pump(stream, lines):
    for raw in stream:
        if raw.startswith(MARK):
            lines.put(raw[len(MARK):])
    lines.put(None)


def _kill(proc):
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()


def _tail(path, n=2000):
    try:
        return Path(path).read_text(errors="replace")[-n:]
    except OSError as exc:
        return f"(no log: {exc})"


def _short(detail):
    text = detail if isinstance(detail, str) else json.dumps(detail, default=str)
    return text.splitlines()[0][:160] if text else ""
