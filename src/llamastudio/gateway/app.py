"""The gateway: every model behind one OpenAI-compatible endpoint (default 127.0.0.1:2000).

A plain ASGI app — no framework routing on the hot path. A request names its model in the JSON
body's ``model`` field (or ``?model=``); the runtime resolves names and aliases, starts the model
if needed (the scheduler queues, limits and evicts), and the request is relayed to that model's
engine (``relay.py``). Errors have the OpenAI shape plus ``source`` (``shapes.py``). Browsers get
the gateway's own CORS policy, never the engine's, and bodies must be JSON (``cors.py``,
``body.py``). Each engine answers only requests bearing its per-process key
(``engines/keys.py``), which the relay adds; the client's own credentials are never relayed.

Everything it knows it asks the service façade (``services/``): the model list, names, the
metrics snapshot. A request's lease comes from ``service.acquire`` — the runtime's own method, so
the relay's hot path has nothing in between.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

from llamastudio.config import Settings
from llamastudio.engines.registry import LLAMA_CPP
from llamastudio.errors import GatewayUnauthorized, InvalidInput, NotFound, PeerLoop, StudioError
from llamastudio.gateway.asgi import (
    Disconnected,
    Receive,
    Scope,
    Send,
    local_path,
    read_body,
    send_bytes,
    send_json,
    wait_disconnect,
)
from llamastudio.gateway.body import declares_body, media_type, model_name
from llamastudio.gateway.cors import CorsPolicy, preflight, with_cors
from llamastudio.gateway.filters import rewrite
from llamastudio.gateway.images import has_remote_image, inline_images
from llamastudio.gateway.metrics import UNKNOWN, Metrics, drift_series, path_label
from llamastudio.gateway.peers import PeerRelay, via_of
from llamastudio.gateway.purpose import check_purpose
from llamastudio.gateway.relay import GONE, HOP, Relay
from llamastudio.gateway.router import RouterApi, router_entry, router_props
from llamastudio.gateway.shapes import error_json, retry_after
from llamastudio.gateway.toolchoice import named_tool_choice
from llamastudio.guard import key_ok
from llamastudio.http_protocol import CYCLE
from llamastudio.services import StudioService
from llamastudio.services.peers import PeerState

__all__ = ["Gateway", "error_json"]
log = logging.getLogger(__name__)


class Gateway:
    def __init__(
        self,
        service: StudioService,
        settings: Settings,
        metrics: Metrics | None = None,
        keys: list[str | None] | None = None,
        kinds: frozenset[str] | None = None,
        fallback: str | None = None,
    ) -> None:
        """``keys``: accepted API keys (default: the gateway key, when set); ``kinds``: serve
        only models on these engine kinds (the LMDeploy listener on port 2001); ``fallback``: the
        model a request naming no served model gets (one-model mode)."""
        self.service = service
        self.kinds = kinds
        self.fallback = fallback  # one-model mode: the model a name nobody serves stands for
        self.acquire = service.acquire  # the runtime's own: nothing between a request and its lease
        self.settings = settings
        self.metrics = metrics or Metrics()
        self.relay = Relay(self.metrics, service.died)
        self.peers = PeerRelay(service.peers, self.metrics)  # models of other servers: peers.py
        self.router = RouterApi(service)  # llama-server router mode's /models/load, /unload
        self.cors = CorsPolicy(settings)
        self.max_body = settings.max_body_mb << 20
        self._keys = {k.encode() for k in (keys if keys is not None else [settings.gateway_api_key]) if k}
        self._imported = keys is None  # the gateway's own ports also take a llama-swap import's apiKeys

    async def close(self) -> None:
        await self.router.close()
        await self.peers.close()
        await self.relay.close()

    # -- ASGI ----------------------------------------------------------------------------------
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        path = local_path(scope)
        method: str = scope["method"]
        try:
            if path == "/health":
                await send_json(send, 200, {"status": "ok"})
                return
            origin = self.cors.allowed_origin(scope)
            if origin is not None:  # every answer to it, errors included, names it
                send = with_cors(send, origin)
            if method == "OPTIONS":  # preflights carry no key; never relayed
                await preflight(send, scope["headers"], origin)
                return
            self._check_key(scope)
            via = via_of(scope["headers"])  # a peer's request: local models only (no loops)
            if via and self.service.peers.instance in via.split(","):
                raise PeerLoop("this request came back to the studio it left: a peer URL names this studio")
            if path == "/metrics":
                text = await self._render_metrics()
                await send_bytes(send, 200, text.encode(), b"text/plain; version=0.0.4")
            elif path in ("/v1/models", "/models") and method == "GET":  # as llama-server's router
                await send_json(send, 200, await self._models(via))
            elif path in ("/models/load", "/models/unload") and method == "POST":
                media_type(scope["headers"], path, True)  # JSON only: a page's text/plain is a CSRF
                body = await read_body(receive, self.max_body)
                act = self.router.load if path == "/models/load" else self.router.unload
                await send_json(send, 200, await act(body))
            elif (
                path == "/props"
                and method == "GET"
                and await self.router.answers_props(scope.get("query_string", b""), self.fallback is not None)
            ):
                await send_json(send, 200, router_props())
            elif path.startswith("/v1/models/") and method == "GET":
                await send_json(send, 200, await self._model(path.removeprefix("/v1/models/"), via))
            else:
                await self._proxy(scope, receive, send)
        except StudioError as exc:
            await send_json(send, exc.status_code, error_json(exc), retry_after(exc))
        except Disconnected:
            return
        except Exception:  # a bug: logged, and still the one error shape
            log.exception("gateway error on %s %s", method, path)
            with contextlib.suppress(Exception):
                err = StudioError("internal gateway error (see the studio log)")
                await send_json(send, 500, error_json(err))

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.close()
                await send({"type": "lifespan.shutdown.complete"})
                return

    def _check_key(self, scope: Scope) -> None:
        imported = self.service.imported_keys if self._imported else frozenset()  # llama-swap apiKeys
        keys = self._keys | imported if imported else self._keys
        if not keys or key_ok(scope["headers"], keys):  # constant-time (guard.py)
            return
        raise GatewayUnauthorized("missing or wrong API key (send `Authorization: Bearer <key>`)")

    # -- own endpoints -------------------------------------------------------------------------
    async def _models(self, via: str) -> dict[str, Any]:
        """Local models, then the peers' (not to a peer, not on the LMDeploy port)."""
        data = [m.model_dump(mode="json") for m in await self.service.gateway_models(self.kinds)]
        if self.kinds is None and not via:
            local = {m["id"] for m in data} | {a for m in data for a in m["aliases"]}
            data += self.service.peers.entries(local)
        return {"object": "list", "data": [router_entry(m) for m in data]}

    async def _model(self, name: str, via: str) -> dict[str, Any]:
        try:
            return router_entry((await self.service.gateway_model(name)).model_dump(mode="json"))
        except NotFound:
            if via or self.kinds is not None:
                raise
            found = next((e for e in self.service.peers.entries(set()) if e["id"] == name), None)
            if found is None:
                raise
            return router_entry(found)

    async def _render_metrics(self) -> str:
        snap = await self.service.metrics()
        return self.metrics.render(
            {
                "llamastudio_in_flight_requests": {n: float(v) for n, v in snap.in_flight.items()},
                "llamastudio_queue_depth": {n: float(v) for n, v in snap.queue_depth.items()},
                "llamastudio_model_loaded": {n: float(v) for n, v in snap.loaded.items()},
            },
            {
                "llamastudio_loads_total": snap.loads,
                "llamastudio_evictions_total": snap.evictions,
                "llamastudio_ttl_unloads_total": snap.ttl_unloads,
            },
            drift_series(snap.estimate_drift, snap.estimate_drifts),
        )

    # -- the relay -----------------------------------------------------------------------------
    async def _to_peer(
        self,
        peer: PeerState,
        scope: Scope,
        receive: Receive,
        send: Send,
        name: str,
        body: bytes,
        started: float,
    ) -> None:
        """Relay to a peer (``peers.py``), counted and shown in the activity as local requests are."""
        path = local_path(scope)
        label = path_label(path)
        entry = self.metrics.activity.begin(name, label, started)
        self.metrics.activity.acquired(entry, name)
        status = 500
        try:
            status = await self.peers.forward(peer, scope, receive, send, name, path, body, started)
        finally:
            self.metrics.requests[(name, label, status)] += 1
            self.metrics.latency[name].observe(time.perf_counter() - started)
            self.metrics.activity.end(entry, status)

    async def _proxy(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        path = local_path(scope)
        label = path_label(path)
        headers_in: list[tuple[bytes, bytes]] = scope["headers"]
        media = media_type(headers_in, path, declares_body(headers_in))
        body = await read_body(receive, self.max_body)
        if body and media is None:
            media = media_type(headers_in, path, True)
        query = scope.get("query_string", b"")
        name = model_name(body, query, media)
        if name is None:
            names = await self.service.model_names()
            if len(names) != 1:
                raise InvalidInput("request names no model: set `model` in the JSON body (or ?model=)")
            name = names[0]
        if self.kinds is None and not via_of(headers_in) and await self.service.label(name) is None:
            peer = self.service.peers.choose(name)  # a 503 naming it when its peer is down
            if peer is not None:
                await self._to_peer(peer, scope, receive, send, name, body, started)
                return
        if self.fallback and name != self.fallback and await self.service.label(name) is None:
            name = self.fallback  # the seeds' one-model images answer "model": "any"
        if self.kinds is not None and await self.service.kind_of(name) not in self.kinds:
            raise NotFound(
                f"model {name!r} is not served on this port: it serves {', '.join(sorted(self.kinds))} "
                f"models only (every model is on port {self.settings.gateway_port})"
            )
        traits = await self.service.traits_of(name)
        if traits is not None:
            check_purpose(name, path, traits, body)
        # a model not prepared yet (new since the last sync: acquire prepares it) may take images
        if (traits is None or traits.vision is not False) and has_remote_image(body):
            body = await inline_images(body)  # never fetched by the engine (SSRF): images.py
        if b"tool_choice" in body and await self.service.kind_of(name) == LLAMA_CPP:
            body = named_tool_choice(body, path)  # the one form llama-server honours: toolchoice.py
        if (rules := self.service.body_rules(name)) is not None:  # llama-swap filters: filters.py
            body = rewrite(body, rules.strip_params, rules.set_params, rules.use_model_name)
        entry = self.metrics.activity.begin(name, label, started)  # in flight: activity.py
        try:
            lease, proc = await self.acquire(name)
        except StudioError as exc:  # the client's name is no label unless it is configured
            self.metrics.requests[(await self.service.label(name) or UNKNOWN, label, exc.status_code)] += 1
            self.metrics.activity.end(entry, exc.status_code)
            raise
        model = lease.model
        self.metrics.activity.acquired(entry, model)
        upstream = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in headers_in if k not in HOP]
        watch = asyncio.ensure_future(wait_disconnect(receive))
        status = 500
        try:
            args = (scope["method"], path, query, upstream, body, model, send, started, watch)
            cycle = scope.get("extensions", {}).get(CYCLE)  # uvicorn's: the relay's fast path
            status = await self.relay.attempt(lease.release, proc, *args, retry=True, cycle=cycle)
            if status == GONE:  # killed just before: start it again (the engine never answered)
                lease.release()
                status = 502  # what it would have been, until the retry says otherwise
                log.warning("%s: the engine was gone before answering; starting it again", model)
                try:
                    lease, proc = await self.acquire(name)
                except StudioError as exc:
                    status = exc.status_code
                    raise
                status = await self.relay.attempt(lease.release, proc, *args, retry=False, cycle=cycle)
        finally:
            watch.cancel()
            lease.release()
            self.metrics.requests[(model, label, status)] += 1
            self.metrics.latency[model].observe(time.perf_counter() - started)
            self.metrics.activity.end(entry, status)
