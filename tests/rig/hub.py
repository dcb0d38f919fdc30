"""A local server speaking the Hugging Face Hub's HTTP protocol, enough for ``huggingface_hub``
(pointed at it with ``HF_ENDPOINT``) to search, list, read metadata and download, unchanged:

- ``GET /api/models`` (search, author, filter, sort, limit), ``GET /api/models/{repo}[/revision/{rev}]``
  and ``GET /api/models/{repo}/tree/{rev}`` with LFS sha256 and sizes;
- ``HEAD``/``GET /{repo}/resolve/{rev}/{path}`` with ``X-Repo-Commit``, ``ETag`` (the LFS sha256),
  ``Content-Length``, ``Accept-Ranges`` and ``Range`` → 206.

Repos hold any files: GGUF quants, or a transformers checkpoint (``config.json`` + safetensors
shards, ``tags=["safetensors"]``, ``library="transformers"``; see ``tests/rig/checkpoints.py``).

Test knobs: ``throttle`` slows every body;
gated repos answer 401 (no token) or 403 (wrong token) with ``X-Error-Code: GatedRepo``;
``drop_after[path] = n`` closes the connection after n body bytes (once); ``corrupt`` serves bytes
that do not match the advertised sha256. Requests and body bytes are counted per path.

Hostile mode, a compromised mirror: a repo's file names are sent as given (``../../x``, absolute,
backslashes — whatever the ``files`` keys say); ``etags[path]`` replaces a file's ``ETag`` header
(e.g. ``"../../x"`` or ``W/"/.."``), ``commit_header`` the ``X-Repo-Commit`` header, and ``sha``
may be any string (``model_info``'s commit id).
"""

from __future__ import annotations

import hashlib
import json
import posixpath
import re
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlparse

from tests.rig.serving import running

_RANGE = re.compile(r"bytes=(\d+)-(\d*)$")


@dataclass
class Repo:
    id: str
    files: dict[str, Path]  # repo path → file on disk
    sha: str = ""
    gated: bool = False
    downloads: int = 0
    likes: int = 0
    tags: list[str] = field(default_factory=lambda: ["gguf"])  # safetensors repos: ["safetensors", ...]
    library: str = "gguf"  # the card's library_name ("transformers" for a checkpoint)
    license: str = "mit"
    corrupt: set[str] = field(default_factory=set)
    digests: dict[str, str] = field(default_factory=dict)
    etags: dict[str, str] = field(default_factory=dict)  # hostile: ETag header per path, sent as is
    commit_header: str | None = None  # hostile: X-Repo-Commit sent instead of ``sha``

    def __post_init__(self) -> None:
        self.sha = self.sha or hashlib.sha1(self.id.encode()).hexdigest()
        for path, src in self.files.items():
            h = hashlib.sha256()
            with open(src, "rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    h.update(chunk)
            self.digests[path] = h.hexdigest()


class HubServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, token: str = "hf_good", port: int = 0) -> None:
        super().__init__(("127.0.0.1", port), _Handler)  # a port: the Hub back where it was
        self.repos: dict[str, Repo] = {}
        self.token = token
        self.drop_after: dict[str, int] = {}
        self.throttle = 0.0  # seconds of sleep per 64 KiB sent, to make downloads slow enough to kill
        self.requests: dict[str, int] = defaultdict(int)
        self.bytes_sent: dict[str, int] = defaultdict(int)
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def add_repo(self, repo: Repo) -> Repo:
        self.repos[repo.id] = repo
        return repo

    def reset_counts(self) -> None:
        with self.lock:
            self.requests.clear()
            self.bytes_sent.clear()


