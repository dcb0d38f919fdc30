"""One supervised engine process (llama-server), as an explicit state machine.

    stopped ──start──▶ starting ──/health 200──▶ ready ──stop──▶ stopping ──▶ stopped
                          │                        │
                          └──exit / fatal line / timeout──▶ failed (reason kept)

Callers await ``ensure_ready()`` instead of checking and then acting; concurrent callers share one
start. The process is started with an argv list in its own process group; its output goes to a
ring buffer and a log file rotated at 20 MiB (``runtime/logfile.py``). A line matching the engine
kind's fatal pattern (out of memory, failed to load the model, GGML_ASSERT, CUDA errors…) turns a
start into ``failed`` with that line as the reason.
``stop()`` sends SIGTERM, waits ``grace`` seconds, then SIGKILLs the group.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import os
import re
import signal
import socket
import time
from collections import deque
from collections.abc import Callable, Sequence
from pathlib import Path

import httpx

from llamastudio.aio import cancel_and_wait
from llamastudio.errors import StartFailed
from llamastudio.runtime import logfile, output
from llamastudio.runtime.logfile import RotatingLog

log = logging.getLogger(__name__)
_WHY = re.compile(r"\berror\b|failed|invalid|unknown argument|cannot|abort", re.IGNORECASE)


READER_DRAIN = 2.0  # seconds a stop waits for the output pipe to close once the process is gone


class State(enum.StrEnum):
    STOPPED = "stopped"
    STARTING = "starting"
    READY = "ready"
    STOPPING = "stopping"
    FAILED = "failed"


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def load_timeout(model_bytes: int, base: float = 60.0, per_gib: float = 30.0) -> float:
    """A load timeout that grows with the model: slow disks and big models must not be failed early."""
    return base + per_gib * model_bytes / (1 << 30)


class EngineProcess:
    log_max_bytes = logfile.MAX_BYTES  # the log rotates at this size (see runtime/logfile.py)
    log_keep = logfile.KEEP  # rotated files kept

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        port: int,
        log_path: Path,
        host: str = "127.0.0.1",
        env: dict[str, str] | None = None,
        timeout: float = 120.0,
        grace: float = 10.0,
        ring: int = 500,
        lines_hook: Callable[[list[str]], None] | None = None,
        api_key: str | None = None,
        fatal: re.Pattern[str] | None = None,
        ready_path: str = "/health",
        base_url: str | None = None,
        stop_argv: Sequence[str] | None = None,
    ) -> None:
        """``api_key``: the key the engine was started with (see ``engines/keys.py``); clients of
        its port send it as ``Authorization: Bearer``. ``/health`` needs none."""
        self.name = name
        self.api_key = api_key
        self.fatal = fatal  # the engine kind's fatal lines (``engines/kinds``); None: exit and timeout only
        self.ready_path = ready_path
        self.base_url = base_url  # llama-swap ``proxy``: where it answers, instead of host:port
        self.stop_argv = list(stop_argv) if stop_argv else None  # llama-swap ``cmdStop`` (${PID})
        self.argv = list(argv)
        self.host = host
        self.port = port
        self.log_path = log_path
        self.env = env
        self.timeout = timeout
        self.grace = grace
        self.state = State.STOPPED
        self.reason: str | None = None
        self.lines: deque[str] = deque(maxlen=ring)
        self.lines_hook = lines_hook
        self.proc: asyncio.subprocess.Process | None = None
        self.started_at: float | None = None
        self._start_task: asyncio.Task[None] | None = None
        self._reader: asyncio.Task[None] | None = None
        self._output: output.Output | None = None
        self._fatal: str | None = None
        self._hung: str | None = None  # why the health watch killed it

    @property
    def url(self) -> str:
        return self.base_url or f"http://{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    async def ensure_ready(self) -> None:
        """Start if needed and wait until ready; raises StartFailed with the reason otherwise."""
        if self.state == State.READY and self.proc is not None and self.proc.returncode is None:
            return
        if self._start_task is None or self._start_task.done():
            if self.state in (State.READY, State.FAILED):
                await self.stop()
            self._start_task = asyncio.create_task(self._start())
        await asyncio.shield(self._start_task)
        if self.state != State.READY:
            raise StartFailed(f"{self.name}: {self.reason}")

    async def _start(self) -> None:
        self.state, self.reason, self._fatal, self._hung = State.STARTING, None, None, None
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        out, out_w = output.pipe()
        try:
            self.proc = await asyncio.create_subprocess_exec(
                *self.argv,
                stdout=out_w,
                stderr=asyncio.subprocess.STDOUT,
                env=self.env,
                start_new_session=True,
            )
        except OSError as exc:
            os.close(out)
            self.state, self.reason = State.FAILED, f"cannot start {self.argv[0]}: {exc.strerror}"
            return
        finally:
            os.close(out_w)  # the engine holds it now
        self.started_at = time.monotonic()
        self._reader = asyncio.create_task(self._read_output(out))
        deadline = time.monotonic() + self.timeout
        # loopback, plain HTTP: no TLS context or proxy lookup (building those blocks the loop)
        async with httpx.AsyncClient(timeout=2.0, verify=False, trust_env=False) as client:
            while time.monotonic() < deadline:
                if self._fatal:
                    await self._kill()
                    self.state, self.reason = State.FAILED, self._fatal
                    return
                if self.proc.returncode is not None:
                    await asyncio.sleep(0.05)  # let the reader drain the last lines
                    self._pump()
                    self.state = State.FAILED
                    self.reason = self._fatal or f"exited with code {self.proc.returncode}: {self._tail()}"
                    return
                if self.ready_path == "none":  # llama-swap checkEndpoint: none — started is ready
                    self.state = State.READY
                    return
                with contextlib.suppress(httpx.HTTPError):
                    if (await client.get(f"{self.url}{self.ready_path}")).status_code == 200:
                        self.state = State.READY
                        return
                # poll fast at first (small models are ready in ~100 ms), then back off
                await asyncio.sleep(0.005 if time.monotonic() - self.started_at < 2 else 0.1)
        await self._kill()
        self.state, self.reason = State.FAILED, f"not ready after {self.timeout:.0f}s: {self._tail()}"

    def _tail(self) -> str:
        """The line that best says why it stopped: the last one naming an error, else the last."""
        for line in reversed(self.lines):
            if _WHY.search(line):
                return line.strip()
        return self.lines[-1] if self.lines else "no output"

    async def _read_output(self, fd: int) -> None:
        """The engine's output to the ring, the hook and the log (``runtime/output.py``)."""
        with RotatingLog(self.log_path, self.log_max_bytes, self.log_keep) as log:
            self._output = output.Output(fd, log, self._take)
            await self._output.run(lambda: self.state == State.READY)

    def _pump(self) -> None:
        """The output the pipe holds now, taken at once (a crash's last lines, for its reason)."""
        if self._output is not None:
            self._output.pump()

    def _take(self, lines: list[str]) -> None:
        self.lines.extend(lines)
        if self.lines_hook is not None:
            self.lines_hook(lines)
        if self.fatal is not None and self.state == State.STARTING and self._fatal is None:
            self._fatal = next((t.strip() for t in lines if self.fatal.search(t)), None)

    async def stop(self) -> None:
        """SIGTERM the process group, wait ``grace`` seconds, then SIGKILL; always reaps."""
        if self.proc is None or self.proc.returncode is not None:
            self.state = State.STOPPED if self.state != State.FAILED else self.state
            return
        self.state = State.STOPPING
        if self.stop_argv:  # the configuration's own stop command; SIGKILL after the grace all the same
            argv = [a.replace("${PID}", str(self.proc.pid)) for a in self.stop_argv]
            await _run_stop(argv, self.env, self.grace)
        else:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            await asyncio.wait_for(self.proc.wait(), self.grace)
        except TimeoutError:
            await self._kill()
        if self._reader:
            # the output is drained to its end; a grandchild that left the process group (its own
            # session) and keeps the pipe open must not hold the stop forever
            with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._reader), READER_DRAIN)
            await cancel_and_wait(self._reader)  # which closes our end of the pipe
        self.state = State.STOPPED

    async def _kill(self) -> None:
        if self.proc is None or self.proc.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        await self.proc.wait()

    async def wait_exit(self, timeout: float) -> bool:
        """Whether the process has exited, waiting up to ``timeout`` seconds for it to be reaped."""
        if self.proc is None:
            return False
        if self.proc.returncode is None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.proc.wait(), timeout)
        return self.proc.returncode is not None

    def check_alive(self) -> None:
        """A ready process that died (OOM killer, kill -9) becomes failed with its exit code."""
        if self.state == State.READY and self.proc is not None and self.proc.returncode is not None:
            self._pump()
            self.state = State.FAILED
            self.reason = self._hung or (
                f"exited with code {self.proc.returncode} while serving: {self._tail()}"
            )

    async def watch_health(self, hung_after: float) -> None:
        """While ready, ask ``ready_path`` every ``hung_after / 3`` seconds; an engine that has not
        answered for ``hung_after`` seconds (deadlocked, SIGSTOPped, a wedged driver) is killed, so
        its exit is seen like a crash: requests waiting for it are kept and start it again. Returns
        when the process exits or is stopped."""
        if self.ready_path == "none":  # nothing to ask: only its exit is seen
            return
        interval = max(0.2, hung_after / 3)
        last_ok = time.monotonic()
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        async with httpx.AsyncClient(
            timeout=interval, headers=headers, verify=False, trust_env=False
        ) as client:
            while self.state == State.READY and self.proc is not None and self.proc.returncode is None:
                await asyncio.sleep(interval)
                if self.state != State.READY:
                    return
                try:
                    answered = (await client.get(f"{self.url}{self.ready_path}")).status_code < 500
                except httpx.HTTPError:
                    answered = False
                now = time.monotonic()
                if answered:
                    last_ok = now
                elif now - last_ok >= hung_after and self.state == State.READY:
                    self._hung = f"hung: no answer to {self.ready_path} for {now - last_ok:.0f}s; killed"
                    await self._kill()
                    return


async def _run_stop(argv: list[str], env: dict[str, str] | None, timeout: float) -> None:
    """Run a stop command (llama-swap ``cmdStop``) with the engine's environment, waiting up to
    ``timeout``; a failure is logged (the engine is killed after its grace all the same)."""
    quiet = asyncio.subprocess.DEVNULL
    try:
        proc = await asyncio.create_subprocess_exec(*argv, stdin=quiet, stdout=quiet, stderr=quiet, env=env)
        try:
            await asyncio.wait_for(proc.wait(), timeout)
        except TimeoutError:
            proc.kill()
            await proc.wait()
    except OSError as exc:
        log.warning("stop command %s failed: %s", argv[0], exc)
