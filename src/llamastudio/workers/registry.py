"""Registered RPC workers, stored in the key-value ``settings`` table under ``workers`` (no
migration): endpoint, status port, key (never returned by the API), and the worker's last
answer (devices, memory offered, llama.cpp build) with the link bandwidth measured once at
registration. ``WorkerService`` health-checks them on demand.

Database calls block: callers on the event loop run them in a thread (``WorkerService`` does).
"""

from __future__ import annotations

import asyncio
import ipaddress
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import httpx
from pydantic import BaseModel

from llamastudio.errors import InvalidInput, NotFound
from llamastudio.store import Database
from llamastudio.store.settings import read_setting, save_setting

KEY = "workers"
MAX_WORKERS = 64
TIMEOUT = 3.0
BANDWIDTH_MIB = 64


@dataclass
class StoredWorker:
    host: str
    port: int
    status_port: int
    key: str
    link_mib_s: float | None = None
    status: dict[str, Any] = field(default_factory=dict)  # its last /status answer
    checked_at: float = 0.0

    @property
    def endpoint(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    @property
    def status_url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.status_port}"


class WorkerView(BaseModel):
    """A worker as the API shows it (never its key)."""

    endpoint: str
    status_port: int
    available: bool
    reason: str = ""
    version: str = ""
    commit: str = ""
    protocol: str = ""
    devices: list[dict[str, Any]] = []
    link_mib_s: float | None = None
    kind: str = "rpc"


def parse_endpoint(value: str) -> tuple[str, int]:
    host, sep, port = value.strip().rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65535:
        raise InvalidInput(f"worker {value!r}: give HOST:PORT of its rpc-server, e.g. 10.0.0.7:50052")
    if host != "localhost":
        try:
            ipaddress.ip_address(host)
        except ValueError:
            if not all(part.isalnum() or "-" in part for part in host.split(".")):
                raise InvalidInput(f"worker {value!r}: {host!r} is not a host name or address") from None
    return host, int(port)


def load(db: Database) -> list[StoredWorker]:
    value = read_setting(db, KEY)
    out = []
    for item in value if isinstance(value, list) else []:
        try:
            out.append(StoredWorker(**item))
        except TypeError:
            continue  # written by another version: skipped, never a crash
    return out


def save(db: Database, workers: list[StoredWorker]) -> None:
    save_setting(db, KEY, [asdict(w) for w in workers])


def view(w: StoredWorker, reason: str = "") -> WorkerView:
    st = w.status
    build = st.get("llama_cpp") or {}
    alive = bool(st) and bool((st.get("rpc") or {}).get("alive"))
    if not reason and st and not alive:
        reason = "its rpc-server is not running"
    return WorkerView(
        endpoint=w.endpoint,
        status_port=w.status_port,
        available=alive and not reason,
        reason=reason or ("" if st else "not checked yet"),
        version=str(build.get("version") or ""),
        commit=str(build.get("commit") or ""),
        protocol=str(st.get("protocol") or ""),
        devices=list(st.get("devices") or []),
        link_mib_s=w.link_mib_s,
    )


async def fetch_status(client: httpx.AsyncClient, w: StoredWorker) -> tuple[dict[str, Any], str]:
    """The worker's ``/status`` and an empty reason, or ``{}`` and why not."""
    try:
        r = await client.get(
            w.status_url + "/status", headers={"Authorization": f"Bearer {w.key}"}, timeout=TIMEOUT
        )
    except httpx.HTTPError as exc:
        return {}, f"its status endpoint {w.status_url} does not answer ({type(exc).__name__})"
    if r.status_code == 401:
        return {}, "the worker refused the key"
    if r.status_code != 200:
        return {}, f"its status endpoint answered {r.status_code}"
    try:
        body = r.json()
    except ValueError:
        return {}, "its status endpoint answered something that is not JSON"
    return (body, "") if isinstance(body, dict) else ({}, "its status endpoint answered a non-object")


async def measure_link(client: httpx.AsyncClient, w: StoredWorker, mib: int = BANDWIDTH_MIB) -> float | None:
    """MiB/s of one ``mib`` MiB download from the worker's status endpoint (the same host and
    network path as its rpc-server); None if it fails."""
    start = time.perf_counter()
    got = 0
    try:
        async with client.stream(
            "GET",
            w.status_url + "/bandwidth",
            params={"mib": mib},
            headers={"Authorization": f"Bearer {w.key}"},
            timeout=60,
        ) as r:
            if r.status_code != 200:
                return None
            async for chunk in r.aiter_bytes():
                got += len(chunk)
    except httpx.HTTPError:
        return None
    elapsed = time.perf_counter() - start
    return round(got / (1 << 20) / elapsed, 1) if got and elapsed > 0 else None


class WorkerService:
    """Add, remove, list and health-check the registered workers."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self._reasons: dict[str, str] = {}

    async def add(self, endpoint: str, key: str, status_port: int | None = None) -> WorkerView:
        host, port = parse_endpoint(endpoint)
        if not key or not key.isprintable():
            raise InvalidInput("a worker needs its key (printable text): see `llamastudio worker`")
        sport = status_port or port + 1
        if not 0 < sport < 65536:
            raise InvalidInput(f"status port {sport}: 1..65535")
        w = StoredWorker(host, port, sport, key)
        async with httpx.AsyncClient() as client:
            w.status, reason = await fetch_status(client, w)
            if not reason:
                w.link_mib_s = await measure_link(client, w)
        w.checked_at = time.time()
        workers = await asyncio.to_thread(load, self.db)
        kept = [x for x in workers if x.endpoint != w.endpoint]
        if len(kept) >= MAX_WORKERS:
            raise InvalidInput(f"at most {MAX_WORKERS} workers")
        await asyncio.to_thread(save, self.db, [*kept, w])
        self._reasons[w.endpoint] = reason
        return view(w, reason)

    async def remove(self, endpoint: str) -> None:
        host, port = parse_endpoint(endpoint)
        workers = await asyncio.to_thread(load, self.db)
        kept = [w for w in workers if (w.host, w.port) != (host, port)]
        if len(kept) == len(workers):
            raise NotFound(f"no worker {endpoint} is registered")
        await asyncio.to_thread(save, self.db, kept)

    async def check(self) -> list[WorkerView]:
        """Every worker, each asked for its status now (at most ``TIMEOUT`` seconds)."""
        workers = await asyncio.to_thread(load, self.db)
        async with httpx.AsyncClient() as client:
            answers = await asyncio.gather(*(fetch_status(client, w) for w in workers))
        views = []
        for w, (status, reason) in zip(workers, answers, strict=True):
            if status:
                w.status, w.checked_at = status, time.time()
            else:
                w.status = {**w.status, "rpc": {**(w.status.get("rpc") or {}), "alive": False}}
            self._reasons[w.endpoint] = reason
            views.append(view(w, reason))
        await asyncio.to_thread(_merge_status, self.db, workers)
        return views


def _merge_status(db: Database, checked: list[StoredWorker]) -> None:
    """Store the fresh answers without undoing an add/remove that happened meanwhile."""
    by_endpoint = {w.endpoint: w for w in checked}
    current = load(db)
    for w in current:
        fresh = by_endpoint.get(w.endpoint)
        if fresh is not None and fresh.key == w.key:
            w.status, w.checked_at = fresh.status, fresh.checked_at
    save(db, current)
