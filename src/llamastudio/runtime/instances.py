"""Engine instances outside the process table: their file names, orphan records, CPU threads.

- Every file the runtime writes for a model (its log, its run record, its key file) is named by
  ``file_stem(name)``: the name made safe for a file name plus a short hash of the exact name, so
  two legal names that sanitise alike (``org/m`` and ``org_m``) never share a log or a record
  (issue 14 #9, issue 18 #10: one overwrote the other's record and its engine outlived a kill -9).
- A run record ``<data>/run/<stem>.json`` ``{pid, exe, model, port}`` is written when an engine is
  ready and removed when it stops. A studio that is killed leaves them behind; the next start kills
  the processes they name — records of any naming scheme, every ``*.json`` there — and waits for
  them to exit *before* the machine's free memory is read for the budgets.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import signal
import time
from pathlib import Path

from llamastudio import runinfo
from llamastudio.errors import StudioError
from llamastudio.fsutil import write_atomic


def file_stem(name: str) -> str:
    """A file name for ``name``: readable, and distinct for distinct names."""
    readable = re.sub(r"[^A-Za-z0-9._-]", "_", name)[:64].lstrip(".") or "model"
    return f"{readable}-{hashlib.sha256(name.encode()).hexdigest()[:10]}"


def write_record(run_dir: Path, model: str, pid: int, exe: str, port: int) -> None:
    """Record a ready engine, for the next start to clean up if this studio is killed."""
    record = {"pid": pid, "exe": exe, "model": model, "port": port}
    with contextlib.suppress(StudioError):  # no record: only a kill -9 of the studio would miss it
        write_atomic(run_dir / f"{file_stem(model)}.json", json.dumps(record).encode())


def remove_record(run_dir: Path, model: str) -> None:
    (run_dir / f"{file_stem(model)}.json").unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    """Running (a zombie has already freed its memory)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


def cleanup_orphans(run_dir: Path, wait: float = 5.0) -> list[int]:
    """Kill (SIGKILL, whole process group) the engines that run records name and that still run
    the recorded binary; wait up to ``wait`` seconds for them to exit. Blocking: call it in a
    thread. Returns the pids killed."""
    killed: list[int] = []
    for f in sorted(run_dir.glob("*.json")):
        if f.name == runinfo.NAME:  # the studio's own record (serve checks and rewrites it)
            continue
        with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
            info = json.loads(f.read_text())
            pid, exe = int(info["pid"]), str(info["exe"])
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode()
            if pid > 1 and cmdline == exe:  # the pid was not reused by something else
                os.killpg(pid, signal.SIGKILL)
                killed.append(pid)
        f.unlink(missing_ok=True)
    for key in run_dir.glob("*.key"):  # engine keys (and the owner key) of the previous run
        key.unlink(missing_ok=True)
    deadline = time.monotonic() + wait
    while any(_alive(p) for p in killed) and time.monotonic() < deadline:
        time.sleep(0.02)
    return killed
