"""Shared state of the running service and the dependency aliases routes use."""

from __future__ import annotations

import hmac
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from llamastudio.config import Settings
from llamastudio.engines.jobs import EngineJobs
from llamastudio.engines.registry import EngineRegistry
from llamastudio.errors import CommandsNotAllowed, Unauthorized
from llamastudio.events import EventBus
from llamastudio.gateway.metrics import Metrics
from llamastudio.guard import OWNER_HEADER, key_ok
from llamastudio.hardware.monitor import SystemMonitor
from llamastudio.hub.jobs import Downloads
from llamastudio.jobs import JobManager
from llamastudio.services import StudioService
from llamastudio.serving.configs import ModelConfig, runs_command


@dataclass
class AppState:
    """The long-lived objects routes use, built once by the composition root (``app.py``)."""

    settings: Settings
    service: StudioService  # serving: configurations, models, status snapshots (the façade)
    engines: EngineRegistry  # the runtime's registry: builds and installs add to it
    jobs: JobManager
    downloads: Downloads
    bus: EventBus
    engine_jobs: EngineJobs
    monitor: SystemMonitor
    metrics: Metrics
    owner_key: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    started: float = field(default_factory=time.monotonic)


def get_state(request: Request) -> AppState:
    state: AppState = request.app.state.studio
    return state


StateDep = Annotated[AppState, Depends(get_state)]
_bearer = HTTPBearer(auto_error=False)


def require_api_key(
    request: Request,
    state: StateDep,
    _creds: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> None:
    """When ``api_key`` is configured, every management route needs ``Authorization: Bearer``.

    The :class:`~llamastudio.guard.Guard` middleware already checked it before the body was
    read; this is the second line (and declares the scheme in the OpenAPI spec)."""
    key = state.settings.api_key
    if key and not key_ok(request.scope["headers"], [key]):
        raise Unauthorized("missing or wrong API key (send `Authorization: Bearer <key>`)")


def require_commands(state: AppState, request: Request, what: str | None) -> None:
    """Refuse (403) to store something that runs a command of the caller's choosing, unless
    ``allow_commands`` is set or the caller proves it is the data directory's owner (the CLI on
    this machine sends the 0600 owner key); ``what`` says what would run (None: nothing does)."""
    if not what or state.settings.allow_commands:
        return
    owner = request.headers.get(OWNER_HEADER)
    if owner and hmac.compare_digest(owner.encode(), state.owner_key.encode()):
        return
    raise CommandsNotAllowed(
        f"{what}: running commands of the caller's choosing is off for the API; enable it "
        "with LLAMASTUDIO_ALLOW_COMMANDS=1 (or use the CLI on the studio's machine)"
    )


def config_permit(state: AppState, request: Request) -> Callable[[ModelConfig], None]:
    """A permit that refuses (403) a configuration that runs a command of the caller's choosing
    unless the caller may (``require_commands``)."""

    def permit(cfg: ModelConfig) -> None:
        require_commands(state, request, runs_command(cfg))

    return permit
