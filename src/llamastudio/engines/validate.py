"""Check that an engine's llama-server runs: ``--version`` and ``--help`` (with its library path),
and optionally that it loads a tiny model and answers ``/health``."""

from __future__ import annotations

import asyncio
import hashlib
import os
import subprocess
import tempfile
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from llamastudio.engines.capabilities import parse_help, parse_version
from llamastudio.engines.registry import Engine, EngineRegistry
from llamastudio.errors import InvalidInput, NotFound
from llamastudio.runtime.process import EngineProcess, StartFailed, free_port

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


def probe(binary: Path) -> dict[str, Any]:
    """Run --version and --help; returns version, commit, flags and any error."""
    result: dict[str, Any] = {"ok": False, "checked_at": datetime.now(UTC).isoformat(), "error": None}
    try:
        ver = subprocess.run(
            [str(binary), "--version"], capture_output=True, text=True, timeout=30, env=binary_env(binary)
        )
        hlp = subprocess.run(
            [str(binary), "--help"], capture_output=True, text=True, timeout=30, env=binary_env(binary)
        )
    except (OSError, subprocess.SubprocessError) as exc:
        result["error"] = f"cannot run {binary}: {exc}"
        return result
    version_text = ver.stdout + ver.stderr
    flags = parse_help(hlp.stdout + hlp.stderr)
    result["version"], result["commit"] = parse_version(version_text)
    result["flags"] = flags
    if hlp.returncode != 0 or "--port" not in flags:
        result["error"] = (
            f"`{binary.name} --help` failed (exit {hlp.returncode}): {version_text.strip()[-300:]}"
        )
        return result
    result["ok"] = True
    return result


def health_check(binary: Path, model: Path, timeout: float = 120) -> tuple[bool, str]:
    """Start the server on a free port with ``model``, wait for /health, stop it."""
    port = free_port()
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

    async def run(log_dir: str) -> tuple[bool, str]:
        proc = EngineProcess(
            "validate", argv, port, Path(log_dir) / "validate.log", env=binary_env(binary), timeout=timeout
        )
        try:
            await proc.ensure_ready()
            return True, "healthy"
        except StartFailed as exc:
            return False, exc.message
        finally:
            await proc.stop()

    with tempfile.TemporaryDirectory() as log_dir:
        return asyncio.run(run(log_dir))


def revalidate(registry: EngineRegistry, engine: Engine, model: Path | None = None) -> Engine:
    """Probe again (and optionally load ``model``); store capabilities and the result."""
    check = probe(engine.server)
    if check["ok"] and model is not None:
        healthy, detail = health_check(engine.server, model)
        check["health"] = {"model": str(model), "ok": healthy, "detail": detail}
        check["ok"] = healthy
        check["error"] = None if healthy else f"loading {model.name}: {detail}"
    engine.capabilities = check.pop("flags", engine.capabilities)
    engine.validation = check
    registry.update(engine)
    return engine


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
