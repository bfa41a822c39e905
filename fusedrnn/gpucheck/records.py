"""The GPU check's records: one JSON line per finished item in ``gpucheck.jsonl``.

A record is the item's fields (``id phase kind backend cell dtype bidirectional packed shape``
and the item's extras) plus ``status`` (``pass|fail|error|hang|skip``), ``detail`` (the worst
relative error per tensor, measured numbers, or the message) and ``seconds``. Lines are
appended and flushed the moment an item ends, so a call killed at its limit keeps everything
finished before.
"""

import json
import os
import threading

STATUSES = ("pass", "fail", "error", "hang", "skip")
FAILED = ("fail", "error", "hang")
_KEEP = ("id", "phase", "kind", "backend", "cell", "dtype", "bidirectional", "packed", "shape")


class Skip(Exception):
    """Raised by a check that does not apply here; its message is the reason."""


def record(item, status, detail, seconds, **extra):
    if status not in STATUSES:
        raise ValueError(f"status {status!r} is not one of {STATUSES}")
    rec = {k: item.get(k) for k in _KEEP}
    rec.update({k: v for k, v in item.items()
                if k not in _KEEP and k not in ("limit_s", "group", "peaks")})
    rec.update(status=status, detail=detail, seconds=round(float(seconds), 3), **extra)
    return rec


class Journal:
    """Appends records to a JSONL file, one ``write`` + ``flush`` + ``fsync`` per record, from
    any thread."""

    def __init__(self, path):
        self.path = path
        self._lock = threading.Lock()

    def append(self, rec):
        line = json.dumps(rec, sort_keys=True, default=str)
        with self._lock, open(self.path, "a") as f:
            f.write(line + "\n")
            f.flush()
            os.fsync(f.fileno())


def load(path):
    """Every record of a JSONL file, in order (a torn last line, from a kill mid-write, is
    dropped)."""
    out = []
    if not path or not os.path.exists(path):
        return out
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return out


def latest(records):
    """The last record of every item id, in first-seen order."""
    by_id = {}
    for rec in records:
        by_id.pop(rec["id"], None)
        by_id[rec["id"]] = rec
    return list(by_id.values())
