"""The GPU check's one orchestrating process: phases in order, items in worker processes,
every item's record journalled the moment it ends.

A phase's items are dealt to worker processes (``worker.py``) a group at a time, several
workers at once where the phase allows (``PARALLEL``). The orchestrator reads each worker's
``start``/``end`` lines and kills it when an item overruns its ``limit_s`` (status ``hang``),
when its phase's share of the budget runs out mid-item (``skip``, budget), or when it dies
(``error``, with the tail of its stderr); the remaining items go to a fresh worker. Items that
cannot start before their phase's share is spent are recorded as ``skip`` (budget), so the
journal accounts for every item, and ``--resume`` reruns exactly those. A backend that hangs
twice is not launched again (``HANGS_BEFORE_GIVING_UP``): a systematic deadlock must not eat
the session. Workers die with the orchestrator (``PR_SET_PDEATHSIG``), so a spinning kernel
never outlives the call.
"""

import ctypes
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
# A worker must announce its first item within this (torch, Triton and CuPy imports and a CUDA
# context take a few seconds; a hang in CUDA initialisation must not cost the phase).
STARTUP_S = 90
# After an item's end, the next start must follow quickly: what runs between is bookkeeping.
BETWEEN_ITEMS_S = 30
HANGS_BEFORE_GIVING_UP = 2
# Hidden sizes above this are past every batch-tiled persistent limit (MAX_HIDDEN ≤ 128), so a
# hang there says nothing about the narrow form, and is counted apart.
WIDE_H = 128


def _hang_key(item):
    """What a hang condemns: the backend, narrow or wide (for triton-persistent the two forms;
    one of them deadlocking must not stop the other)."""
    if not item.get("backend"):
        return None
    wide = item.get("shape", {}).get("H", 0) > WIDE_H
    return f"{item['backend']} ({'H > ' if wide else 'H ≤ '}{WIDE_H})"


