"""The studio's one settings object.

Every field can be set by an environment variable ``LLAMASTUDIO_<FIELD>`` (upper case) and, for
the few that have one, by a CLI flag, which wins. Some also read the name the seeds' Docker images
use (``PORT``, ``HF_TOKEN``, ``MODEL``, ``CTX_SIZE`` …, see ``SEED_NAMES``): the ``LLAMASTUDIO_``
name wins over it when both are set. A ``.env`` file in the working directory is read too; the
real environment wins over it. The README's settings table and ``.env.example`` are checked
against this class (``tests/test_docs.py``, ``tests/test_env.py``): a field added here must be
documented in both.
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


def _names(field: str, *seed: str) -> AliasChoices:
    """The environment names of a field: ``LLAMASTUDIO_<FIELD>`` first (it wins), then the seeds'
    names, then the field's own name (keyword arguments: CLI flags)."""
    return AliasChoices(f"LLAMASTUDIO_{field.upper()}", *seed, field)


# field → the seeds' environment names it also reads (README "Settings", ``.env.example``)
SEED_NAMES: dict[str, tuple[str, ...]] = {
    "host": ("HOST",),
    "port": ("PORT",),
    "lmdeploy_port": ("LMDEPLOY_PORT",),
    "lmdeploy_bin": ("LMDEPLOY_BIN",),
    "llama_server": ("LLAMA_SERVER_PATH",),
    "github_token": ("GITHUB_TOKEN",),
    "hf_token": ("HF_TOKEN", "HUGGINGFACE_API_KEY"),
    "hf_endpoint": ("HF_ENDPOINT",),
    "cuda_visible_devices": ("CUDA_VISIBLE_DEVICES",),
    "model": ("MODEL",),
    "model_path": ("MODEL_PATH",),
    "ctx_size": ("CTX_SIZE", "CONTEXT_SIZE"),
    "n_gpu_layers": ("N_GPU_LAYERS",),
    "parallel": ("PARALLEL",),
    "batch_size": ("BATCH_SIZE",),
    "ubatch_size": ("UBATCH_SIZE",),
    "max_tokens": ("MAX_TOKENS",),
}


def _seed(field: str) -> AliasChoices:
    return _names(field, *SEED_NAMES[field])


