"""Images given by URL, fetched by the gateway and passed to the engine inline.

llama-server fetches an ``image_url`` itself (plain HTTP only, no TLS in most builds), from the
machine it runs on: a request could make it read any address that machine can reach — another
service on localhost, the cloud metadata endpoint, the LAN (SSRF). So the gateway fetches a remote
image itself, only from a public address (every address the name resolves to must be global; the
connection goes to the address that was checked, so DNS rebinding cannot swap it), with a size and
time limit and an image content type, and hands the engine a ``data:`` URI. Redirects are
followed, each checked the same way. An image on a private host is sent inline by the client.

The engine fetches every media part whose URL starts with ``http`` (``handle_media`` in
``tools/server/server-common.cpp``): images (``image_url``, Responses' ``input_image``,
Anthropic's ``image`` with a ``url`` source), audio (``input_audio``) and video (``input_video``,
``video_url``), at any depth (Anthropic ``tool_result`` content, Responses
``function_call_output`` output). All of them are fetched here, wherever they are in the body.
Only a body in which some string may start with ``http`` (literally, or behind a ``\\u`` escape)
is parsed; every other body passes through untouched (the relay's hot path).
"""

from __future__ import annotations

import asyncio
import base64
import ipaddress
import json
import socket
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx

from llamastudio.errors import InvalidInput

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
MAX_IMAGE = 20 << 20  # bytes of one fetched image
MAX_IMAGES = 16  # remote images in one request
TIMEOUT = 15.0
MAX_REDIRECTS = 3
# audio and video parts (their URL under the part's type) → the content types accepted
_MEDIA = {"input_audio": "audio/", "input_video": "video/", "video_url": "video/"}
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


def has_remote_image(body: bytes) -> bool:
    """Whether ``body`` may hold a media URL the engine would fetch: a JSON string starting with
    ``http``, or any ``\\u`` escape (which can spell one, or a key, in other bytes). Sound, not
    exact: a body it passes is parsed and looked at (``inline_images``)."""
    return b'"http' in body or b"\\u" in body


def public(ip: IPAddress) -> bool:
    """The default policy: only globally routable addresses (no loopback, LAN, link-local —
    169.254.169.254 is the cloud metadata service — CGNAT or reserved ranges), and for an IPv6
    address that carries an IPv4 one (mapped, compatible, 6to4, NAT64) that one too."""
    if not ip.is_global:
        return False
    if isinstance(ip, ipaddress.IPv6Address):
        packed = ip.packed
        embedded = ip.ipv4_mapped or ip.sixtofour
        if embedded is None and (ip in _NAT64 or packed[:12] == bytes(12)):
            embedded = ipaddress.IPv4Address(packed[12:])  # NAT64, or IPv4-compatible (::a.b.c.d)
        if embedded is not None and not embedded.is_global:
            return False
    return True


async def inline_images(body: bytes, allowed: Callable[[IPAddress], bool] = public) -> bytes:
    """``body`` with every remote media URL replaced by the media, inline (see the docstring);
    ``allowed``: which addresses may be fetched from."""
    try:
        doc = json.loads(body)
    except RecursionError:  # the engine's parser has no depth limit: never pass what was not read
        raise InvalidInput("request body is not valid JSON: nested too deeply") from None
    except ValueError:
        return body  # the engine answers a body it cannot read
    remote = _media_refs(doc)
    if not remote:
        return body
    if len(remote) > MAX_IMAGES:
        raise InvalidInput(f"at most {MAX_IMAGES} images by URL in one request (send the others inline)")
    async with httpx.AsyncClient(timeout=TIMEOUT, follow_redirects=False, trust_env=False) as client:
        fetched = await asyncio.gather(
            *(_fetch_within(client, url, kind, allowed) for _, _, url, kind in remote)
        )
    for (holder, key, _, _), (media, data) in zip(remote, fetched, strict=True):
        encoded = base64.b64encode(data).decode()
        if key == "source":  # Anthropic: the source becomes a base64 one
            holder[key] = {"type": "base64", "media_type": media, "data": encoded}
        else:
            holder[key] = f"data:{media};base64,{encoded}"
    return json.dumps(doc).encode()


