"""llama.cpp release binaries from the GitHub REST API (base URL and repository are settings).

Install = pick the asset for this OS / arch / backend, download it with progress, verify the
digest the API publishes (``sha256:…``), unpack into a workspace, fix permissions, check that
llama-server runs (with its bundled libraries on the library path), then publish the directory
by one rename and register it. Any failure leaves nothing registered.
"""

from __future__ import annotations

import hashlib
import os
import platform
import re
import shutil
import stat
import tarfile
import uuid
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from llamastudio.archives import extract_tar
from llamastudio.engines.registry import Engine, EngineRegistry
from llamastudio.engines.validate import probe
from llamastudio.errors import AuthRequired, InvalidInput, NotFound, RemoteError, StudioError

ProgressFn = Callable[[int, int], None]  # bytes done, bytes total (0 if unknown)
CONNECT_TIMEOUT = 3.0  # seconds
GIT_TIMEOUT = 20  # seconds for one `git ls-remote`
ARCHIVES = (".zip", ".tar.gz", ".tgz")
_OS_TOKENS = {"linux": ("ubuntu", "linux"), "macos": ("macos", "darwin", "osx"), "windows": ("win",)}
_ARCH_TOKENS = {"x64": ("x64", "x86_64", "amd64"), "arm64": ("arm64", "aarch64")}
_BACKEND_TOKENS = ("cuda", "vulkan", "hip", "rocm", "sycl", "opencl", "kompute", "musa", "cann", "openvino")


@dataclass(frozen=True)
class Asset:
    name: str
    url: str
    size: int = 0
    digest: str | None = None  # "sha256:<hex>" when the API gives one
    id: int | None = None  # the API's asset id


@dataclass(frozen=True)
class Release:
    tag: str
    name: str
    published_at: str
    assets: tuple[Asset, ...] = field(default=())
    html_url: str = ""


@dataclass(frozen=True)
class Commit:
    sha: str
    date: str
    message: str


def host_platform() -> tuple[str, str]:
    system = {"Linux": "linux", "Darwin": "macos", "Windows": "windows"}.get(platform.system(), "linux")
    machine = platform.machine().lower()
    return system, "arm64" if machine in ("arm64", "aarch64") else "x64"