class Settings(BaseSettings):
    """Studio configuration; environment prefix ``LLAMASTUDIO_``."""

    model_config = SettingsConfigDict(
        env_prefix="LLAMASTUDIO_",
        extra="ignore",
        frozen=True,
        populate_by_name=True,
        env_file=".env",  # in the working directory; the real environment wins over it
        env_file_encoding="utf-8",
        env_ignore_empty=True,  # `MODEL=` in a compose file or .env means unset
    )

    data_dir: Path = Field(
        default_factory=_default_data_dir,
        description="Directory holding the SQLite database, logs, engines and downloads.",
    )
    host: str = Field(
        default="127.0.0.1",
        validation_alias=_seed("host"),
        description="Address the UI + management API and the gateway bind to (HOST also works). "
        "Loopback unless you mean it.",
    )
    port: int = Field(
        default=8080,
        ge=0,
        le=65535,
        validation_alias=_seed("port"),
        description="Port of the UI + management API (PORT also works); in one-model mode it "
        "also answers the OpenAI API (`/v1/…`) and `/health`, as the seeds' single-model images do.",
    )
    gateway_port: int = Field(
        default=2000, ge=0, le=65535, description="Port of the OpenAI-compatible gateway."
    )
    lmdeploy_port: int = Field(
        default=2001,
        ge=-1,
        le=65535,
        validation_alias=_seed("lmdeploy_port"),
        description="Port of the second OpenAI-compatible listener, which serves only the models "
        "running on LMDeploy (the seed's safetensors runner); LMDEPLOY_PORT also works; -1 turns it off.",
    )
    lmdeploy_bin: Path | None = Field(
        default=None,
        validation_alias=_seed("lmdeploy_bin"),
        description="An `lmdeploy` CLI to register as an LMDeploy engine at start (LMDEPLOY_BIN also "
        "works); without it, an `lmdeploy` on PATH is registered when no LMDeploy engine is.",
    )
    llama_server: Path | None = Field(
        default=None,
        validation_alias=_seed("llama_server"),
        description="A llama-server binary registered as the llama.cpp engine at start when none is "
        "(LLAMA_SERVER_PATH also works; `make run` points it at the rig's build).",
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
        validation_alias=_seed("github_token"),
        description="Token for the GitHub API (rate limits, private forks); GITHUB_TOKEN also works.",
    )
    hf_token: str | None = Field(
        default=None,
        validation_alias=_seed("hf_token"),
        description="Hugging Face token for gated and private models (HF_TOKEN and "
        "HUGGINGFACE_API_KEY also work); set this way it is read-only in the UI.",
    )
    hf_endpoint: str = Field(
        default="https://huggingface.co",
        validation_alias=_seed("hf_endpoint"),
        description="Base URL of the Hugging Face Hub (HF_ENDPOINT also works): a mirror, or a "
        "local server speaking its protocol.",
    )
    cuda_visible_devices: str | None = Field(
        default=None,
        validation_alias=_seed("cuda_visible_devices"),
        description="The NVIDIA GPUs the studio plans for and its engines see (CUDA_VISIBLE_DEVICES "
        "also works): indices or UUIDs, comma-separated; `all` = every GPU; `none` = no GPU (so does "
        "an empty CUDA_VISIBLE_DEVICES in the environment).",
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
    pin_threads: bool = Field(
        default=False,
        description="Pin each compute thread of a llama.cpp model that takes every core to a CPU of its own "
        "(`-C MASK --cpu-strict 1`, `GOMP_SPINCOUNT=50000`; GNU OpenMP builds): for a machine that serves "
        "and does nothing else. It cuts the gateway's p99 on small requests, and it leaves less CPU, in "
        "stalls of up to ~0.1 s, to anything else running while a model generates.",
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
    # -- one-model mode (the seeds' single-model images): ``serve`` downloads, configures, loads
    # and pins this one model at start; ``services/onemodel.py``
    model: str | None = Field(
        default=None,
        validation_alias=_seed("model"),
        description="One-model mode (MODEL also works): `org/repo:QUANT`, or `org/repo` to pick "
        "the largest quant that fits this machine fully; downloaded if missing, then loaded and "
        "pinned when `serve` starts.",
    )
    config_file: Path | None = Field(
        default=None,
        description="A llama-swap config.yaml the studio keeps its served models in sync with "
        "(`serve --config`): imported at start and again whenever it changes; the models it "
        "defines are owned by it. An invalid version is reported and the previous one keeps serving.",
    )
    model_path: Path | None = Field(
        default=None,
        validation_alias=_seed("model_path"),
        description="One-model mode with a local GGUF file instead (MODEL_PATH also works); it wins "
        "over `model`.",
    )
    model_name: str | None = Field(
        default=None,
        description="One-model mode: the name the model is served under (default: `model` as "
        "given, or the file's name for `model_path`).",
    )
    ctx_size: int | None = Field(
        default=None,
        ge=1,
        le=1 << 24,
        validation_alias=_seed("ctx_size"),
        description="One-model mode: context size, all slots together (CTX_SIZE and CONTEXT_SIZE "
        "also work); default: the planner's choice for this machine.",
    )
    n_gpu_layers: str | None = Field(
        default=None,
        pattern=r"^(\d{1,6}|all|auto)$",
        validation_alias=_seed("n_gpu_layers"),
        description="One-model mode: layers on the GPUs, a number, `all` or `auto` (N_GPU_LAYERS "
        "also works; 99 = all); default: the planner's choice.",
    )
    parallel: int | None = Field(
        default=None,
        ge=1,
        le=1024,
        validation_alias=_seed("parallel"),
        description="One-model mode: parallel slots (PARALLEL also works); default: llama-server's.",
    )
    batch_size: int | None = Field(
        default=None,
        ge=1,
        le=1 << 20,
        validation_alias=_seed("batch_size"),
        description="One-model mode: logical batch size (BATCH_SIZE also works); default: the planner's.",
    )
    ubatch_size: int | None = Field(
        default=None,
        ge=1,
        le=1 << 20,
        validation_alias=_seed("ubatch_size"),
        description="One-model mode: physical batch size (UBATCH_SIZE also works); default: the planner's.",
    )
    max_tokens: int | None = Field(
        default=None,
        ge=1,
        le=1 << 24,
        validation_alias=_seed("max_tokens"),
        description="One-model mode: tokens generated for a request that sets no `max_tokens` "
        "(MAX_TOKENS also works; llama-server's `-n`); default: until the context is full.",
    )

    @property
    def one_model(self) -> bool:
        """Whether ``serve`` runs in one-model mode (``model`` or ``model_path`` set)."""
        return bool(self.model or self.model_path)

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