def _die_with_parent():
    """In the child before exec: SIGKILL when the orchestrator dies (Linux prctl)."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)   # PR_SET_PDEATHSIG
    except OSError:
        pass            # not Linux: the orchestrator's own SIGTERM handler still kills workers


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
        self._live = set()
        self._lock = threading.Lock()
        self._hangs = {}         # backend -> ids of its items that hung

    # ------------------------------------------------------------------ selection and budget

    def _selected(self, items):
        """``--resume``: what the journal has not finished (no record, or skipped for budget);
        with ``--only-failed``: its fail/error/hang items only."""
        done = {r["id"]: r for r in self.previous}
        if self.only_failed:
            return [it for it in items if it["id"] in done and done[it["id"]]["status"] in FAILED]
        return [it for it in items if it["id"] not in done or done[it["id"]].get("budget")]

    def _end_of_budget(self):
        return self.t0 + self.budget_s

    def _peaks(self):
        """Matmul rate and copy bandwidth per dtype from the floors records (this run's or a
        resumed one's), for the timing records' floors."""
        recs = [r for r in latest(load(self.journal_path))
                if r["phase"] == "floors" and r["status"] == "pass"]
        copy = next((r["detail"]["gb_per_s"] for r in recs if r["kind"] == "hbm_copy"), None)
        peaks = {r["dtype"]: {"matmul_flops": r["detail"]["tflops"] * 1e12,
                              "copy_bytes_per_s": copy * 1e9}
                 for r in recs if r["kind"] == "matmul" and copy}
        if "bf16" in peaks:
            peaks.setdefault("fp16", peaks["bf16"])   # the same tensor-core rate on Hopper
        return peaks

    # ------------------------------------------------------------------------------ running

    def run(self):
        previous = signal.signal(signal.SIGTERM, self._on_sigterm)
        try:
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
        finally:
            signal.signal(signal.SIGTERM, previous)
        return latest(load(self.journal_path))

    def _on_sigterm(self, signum, frame):
        with self._lock:
            for proc in list(self._live):
                _kill(proc)
        raise SystemExit(f"gpucheck: terminated by signal {signum}; the journal holds what ended")

    def run_phase(self, phase, items):
        """Run one phase's ``items`` (after ``--resume`` selection) and rewrite the summary."""
        items = list(OrderedDict((it["id"], it) for it in items).values())    # dedupe
        items = self._selected(items)
        phase_end = self.t0 + plan.PHASE_END.get(phase, 1.0) * self.budget_s
        for it in items:
            it["start_by"] = phase_end
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
        env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads),
                   OPENBLAS_NUM_THREADS=str(threads))
        if self.dry_run and not any(it["kind"] == "aot_sm90" for it in items):
            env["TRITON_INTERPRET"] = "1"
        else:
            env.pop("TRITON_INTERPRET", None)
        return env

    def _given_up(self, item, phase):
        """Why ``item`` is not launched, or None: its backend (and width) hung twice already,
        or once before the timing phase, which runs in one worker and has no time to lose."""
        key = _hang_key(item)
        hung = self._hangs.get(key, [])
        enough = 1 if phase == "timing" else HANGS_BEFORE_GIVING_UP
        if key and len(hung) >= enough:
            return f"not launched: {key} hung {len(hung)} times ({', '.join(hung)})"
        return None

    def _run_slot(self, slot, items, phase):
        pending = list(items)
        while pending:
            if time.time() > self._end_of_budget():
                for it in pending:
                    self._finish(record(it, "skip", "budget: --budget-s was spent", 0,
                                        budget=True))
                return
            runnable = []
            for it in pending:
                reason = self._given_up(it, phase)
                if reason:
                    self._finish(record(it, "skip", reason, 0))
                else:
                    runnable.append(it)
            if not runnable:
                return
            pending = self._run_worker(phase, slot, runnable)

    def _run_worker(self, phase, slot, items):
        """Run ``items`` in one worker until it finishes or fails; return the items left."""
        log_path = self.out / "logs" / f"{phase}-{slot}.log"
        with open(log_path, "a") as stderr:
            proc = subprocess.Popen([sys.executable, "-m", "fusedrnn.gpucheck.worker"],
                                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr,
                                    text=True, errors="replace", env=self._env(phase, items),
                                    start_new_session=True, preexec_fn=_die_with_parent)
        with self._lock:
            self._live.add(proc)
        try:
            return self._follow(proc, items, log_path)
        finally:
            _kill(proc)
            with self._lock:
                self._live.discard(proc)

    def _follow(self, proc, items, log_path):
        proc.stdin.write("".join(json.dumps(it) + "\n" for it in items))
        proc.stdin.close()
        lines = queue.Queue()
        threading.Thread(target=_pump, args=(proc.stdout, lines), daemon=True).start()
        by_id = {it["id"]: it for it in items}
        finished, current, started = set(), None, None
        quiet_since, quiet_limit = time.time(), STARTUP_S
        while True:
            now = time.time()
            if current is not None:
                item = by_id[current]
                kill_at = min(started + item["limit_s"], item["start_by"], self._end_of_budget())
            else:
                kill_at = min(quiet_since + quiet_limit, self._end_of_budget())
            try:
                line = lines.get(timeout=max(0.0, kill_at - now))
            except queue.Empty:
                self._on_timeout(proc, by_id, items, finished, current, started)
                break
            if line is None:                                  # the worker's stdout closed
                self._on_exit(proc, items, finished, current, started, log_path)
                break
            try:
                event = json.loads(line)
            except json.JSONDecodeError:
                continue                 # a library's line that happened to carry the marker
            if event.get("event") == "start":
                current, started = event["id"], time.time()
            elif event.get("event") == "end":
                self._finish(event["record"])
                finished.add(event["record"]["id"])
                current, quiet_since, quiet_limit = None, time.time(), BETWEEN_ITEMS_S
        return [it for it in items if it["id"] not in finished]

    def _on_timeout(self, proc, by_id, items, finished, current, started):
        _kill(proc)
        now = time.time()
        if current is None:
            # Silent between items (or before the first): charge the next item, not the rest.
            nxt = next(it for it in items if it["id"] not in finished)
            self._finish(record(nxt, "hang", "the worker gave no sign of life before this item "
                                "started; killed", 0))
            finished.add(nxt["id"])
            return
        item = by_id[current]
        if now >= min(item["start_by"], self._end_of_budget()) and \
                now < started + item["limit_s"]:
            self._finish(record(item, "skip", f"budget: killed after {now - started:.0f} s when "
                                "its phase's share of --budget-s ran out", now - started,
                                budget=True))
        else:
            self._finish(record(item, "hang", f"no result within {now - started:.0f} s (limit "
                                f"{item['limit_s']} s); worker killed", now - started))
            with self._lock:
                self._hangs.setdefault(_hang_key(item), []).append(item["id"])
        finished.add(current)

    def _on_exit(self, proc, items, finished, current, started, log_path):
        try:
            code = proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            _kill(proc)
            code = proc.returncode
        if current is not None and current not in finished:
            self._finish(record(next(it for it in items if it["id"] == current), "error",
                                f"worker exited with code {code} mid-item; stderr tail:\n"
                                f"{_tail(log_path)}", time.time() - started))
            finished.add(current)
        elif not finished:
            # Died before its first item (an import error, say): a fresh worker would die the
            # same way, so every item gets the error.
            for item in items:
                self._finish(record(item, "error", f"worker exited with code {code} before any "
                                    f"item; stderr tail:\n{_tail(log_path)}", 0))
                finished.add(item["id"])

    def _finish(self, rec):
        self.journal.append(rec)
        what = " ".join(str(rec[k]) for k in ("kind", "backend", "cell", "dtype") if rec.get(k))
        flag = "" if rec["status"] in ("pass", "skip") else "   <-- " + _short(rec["detail"])
        self.log(f"[{time.time() - self.t0:6.1f}s] {rec['phase']:11} {rec['status']:5} {what}"
                 f"{' bi' if rec.get('bidirectional') else ''}"
                 f"{' packed' if rec.get('packed') else ''} ({rec['seconds']:.1f}s){flag}")


def _slots(items, width):
    """Items dealt to ``width`` workers a group at a time (a group's items stay together and in
    order, so they share what the worker caches, e.g. the oracle), the heaviest groups first
    (the size-limit checks, then by item count), each to the worker with the fewest items so
    far. One worker runs many groups: a worker's start (torch, Triton, a CUDA context) costs
    seconds."""
    groups = OrderedDict()
    for it in items:
        groups.setdefault(it["group"], []).append(it)
    slots = [[] for _ in range(min(width, len(groups)))]
    order = sorted(groups.values(), reverse=True,
                   key=lambda g: (any(it["kind"] == "limit" for it in g), len(g)))
    for group in order:
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
    try:
        for raw in stream:
            if raw.startswith(MARK):
                lines.put(raw[len(MARK):])
    finally:
        lines.put(None)


def _kill(proc):
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass        # a process stuck in the driver: the kernel reaps it when it can


def _tail(path, n=2000):
    try:
        return Path(path).read_text(errors="replace")[-n:]
    except OSError as exc:
        return f"(no log: {exc})"


def _short(detail):
    text = detail if isinstance(detail, str) else json.dumps(detail, default=str)
    return text.splitlines()[0][:160] if text else ""
