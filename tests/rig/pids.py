"""Whether a process is alive, from ``/proc`` (a zombie counts as gone)."""

from __future__ import annotations

from pathlib import Path


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):  # gone, or vanishing while read
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"
