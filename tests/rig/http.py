"""A local static file server that speaks HTTP range requests the way the Hub's CDN does.

Counts requests and body bytes sent so tests can assert how much a remote read cost. Options:
``ranges=False`` answers every request with the whole file (200) like a server without range
support; ``token`` requires ``Authorization: Bearer <token>`` (401 otherwise).
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from tests.rig.serving import running

_RANGE = re.compile(r"bytes=(\d+)-(\d*)$")


class FileServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, root: Path, *, ranges: bool = True, token: str | None = None) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.root = root
        self.ranges = ranges
        self.token = token
        self.requests = 0
        self.bytes_sent = 0
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def reset(self) -> None:
        with self.lock:
            self.requests = self.bytes_sent = 0


class _Handler(BaseHTTPRequestHandler):
    server: FileServer

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        srv = self.server
        with srv.lock:
            srv.requests += 1
        if srv.token and self.headers.get("Authorization") != f"Bearer {srv.token}":
            self.send_error(401, "Unauthorized")
            return
        path = (srv.root / self.path.split("?")[0].lstrip("/")).resolve()
        if srv.root.resolve() not in path.parents or not path.is_file():
            self.send_error(404)
            return
        size = path.stat().st_size
        start, end = 0, size - 1
        match = _RANGE.match(self.headers.get("Range", ""))
        if srv.ranges and match:
            start = int(match.group(1))
            end = min(int(match.group(2)) if match.group(2) else size - 1, size - 1)
            if start >= size:
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{size}")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        else:
            self.send_response(200)
        self.send_header("Accept-Ranges", "bytes" if srv.ranges else "none")
        self.send_header("Content-Length", str(end - start + 1))
        self.end_headers()
        with open(path, "rb") as f:
            f.seek(start)
            remaining = end - start + 1
            try:
                while remaining:
                    chunk = f.read(min(remaining, 64 * 1024))
                    with srv.lock:  # counted before the write, so a reader never sees it lag
                        srv.bytes_sent += len(chunk)
                    self.wfile.write(chunk)
                    remaining -= len(chunk)
            except (BrokenPipeError, ConnectionResetError):
                pass


@contextmanager
def serve_files(root: Path, **kwargs: object) -> Iterator[FileServer]:
    with running(FileServer(root, **kwargs)) as server:  # type: ignore[arg-type]
        yield server
