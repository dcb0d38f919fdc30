"""Helper processes (git, patch, cmake, ``llama-server --help``, the tree digest) started from async
code without holding the event loop: argv lists (never a shell), each in its own process group
so a timeout or a cancel kills it and whatever it started.

Starting a process waits until the child has exec'd (fork/exec, then the error pipe), which on
a loaded machine takes tens of milliseconds or more; asyncio's ``create_subprocess_exec`` does
that wait on the loop (and starts a waiter thread there). Here it happens in a worker thread;
output is then read on the loop (:func:`lines`) or in the thread (:func:`run`).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import threading
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO


@dataclass(frozen=True)
class Completed:
    returncode: int
    stdout: str
    stderr: str


def kill_group(pid: int) -> None:
    """SIGKILL a process group started with ``start_new_session=True`` (gone already: nothing)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


async def spawn(
    argv: Sequence[str],
    *,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    merge_stderr: bool = False,
) -> subprocess.Popen[bytes]:
    """Start ``argv`` (stdin from /dev/null, stdout piped, stderr piped or into stdout) in its
    own process group, from a worker thread. ``OSError`` when it cannot be started."""
    return await asyncio.to_thread(
        subprocess.Popen,
        list(argv),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT if merge_stderr else subprocess.PIPE,
        cwd=cwd,
        env=dict(env) if env is not None else None,
        start_new_session=True,
    )


async def lines(pipe: IO[bytes]) -> AsyncIterator[bytes]:
    """The lines of a child's output pipe, read on the loop as they come."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=1 << 20, loop=loop)
    transport, _ = await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), pipe)
    try:
        while line := await reader.readline():
            yield line
    finally:
        transport.close()


async def wait(process: subprocess.Popen[bytes]) -> int:
    """Wait for the exit in a worker thread (a cancel kills the process group first)."""
    try:
        return await asyncio.shield(asyncio.to_thread(process.wait))
    except asyncio.CancelledError:
        kill_group(process.pid)
        await asyncio.to_thread(process.wait)
        raise


async def run(
    argv: Sequence[str],
    *,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    input: str | None = None,
    timeout: float | None = None,
) -> Completed:
    """Run ``argv`` to completion in a worker thread and collect its output. A timeout raises
    ``TimeoutError`` and a cancel ``CancelledError``; either way the process group is killed and
    reaped first. A program that cannot be started raises ``OSError``."""
    started: list[subprocess.Popen[bytes]] = []
    cancelled = threading.Event()

    def work() -> Completed:
        with subprocess.Popen(
            list(argv),
            stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=cwd,
            env=dict(env) if env is not None else None,
            start_new_session=True,
        ) as process:
            started.append(process)
            if cancelled.is_set():
                kill_group(process.pid)
            try:
                out, err = process.communicate(input.encode() if input is not None else None, timeout)
            except subprocess.TimeoutExpired:
                kill_group(process.pid)
                process.communicate()
                raise TimeoutError(f"{argv[0]}: no result within {timeout} s") from None
            return Completed(process.returncode, out.decode(errors="replace"), err.decode(errors="replace"))

    task = asyncio.ensure_future(asyncio.to_thread(work))
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        cancelled.set()
        for process in started:
            kill_group(process.pid)
        with contextlib.suppress(Exception):
            await task  # the thread returns once the killed process is reaped
        raise
