"""The studio's one settings object.

Every field can be set by an environment variable ``LLAMASTUDIO_<FIELD>`` (upper case) and, for
the few that have one, by a CLI flag, which wins. The README's settings table is checked against
this class by ``tests/test_docs.py``: a field added here must be documented there.
"""

from __future__ import annotations

import json
from functools import cached_property
from pathlib import Path
from typing import Annotated, Literal

import platformdirs
from pydantic import AliasChoices, Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from llamastudio.errors import StorageError


def _default_data_dir() -> Path:
    return Path(platformdirs.user_data_dir("llamastudio", appauthor=False))


class Settings(BaseSettings):
    """Studio configuration; environment prefix ``LLAMASTUDIO_``."""

    model_config = SettingsConfigDict(
        env_prefix="LLAMASTUDIO_", extra="ignore", frozen=True, populate_by_name=True
    )

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
        default=2001,
        ge=-1,
        le=65535,
        validation_alias=AliasChoices("LLAMASTUDIO_LMDEPLOY_PORT", "LMDEPLOY_PORT", "lmdeploy_port"),
        description="Port of the second OpenAI-compatible listener, which serves only the models "
        "running on LMDeploy (the seed's safetensors runner); LMDEPLOY_PORT also works; -1 turns it off.",
    )
    lmdeploy_bin: Path | None = Field(
        default=None,
        validation_alias=AliasChoices("LLAMASTUDIO_LMDEPLOY_BIN", "LMDEPLOY_BIN", "lmdeploy_bin"),
        description="An `lmdeploy` CLI to register as an LMDeploy engine at start (LMDEPLOY_BIN also "
        "works); without it, an `lmdeploy` on PATH is registered when no LMDeploy engine is.",
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
        le=10 * 365 * 86400,
        allow_inf_nan=False,
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
        validation_alias=AliasChoices("LLAMASTUDIO_GITHUB_TOKEN", "GITHUB_TOKEN", "github_token"),
        description="Token for the GitHub API (rate limits, private forks); GITHUB_TOKEN also works.",
    )
    allowed_hosts: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Host names (besides `localhost` and IP addresses, always allowed) that requests "
        "may name in their Host header: the name you reach the studio by on a LAN or behind a proxy "
        "(`studio.lan`, `name:port`, `.example.com` for a domain and its subdomains, `*` for any). "
        "Comma-separated. Guards against DNS rebinding.",
    )
    cors_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Web origins (e.g. `https://chat.example.com`) allowed to call the gateway from "
        "a browser; comma-separated. Off by default: other web pages cannot use the gateway.",
    )
    allow_commands: bool = Field(
        default=False,
        description="Let the API create or edit things that run a command of the caller's choosing: "
        "`command` model configs, imports containing them, builds from a local source or another "
        "repository. Off by default; the CLI on this machine is not restricted.",
    )
    insecure: bool = Field(
        default=False,
        description="Allow binding a non-loopback address without API keys (anyone who can reach "
        "the port can then drive the studio). `serve --insecure` sets it.",
    )
    max_body_mb: int = Field(
        default=64,
        ge=1,
        le=4096,
        description="Largest request body (MiB) the management API and gateway accept.",
    )
    preload: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Models to start when the studio starts (comma-separated names, in order), "
        "besides configurations with `preload: true`; each is started if it fits next to those "
        "before it.",
    )
    hung_after: float = Field(
        default=30.0,
        ge=0.5,
        le=3600,
        allow_inf_nan=False,
        description="Seconds a ready engine may leave its health check unanswered before it is "
        "declared hung, killed and started again on the next request (requests waiting for it are "
        "kept).",
    )
    url: str | None = Field(
        default=None,
        description="URL of the studio the CLI talks to (`ps`, `run`, `stop`, `models config`…). "
        "Default: the studio serving the data directory (from `<data>/run/studio.json`), else "
        "`http://127.0.0.1:<port>`. `--url` sets it.",
    )
    log_level: Literal["debug", "info", "warning", "error"] = Field(
        default="info", description="Log level of the service."
    )
    asyncio_debug: bool = Field(
        default=False,
        description="Run the serving loop in asyncio debug mode (so do `PYTHONASYNCIODEBUG=1` and "
        "`python -X dev`): every callback that holds the loop longer than `slow_callback_s` is "
        "logged as `Executing … took N seconds`, with the loop thread's stack (`loopdebug.py`). "
        "Uses the stdlib loop (uvloop times only timer callbacks).",
    )
    slow_callback_s: float = Field(
        default=0.1,
        gt=0,
        le=60,
        allow_inf_nan=False,
        description="In asyncio debug mode: seconds a callback may hold the loop before it is logged.",
    )

    @field_validator("allowed_hosts", "cors_origins", "preload", mode="before")
    @classmethod
    def _split(cls, value: object) -> object:
        if isinstance(value, str):  # env: a comma-separated list (JSON lists work too)
            text = value.strip()
            if not text.startswith("["):
                return [v.strip() for v in text.split(",") if v.strip()]
            return json.loads(text)
        return value

    @field_validator("data_dir", mode="after")
    @classmethod
    def _expand(cls, value: Path) -> Path:
        return value.expanduser().resolve()

    @cached_property
    def db_path(self) -> Path:
        return self.data_dir / "studio.db"

    @property
    def header_cache_dir(self) -> Path:
        """GGUF headers read from the Hub (fit before download), keyed by file digest."""
        return self.data_dir / "cache" / "headers"

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
