"""Images by URL: fetched by the gateway (never by the engine), only from public addresses, with
limits; the engine gets them inline. The fetch runs against a real local HTTP server; the address
policy is passed in (``allowed``), and the default policy is tested on its own."""

from __future__ import annotations

import asyncio
import base64
import ipaddress
import json
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from llamastudio.errors import InvalidInput
from llamastudio.gateway import images
from llamastudio.gateway.images import MAX_IMAGE, has_remote_image, inline_images, public
from tests.rig import vision
from tests.rig.serving import running

PNG = vision.png_bytes()


class _Images(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.path == "/slow.png":  # a byte at a time, each well within httpx's read timeout
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.send_header("Content-Length", "1000")
            self.end_headers()
            for _ in range(200):
                try:
                    self.wfile.write(b"\0")
                    self.wfile.flush()
                except OSError:
                    return
                time.sleep(0.05)
            return
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


# -- review of 110c697: the forms the engine fetches that the gateway let through -----------------
def _detected_and_inlined(doc: dict[str, Any], allowed: Any = _anywhere) -> dict[str, Any]:
    """What the gateway does with ``doc``: look (``has_remote_image``), then inline."""
    body = json.dumps(doc).encode()
    assert has_remote_image(body)  # else the gateway relays it untouched and the engine fetches
    return _inline(body, allowed)


def test_the_flat_responses_form_is_detected(server: str) -> None:
    """Regression: ``"image_url": "http…"`` (Responses' input_image) has no ``"url"`` key: the
    gateway passed it to llama-server, which fetched it from the studio's machine."""
    doc = {
        "model": "m",
        "input": [{"role": "user", "content": [{"type": "input_image", "image_url": f"{server}/cat.png"}]}],
    }
    part = _detected_and_inlined(doc)["input"][0]["content"][0]
    assert part["image_url"].startswith("data:image/png;base64,")


def test_an_escaped_key_or_url_is_detected(server: str) -> None:
    """Regression: ``"\\u0075rl"`` is ``"url"`` to the engine's parser, not to a byte regex."""
    body = json.dumps(json.loads(_chat(f"{server}/cat.png"))).replace('"url"', '"\\u0075rl"').encode()
    assert has_remote_image(body.replace(b'"http', b'"\\u0068ttp'))
    doc = json.loads(asyncio.run(inline_images(body.replace(b'"http', b'"\\u0068ttp'), _anywhere)))
    assert doc["messages"][0]["content"][0]["image_url"]["url"].startswith("data:image/png;base64,")


def test_media_nested_in_tool_results_and_outputs_is_fetched(server: str) -> None:
    """Regression: an Anthropic tool_result's image and a Responses function_call_output's
    input_image are media parts to the engine, one level below the message content."""
    image = {"type": "image", "source": {"type": "url", "url": f"{server}/cat.png"}}
    tool_result = {"type": "tool_result", "tool_use_id": "t1", "content": [image]}
    doc = _detected_and_inlined({"model": "m", "messages": [{"role": "user", "content": [tool_result]}]})
    assert doc["messages"][0]["content"][0]["content"][0]["source"]["type"] == "base64"
    output = {
        "type": "function_call_output",
        "call_id": "c",
        "output": [{"type": "input_image", "image_url": f"{server}/cat.png"}],
    }
    doc = _detected_and_inlined({"model": "m", "input": [output]})
    assert doc["input"][0]["output"][0]["image_url"].startswith("data:image/png;base64,")


def test_audio_and_video_urls_are_fetched_here_too(server: str) -> None:
    """Regression: llama-server fetches ``input_audio`` / ``input_video`` / ``video_url`` URLs
    (``data`` or ``url``) as well; a private one is refused, raw base64 is left alone."""
    audio = {"type": "input_audio", "input_audio": {"data": f"{server}/cat.png", "format": "wav"}}
    body = json.dumps({"model": "m", "messages": [{"role": "user", "content": [audio]}]}).encode()
    assert has_remote_image(body)
    with pytest.raises(InvalidInput, match="private or local address"):
        asyncio.run(inline_images(body))
    with pytest.raises(InvalidInput, match="not audio"):  # the content type must be the part's kind
        _inline(body)
    video = {"type": "video_url", "video_url": {"url": f"{server}/cat.png"}}
    with pytest.raises(InvalidInput, match="not a video"):
        _inline(json.dumps({"model": "m", "messages": [{"role": "user", "content": [video]}]}).encode())
    raw = {"type": "input_audio", "input_audio": {"data": "UklGRg==", "format": "wav"}}
    plain = json.dumps({"model": "m", "messages": [{"role": "user", "content": [raw]}]}).encode()
    assert asyncio.run(inline_images(plain)) is plain


def test_a_bad_port_or_a_deep_body_is_a_400_not_a_500() -> None:
    """Regression: ``urlsplit(...).port`` raises ValueError, and a body nested past Python's
    parser raised RecursionError: both escaped as the gateway's 500."""
    for url in ("http://example.com:99999/x.png", "http://example.com:port/x.png", "http://[::1/x.png"):
        with pytest.raises(InvalidInput, match="not a valid URL"):
            asyncio.run(inline_images(_chat(url)))
    deep = b'{"url": "http://x", "a": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    with pytest.raises(InvalidInput, match="nested too deeply"):
        asyncio.run(inline_images(deep))


def test_ipv6_forms_of_private_ipv4_addresses_are_not_public() -> None:
    """Regression: Python 3.11 calls NAT64, 6to4 and IPv4-compatible forms of 127.0.0.1 global."""
    for bad in (
        "64:ff9b::7f00:1",
        "64:ff9b::a9fe:a9fe",
        "2002:7f00:1::",
        "2002:a00:1::1",
        "::127.0.0.1",
        "::ffff:10.0.0.1",
    ):
        assert not public(ipaddress.ip_address(bad)), bad
    for good in ("64:ff9b::808:808", "2002:808:808::1", "2606:4700:4700::1111"):
        assert public(ipaddress.ip_address(good)), good


def test_a_trickling_server_is_cut_off_by_a_limit_on_the_whole_fetch(
    server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Regression: the limit was httpx's per-read timeout, which a server sending a byte every
    few seconds never reaches: the request was held for as long as the server liked."""
    monkeypatch.setattr(images, "TIMEOUT", 0.5)
    with pytest.raises(InvalidInput, match="not fetched within"):
        _inline(_chat(f"{server}/slow.png"))