class _Handler(BaseHTTPRequestHandler):
    server: HubServer
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: object) -> None:
        pass

    def _json(self, body: Any, status: int = 200, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def _auth(self, repo: Repo) -> bool:
        if not repo.gated:
            return True
        auth = self.headers.get("Authorization")
        if auth == f"Bearer {self.server.token}":
            return True
        status = 401 if auth is None else 403
        msg = f"Access to model {repo.id} is restricted. You must have access to it and be authenticated."
        self._json({"error": msg}, status, {"X-Error-Code": "GatedRepo", "X-Error-Message": msg})
        return False

    def do_HEAD(self) -> None:
        self.do_GET()

    def do_GET(self) -> None:
        url = urlparse(self.path)
        path = unquote(url.path)
        with self.server.lock:
            self.server.requests[path] += 1
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        if path == "/api/models":
            return self._search(query)
        m = re.fullmatch(r"/api/models/([^/]+/[^/]+)(?:/revision/([^/]+))?", path)
        if m:
            return self._info(m.group(1))
        m = re.fullmatch(r"/api/models/([^/]+/[^/]+)/tree/([^/]+)(/.*)?", path)
        if m:
            return self._tree(m.group(1))
        m = re.fullmatch(r"/([^/]+/[^/]+)/resolve/([^/]+)/(.+)", path)
        known = self.server.repos.get(m.group(1)) if m else None
        if m and known is not None and m.group(3) in known.files:
            return self._resolve(m.group(1), m.group(3))
        hostile = self._hostile_file(path)
        if hostile is not None:  # a hostile name's URL, after the client normalised its ``..``
            return self._resolve(*hostile)
        if m:
            return self._resolve(m.group(1), m.group(3))
        self._json({"error": "Not Found"}, 404, {"X-Error-Code": "EntryNotFound"})

    def _hostile_file(self, path: str) -> tuple[str, str] | None:
        for repo in self.server.repos.values():
            for file in repo.files:
                for rev in ("main", repo.sha):
                    if posixpath.normpath(f"/{repo.id}/resolve/{rev}/{file}") == posixpath.normpath(path):
                        return repo.id, file
        return None

    def _repo(self, repo_id: str) -> Repo | None:
        repo = self.server.repos.get(repo_id)
        if repo is None:
            self._json({"error": "Repository not found"}, 401, {"X-Error-Code": "RepoNotFound"})
        return repo

    def _card(self, repo: Repo) -> dict[str, Any]:
        return {
            "id": repo.id, "modelId": repo.id, "author": repo.id.split("/")[0], "sha": repo.sha,
            "downloads": repo.downloads, "likes": repo.likes, "tags": repo.tags, "private": False,
            "gated": "manual" if repo.gated else False, "pipeline_tag": "text-generation",
            "library_name": repo.library, "lastModified": "2026-11-01T00:00:00.000Z",
            "createdAt": "2026-10-01T00:00:00.000Z", "cardData": {"license": repo.license},
        }  # fmt: skip

    def _search(self, q: dict[str, str]) -> None:
        repos = list(self.server.repos.values())
        if "search" in q:
            repos = [r for r in repos if q["search"].lower() in r.id.lower()]
        if "author" in q:
            repos = [r for r in repos if r.id.startswith(q["author"] + "/")]
        if "filter" in q:
            repos = [r for r in repos if q["filter"] in r.tags]
        key = q.get("sort", "downloads")
        if key in ("downloads", "likes"):
            repos.sort(key=lambda r: -getattr(r, key))
        limit = int(q.get("limit", 1000))
        self._json([self._card(r) for r in repos[:limit]])

    def _info(self, repo_id: str) -> None:
        repo = self._repo(repo_id)
        if repo is None:
            return
        siblings: list[dict[str, Any]] = [{"rfilename": p, "size": src.stat().st_size,
                     "lfs": {"sha256": repo.digests[p], "size": src.stat().st_size, "pointerSize": 134}}
                    for p, src in sorted(repo.files.items())]  # fmt: skip
        self._json(self._card(repo) | {"siblings": siblings, "usedStorage": sum(s["size"] for s in siblings)})

    def _tree(self, repo_id: str) -> None:
        repo = self._repo(repo_id)
        if repo is None:
            return
        entries = [{"type": "file", "path": p, "size": src.stat().st_size, "oid": repo.digests[p][:40],
                    "lfs": {"oid": repo.digests[p], "size": src.stat().st_size, "pointerSize": 134}}
                   for p, src in sorted(repo.files.items())]  # fmt: skip
        self._json(entries)

    def _resolve(self, repo_id: str, file: str) -> None:
        repo = self._repo(repo_id)
        if repo is None or not self._auth(repo):
            return
        src = repo.files.get(file)
        if src is None:
            self._json({"error": "Entry not found"}, 404, {"X-Error-Code": "EntryNotFound"})
            return
        data_path = src
        size = data_path.stat().st_size
        start, end = 0, size - 1
        m = _RANGE.match(self.headers.get("Range", ""))
        status = 200
        if m:
            start = int(m.group(1))
            end = min(int(m.group(2)) if m.group(2) else size - 1, size - 1)
            if start >= size:
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{size}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            status = 206
        self.send_response(status)
        self.send_header("X-Repo-Commit", repo.commit_header or repo.sha)
        self.send_header("ETag", repo.etags.get(file, f'"{repo.digests[file]}"'))
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(end - start + 1))
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        self.end_headers()
        if self.command == "HEAD":
            return
        drop = self.server.drop_after.pop(f"{repo_id}/{file}", None)
        sent = 0
        with open(data_path, "rb") as f:
            f.seek(start)
            remaining = end - start + 1
            try:
                while remaining:
                    chunk = f.read(min(remaining, 64 * 1024))
                    if file in repo.corrupt:
                        chunk = bytes(b ^ 0xFF for b in chunk[:1]) + chunk[1:]
                    if drop is not None and sent + len(chunk) > drop:
                        chunk = chunk[: max(drop - sent, 0)]
                        remaining = len(chunk)
                    with self.server.lock:
                        self.server.bytes_sent[f"{repo_id}/{file}"] += len(chunk)
                    self.wfile.write(chunk)
                    if self.server.throttle:
                        time.sleep(self.server.throttle)
                    sent += len(chunk)
                    remaining -= len(chunk)
                    if drop is not None and sent >= drop:
                        self.wfile.flush()
                        self.close_connection = True
                        self.connection.shutdown(2)  # the connection dies mid-file
                        return
            except (BrokenPipeError, ConnectionResetError):
                return


@contextmanager
def hub_server(**kwargs: Any) -> Iterator[HubServer]:
    with running(HubServer(**kwargs)) as server:
        yield server
