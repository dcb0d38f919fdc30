"""Issue 18 (Low items, Build): the HTTP edges of both listeners.

- the UI route answered ``/etc/passwd%00.js`` with a 500: hostile paths are 404s in the error shape;
- a 500 closed the connection without saying ``Connection: close``;
- half-sent requests were never timed out (slowloris): header and body-idle timeouts;
- ``serve`` on a non-loopback address without keys started anyway: it refuses, unless --insecure.

The timeouts and the 500 are checked at the socket, against a real uvicorn on an ephemeral port.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import urllib.parse
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from huggingface_hub import constants

from llamastudio.api.app import create_app
from llamastudio.api.routes import ui
from llamastudio.config import Settings
from llamastudio.errors import InvalidInput
from llamastudio.server import _config, _Server, check_exposure, is_loopback

ASGIApp = Callable[[dict[str, Any], Any, Any], Awaitable[None]]


@pytest.fixture
def app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FastAPI:
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    return create_app(Settings(data_dir=tmp_path / "data", hardware="cpu"))


async def _get(app: ASGIApp, raw_path: bytes) -> tuple[int, bytes]:
    """A GET as uvicorn hands it over: ``path`` percent-decoded (bad UTF-8 → U+FFFD), ``raw_path``
    as sent."""
    path = raw_path.decode("ascii")
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": urllib.parse.unquote(path) if "%" in path else path,
        "raw_path": raw_path,
        "root_path": "",
        "query_string": b"",
        "headers": [(b"host", b"localhost")],
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 8080),
    }
    sent: list[dict[str, Any]] = []
    requested, done = False, asyncio.Event()

    async def receive() -> dict[str, Any]:
        nonlocal requested
        if not requested:
            requested = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await done.wait()  # a response listening for the client to leave
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)
        if message["type"] == "http.response.body" and not message.get("more_body"):
            done.set()

    await app(scope, receive, send)
    return sent[0]["status"], b"".join(m.get("body", b"") for m in sent[1:])


HOSTILE = [
    b"/etc/passwd%00.js",  # was a 500 (ValueError: embedded null byte)
    b"/assets/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
    b"/assets/../../etc/passwd",
    b"/..%2f..%2fetc%2fpasswd",
    b"/a%2Fb.js",
    b"/a%5c..%5cb.js",
    b"/%ff%fe.js",  # not UTF-8
    b"/x%0d%0aSet-Cookie:%20a=b",
    b"/./index.html",
]


@pytest.mark.parametrize("raw", HOSTILE, ids=[r.decode() for r in HOSTILE])
async def test_hostile_ui_paths_are_404_in_the_error_shape(app: FastAPI, raw: bytes) -> None:
    status, body = await _get(app, raw)
    assert status == 404
    err = json.loads(body)["error"]
    assert err["code"] == "not_found" and err["source"] == "studio"


async def test_the_ui_serves_only_files_inside_dist(
    app: FastAPI, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dist = tmp_path / "dist"
    (dist / "assets").mkdir(parents=True)
    (dist / "index.html").write_text("INDEX")
    (dist / "assets" / "app.js").write_text("APP")
    secret = tmp_path / "secret.txt"
    secret.write_text("SECRET")
    (dist / "leak.js").symlink_to(secret)
    (dist / "assets" / "up").symlink_to(tmp_path)
    (dist / "loop.js").symlink_to(dist / "loop.js")
    monkeypatch.setattr(ui, "DIST", dist)
    assert await _get(app, b"/assets/app.js") == (200, b"APP")
    assert await _get(app, b"/models/some/client/route") == (200, b"INDEX")
    for raw in (b"/leak.js", b"/assets/up/secret.txt", b"/loop.js", b"/" + b"a" * 5000 + b".js"):
        status, body = await _get(app, raw)
        assert (status, body) == (200, b"INDEX"), raw[:40]  # the SPA, never the target, never a 500


@asynccontextmanager
async def _serve(app: object, **timeouts: float) -> AsyncIterator[int]:
    config = _config(app, "127.0.0.1", 0, "warning", **timeouts)
    config.lifespan = "off"
    server = _Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        assert not task.done(), task.exception()
        await asyncio.sleep(0.01)
    try:
        yield server.servers[0].sockets[0].getsockname()[1]
    finally:
        server.should_exit = True
        await task


async def _read_all(reader: asyncio.StreamReader, within: float = 10.0) -> bytes:
    """Everything until the server closes the connection (fails if it does not, within ``within``)."""
    return await asyncio.wait_for(reader.read(), within)


async def test_an_unexpected_500_says_connection_close(app: FastAPI) -> None:
    """Regression: after a 500 the server closed the connection without ``Connection: close``, so
    a keep-alive client sent its next request into a closing socket."""

    async def boom() -> None:
        raise RuntimeError("bug")

    app.add_api_route("/api/boom", boom)
    app.router.routes.insert(0, app.router.routes.pop())  # before the UI's catch-all
    async with _serve(app) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /api/boom HTTP/1.1\r\nHost: localhost\r\n\r\n")
        data = await _read_all(reader)  # and the server closes
        writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    assert lines[0] == "HTTP/1.1 500 Internal Server Error"
    assert "connection: close" in [h.lower() for h in lines[1:]]
    assert json.loads(body)["error"] == {
        "code": "internal_error",
        "message": "internal error: RuntimeError",
        "source": "studio",
    }


async def _echo(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Reads the whole body, answers with its length."""
    if scope["type"] != "http":
        return
    size, more = 0, True
    while more:
        message = await receive()
        if message["type"] == "http.disconnect":
            return
        size += len(message.get("body", b""))
        more = message.get("more_body", False)
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-length", b"%d" % len(str(size)))],
        }
    )
    await send({"type": "http.response.body", "body": str(size).encode()})


