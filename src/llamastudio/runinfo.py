"""``<data>/run/studio.json``: which studio serves a data directory, and where.

``serve`` writes it once both listeners are up and removes it at exit; the CLI reads it to talk to
*that* studio (not to whatever answers on the default port), and a second ``serve`` on the same
data directory refuses to start while the recorded process is alive. A record whose process is
gone (a killed studio) is stale and ignored.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from llamastudio.fsutil import write_atomic

NAME = "studio.json"
OWNER_KEY = "owner.key"


@dataclass(frozen=True)
class RunInfo:
    url: str  # the UI + management API, e.g. http://127.0.0.1:8080
    gateway_url: str
    pid: int
    started: float
    data_dir: str

    def alive(self) -> bool:
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:  # another user's process holds the pid: not ours
            return False
        return True


def path(data_dir: Path) -> Path:
    return data_dir / "run" / NAME


def _client_host(host: str) -> str:
    """The address a client on this machine uses for a bind address."""
    if host in ("", "0.0.0.0"):
        return "127.0.0.1"
    if host == "::":
        return "[::1]"
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def write(data_dir: Path, host: str, port: int, gateway_port: int, owner_key: str) -> RunInfo:
    """Record this studio; the owner key goes to a 0600 file only this user can read."""
    write_atomic(data_dir / "run" / OWNER_KEY, owner_key.encode(), mode=0o600)
    info = RunInfo(
        url=f"http://{_client_host(host)}:{port}",
        gateway_url=f"http://{_client_host(host)}:{gateway_port}",
        pid=os.getpid(),
        started=time.time(),
        data_dir=str(data_dir),
    )
    write_atomic(path(data_dir), json.dumps(asdict(info)).encode())
    return info


def read(data_dir: Path) -> RunInfo | None:
    """The live studio serving ``data_dir``, or None (no record, unreadable, or its process gone)."""
    try:
        raw = json.loads(path(data_dir).read_text())
        info = RunInfo(
            url=str(raw["url"]),
            gateway_url=str(raw["gateway_url"]),
            pid=int(raw["pid"]),
            started=float(raw["started"]),
            data_dir=str(raw["data_dir"]),
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return info if info.alive() else None


def read_owner_key(data_dir: Path) -> str | None:
    try:
        return (data_dir / "run" / OWNER_KEY).read_text().strip() or None
    except OSError:
        return None


def remove(data_dir: Path) -> None:
    """Remove the record (and the owner key) if it is this process's own."""
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
        if int(json.loads(path(data_dir).read_text())["pid"]) == os.getpid():
            path(data_dir).unlink()
            (data_dir / "run" / OWNER_KEY).unlink(missing_ok=True)
