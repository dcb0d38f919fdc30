"""Relaying a request to a peer (``services/peers.py``) with the engines' relay (``relay.py``).

What differs from a local engine: the peer's own API key is sent (the client's never is: the
relay drops it), the request carries ``VIA`` (loops, see ``services/peers.py``), the peer's
``strip_params`` / ``set_params`` are applied to a JSON body, and a redirect is never followed (a
peer pointing elsewhere would make the gateway fetch another host: the 3xx goes back to the
client as an error). A client that disconnects cancels the upstream request, as for an engine.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any, cast

from llamastudio.errors import UpstreamFailed
from llamastudio.gateway.asgi import Receive, Scope, Send, wait_disconnect
from llamastudio.gateway.filters import rewrite
from llamastudio.gateway.metrics import Metrics
from llamastudio.gateway.relay import HOP, Relay
from llamastudio.gateway.shapes import error_json
from llamastudio.guard import OWNER_HEADER
from llamastudio.runtime.process import EngineProcess
from llamastudio.services.peers import VIA, PeerService, PeerState

_VIA = VIA.encode()
# a peer is another host: besides the client's key (HOP), the studio owner's key (it lets its
# holder run commands through this studio's API) and cookies never go there
_PRIVATE = frozenset({_VIA, OWNER_HEADER.lower().encode(), b"cookie"})


class _Target:
    """What ``Relay.attempt`` reads of an engine process, for a peer (never retried: no exit)."""

    def __init__(self, url: str, reason: str) -> None:
        self.url = url
        self.api_key: str | None = None  # the peer's key is in the headers (with VIA)
        self.reason = reason

    async def wait_exit(self, timeout: float) -> bool:
        return False


def via_of(headers: list[tuple[bytes, bytes]]) -> str:
    """The VIA header of a request ('' when it did not come from a peer)."""
    return next((v.decode("latin-1") for k, v in headers if k == _VIA), "")


def filtered(body: bytes, peer: PeerState) -> bytes:
    """The JSON body with the peer's ``strip_params`` removed and ``set_params`` set (``filters.py``)."""
    spec = peer.spec
    if not (spec.strip_params or spec.set_params):
        return body
    return rewrite(body, spec.strip_params, spec.set_params, None)


class PeerRelay:
    def __init__(self, peers: PeerService, metrics: Metrics) -> None:
        self.peers = peers
        self.relay = Relay(metrics, peers.suspect)  # never follows a redirect (another host: SSRF)

    async def close(self) -> None:
        await self.relay.close()

    async def forward(
        self,
        peer: PeerState,
        scope: Scope,
        receive: Receive,
        send: Send,
        model: str,
        path: str,
        body: bytes,
        started: float,
    ) -> int:
        """Relay one request to ``peer``; returns the status the client got."""
        headers_in: list[tuple[bytes, bytes]] = scope["headers"]
        headers = [
            (k.decode("latin-1"), v.decode("latin-1"))
            for k, v in headers_in
            if k not in HOP and k not in _PRIVATE
        ]
        headers += list(self.peers.headers(peer.spec, via_of(headers_in)).items())
        target = _Target(peer.spec.url, f"peer {peer.spec.name} ({peer.spec.url}) failed")
        watch = asyncio.ensure_future(wait_disconnect(receive))
        try:
            args = (scope["method"], path, scope.get("query_string", b""), headers, filtered(body, peer))
            return await self.relay.attempt(
                lambda: None,
                cast(EngineProcess, target),
                *args,
                model,
                _redirect_guard(send, peer),
                started,
                watch,
                retry=False,
            )
        finally:
            watch.cancel()


def _redirect_guard(send: Send, peer: PeerState) -> Send:
    """A 3xx from the peer becomes a 502 in the gateway's shape (the client is not sent on)."""
    swallowing = False

    async def guarded(message: Any) -> None:
        nonlocal swallowing
        if message["type"] == "http.response.start" and 300 <= message["status"] < 400:
            swallowing = True
            err = UpstreamFailed(f"peer {peer.spec.name} answered a redirect: redirects are not followed")
            body = json.dumps(error_json(err, "upstream")).encode()
            await send(
                {
                    "type": "http.response.start",
                    "status": 502,
                    "headers": [
                        (b"content-type", b"application/json"),
                        (b"content-length", str(len(body)).encode()),
                    ],
                }
            )
            await send({"type": "http.response.body", "body": body, "more_body": False})
            return
        if not swallowing:
            await send(message)

    return guarded
