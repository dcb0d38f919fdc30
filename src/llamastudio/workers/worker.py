"""``llamastudio worker``: one ``ggml-rpc-server`` (llama.cpp's RPC backend server) supervised on
a helper host, and its status endpoint (``status.py``) on the next port.

rpc-server has no authentication and runs whatever tensors a client sends, so the worker binds
only loopback or private addresses unless told ``--insecure``. The worker's key protects its
status endpoint only: firewall the RPC port.

Supervision: the server is started from an argv list, restarted (with a growing pause, at most
``MAX_BACKOFF`` seconds) whenever it exits, and stopped (terminate, then kill) when the worker
stops; on Linux it also dies with the worker (``PR_SET_PDEATHSIG``), so a killed worker leaves no
RPC server behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ipaddress
import logging
import re
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from llamastudio.engines.registry import EngineRegistry
from llamastudio.errors import InvalidInput, NotFound

log = logging.getLogger(__name__)

BINARY = "ggml-rpc-server"  # its CMake target (tools/rpc) in b11434; older builds: rpc-server
MAX_BACKOFF = 10.0
_DEVICE = re.compile(r"^\s+(\S+): (.*) \((\d+) MiB, (\d+) MiB free\)\s*$")


def check_listen(host: str, insecure: bool) -> None:
    """Refuse a listen address outside loopback/private networks unless ``insecure``."""
    if host == "localhost":
        return
    try:
        addr = ipaddress.ip_address(host)
    except ValueError:
        raise InvalidInput(
            f"listen address {host!r}: give an IP address (loopback or private), not a host name"
        ) from None
    if addr.is_loopback or (addr.is_private and not addr.is_unspecified):
        return
    if insecure:
        log.warning("rpc-server on %s: anyone who reaches it can run tensors on this host", host)
        return
    raise InvalidInput(
        f"listen address {host} is not a loopback or private address: llama.cpp's rpc-server has no "
        "authentication and runs any tensors a client sends (its README: never expose it to an open "
        "network). Bind a loopback/private address and firewall it, or pass --insecure."
    )


def parse_listen(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65535:
        raise InvalidInput(f"--listen {value!r}: give ADDR:PORT, e.g. 127.0.0.1:50052")
    return host.strip("[]") or "127.0.0.1", int(port)


@dataclass(frozen=True)
class RpcBinary:
    """The rpc-server to run and the llama.cpp build it comes from (compared with the studio's)."""

    path: Path
    version: str  # e.g. b11434
    commit: str
    engine_id: str = ""


def find_binary(engines: EngineRegistry, engine_id: str | None) -> RpcBinary:
    """The RPC server of ``engine_id`` (default: the default llama.cpp engine)."""
    engine = engines.get(engine_id) if engine_id else engines.default()
    if engine is None:
        raise NotFound("no llama.cpp engine: build one with `llamastudio engines build --rpc`")
    path = engine.binaries.get(BINARY) or engine.binaries.get("rpc-server")
    if not path or not Path(path).exists():
        raise NotFound(
            f"engine {engine.id} has no {BINARY}: build one with `llamastudio engines build --rpc` "
            "(-DGGML_RPC=ON and the ggml-rpc-server target)"
        )
    return RpcBinary(Path(path), engine.version, engine.commit, engine.id)


def probe_devices(binary: Path, devices: list[str] | None = None) -> list[dict[str, object]]:
    """The devices rpc-server would expose, as it lists them (``-d`` with an unknown name makes it
    print its device list and exit). Blocking: run it in a thread from the event loop."""
    try:
        out = subprocess.run(
            [str(binary), "-d", "?"], capture_output=True, text=True, timeout=60, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise InvalidInput(f"cannot run {binary}: {exc}") from exc
    found = []
    for line in out.stdout.splitlines():
        m = _DEVICE.match(line)
        if m:
            name, desc, total, free = m.groups()
            found.append({"name": name, "description": desc, "total_mib": int(total), "free_mib": int(free)})
    if devices:
        unknown = [d for d in devices if d not in {str(f["name"]) for f in found}]
        if unknown:
            names = ", ".join(str(f["name"]) for f in found) or "none"
            raise InvalidInput(f"unknown device(s) {', '.join(unknown)} (this host has: {names})")
        found = [f for f in found if f["name"] in devices]
    return found


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


@dataclass
class WorkerState:
    """What the status endpoint reports; written only by the supervisor task."""

    host: str
    port: int
    binary: RpcBinary
    devices: list[str] = field(default_factory=list)
    mem_mib: int | None = None
    threads: int | None = None
    alive: bool = False
    pid: int | None = None
    restarts: int = 0
    last_exit: int | None = None
    protocol: str = ""  # "Starting RPC server vX.Y.Z"
    started_at: float = field(default_factory=time.time)

    def argv(self) -> list[str]:
        argv = [str(self.binary.path), "-H", self.host, "-p", str(self.port)]
        if self.devices:
            argv += ["-d", ",".join(self.devices)]
        if self.threads:
            argv += ["-t", str(self.threads)]
        return argv


class Supervisor:
    """Keeps one rpc-server running until ``stop()``."""

    def __init__(self, state: WorkerState, log_path: Path | None = None) -> None:
        self.state = state
        self.log_path = log_path
        self._proc: asyncio.subprocess.Process | None = None
        self._stopping = False
        self.ready = asyncio.Event()

    async def run(self) -> None:
        backoff = 0.5
        while not self._stopping:
            started = time.monotonic()
            await self._start()
            code = await self._wait()
            self.state.alive = False
            self.ready.clear()
            if self._stopping:
                return
            self.state.last_exit = code
            self.state.restarts += 1
            backoff = 0.5 if time.monotonic() - started > 30 else min(backoff * 2, MAX_BACKOFF)
            log.warning("rpc-server exited with %s; restarting in %.1f s", code, backoff)
            await asyncio.sleep(backoff)

    async def _start(self) -> None:
        argv = self.state.argv()
        preexec = _die_with_parent if sys.platform.startswith("linux") else None
        self._proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            preexec_fn=preexec,
        )
        self.state.pid = self._proc.pid
        log.info("started %s (pid %s)", " ".join(argv), self._proc.pid)

    async def _wait(self) -> int:
        proc = self._proc
        assert proc is not None and proc.stdout is not None
        reader = asyncio.ensure_future(self._follow(proc.stdout))
        ready = asyncio.ensure_future(self._until_accepting())
        code = await proc.wait()
        ready.cancel()
        await asyncio.gather(reader, ready, return_exceptions=True)
        return code

    async def _follow(self, stream: asyncio.StreamReader) -> None:
        out = open(self.log_path, "ab") if self.log_path else None  # noqa: SIM115
        try:
            async for line in stream:
                text = line.decode(errors="replace").rstrip()
                m = re.match(r"Starting RPC server v(\S+)", text)
                if m:
                    self.state.protocol = m.group(1)
                if out:
                    out.write(line)
                    out.flush()
        finally:
            if out:
                out.close()

    async def _until_accepting(self) -> None:
        """Marks the server alive once its port accepts a connection."""
        while True:
            try:
                _, writer = await asyncio.open_connection(self.state.host, self.state.port)
            except OSError:
                await asyncio.sleep(0.1)
                continue
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
            self.state.alive = True
            self.ready.set()
            return

    async def stop(self) -> None:
        """Terminate the server (kill after 5 s) and end ``run``."""
        self._stopping = True
        proc = self._proc
        if proc is None or proc.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            proc.terminate()
        try:
            await asyncio.wait_for(proc.wait(), 5)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()


def port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True
