"""A local server speaking the parts of GitHub the studio uses: the releases REST API, asset
downloads, and pull-request ``.patch`` URLs. Routes are registered by the test."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tests.rig.serving import running


class GitHubServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.routes: dict[str, tuple[int, str, bytes]] = {}
        self.requests: list[str] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def add(
        self, path: str, body: bytes | str | Any, status: int = 200, content_type: str | None = None
    ) -> None:
        if isinstance(body, str):
            data, ctype = body.encode(), content_type or "text/plain"
        elif isinstance(body, bytes):
            data, ctype = body, content_type or "application/octet-stream"
        else:
            data, ctype = json.dumps(body).encode(), "application/json"
        self.routes[path] = (status, ctype, data)

    def add_release(
        self, repo: str, tag: str, assets: dict[str, tuple[bytes, str | None]], latest: bool = False
    ) -> None:
        """assets: name → (bytes, digest or None). Adds the release JSON and the download routes."""
        entries = []
        for name, (data, digest) in assets.items():
            path = f"/{repo}/releases/download/{tag}/{name}"
            self.add(path, data)
            entry: dict[str, Any] = {"name": name, "size": len(data), "browser_download_url": self.url + path}
            if digest:
                entry["digest"] = digest
            entries.append(entry)
        release = {
            "tag_name": tag,
            "name": tag,
            "draft": False,
            "published_at": "2026-11-20T00:00:00Z",
            "assets": entries,
        }
        self.add(f"/repos/{repo}/releases/tags/{tag}", release)
        existing = json.loads(self.routes.get(f"/repos/{repo}/releases", (200, "", b"[]"))[2])
        self.add(f"/repos/{repo}/releases", [release, *existing])
        if latest:
            self.add(f"/repos/{repo}/releases/latest", release)


class _Handler(BaseHTTPRequestHandler):
    server: GitHubServer

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        path = self.path.split("?")[0]
        self.server.requests.append(path)
        status, ctype, body = self.server.routes.get(
            path, (404, "application/json", b'{"message": "Not Found"}')
        )
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@contextmanager
def github_server() -> Iterator[GitHubServer]:
    with running(GitHubServer()) as server:
        yield server
