"""The studio's one settings object.

Every field can be set by an environment variable ``LLAMASTUDIO_<FIELD>`` (upper case) and, for
the few that have one, by a CLI flag, which wins. The README's settings table is checked against
this class by ``tests/test_docs.py``: a field added here must be documented there.
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Literal

import platformdirs
from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from llamastudio.errors import StorageError


def _default_data_dir() -> Path:
    return Path(platformdirs.user_data_dir("llamastudio", appauthor=False))


class Settings(BaseSettings):
    """Studio configuration; environment prefix ``LLAMASTUDIO_``."""

    model_config = SettingsConfigDict(env_prefix="LLAMASTUDIO_", extra="ignore", frozen=True)

    data_dir: Path = Field(
        default_factory=_default_data_dir,
        description="Directory holding the SQLite database, logs, engines and downloads.",
    )
    host: str = Field(
        default="127.0.0.1",
        description="Address the UI + management API binds to. Loopback unless you mean it.",
    )
    port: int = Field(default=8080, ge=0, le=65535, description="Port of the UI + management API.")
    gateway_port: int = Field(
        default=2000, ge=0, le=65535, description="Port of the OpenAI-compatible gateway."
    )
    lmdeploy_port: int = Field(
        default=2001, ge=0, le=65535, description="Port of the LMDeploy (safetensors) endpoint."
    )
    llama_server: Path | None = Field(
        default=None,
        description="Path of the llama-server binary to use until engines are registered "
        "(`make run` points it at the rig's build).",
    )
    api_key: str | None = Field(
        default=None,
        description="When set, the management API requires `Authorization: Bearer <key>`.",
    )
    gateway_api_key: str | None = Field(
        default=None,
        description="When set, the gateway (port 2000) requires `Authorization: Bearer <key>` "
        "(or `x-api-key`); separate from the management key.",
    )
    hardware: str | None = Field(
        default=None,
        description="Plan and place models for this hardware profile (`cpu`, `2x24GiB`, `rtx4090`, "
        "a JSON file) instead of the detected GPUs and RAM.",
    )
    default_ttl: float = Field(
        default=600.0,
        ge=0,
        description="Seconds a model may sit idle before it is unloaded (0 = never); per-model TTL wins.",
    )
    github_api: str = Field(
        default="https://api.github.com",
        description="Base URL of the GitHub REST API used for llama.cpp releases.",
    )
    github_repo: str = Field(
        default="ggml-org/llama.cpp", description="Repository whose releases are offered."
    )
    github_token: str | None = Field(
        default=None,
        description="Token for the GitHub API (rate limits, private forks); GITHUB_TOKEN also works.",
    )
    log_level: Literal["debug", "info", "warning", "error"] = Field(
        default="info", description="Log level of the service."
    )

    @field_validator("data_dir", mode="after")
    @classmethod
    def _expand(cls, value: Path) -> Path:
        return value.expanduser().resolve()

    @cached_property
    def db_path(self) -> Path:
        return self.data_dir / "studio.db"

    @property
    def logs_dir(self) -> Path:
        return self.data_dir / "logs"

    @property
    def engines_dir(self) -> Path:
        return self.data_dir / "engines"

    @property
    def downloads_dir(self) -> Path:
        return self.data_dir / "downloads"

    def ensure_dirs(self) -> None:
        """Create the data directory layout; a failure is a StorageError with the path."""
        for path in (self.data_dir, self.logs_dir, self.engines_dir, self.downloads_dir):
            try:
                path.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StorageError(f"cannot create data directory {path}: {exc.strerror}") from exc
