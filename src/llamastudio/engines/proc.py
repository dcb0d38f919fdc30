"""Short-lived helper processes (git, patch, ``llama-server --help``) run from async code without
blocking the event loop: ``asyncio.create_subprocess_exec`` with an argv list (never a shell),
each in its own process group so a timeout or a cancel kills it and whatever it started."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Completed:
    returncode: int
    stdout: str
    stderr: str


def kill_group(pid: int) -> None:
    """SIGKILL a process group started with ``start_new_session=True`` (gone already: nothing)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


async def run(
    argv: Sequence[str],
    *,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    input: str | None = None,
    timeout: float | None = None,
) -> Completed:
    """Run ``argv`` to completion and collect its output. A timeout raises ``TimeoutError`` and a
    cancel ``CancelledError``; either way the process group is killed and reaped first. A program
    that cannot be started raises ``OSError``."""
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.PIPE if input is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=cwd,
        env=dict(env) if env is not None else None,
        start_new_session=True,
    )
    try:
        async with asyncio.timeout(timeout):
            out, err = await proc.communicate(input.encode() if input is not None else None)
    except BaseException:
        kill_group(proc.pid)
        await proc.wait()
        raise
    code = proc.returncode
    assert code is not None
    return Completed(code, out.decode(errors="replace"), err.decode(errors="replace"))