def _media_refs(doc: Any) -> list[tuple[dict[str, Any], str, str, str]]:
    """(the dict holding the URL, its key, the URL, the content type prefix accepted) for every
    media part anywhere in the document whose URL the engine would fetch (not ``data:``; for
    audio and video, one starting with ``http``: raw base64 is their usual form)."""
    out: list[tuple[dict[str, Any], str, str, str]] = []
    stack = [doc]
    while stack:  # not recursive: the body may be nested as deep as Python's parser allows
        node = stack.pop()
        if isinstance(node, list):
            stack.extend(node)
            continue
        if not isinstance(node, dict):
            continue
        stack.extend(node.values())
        kind = node.get("type")
        if kind in ("image_url", "input_image"):
            ref = node.get("image_url")
            if isinstance(ref, dict) and isinstance(ref.get("url"), str):
                out.append((ref, "url", ref["url"], "image/"))
            elif isinstance(ref, str):  # the flat form (Responses)
                out.append((node, "image_url", ref, "image/"))
        elif kind == "image":
            src = node.get("source")
            if isinstance(src, dict) and src.get("type") == "url" and isinstance(src.get("url"), str):
                out.append((node, "source", src["url"], "image/"))
        elif isinstance(kind, str) and kind in _MEDIA and isinstance(node.get(kind), dict):
            part: dict[str, Any] = node[kind]
            for key in ("data", "url"):  # the engine reads ``data``, else ``url``
                value = part.get(key)
                if isinstance(value, str) and value.startswith("http"):
                    out.append((part, key, value, _MEDIA[kind]))
    return [r for r in out if not r[2].startswith("data:")]


async def _fetch_within(
    client: httpx.AsyncClient, url: str, kind: str, allowed: Callable[[IPAddress], bool]
) -> tuple[str, bytes]:
    """``_fetch`` within ``TIMEOUT`` in all (httpx's timeout is per read: a server sending a
    byte at a time would hold the request for as long as it likes)."""
    try:
        async with asyncio.timeout(TIMEOUT):
            return await _fetch(client, url, allowed, kind)
    except TimeoutError:
        raise InvalidInput(f"image {url[:200]}: not fetched within {TIMEOUT:.0f} s") from None


async def _fetch(
    client: httpx.AsyncClient, url: str, allowed: Callable[[IPAddress], bool], kind: str = "image/"
) -> tuple[str, bytes]:
    for _ in range(MAX_REDIRECTS + 1):
        target, host = await _checked(url, allowed)
        request = client.build_request(
            "GET",
            target,
            headers={"Host": host, "Accept": "image/*"},
            extensions={"sni_hostname": host.split(":")[0]},
        )
        try:
            resp = await client.send(request, stream=True)
        except httpx.HTTPError as exc:
            raise InvalidInput(f"image {url[:200]}: could not be fetched ({type(exc).__name__})") from exc
        try:
            if resp.is_redirect and "location" in resp.headers:
                url = str(httpx.URL(url).join(resp.headers["location"]))
                continue
            if resp.status_code != 200:
                raise InvalidInput(f"image {url[:200]}: the server answered {resp.status_code}")
            media = resp.headers.get("content-type", "").split(";")[0].strip().lower()
            if not media.startswith(kind):
                what = {"image/": "an image", "audio/": "audio", "video/": "a video"}[kind]
                raise InvalidInput(f"{url[:200]}: not {what} (content type {media[:60] or 'none'})")
            data = bytearray()
            async for chunk in resp.aiter_bytes():
                data += chunk
                if len(data) > MAX_IMAGE:
                    raise InvalidInput(f"image {url[:200]}: larger than {MAX_IMAGE >> 20} MiB")
            return media, bytes(data)
        finally:
            await resp.aclose()
    raise InvalidInput(f"image {url[:200]}: more than {MAX_REDIRECTS} redirects")


async def _checked(url: str, allowed: Callable[[IPAddress], bool]) -> tuple[str, str]:
    """(the URL with its host replaced by a checked address, the Host header)."""
    try:
        parts = urlsplit(url)
        given_port = parts.port  # ValueError for a port out of range or not a number
    except ValueError as exc:
        raise InvalidInput(f"image URL {url[:200]!r}: not a valid URL ({exc})") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidInput(f"image URL {url[:200]!r}: only http(s) URLs and data: URIs are accepted")
    host = parts.hostname
    port = given_port or (443 if parts.scheme == "https" else 80)
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise InvalidInput(f"image {url[:200]}: the host {host} does not resolve") from exc
    addresses = sorted({str(info[4][0]) for info in infos})
    for a in addresses:
        ip = ipaddress.ip_address(a.split("%")[0])
        if not allowed(ip):
            raise InvalidInput(
                f"image {url[:200]}: {host} is a private or local address ({a}); the gateway fetches "
                "images only from public hosts: send this one inline as a data: URI"
            )
    address = addresses[0]
    netloc = f"[{address}]" if ":" in address else address
    if given_port:
        netloc += f":{given_port}"
    header = host if not given_port else f"{host}:{given_port}"
    return urlunsplit((parts.scheme, netloc, parts.path or "/", parts.query, "")), header
