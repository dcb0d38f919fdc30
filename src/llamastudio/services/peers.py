"""The peer registry: remote OpenAI-compatible servers (another studio, llama-server, llama-swap,
vLLM …) whose models the gateway lists and routes requests to.

Peers are stored in the database (``serving/peer_store.py``): the user's (API/CLI) and a
llama-swap import's (``set_imported_peers``). Every ``INTERVAL`` seconds each is health-checked
with ``GET {url}/v1/models`` (its own key, ``TIMEOUT`` seconds, redirects never followed), which
also refreshes its model list and, for a peer studio, each model's state and load (its
``/v1/models`` carries the same status as its ``/api/served``). A peer that does not answer is
unavailable within ``INTERVAL + TIMEOUT`` seconds — at once when a relayed request to it failed
(``suspect``) — and its models answer 503 naming it.

Loops: each studio has a random ``instance`` id, sent upstream in ``VIA`` with every request to a
peer (health checks included). A gateway receiving its own id answers 508 (the peer is the studio
itself); a request that came from a peer is served by local models only, never relayed again.

Placement (``choose``, a pure function of the peers' last answers): the gateway prefers a local
model before asking; among peers, one that has the model loaded, then one loading it, then the
rest, each by fewest requests in flight and queued, then by name.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from llamastudio.errors import InvalidInput, NotFound, PeerUnavailable
from llamastudio.services.snapshots import Snapshot
from llamastudio.serving import peer_store
from llamastudio.serving.peers import PeerSpec
from llamastudio.store import Database

log = logging.getLogger(__name__)
INTERVAL = 2.0  # seconds between health checks
TIMEOUT = 2.0  # seconds a peer has to answer one
VIA = "x-llamastudio-via"  # the studio instances a request went through
MAX_LIST = 4 << 20  # bytes of a peer's /v1/models read at most
_READY = frozenset({"ready", "loaded"})
_LOADING = frozenset({"starting", "loading"})


class PeerView(Snapshot):
    """A peer as the API shows it (its API key never: only whether it has one)."""

    name: str
    url: str
    has_key: bool
    models_filter: list[str]
    strip_params: list[str]
    set_params: dict[str, Any]
    imported: bool
    available: bool
    reason: str | None
    models: list[str]
    checked_s_ago: float | None


@dataclass
class PeerState:
    spec: PeerSpec
    imported: bool = False
    available: bool = False
    reason: str | None = "not checked yet"
    checked: float | None = None
    listed: dict[str, dict[str, Any]] = field(default_factory=dict)  # id → its /v1/models entry

    def offers(self) -> list[str]:
        """The model ids routed to it: its ``models`` filter when set, else what it lists."""
        if self.spec.models:
            return list(self.spec.models)
        return list(self.listed)


def rank(peer: PeerState, model: str) -> tuple[int, int, str]:
    """Sort key of a peer for ``model``: loaded, loading, other; fewest waiting; name."""
    status = peer.listed.get(model, {}).get("status")
    state = ""
    waiting = 0
    if isinstance(status, dict):
        state = str(status.get("state") or status.get("value") or "")
        for key in ("in_flight", "queued"):
            value = status.get(key)
            waiting += value if isinstance(value, int) else 0
    elif model in peer.listed:
        state = "loaded"  # a plain server (llama-server, vLLM) lists what it has loaded
    order = 0 if state in _READY else 1 if state in _LOADING else 2
    return order, waiting, peer.spec.name


def choose(peers: list[PeerState], model: str) -> PeerState | None:
    """The peer to send a request for ``model`` to; None when no peer offers it. Raises
    ``PeerUnavailable`` (503, naming them) when only unavailable peers offer it."""
    offering = [p for p in peers if model in p.offers()]
    if not offering:
        return None
    up = [p for p in offering if p.available]
    if not up:
        why = "; ".join(f"peer {p.spec.name} ({p.spec.url}): {p.reason}" for p in offering)
        raise PeerUnavailable(f"model {model!r} is served by a peer that does not answer — {why}")
    return min(up, key=lambda p: rank(p, model))


class PeerService:
    def __init__(self, db: Database, interval: float = INTERVAL, timeout: float = TIMEOUT) -> None:
        self.db = db
        self.interval = interval
        self.timeout = timeout
        self.instance = secrets.token_hex(8)  # this studio, in VIA (loops)
        self._peers: dict[str, PeerState] = {}
        self._session: aiohttp.ClientSession | None = None
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()

    # -- lifecycle -----------------------------------------------------------------------------
    async def start(self) -> None:
        await self._reload()
        self._task = asyncio.create_task(self._loop(), name="peer health checks")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._session is not None:
            await self._session.close()

    async def _reload(self) -> None:
        """Re-read the stored peers; a peer whose spec is unchanged keeps its last answer."""

        def read() -> list[tuple[PeerSpec, bool]]:
            user = peer_store.load(self.db, peer_store.USER)
            imported = peer_store.load(self.db, peer_store.IMPORTED)
            return [(p, True) for p in imported] + [(p, False) for p in user]

        fresh: dict[str, PeerState] = {}
        for spec, imported in await asyncio.to_thread(read):
            old = self._peers.get(spec.name)
            if spec.name in fresh:
                continue  # an imported peer wins over a user one of the same name
            fresh[spec.name] = (
                old if old is not None and old.spec == spec else PeerState(spec, imported=imported)
            )
            fresh[spec.name].imported = imported
        self._peers = fresh

    # -- health --------------------------------------------------------------------------------
    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.timeout), auto_decompress=True
            )
        return self._session

    def headers(self, spec: PeerSpec, via: str = "") -> dict[str, str]:
        """What every request to ``spec`` carries: its own key (never a client's) and VIA."""
        out = {VIA: f"{via},{self.instance}" if via else self.instance}
        if spec.api_key:
            out["Authorization"] = f"Bearer {spec.api_key}"
        return out

    async def _loop(self) -> None:
        while True:
            peers = list(self._peers.values())
            await asyncio.gather(*(self.check(p) for p in peers), return_exceptions=True)
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.interval)

    async def check(self, peer: PeerState) -> None:
        """One health check; the peer's state is set from its answer (never raises)."""
        spec = peer.spec
        try:
            async with self.session().get(
                spec.url + "/v1/models", headers=self.headers(spec), allow_redirects=False
            ) as r:
                raw = await r.content.read(MAX_LIST + 1)
                status, location = r.status, r.headers.get("location", "")
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            self._down(peer, f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)
            return
        if status == 508:
            self._down(peer, "this peer is the studio itself (a loop): remove it")
        elif 300 <= status < 400:
            self._down(peer, f"it redirects to {location[:200]!r}: redirects are not followed")
        elif status != 200:
            self._down(peer, f"GET /v1/models answered HTTP {status}{_message(raw)}")
        elif len(raw) > MAX_LIST:
            self._down(peer, f"its model list is over {MAX_LIST >> 20} MiB")
        else:
            listed = _listed(raw)
            if listed is None:
                self._down(peer, "GET /v1/models did not answer an OpenAI model list")
                return
            if not peer.available:
                log.info("peer %s (%s) is available: %d models", spec.name, spec.url, len(listed))
            peer.available, peer.reason, peer.listed = True, None, listed
            peer.checked = time.monotonic()

    def _down(self, peer: PeerState, reason: str) -> None:
        if peer.available:
            log.warning("peer %s (%s) is unavailable: %s", peer.spec.name, peer.spec.url, reason)
        peer.available, peer.reason, peer.checked = False, reason, time.monotonic()

    def suspect(self, model: str) -> None:
        """A relayed request for ``model`` failed: check the peers at once."""
        self._wake.set()

    # -- what the gateway asks -----------------------------------------------------------------
    def choose(self, model: str) -> PeerState | None:
        return choose(list(self._peers.values()), model)

    def entries(self, local: set[str]) -> list[dict[str, Any]]:
        """``/v1/models`` entries of the peers' models that no local model has (one per id, from
        the peer placement would pick), each naming its peer (``owned_by``, ``peer``)."""
        out: dict[str, dict[str, Any]] = {}
        peers = list(self._peers.values())
        for peer in peers:
            for model in peer.offers():
                if model in local or model in out:
                    continue
                with contextlib.suppress(PeerUnavailable):
                    chosen = choose(peers, model) or peer
                    entry = dict(chosen.listed.get(model) or {"id": model, "object": "model", "created": 0})
                    entry["owned_by"] = chosen.spec.name
                    entry["peer"] = chosen.spec.name
                    out[model] = entry
                    continue
                out[model] = {
                    "id": model,
                    "object": "model",
                    "created": 0,
                    "owned_by": peer.spec.name,
                    "peer": peer.spec.name,
                    "status": {"state": "unavailable", "reason": peer.reason},
                }
        return list(out.values())

    # -- the registry (API, CLI, llama-swap import) ----------------------------------------------
    def views(self) -> list[PeerView]:
        now = time.monotonic()
        return [
            PeerView(
                name=p.spec.name,
                url=p.spec.url,
                has_key=bool(p.spec.api_key),
                models_filter=p.spec.models,
                strip_params=p.spec.strip_params,
                set_params=p.spec.set_params,
                imported=p.imported,
                available=p.available,
                reason=p.reason,
                models=p.offers(),
                checked_s_ago=None if p.checked is None else round(now - p.checked, 1),
            )
            for p in self._peers.values()
        ]

    async def add(self, spec: PeerSpec) -> PeerView:
        """Store a peer (replacing one of that name) and check it once before answering."""
        spec = await asyncio.to_thread(peer_store.add, self.db, spec)
        await self._reload()
        await self.check(self._peers[spec.name])
        return next(v for v in self.views() if v.name == spec.name)

    async def remove(self, name: str) -> None:
        if not await asyncio.to_thread(peer_store.remove, self.db, name):
            peer = self._peers.get(name)
            if peer is not None and peer.imported:
                raise InvalidInput(
                    f"peer {name!r} comes from the imported llama-swap config: remove it there"
                )
            raise NotFound(f"no peer named {name!r}")
        await self._reload()

    async def set_imported_peers(self, specs: list[PeerSpec]) -> None:
        """Replace the peers a llama-swap import brought (each checked; all or none stored).
        An import that stores them in its own transaction (``peer_store.write``) calls
        ``reload`` instead."""
        checked = [peer_store.check(s) for s in specs]
        await asyncio.to_thread(peer_store.save, self.db, peer_store.IMPORTED, checked)
        await self.reload()

    async def reload(self) -> None:
        """Re-read the stored peers (changed elsewhere) and check them at once."""
        await self._reload()
        self._wake.set()


def _listed(raw: bytes) -> dict[str, dict[str, Any]] | None:
    """A ``/v1/models`` body's entries by id (entries without a string id are skipped)."""
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError):
        return None
    items = data.get("data") if isinstance(data, dict) else None
    if not isinstance(items, list):
        return None
    return {e["id"]: e for e in items if isinstance(e, dict) and isinstance(e.get("id"), str)}


def _message(raw: bytes) -> str:
    with contextlib.suppress(ValueError, RecursionError, AttributeError, TypeError):
        return f": {str(json.loads(raw)['error']['message'])[:300]}"
    return ""
