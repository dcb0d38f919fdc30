"""Patches for source builds: a GitHub PR URL (fetched as ``.patch``), a raw patch URL, or a file.

``fetch`` blocks (network, file read: call it in a thread); ``apply`` is async."""

from __future__ import annotations

import hashlib
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import httpx

from llamastudio.engines import proc
from llamastudio.errors import Conflict, InvalidInput, NotFound, RemoteError

_PR = re.compile(r"^(https?://[^/]+/[^/]+/[^/]+/pull/\d+)(?:/(?:files|commits)?)?/?(?:[?#].*)?$")


@dataclass(frozen=True)
class Patch:
    origin: str  # what the user gave
    url: str | None  # what was fetched
    text: str

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.text.encode()).hexdigest()

    def describe(self) -> dict[str, str]:
        return {"origin": self.origin, "url": self.url or "", "sha256": self.sha256}


def normalize_url(url: str) -> str:
    """``.../pull/123`` (or ``/files``, ``/commits``) → ``.../pull/123.patch``; other URLs unchanged."""
    m = _PR.match(url)
    return f"{m.group(1)}.patch" if m else url


def fetch(origin: str, client: httpx.Client | None = None, token: str | None = None) -> Patch:
    if not origin.startswith(("http://", "https://")):
        path = Path(origin).expanduser()
        if not path.is_file():
            raise NotFound(f"patch file {origin} not found")
        return Patch(origin, None, path.read_text(errors="replace"))
    url = normalize_url(origin)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    own = client is None
    client = client or httpx.Client(follow_redirects=True, timeout=60)
    try:
        resp = client.get(url, headers=headers)
    except httpx.HTTPError as exc:
        raise RemoteError(f"fetching patch {url}: {exc}") from exc
    finally:
        if own:
            client.close()
    if resp.status_code == 404:
        raise NotFound(f"patch {url}: not found (HTTP 404)")
    if resp.status_code != 200:
        raise RemoteError(f"patch {url}: HTTP {resp.status_code}")
    text = resp.text
    if not looks_like_patch(text):
        raise InvalidInput(f"{url} did not return a patch (got {resp.headers.get('content-type', '?')})")
    return Patch(origin, url, text)


def looks_like_patch(text: str) -> bool:
    head = text[:20000]
    return ("\n--- " in head or head.startswith("--- ")) and "\n+++ " in head and "@@" in head


async def apply(patch: Patch, tree: Path) -> None:
    """Apply to ``tree``: ``git apply --3way`` in a git checkout, else ``patch -p1``. A conflict
    raises Conflict carrying the tool's report of the failing hunk; the tree is left unpatched.
    The tools run as async subprocesses (the event loop is not blocked while they work)."""
    if (tree / ".git").exists() and shutil.which("git"):
        check = await proc.run(["git", "apply", "--check", "-"], input=patch.text, cwd=tree)
        if check.returncode == 0:
            _applied(patch, await proc.run(["git", "apply", "-"], input=patch.text, cwd=tree))
            return
        three = await proc.run(["git", "apply", "--3way", "-"], input=patch.text, cwd=tree)
        if three.returncode == 0:
            return
        await proc.run(["git", "checkout", "--", "."], cwd=tree)
        raise Conflict(f"patch {patch.origin} does not apply:\n{(check.stderr or three.stderr).strip()}")
    if not shutil.which("patch"):
        raise InvalidInput(
            "applying patches outside a git checkout needs the `patch` tool (apt-get install patch)"
        )
    argv = ["patch", "-p1", "--forward", "--batch"]
    dry = await proc.run([*argv, "--dry-run"], input=patch.text, cwd=tree)
    if dry.returncode != 0:
        failing = "\n".join(
            ln
            for ln in dry.stdout.splitlines()
            if "FAILED" in ln or ln.startswith("checking file") or "can't find" in ln.lower()
        )
        raise Conflict(f"patch {patch.origin} does not apply:\n{failing or dry.stdout.strip()}")
    _applied(patch, await proc.run(argv, input=patch.text, cwd=tree))


def _applied(patch: Patch, done: proc.Completed) -> None:
    """A patch that passed its dry run but failed for real (a disk error, say)."""
    if done.returncode != 0:
        report = (done.stderr or done.stdout).strip()[-500:]
        raise Conflict(f"patch {patch.origin} failed to apply (exit {done.returncode}): {report}")
