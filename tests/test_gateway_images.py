"""Images by URL: fetched by the gateway (never by the engine), only from public addresses, with
limits; the engine gets them inline. The fetch runs against a real local HTTP server; the address
policy is passed in (``allowed``), and the default policy is tested on its own."""

from __future__ import annotations

import asyncio
import base64
import ipaddress
import json
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from llamastudio.errors import InvalidInput
from llamastudio.gateway.images import MAX_IMAGE, has_remote_image, inline_images, public
from tests.rig import vision
from tests.rig.serving import running

PNG = vision.png_bytes()


class _Images(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        routes: dict[str, tuple[int, str, bytes, dict[str, str]]] = {
            "/cat.png": (200, "image/png", PNG, {}),
            "/moved": (302, "text/plain", b"", {"Location": "/cat.png"}),
            "/loop": (302, "text/plain", b"", {"Location": "/loop"}),
            "/page": (200, "text/html", b"<html></html>", {}),
            "/huge.png": (200, "image/png", b"\0" * (MAX_IMAGE + 1), {}),
        }
        status, ctype, body, extra = routes.get(self.path, (404, "text/plain", b"no", {}))
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in extra.items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)
        self.server.hosts.append(self.headers.get("Host"))  # type: ignore[attr-defined]

    def log_message(self, *args: object) -> None:
        pass


HOSTS: list[str] = []


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Images)
    srv.hosts = HOSTS  # type: ignore[attr-defined]
    with running(srv):
        yield f"http://localhost:{srv.server_address[1]}"


def _anywhere(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    return True


def _chat(url: str) -> bytes:
    part = {"type": "image_url", "image_url": {"url": url}}
    return json.dumps({"model": "m", "messages": [{"role": "user", "content": [part, "x"]}]}).encode()


def _inline(body: bytes, allowed: Any = _anywhere) -> dict[str, Any]:
    out: dict[str, Any] = json.loads(asyncio.run(inline_images(body, allowed)))
    return out


def test_a_remote_image_is_fetched_and_inlined(server: str) -> None:
    doc = _inline(_chat(f"{server}/cat.png"))
    url = doc["messages"][0]["content"][0]["image_url"]["url"]
    assert url == "data:image/png;base64," + base64.b64encode(PNG).decode()
    # connected to the address it checked, asking for the name the client gave
    assert HOSTS[-1] == server.removeprefix("http://")


def test_redirects_are_followed_and_checked(server: str) -> None:
    doc = _inline(_chat(f"{server}/moved"))
    assert doc["messages"][0]["content"][0]["image_url"]["url"].startswith("data:image/png;base64,")
    with pytest.raises(InvalidInput, match="redirects"):
        _inline(_chat(f"{server}/loop"))


@pytest.mark.parametrize(
    ("path", "problem"),
    [("/page", "not an image"), ("/missing.png", "answered 404"), ("/huge.png", "larger than")],
)
def test_what_is_not_an_image_is_refused(server: str, path: str, problem: str) -> None:
    with pytest.raises(InvalidInput, match=problem):
        _inline(_chat(f"{server}{path}"))


def test_the_anthropic_and_responses_forms(server: str) -> None:
    body = {
        "model": "m",
        "messages": [
            {
                "role": "user",
                "content": [{"type": "image", "source": {"type": "url", "url": f"{server}/cat.png"}}],
            }
        ],
    }
    src = _inline(json.dumps(body).encode())["messages"][0]["content"][0]["source"]
    assert src == {"type": "base64", "media_type": "image/png", "data": base64.b64encode(PNG).decode()}
    resp = {
        "model": "m",
        "input": [{"role": "user", "content": [{"type": "input_image", "image_url": f"{server}/cat.png"}]}],
    }
    part = _inline(json.dumps(resp).encode())["input"][0]["content"][0]
    assert part["image_url"].startswith("data:image/png;base64,")


def test_private_addresses_are_refused_by_default(server: str) -> None:
    with pytest.raises(InvalidInput, match="private or local address"):
        asyncio.run(inline_images(_chat(f"{server}/cat.png")))
    for bad in ("127.0.0.1", "10.1.2.3", "192.168.0.5", "169.254.169.254", "100.64.0.1", "::1", "fd00::1"):
        assert not public(ipaddress.ip_address(bad)), bad
    assert public(ipaddress.ip_address("8.8.8.8"))
    with pytest.raises(InvalidInput, match="only http"):
        asyncio.run(inline_images(_chat("file:///etc/passwd")))


def test_bodies_without_remote_images_pass_untouched() -> None:
    inline = _chat("data:image/png;base64,AAAA")
    assert not has_remote_image(inline)
    assert asyncio.run(inline_images(inline)) is inline
    tools = json.dumps({"tools": [{"function": {"parameters": {"url": "https://example.com"}}}]}).encode()
    assert asyncio.run(inline_images(tools)) is tools  # a "url" that is no image part