class GitHubReleases:
    def __init__(
        self, api: str, repo: str, token: str | None = None, client: httpx.Client | None = None
    ) -> None:
        if not re.fullmatch(r"[\w.-]+/[\w.-]+", repo):
            raise InvalidInput(f"repository {repo!r} should look like owner/name")
        self.api = api.rstrip("/")
        self.repo = repo
        headers = {"Accept": "application/vnd.github+json", "X-GitHub-Api-Version": "2022-11-28"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        # an unreachable GitHub is said within seconds (connect), a slow one within a minute
        timeout = httpx.Timeout(60, connect=CONNECT_TIMEOUT)
        self.client = client or httpx.Client(follow_redirects=True, timeout=timeout, headers=headers)

    def _get(self, path: str, **params: Any) -> Any:
        url = f"{self.api}/repos/{self.repo}/{path}"
        try:
            resp = self.client.get(url, params=params)
        except (httpx.ConnectError, httpx.TimeoutException) as exc:
            what = "did not answer in time" if isinstance(exc, httpx.TimeoutException) else "is unreachable"
            raise RemoteError(
                f"GitHub's API at {self.api} {what} ({exc or type(exc).__name__}): check this machine's "
                "network connection and proxy (HTTPS_PROXY), or set LLAMASTUDIO_GITHUB_API to a "
                "reachable mirror"
            ) from exc
        except httpx.HTTPError as exc:
            raise RemoteError(f"GitHub API {url}: {exc}") from exc
        if resp.status_code in (401, 403):
            raise AuthRequired(
                f"GitHub API {url}: HTTP {resp.status_code} (rate limit or token: set GITHUB_TOKEN)"
            )
        if resp.status_code == 404:
            raise NotFound(f"GitHub API {url}: not found")
        if resp.status_code != 200:
            raise RemoteError(f"GitHub API {url}: HTTP {resp.status_code}")
        return resp.json()

    def releases(self, limit: int = 10) -> list[Release]:
        data = self._get("releases", per_page=limit)
        return [_release(r) for r in data if not r.get("draft")]

    def release(self, tag: str | None = None) -> Release:
        return _release(self._get(f"releases/tags/{tag}" if tag else "releases/latest"))

    def latest_commit(self) -> Commit:
        """The newest commit of the default branch."""
        data = self._get("commits", per_page=1)
        try:
            c = data[0]
            return Commit(str(c["sha"]), str(c["commit"]["committer"]["date"]), str(c["commit"]["message"]))
        except (IndexError, KeyError, TypeError) as exc:
            raise RemoteError(f"GitHub API {self.repo} commits: unexpected answer ({exc!r})") from exc


def _release(r: dict[str, Any]) -> Release:
    assets = tuple(
        Asset(a["name"], a["browser_download_url"], int(a.get("size") or 0), a.get("digest"), a.get("id"))
        for a in r.get("assets", [])
    )
    name, published = r.get("name") or r["tag_name"], r.get("published_at") or ""
    return Release(r["tag_name"], name, published, assets, r.get("html_url") or "")


def _tokens(name: str) -> set[str]:
    base = name
    for ext in ARCHIVES:
        base = base.removesuffix(ext)
    return set(re.split(r"[-_]", base.lower()))


def select_asset(release: Release, os_name: str, arch: str, backend: str = "cpu") -> Asset:
    """The archive for this OS, arch and backend; NotFound listing what the release offers."""
    candidates = []
    for asset in release.assets:
        if (
            not asset.name.endswith(ARCHIVES)
            or asset.name.startswith("cudart")
            or "xcframework" in asset.name
        ):
            continue
        tokens = _tokens(asset.name)
        if not tokens & set(_OS_TOKENS.get(os_name, (os_name,))):
            continue
        if not tokens & set(_ARCH_TOKENS.get(arch, (arch,))):
            continue
        backends = tokens & set(_BACKEND_TOKENS)
        if backend == "cpu" and backends:
            continue
        if backend != "cpu" and backend not in backends and not (backend == "hip" and "rocm" in backends):
            continue
        candidates.append(asset)
    if not candidates:
        offered = ", ".join(a.name for a in release.assets if a.name.endswith(ARCHIVES)) or "no archives"
        raise NotFound(
            f"release {release.tag} has no {backend} build for {os_name}-{arch} (it offers: {offered})"
        )
    # the newest toolkit version when several match (cuda-12.4 over cuda-11.7)
    return max(candidates, key=lambda a: [int(x) for x in re.findall(r"\d+", a.name.split(release.tag)[-1])])


def download(
    client: httpx.Client, asset: Asset, dest: Path, progress: ProgressFn = lambda _d, _t: None
) -> None:
    """Stream to ``dest``; verify the published sha256 digest; a mismatch deletes the file."""
    h = hashlib.sha256()
    try:
        with client.stream("GET", asset.url) as resp:
            if resp.status_code != 200:
                raise RemoteError(f"downloading {asset.name}: HTTP {resp.status_code}")
            total = int(resp.headers.get("content-length") or asset.size or 0)
            done = 0
            with open(dest, "wb") as out:
                for chunk in resp.iter_bytes(1 << 20):
                    out.write(chunk)
                    h.update(chunk)
                    done += len(chunk)
                    progress(done, total)
    except httpx.HTTPError as exc:
        raise RemoteError(f"downloading {asset.name}: {exc}") from exc
    if asset.digest and asset.digest.startswith("sha256:") and h.hexdigest() != asset.digest[7:]:
        dest.unlink(missing_ok=True)
        raise RemoteError(
            f"{asset.name}: sha256 {h.hexdigest()} does not match the published {asset.digest[7:]}"
        )


def unpack(archive: Path, dest: Path) -> Path:
    """Unpack and return the directory holding llama-server (executables made executable)."""
    dest.mkdir(parents=True)
    if archive.name.endswith(".zip"):
        with zipfile.ZipFile(archive) as zf:
            for member in zf.namelist():
                target = (dest / member).resolve()
                if not target.is_relative_to(dest.resolve()):
                    raise InvalidInput(f"{archive.name}: member {member!r} escapes the archive")
            zf.extractall(dest)
    else:
        with tarfile.open(archive) as tf:
            extract_tar(tf, dest, archive.name)
    found = sorted(dest.rglob("llama-server"), key=lambda p: len(p.parts)) or sorted(
        dest.rglob("llama-server.exe")
    )
    if not found:
        raise InvalidInput(f"{archive.name} contains no llama-server")
    bindir = found[0].parent
    for path in bindir.iterdir():
        if path.is_file() and (path.suffix in ("", ".so") or ".so." in path.name):
            path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return bindir


def install(
    gh: GitHubReleases,
    registry: EngineRegistry,
    tag: str | None = None,
    backend: str = "cpu",
    os_name: str | None = None,
    arch: str | None = None,
    progress: ProgressFn = lambda _d, _t: None,
) -> Engine:
    host_os, host_arch = host_platform()
    release = gh.release(tag)
    asset = select_asset(release, os_name or host_os, arch or host_arch, backend)
    engine_id = f"llama.cpp-{release.tag}-{backend}"
    if any(e.id == engine_id for e in registry.all()):
        raise InvalidInput(f"{engine_id} is already installed")
    registry.dir.mkdir(parents=True, exist_ok=True)
    ws = registry.dir / f".install-{uuid.uuid4().hex[:12]}"
    ws.mkdir()
    try:
        archive = ws / asset.name
        download(gh.client, asset, archive, progress)
        bindir = unpack(archive, ws / "files")
        archive.unlink()
        check = probe(bindir / "llama-server")
        if not check["ok"]:
            raise InvalidInput(f"{asset.name}: llama-server does not run here: {check['error']}")
        final = registry.dir / engine_id
        (ws / "files").rename(final)
        rel = bindir.relative_to(ws / "files")
        tools = {
            t: str(final / rel / t)
            for t in ("llama-server", "llama-quantize", "llama-fit-params", "rpc-server")
            if (final / rel / t).exists()
        }
        flags = check.pop("flags")
        engine = Engine(
            id=engine_id,
            name=f"llama.cpp {release.tag} ({backend})",
            kind="release",
            root=str(final),
            binaries=tools,
            version=release.tag,
            commit=check.get("commit", ""),
            backends=[backend],
            source={
                "kind": "release",
                "repo": gh.repo,
                "tag": release.tag,
                "asset": asset.name,
                "digest": asset.digest or "",
            },
            validation=check,
            capabilities=flags,
        )
        try:
            return registry.add(engine)
        except StudioError:
            shutil.rmtree(final, ignore_errors=True)
            raise
    finally:
        shutil.rmtree(ws, ignore_errors=True)


def _build_number(tag: str) -> int:
    m = re.search(r"(\d+)", tag)
    return int(m.group(1)) if m else -1


def updates(gh: GitHubReleases | None, engines: list[Engine]) -> list[dict[str, Any]]:
    """Per engine: the newest release (for release engines) or branch head (for git source
    builds); ``error`` says why a check failed (GitHub or the git remote unreachable, ...), so a
    failed check is never a silent "—"; ``note`` says why an engine has nothing to check (a build
    from a local directory, a binary the studio did not install)."""
    latest: Release | None = None
    failed: str | None = None
    rows = []
    for e in engines:
        row: dict[str, Any] = {
            "engine": e.id,
            "kind": e.kind,
            "installed": e.version or e.commit,
            "latest": None,
            "update": False,
            "error": None,
            "note": None,
        }
        if e.kind == "release":
            if gh is None:
                row["error"] = "no GitHub releases source configured"
            elif latest is None and failed is None:
                try:
                    latest = gh.release()
                except StudioError as exc:  # asked once for every release engine
                    failed = exc.message
            if latest is not None:
                row["latest"] = latest.tag
                row["update"] = _build_number(latest.tag) > _build_number(e.version)
            row["error"] = row["error"] or failed
        elif e.kind == "source" and e.source.get("kind") == "git":
            head, row["error"] = _git_head(e.source["location"], e.source.get("ref") or "HEAD")
            row["latest"] = head[:10] if head else None
            row["update"] = bool(head and e.source.get("digest") and head != e.source["digest"])
        elif e.kind == "source":
            what = {"dir": "a local directory", "tarball": "a tarball"}.get(
                e.source.get("kind", ""), "a source"
            )
            row["note"] = f"built from {what}: no upstream to check"
        else:
            row["note"] = _UNCHECKED.get(e.kind, f"a {e.kind} engine: not checked")
        rows.append(row)
    return rows


_UNCHECKED = {
    "external": "registered from this machine: its updates are its own",
    "venv": "a Python environment: not checked here (its package's newer versions install as another engine)",
}


def _git_head(location: str, ref: str) -> tuple[str | None, str | None]:
    """(commit of ``ref`` at ``location``, None) or (None, why not)."""
    import subprocess

    argv = ["git", "ls-remote", location, ref]
    env = {**os.environ, "GIT_TERMINAL_PROMPT": "0"}  # never wait for a password on a terminal
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=GIT_TIMEOUT, env=env)
    except subprocess.TimeoutExpired:
        return None, f"git ls-remote {location}: no answer within {GIT_TIMEOUT} s (network or proxy?)"
    except OSError as exc:
        return None, f"git ls-remote {location}: {exc}"
    if out.returncode != 0:
        last = (out.stderr.strip().splitlines() or [f"exit {out.returncode}"])[-1]
        return None, f"git ls-remote {location}: {last}"
    if not out.stdout.strip():
        return None, f"git ls-remote {location}: no ref {ref!r}"
    return out.stdout.split()[0], None
