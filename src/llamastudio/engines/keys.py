"""Per-process API keys for engines, so that only the studio reaches an engine's port.

An engine that takes ``--api-key-file`` (llama-server) gets a fresh random key at every start;
llama-server then answers every route except ``/health`` (readiness) with 401 unless the request
carries ``Authorization: Bearer <key>``, which only the gateway knows. Local users and web pages
that find the port cannot use it. The key travels in a 0600 file under ``<data>/run/``, never in
argv (``/proc/<pid>/cmdline`` is world-readable); llama-server reads the file while parsing its
arguments, and the caller removes it once the process is ready or has failed. Engines without the
flag (``command`` configurations) get no key. vLLM takes its key from ``VLLM_API_KEY`` in its
environment (readable only by the same user, like the file): :func:`issue_env`.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from llamastudio.engines.registry import Engine
from llamastudio.errors import StorageError

FLAG = "--api-key-file"


@dataclass(frozen=True)
class EngineKey:
    key: str
    file: Path | None = None  # given as ``--api-key-file`` (else as ``env_var``)
    env_var: str | None = None

    @property
    def args(self) -> list[str]:
        return [FLAG, str(self.file)] if self.file is not None else []

    @property
    def env(self) -> dict[str, str]:
        return {self.env_var: self.key} if self.env_var else {}

    def remove(self) -> None:
        if self.file is not None:
            self.file.unlink(missing_ok=True)


def issue_env(var: str) -> EngineKey:
    """A new key for one start of an engine that reads it from the environment variable ``var``."""
    return EngineKey(secrets.token_urlsafe(32), env_var=var)


def issue(engine: Engine | None, run_dir: Path, stem: str) -> EngineKey | None:
    """A new key for one start of ``engine`` (``None`` when it cannot take one), written to a
    0600 file ``<run_dir>/<stem>-<random>.key`` created exclusively (no symlink is followed)."""
    if engine is None or FLAG not in engine.capabilities:
        return None
    key = secrets.token_urlsafe(32)
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / f"{stem}-{secrets.token_hex(4)}.key"
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(path, flags, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(key + "\n")
    except OSError as exc:
        raise StorageError(f"cannot write the engine's key file {path}: {exc.strerror}") from exc
    return EngineKey(key, path)
