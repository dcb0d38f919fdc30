"""Check that an engine's llama-server runs: ``--version`` and ``--help`` (with its library path),
and optionally that it loads a tiny model and answers ``/health``.

Each check has a blocking form (the CLI, worker threads) and an ``_async`` form for the serving
loop, whose subprocesses are asyncio's and whose database write runs in a thread."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import signal
import socket
import subprocess
import tempfile
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import httpx

from llamastudio.engines import proc
from llamastudio.engines.capabilities import parse_help, parse_version
from llamastudio.engines.registry import Engine, EngineRegistry
from llamastudio.errors import InvalidInput, NotFound

PROBE_TIMEOUT = 30.0

# The studio's own secrets (its API keys, Hub and GitHub tokens) and the keys an engine would
# accept: an engine needs none of them, and a model process (or anything it runs) must not read
# them from /proc/<pid>/environ. A configuration's explicit ``env`` is added after this.
_WITHHELD = frozenset(
    {
        "HF_TOKEN",
        "HUGGING_FACE_HUB_TOKEN",
        "HUGGINGFACE_API_KEY",
        "HUGGINGFACEHUB_API_TOKEN",
        "GITHUB_TOKEN",
        "GH_TOKEN",
        "LLAMA_API_KEY",
        "LLAMA_ARG_API_KEY_FILE",
    }
)


def engine_env(base: Mapping[str, str] | None = None) -> dict[str, str]:
    """``base`` (default: the studio's environment) without secrets and ``LLAMASTUDIO_*`` settings."""
    env = os.environ if base is None else base
    return {k: v for k, v in env.items() if k not in _WITHHELD and not k.startswith("LLAMASTUDIO_")}


def binary_env(binary: Path) -> dict[str, str]:
    """The engine environment with the binary's directory on the shared-library path (release zips
    ship .so files)."""
    env = engine_env()
    libdir = str(binary.parent)
    for var in ("LD_LIBRARY_PATH", "DYLD_LIBRARY_PATH"):
        env[var] = libdir + (os.pathsep + env[var] if env.get(var) else "")
    return env


def _checked(binary: Path, version: tuple[int, str], help: tuple[int, str]) -> dict[str, Any]:
    """The probe's result from ``--version`` and ``--help`` (exit code, output)."""
    result: dict[str, Any] = {"ok": False, "checked_at": datetime.now(UTC).isoformat(), "error": None}
    version_text = version[1]
    flags = parse_help(help[1])
    result["version"], result["commit"] = parse_version(version_text)
    result["flags"] = flags
    if help[0] != 0 or "--port" not in flags:
        result["error"] = f"`{binary.name} --help` failed (exit {help[0]}): {version_text.strip()[-300:]}"
        return result
    result["ok"] = True
    return result


def _unrunnable(binary: Path, exc: BaseException) -> dict[str, Any]:
    detail = "timed out" if isinstance(exc, TimeoutError | subprocess.TimeoutExpired) else str(exc)
    now = datetime.now(UTC).isoformat()
    return {"ok": False, "checked_at": now, "error": f"cannot run {binary}: {detail}"}


def probe(binary: Path, timeout: float = PROBE_TIMEOUT) -> dict[str, Any]:
    """Run --version and --help; returns version, commit, flags and any error. Blocking: for the
    CLI and worker threads (async code awaits :func:`probe_async`)."""
    outs = []
    try:
        for flag in ("--version", "--help"):
            done = subprocess.run(
                [str(binary), flag], capture_output=True, text=True, timeout=timeout, env=binary_env(binary)
            )
            outs.append((done.returncode, done.stdout + done.stderr))
    except (OSError, subprocess.SubprocessError) as exc:
        return _unrunnable(binary, exc)
    return _checked(binary, outs[0], outs[1])


async def probe_async(binary: Path, timeout: float = PROBE_TIMEOUT) -> dict[str, Any]:
    """:func:`probe` without blocking the event loop (async subprocesses, killed on cancel)."""
    outs = []
    try:
        for flag in ("--version", "--help"):
            done = await proc.run([str(binary), flag], env=binary_env(binary), timeout=timeout)
            outs.append((done.returncode, done.stdout + done.stderr))
    except (OSError, TimeoutError) as exc:
        return _unrunnable(binary, exc)
    return _checked(binary, outs[0], outs[1])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def health_check_async(binary: Path, model: Path, timeout: float = 120) -> tuple[bool, str]:
    """Start the server on a free port with ``model``, wait for /health, stop it; (healthy, detail)."""
    port = _free_port()
    argv = [
        str(binary),
        "-m",
        str(model),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "-c",
        "256",
        "--no-webui",
    ]
    loop = asyncio.get_running_loop()
    with tempfile.TemporaryFile() as log:
        try:  # started from a thread: fork/exec waits for the child (see proc.py)
            server = await asyncio.to_thread(
                subprocess.Popen,
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=binary_env(binary),
                start_new_session=True,
            )
        except OSError as exc:
            return False, f"cannot start {binary}: {exc.strerror}"
        try:
            # plain HTTP to loopback: no CA bundle to load (that alone holds the loop ~20 ms)
            # and no proxy from the environment
            async with httpx.AsyncClient(timeout=5, verify=False, trust_env=False) as client:
                deadline = loop.time() + timeout
                while loop.time() < deadline:
                    with contextlib.suppress(httpx.HTTPError):
                        if (await client.get(f"http://127.0.0.1:{port}/health")).status_code == 200:
                            return True, "healthy"
                    if (code := server.poll()) is not None:
                        tail = await asyncio.to_thread(_tail, log)
                        return False, f"exited with code {code} before it was ready: {tail}"
                    await asyncio.sleep(0.25)
            return False, f"not healthy within {timeout:.0f} s"
        finally:
            if server.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(server.pid, signal.SIGTERM)
                try:
                    await asyncio.to_thread(server.wait, 10)
                except subprocess.TimeoutExpired:
                    proc.kill_group(server.pid)
                    await asyncio.to_thread(server.wait)


def _tail(log: IO[bytes], lines: int = 5) -> str:
    log.flush()
    log.seek(0)
    text = log.read().decode(errors="replace")
    return " | ".join(line.strip() for line in text.strip().splitlines()[-lines:])


def health_check(binary: Path, model: Path, timeout: float = 120) -> tuple[bool, str]:
    """:func:`health_check_async` for blocking callers (the CLI)."""
    return asyncio.run(health_check_async(binary, model, timeout))


def _record(registry: EngineRegistry, engine: Engine, check: dict[str, Any]) -> Engine:
    engine.capabilities = check.pop("flags", engine.capabilities)
    engine.validation = check
    registry.update(engine)
    return engine


def revalidate(registry: EngineRegistry, engine: Engine, model: Path | None = None) -> Engine:
    """Probe again (and optionally load ``model``); store capabilities and the result. Blocking:
    for the CLI and worker threads (async code awaits :func:`revalidate_async`)."""
    check = probe(engine.server)
    if check["ok"] and model is not None:
        _add_health(check, model, health_check(engine.server, model))
    return _record(registry, engine, check)


async def revalidate_async(registry: EngineRegistry, engine: Engine, model: Path | None = None) -> Engine:
    """:func:`revalidate` on the event loop: the probes are async subprocesses, the database write
    runs in a thread."""
    check = await probe_async(engine.server)
    if check["ok"] and model is not None:
        _add_health(check, model, await health_check_async(engine.server, model))
    return await asyncio.to_thread(_record, registry, engine, check)


def _add_health(check: dict[str, Any], model: Path, result: tuple[bool, str]) -> None:
    healthy, detail = result
    check["health"] = {"model": str(model), "ok": healthy, "detail": detail}
    check["ok"] = healthy
    check["error"] = None if healthy else f"loading {model.name}: {detail}"


def add_external(registry: EngineRegistry, binary: Path, name: str | None = None) -> Engine:
    """Register an existing llama-server in place (its sibling tools too); nothing is copied."""
    path = binary.expanduser().resolve()
    if not path.is_file():
        raise NotFound(f"{binary}: no such file")
    check = probe(path)
    if not check["ok"]:
        raise InvalidInput(f"{binary} is not a working llama-server: {check['error']}")
    flags = check.pop("flags")
    tools = {
        t: str(path.parent / t)
        for t in ("llama-quantize", "llama-fit-params", "rpc-server")
        if (path.parent / t).exists()
    }
    version = check.get("version") or ""
    digest = hashlib.sha256(str(path).encode()).hexdigest()[:6]
    engine = Engine(
        id=f"external-b{version or 'dev'}-{digest}",
        name=name or f"{path.parent.name}/{path.name}",
        kind="external",
        root=str(path.parent),
        binaries={"llama-server": str(path), **tools},
        version=f"b{version}" if version else "",
        commit=check.get("commit", ""),
        source={"kind": "external", "location": str(path)},
        validation=check,
        capabilities=flags,
    )
    return registry.add(engine)
