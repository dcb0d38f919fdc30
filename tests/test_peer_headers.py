"""What a request relayed to a peer carries of the client's (``gateway/peers.py``): a peer is
another host, so the client's credentials — its key (dropped by the relay), the studio owner's
key (``X-Studio-Owner``: it lets its holder run commands through this studio's API) and cookies —
never go there; the peer's own key does. The peer is a small OpenAI-style server in this test
that answers its model list and echoes the headers it got."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator

import pytest
from aiohttp import web

from llamastudio.guard import OWNER_HEADER
from llamastudio.runtime.process import free_port
from tests.rig import binaries
from tests.rig.studio import Studio

PEER_KEY = "sk-peer-own"


@pytest.fixture(scope="module")
def peer() -> Iterator[str]:
    async def models(request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": "remote-m", "object": "model"}]})

    async def echo(request: web.Request) -> web.Response:
        return web.json_response({"headers": {k.lower(): v for k, v in request.headers.items()}})

    app = web.Application()
    app.router.add_get("/v1/models", models)

    async def huge_error(request: web.Request) -> web.Response:
        return web.json_response({"error": {"message": "x" * (20 << 20)}}, status=500)

    app.router.add_post("/v1/chat/completions", echo)
    app.router.add_post("/v1/completions", huge_error)
    port = free_port()
    loop = asyncio.new_event_loop()
    runner = web.AppRunner(app)
    loop.run_until_complete(runner.setup())
    loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", port).start())
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)


@pytest.fixture(scope="module")
def studio(peer: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Studio]:
    with Studio(
        tmp_path_factory.mktemp("peer-headers"), binaries.binary("llama-server"), gateway_key="sk-gw"
    ) as s:
        yield s


def test_the_clients_credentials_never_reach_a_peer(peer: str, studio: Studio) -> None:
    with studio.owner() as c:
        r = c.post("/api/peers", json={"name": "p", "url": peer, "api_key": PEER_KEY})
        assert r.status_code == 201 and r.json()["available"] is True, r.text
    owner = (studio.data_dir / "run" / "owner.key").read_text().strip()
    with studio.gateway() as g:
        r = g.post(
            "/v1/chat/completions",
            json={"model": "remote-m", "messages": [{"role": "user", "content": "hi"}]},
            headers={OWNER_HEADER: owner, "cookie": "session=secret", "x-api-key": "sk-gw"},
        )
    assert r.status_code == 200, r.text
    got = r.json()["headers"]
    assert got["authorization"] == f"Bearer {PEER_KEY}", got
    assert OWNER_HEADER.lower() not in got and "cookie" not in got and "x-api-key" not in got, got
    assert "sk-gw" not in json.dumps(got) and owner not in json.dumps(got)


def test_a_peers_huge_error_is_cut(peer: str, studio: Studio) -> None:
    """A peer's 20 MiB error answer: the client gets the error in the one shape, cut (the gateway
    read only its start), not 20 MiB re-encoded."""
    with studio.owner() as c:
        assert c.post("/api/peers", json={"name": "p", "url": peer}).json()["available"] is True
    with studio.gateway() as g:
        r = g.post("/v1/completions", json={"model": "remote-m", "prompt": "hi"})
    assert r.status_code == 500 and len(r.content) < 8192, (r.status_code, len(r.content))
    assert r.json()["error"]["source"] == "upstream" and r.json()["error"]["message"].startswith("{")
