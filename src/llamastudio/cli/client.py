"""The CLI as a client of the studio that serves its data directory.

Which studio: ``--url`` / ``LLAMASTUDIO_URL`` when given (the user named it); else the one recorded
in ``<data>/run/studio.json`` by ``serve`` (its process alive); else ``http://127.0.0.1:<port>`` —
but only if the studio answering there says it serves this data directory. Talking to another
data directory's studio (``serve --port N`` elsewhere, ``ps`` here) is refused with the reason.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import typer

from llamastudio import runinfo
from llamastudio.cli.context import settings
from llamastudio.config import Settings
from llamastudio.errors import (
    Conflict,
    Forbidden,
    InvalidInput,
    NotFound,
    StudioError,
    StudioUnreachable,
    Unauthorized,
)
from llamastudio.guard import CLIENT_HEADER, OWNER_HEADER

_BY_STATUS: dict[int, type[StudioError]] = {
    400: InvalidInput,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    413: InvalidInput,
    415: InvalidInput,
    422: InvalidInput,
}


@dataclass(frozen=True)
class Target:
    url: str
    gateway_url: str
    owner_key: str | None  # from the data directory: lets this machine's owner run commands


def _base(s: Settings, port: int) -> str:
    host = "127.0.0.1" if s.host in ("0.0.0.0", "::", "") else s.host
    return f"http://{host}:{port}"


def _headers(s: Settings, owner_key: str | None = None) -> dict[str, str]:
    headers = {CLIENT_HEADER: "cli"}  # bodyless POSTs (start, stop) need it (guard.py)
    if s.api_key:
        headers["Authorization"] = f"Bearer {s.api_key}"
    if owner_key:
        headers[OWNER_HEADER] = owner_key
    return headers


def running_studio(ctx: typer.Context) -> Target | None:
    """The studio serving this data directory, or None when none runs (``--url`` always counts)."""
    s = settings(ctx)
    if s.url:
        return Target(s.url.rstrip("/"), _base(s, s.gateway_port), None)
    info = runinfo.read(s.data_dir)
    if info is not None:
        return Target(info.url, info.gateway_url, runinfo.read_owner_key(s.data_dir))
    url = _base(s, s.port)
    try:
        r = httpx.get(f"{url}/api/status", headers=_headers(s), timeout=5)
    except httpx.HTTPError:
        return None
    if r.status_code != 200:
        return None
    try:
        served = Path(r.json()["data_dir"])
    except (ValueError, KeyError, TypeError):
        return None
    if served != s.data_dir:
        raise Conflict(
            f"the studio at {url} serves {served}, not {s.data_dir}: start one for this data directory "
            f"(`llamastudio --data-dir {s.data_dir} serve`) or name the studio with --url"
        )
    return Target(url, _base(s, s.gateway_port), None)


def target(ctx: typer.Context) -> Target:
    found = running_studio(ctx)
    if found is None:
        s = settings(ctx)
        raise StudioUnreachable(
            f"no studio serves {s.data_dir} (none recorded in run/studio.json, nothing at "
            f"{_base(s, s.port)}): start it with `llamastudio serve`, or name one with --url"
        )
    return found


def call(ctx: typer.Context, method: str, path: str, studio: Target | None = None, **kw: Any) -> Any:
    """One request to the studio; its errors become StudioErrors with its message."""
    studio = studio or target(ctx)
    try:
        r = httpx.request(
            method, studio.url + path, headers=_headers(settings(ctx), studio.owner_key), timeout=600, **kw
        )
    except httpx.HTTPError as exc:
        raise StudioUnreachable(
            f"the studio is not reachable at {studio.url} ({exc}): start it with `llamastudio serve`"
        ) from exc
    if r.status_code >= 400:
        try:
            message = r.json()["error"]["message"]
        except (ValueError, KeyError, TypeError):
            message = r.text[:500]
        raise _BY_STATUS.get(r.status_code, StudioError)(message)
    if not r.content:
        return None
    return r.json() if r.headers.get("content-type", "").startswith("application/json") else r.text
