"""Shared state of the running service and the dependency aliases routes use."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from llamastudio.config import Settings
from llamastudio.engines.jobs import EngineJobs
from llamastudio.errors import StudioError
from llamastudio.events import EventBus
from llamastudio.gateway.metrics import Metrics
from llamastudio.hardware.monitor import SystemMonitor
from llamastudio.hub.jobs import DownloadManager
from llamastudio.runtime.manager import Runtime
from llamastudio.store import Database


@dataclass
class AppState:
    settings: Settings
    db: Database
    downloads: DownloadManager
    runtime: Runtime
    bus: EventBus
    engine_jobs: EngineJobs
    monitor: SystemMonitor
    metrics: Metrics
    started: float = field(default_factory=time.monotonic)


def get_state(request: Request) -> AppState:
    state: AppState = request.app.state.studio
    return state


StateDep = Annotated[AppState, Depends(get_state)]
_bearer = HTTPBearer(auto_error=False)


class Unauthorized(StudioError):
    status_code = 401
    code = "unauthorized"


def require_api_key(
    state: StateDep, creds: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
) -> None:
    """When ``api_key`` is configured, every management route needs ``Authorization: Bearer``."""
    key = state.settings.api_key
    if key and (creds is None or creds.credentials != key):
        raise Unauthorized("missing or wrong API key (send `Authorization: Bearer <key>`)")