async def test_half_sent_requests_are_timed_out_and_full_ones_are_not() -> None:
    """Regression: uvicorn never timed out a request whose headers were incomplete (slowloris)."""
    async with _serve(_echo, header_timeout=1.0, body_timeout=1.0) as port:

        async def connect() -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
            return await asyncio.open_connection("127.0.0.1", port)

        # nothing sent, and half a request line: 408, then closed
        silent, _ = await connect()
        half, w_half = await connect()
        w_half.write(b"GET / HT")
        for reader in (silent, half):
            assert (await _read_all(reader)).startswith(b"HTTP/1.1 408 ")
        # headers trickled a byte every 50 ms (3 s): the deadline is for all of them, not per byte
        trickle, w_trickle = await connect()
        request = b"GET / HTTP/1.1\r\nHost: localhost\r\nX-Padding: " + b"p" * 20 + b"\r\n\r\n"
        answer = asyncio.create_task(trickle.read())  # until the server closes
        sent = 0
        while sent < len(request) and not answer.done():
            try:
                w_trickle.write(request[sent : sent + 1])
                await w_trickle.drain()
            except ConnectionError:
                break
            sent += 1
            await asyncio.sleep(0.05)
        try:
            data = await asyncio.wait_for(answer, 10)
        except ConnectionError:  # our late bytes met the closed socket: closed all the same
            data = b""
        assert sent < len(request) and not data.startswith(b"HTTP/1.1 200")
        # a body that stops arriving: closed without an answer
        stalled, w_stalled = await connect()
        w_stalled.write(b"POST / HTTP/1.1\r\nHost: localhost\r\nContent-Length: 100\r\n\r\n" + b"x" * 10)
        assert await _read_all(stalled) == b""
        # a body that keeps arriving, slowly (idle gaps under the timeout): answered
        slow, w_slow = await connect()
        w_slow.write(b"POST / HTTP/1.1\r\nHost: localhost\r\nContent-Length: 15\r\nConnection: close\r\n\r\n")
        for _ in range(15):  # 1.5 s in all, more than the timeout
            await asyncio.sleep(0.1)
            w_slow.write(b"x")
        assert (await _read_all(slow)).endswith(b"\r\n\r\n15")
        # an ordinary request on a fresh connection
        ok, w_ok = await connect()
        w_ok.write(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        assert (await _read_all(ok)).startswith(b"HTTP/1.1 200 ")
        for w in (w_half, w_trickle, w_stalled, w_slow, w_ok):
            w.close()


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.1.2.3", True),
        ("localhost", True),
        ("::1", True),
        ("[::1]", True),
        ("::ffff:127.0.0.1", True),
        ("0.0.0.0", False),
        ("::", False),
        ("192.168.1.5", False),
        ("fe80::1", False),
        ("no-such-host.invalid", False),
    ],
)
def test_is_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_a_non_loopback_bind_needs_both_keys_or_insecure(tmp_path: Path) -> None:
    def settings(**kw: Any) -> Settings:
        return Settings(data_dir=tmp_path, **kw)

    check_exposure(settings(host="127.0.0.1"))
    check_exposure(settings(host="0.0.0.0", api_key="a", gateway_api_key="g"))
    check_exposure(settings(host="0.0.0.0", insecure=True))
    with pytest.raises(InvalidInput, match=r"management API .* and the gateway"):
        check_exposure(settings(host="0.0.0.0"))
    with pytest.raises(InvalidInput, match="use the gateway") as only_gateway_open:
        check_exposure(settings(host="192.168.1.5", api_key="a"))
    assert "management API" not in only_gateway_open.value.message
    with pytest.raises(InvalidInput, match="use the management API"):
        check_exposure(settings(host="::", gateway_api_key="g"))


def test_serve_refuses_an_open_lan_bind_with_one_line_and_exit_2(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LLAMASTUDIO_")}
    out = subprocess.run(
        [sys.executable, "-m", "llamastudio", "--data-dir", str(tmp_path), "serve", "--host", "0.0.0.0"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: refusing to listen on 0.0.0.0")
    assert "--insecure" in lines[0] and "LLAMASTUDIO_API_KEY" in lines[0]
