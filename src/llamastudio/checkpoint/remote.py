"""Reading a checkpoint over HTTP without downloading it: a shard's header by range requests
(at most 2 requests and 1 MiB per shard), small JSON files (``config.json``) by one GET.

Statuses are mapped here, once: 401/403 → :class:`AuthRequired`, 404 → :class:`NotFound`, a
server that answers a range request with the whole file (200) → :class:`RangeNotSupported`
(the body is never read), anything else → :class:`RemoteError`. A server never gets to send
more than was asked for: bodies are read up to the bound and refused past it.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

import httpx

from llamastudio.checkpoint.safetensors import ShardHeader, header_length, parse_header
from llamastudio.errors import InvalidInput, RemoteError, check_remote_status

FIRST_RANGE = 64 * 1024  # the first request: most shard headers fit in it
MAX_REMOTE_HEADER = 1024 * 1024  # bytes of a remote shard read at most, over both requests
MAX_JSON = 16 * 1024 * 1024  # a config.json (or index) larger than this is refused
TIMEOUT = httpx.Timeout(30.0, connect=5.0)

_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")


@dataclass(frozen=True)
class Fetched:
    """A shard's first bytes (the length and the whole JSON header) and what reading them cost."""

    url: str
    data: bytes
    size: int  # the whole file's size, from Content-Range
    requests: int
    bytes_fetched: int


def _client(client: httpx.Client | None) -> httpx.Client:
    # redirects are followed (the Hub sends files to a CDN); httpx drops Authorization on a
    # redirect to another origin, so the token only goes to the host it was meant for
    return client or httpx.Client(follow_redirects=True, timeout=TIMEOUT)


def _check_status(url: str, status: int, ranged: bool) -> None:
    short = InvalidInput(f"{url}: the file is empty, too short for a safetensors file (HTTP 416)")
    check_remote_status(url, status, short, ranged)


def _body(url: str, resp: httpx.Response, most: int) -> bytes:
    out = bytearray()
    for chunk in resp.iter_bytes():
        out += chunk
        if len(out) > most:
            raise RemoteError(f"{url}: the server sent more than the {most:,} bytes asked for")
    return bytes(out)


def _range(http: httpx.Client, url: str, headers: dict[str, str], start: int, end: int) -> tuple[bytes, int]:
    """Bytes ``start..end`` (inclusive, or fewer at the end of the file) and the file's size."""
    try:
        with http.stream("GET", url, headers={**headers, "Range": f"bytes={start}-{end}"}) as resp:
            _check_status(url, resp.status_code, ranged=True)
            m = _CONTENT_RANGE.fullmatch(resp.headers.get("content-range", "").strip())
            if not m or int(m.group(1)) != start or m.group(3) == "*":
                raise RemoteError(f"{url}: bad or missing Content-Range in a 206 response")
            size, last = int(m.group(3)), int(m.group(2))
            data = _body(url, resp, end - start + 1)
    except httpx.HTTPError as exc:
        raise RemoteError(f"{url}: {type(exc).__name__}: {exc}") from exc
    if last != start + len(data) - 1 or last > end:
        raise RemoteError(f"{url}: the server sent {len(data)} bytes for the range {start}-{end}")
    return data, size


def fetch_header(url: str, token: str | None = None, client: httpx.Client | None = None) -> Fetched:
    """A remote shard's header bytes: ``bytes=0-65535``, then (only if the header is longer) one
    request for the rest; a header needing more than :data:`MAX_REMOTE_HEADER` is refused."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    http = _client(client)
    try:
        data, size = _range(http, url, headers, 0, FIRST_RANGE - 1)
        requests = 1
        need = 8 + header_length(url, data, size)
        if need > MAX_REMOTE_HEADER:
            raise InvalidInput(
                f"{url}: the safetensors header is {need:,} bytes; reading more than "
                f"{MAX_REMOTE_HEADER:,} bytes of a remote shard is refused"
            )
        fetched = len(data)
        if need > len(data):
            rest, _ = _range(http, url, headers, len(data), need - 1)
            requests += 1
            fetched += len(rest)
            data += rest
        if len(data) < need:
            raise InvalidInput(f"{url}: truncated header ({len(data) - 8:,} of {need - 8:,} bytes)")
    finally:
        if client is None:
            http.close()
    return Fetched(url, data[:need], size, requests, fetched)


def read_remote(url: str, token: str | None = None, client: httpx.Client | None = None) -> ShardHeader:
    """The header of a remote shard (see :func:`fetch_header`)."""
    fetched = fetch_header(url, token, client)
    return parse_header(url, fetched.data, fetched.size)


def parse_json_object(name: str, data: bytes) -> dict[str, Any]:
    """A JSON object from a file's bytes; anything else is an :class:`InvalidInput` naming it."""
    try:
        obj = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise InvalidInput(f"{name}: not valid JSON ({exc})") from exc
    if not isinstance(obj, dict):
        raise InvalidInput(f"{name}: expected a JSON object")
    return obj


def fetch_bytes(
    url: str, token: str | None = None, client: httpx.Client | None = None, most: int = MAX_JSON
) -> bytes:
    """A small remote file in one GET, refused past ``most`` bytes."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    http = _client(client)
    try:
        with http.stream("GET", url, headers=headers) as resp:
            _check_status(url, resp.status_code, ranged=False)
            return _body(url, resp, most)
    except httpx.HTTPError as exc:
        raise RemoteError(f"{url}: {type(exc).__name__}: {exc}") from exc
    finally:
        if client is None:
            http.close()
