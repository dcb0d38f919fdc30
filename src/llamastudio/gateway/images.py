"""Images given by URL, fetched by the gateway and passed to the engine inline.

llama-server fetches an ``image_url`` itself (plain HTTP only, no TLS in most builds), from the
machine it runs on: a request could make it read any address that machine can reach — another
service on localhost, the cloud metadata endpoint, the LAN (SSRF). So the gateway fetches a remote
image itself, only from a public address (every address the name resolves to must be global; the
connection goes to the address that was checked, so DNS rebinding cannot swap it), with a size and
time limit and an image content type, and hands the engine a ``data:`` URI. Redirects are
followed, each checked the same way. An image on a private host is sent inline by the client.

Only a request that carries an image part with a non-``data:`` URL is parsed; every other body
passes through untouched (the relay's hot path).
"""

from __future__ import annotations

import asyncio
import base64
import ipaddress
import json
import re
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
_REMOTE = re.compile(rb'"url"\s*:\s*"(?!data:)')


def has_remote_image(body: bytes) -> bool:
    return bool(_REMOTE.search(body))


def public(ip: IPAddress) -> bool:
    """The default policy: only globally routable addresses (no loopback, LAN, link-local —
    169.254.169.254 is the cloud metadata service — CGNAT or reserved ranges)."""
    return ip.is_global


async def inline_images(body: bytes, allowed: Callable[[IPAddress], bool] = public) -> bytes:
    """``body`` with every remote image URL replaced by the image, inline (see the docstring);
    ``allowed``: which addresses may be fetched from."""
    try:
        doc = json.loads(body)
    except ValueError:
        return body  # the engine answers a body it cannot read
    remote = [r for r in _image_refs(doc) if not r[2].startswith("data:")]
    if not remote:
        return body
    if len(remote) > MAX_IMAGES:
        raise InvalidInput(f"at most {MAX_IMAGES} images by URL in one request (send the others inline)")
    async with httpx.AsyncClient(timeout=TIMEOUT, follow_redirects=False, trust_env=False) as client:
        fetched = await asyncio.gather(*(_fetch(client, url, allowed) for _, _, url in remote))
    for (holder, key, _), (media, data) in zip(remote, fetched, strict=True):
        encoded = base64.b64encode(data).decode()
        if key == "source":  # Anthropic: the source becomes a base64 one
            holder[key] = {"type": "base64", "media_type": media, "data": encoded}
        else:
            holder[key] = f"data:{media};base64,{encoded}"
    return json.dumps(doc).encode()


def _image_refs(doc: Any) -> list[tuple[dict[str, Any], str, str]]:
    """(the dict holding the URL, its key, the URL) for every image part of the messages."""
    out: list[tuple[dict[str, Any], str, str]] = []
    if not isinstance(doc, dict):
        return out
    messages = doc.get("messages") or doc.get("input")
    for msg in messages if isinstance(messages, list) else []:
        content = msg.get("content") if isinstance(msg, dict) else None
        for part in content if isinstance(content, list) else []:
            if not isinstance(part, dict):
                continue
            kind, ref = part.get("type"), part.get("image_url")
            if kind == "image_url" and isinstance(ref, dict) and isinstance(ref.get("url"), str):
                out.append((ref, "url", ref["url"]))
            elif kind in ("image_url", "input_image") and isinstance(ref, str):  # the flat form
                out.append((part, "image_url", ref))
            elif kind == "image":
                src = part.get("source")
                if isinstance(src, dict) and src.get("type") == "url" and isinstance(src.get("url"), str):
                    out.append((part, "source", src["url"]))
    return out


async def _fetch(
    client: httpx.AsyncClient, url: str, allowed: Callable[[IPAddress], bool]
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
            if not media.startswith("image/"):
                raise InvalidInput(f"image {url[:200]}: not an image (content type {media[:60] or 'none'})")
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
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidInput(f"image URL {url[:200]!r}: only http(s) URLs and data: URIs are accepted")
    host = parts.hostname
    port = parts.port or (443 if parts.scheme == "https" else 80)
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
    if parts.port:
        netloc += f":{parts.port}"
    header = host if not parts.port else f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path or "/", parts.query, "")), header
