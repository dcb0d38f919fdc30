"""Byte sources a GGUF header is read from: a local file, or an HTTP(S) URL via range requests.

A source answers ``read(offset, n)`` for the header parser. The HTTP source fetches bounded
ranges that grow geometrically (first ``initial`` bytes, then at least as much again as it
already holds), so a header of size H costs O(log H) requests and never more than ~2·H bytes;
the tensor data after the header is never requested.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Protocol

import httpx

from llamastudio.errors import (
    GGUFError,
    NotFound,
    RemoteError,
    check_remote_status,
)

_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")


class ByteSource(Protocol):
    """Random access to the first bytes of one GGUF file."""

    name: str
    size: int

    def read(self, offset: int, n: int) -> bytes:
        """Exactly ``n`` bytes at ``offset``; GGUFError if the file ends before."""
        ...

    def close(self) -> None: ...


class LocalSource:
    """A GGUF file on disk; reads are plain seeks, nothing is mapped."""

    def __init__(self, path: Path) -> None:
        self.name = str(path)
        try:
            self._f = open(path, "rb")  # noqa: SIM115 - closed by close()
            self.size = os.fstat(self._f.fileno()).st_size
        except FileNotFoundError as exc:
            raise NotFound(f"{path}: no such file") from exc
        except IsADirectoryError as exc:
            raise GGUFError(f"{path}: is a directory, not a GGUF file") from exc
        except OSError as exc:
            raise GGUFError(f"{path}: cannot open: {exc.strerror}") from exc

    def read(self, offset: int, n: int) -> bytes:
        if offset + n > self.size:
            raise GGUFError(f"{self.name}: truncated file (needs byte {offset + n}, size {self.size})")
        self._f.seek(offset)
        data = self._f.read(n)
        if len(data) != n:
            raise GGUFError(f"{self.name}: short read at offset {offset}")
        return data

    def close(self) -> None:
        self._f.close()


class HttpSource:
    """A GGUF file behind an HTTP(S) URL that honours ``Range`` requests.

    Holds one contiguous prefix of the file in memory and extends it on demand. A server that
    answers a range request with the whole body (200) is refused at once: the body is never read.
    """

    def __init__(
        self,
        url: str,
        *,
        token: str | None = None,
        client: httpx.Client | None = None,
        initial: int = 512 * 1024,
        max_header: int = 512 * 1024 * 1024,
    ) -> None:
        self.name = url
        self.requests = 0
        self.bytes_fetched = 0
        self._url = url
        self._headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._own_client = client is None
        self._client = client or httpx.Client(follow_redirects=True, timeout=30.0)
        self._buf = b""
        self._initial = initial
        self._max_header = max_header
        self.size = -1
        self._fetch(0, initial)

    def _fetch(self, start: int, length: int) -> None:
        end = start + length - 1
        if self.size >= 0:
            end = min(end, self.size - 1)
        headers = {**self._headers, "Range": f"bytes={start}-{end}"}
        self.requests += 1
        try:
            with self._client.stream("GET", self._url, headers=headers) as resp:
                self._check_status(resp)
                total = self._parse_content_range(resp, start)
                chunk = resp.read()
        except httpx.HTTPError as exc:
            raise RemoteError(f"{self._url}: {type(exc).__name__}: {exc}") from exc
        self.bytes_fetched += len(chunk)
        if total >= 0:
            self.size = total
        if len(chunk) != end - start + 1 and start + len(chunk) < self.size:
            raise RemoteError(f"{self._url}: server returned {len(chunk)} bytes for a range of {length}")
        self._buf += chunk

    def _check_status(self, resp: httpx.Response) -> None:
        short = GGUFError(f"{self._url}: file is shorter than a GGUF header (HTTP 416)")
        check_remote_status(self._url, resp.status_code, short)

    def _parse_content_range(self, resp: httpx.Response, start: int) -> int:
        match = _CONTENT_RANGE.fullmatch(resp.headers.get("content-range", "").strip())
        if not match or int(match.group(1)) != start:
            raise RemoteError(f"{self._url}: bad or missing Content-Range in a 206 response")
        return -1 if match.group(3) == "*" else int(match.group(3))

    def read(self, offset: int, n: int) -> bytes:
        need = offset + n
        if self.size >= 0 and need > self.size:
            raise GGUFError(f"{self.name}: truncated file (needs byte {need}, size {self.size})")
        if need > len(self._buf):
            if need > self._max_header:
                raise GGUFError(f"{self.name}: header larger than {self._max_header} bytes")
            have = len(self._buf)
            self._fetch(have, max(need - have, have, self._initial))
            if need > len(self._buf):
                raise GGUFError(f"{self.name}: truncated file (needs byte {need})")
        return self._buf[offset:need]

    @property
    def fetched(self) -> bytes:
        """Every byte fetched so far (a prefix of the file)."""
        return self._buf

    def close(self) -> None:
        if self._own_client:
            self._client.close()


class BytesSource:
    """A header already fetched (e.g. cached on disk): the first bytes of a file of ``size`` bytes."""

    def __init__(self, name: str, data: bytes, size: int) -> None:
        self.name = name
        self.size = size
        self._data = data

    def read(self, offset: int, n: int) -> bytes:
        if offset + n > len(self._data):
            raise GGUFError(f"{self.name}: truncated header (needs byte {offset + n})")
        return self._data[offset : offset + n]

    def close(self) -> None:
        pass


def is_url(location: str) -> bool:
    return location.startswith(("http://", "https://"))


def open_source(location: str, *, token: str | None = None, client: httpx.Client | None = None) -> ByteSource:
    """A source for a local path or an http(s) URL."""
    if is_url(location):
        return HttpSource(location, token=token, client=client)
    return LocalSource(Path(location))
