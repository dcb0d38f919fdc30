"""Downloads into the Hugging Face cache layout (shared with every HF-aware tool): resumable
across processes and after ``kill -9``, disk space checked first, each LFS file's sha256 checked
before it is taken for complete."""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
from huggingface_hub import constants, get_hf_file_metadata

from llamastudio.errors import (
    AuthRequired,
    DownloadCancelled,
    InvalidInput,
    NotFound,
    RemoteError,
    StorageError,
)
from llamastudio.fsutil import write_atomic
from llamastudio.hub.checkpoints import check_format, find_checkpoint, select_checkpoint
from llamastudio.hub.client import CONNECT_TIMEOUT, HubClient, unreachable
from llamastudio.hub.paths import (
    check_commit,
    check_etag,
    check_file_name,
    check_repo_id,
    check_revision,
    contained,
    is_commit,
)
from llamastudio.hub.quants import QuantGroup, RepoFile, find_group, group_files, mmproj_preference

TRANSFER_TIMEOUT = 120.0  # seconds without a byte before a download's connection is given up

ProgressFn = Callable[[str, int, int], None]  # file, bytes done, bytes total


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def files_to_pull(group: QuantGroup) -> list[RepoFile]:
    """All shards, plus one mmproj companion (F16 preferred) when the repo has any."""
    extra = sorted(group.mmproj, key=lambda f: mmproj_preference(f.path))[:1]
    return [*group.files, *extra]


def repo_format(files: list[RepoFile], fmt: str | None = None) -> str:
    """The format a repo is pulled or listed in: the one asked for, else GGUF when it has GGUF
    files, else safetensors when it holds a transformers checkpoint, else GGUF (which says so)."""
    asked = check_format(fmt)
    if asked is not None:
        return asked
    if not group_files(files) and find_checkpoint(files) is not None:
        return "safetensors"
    return "gguf"


def select_files(
    repo: str,
    files: list[RepoFile],
    quant: str | None,
    file: str | None,
    fmt: str | None = None,
    label: Callable[[], str] | None = None,
) -> list[RepoFile]:
    """What ``pull REPO[:QUANT]`` / ``--file`` means: one named file, a GGUF quant's shards +
    mmproj, or a safetensors checkpoint's shards + configs + tokenizer (``fmt``: see
    :func:`repo_format`; ``label``: a safetensors checkpoint's label, read only to match a quant)."""
    if file:
        wanted = [f for f in files if f.path == file]
        if not wanted:
            raise NotFound(f"{repo} has no file {file!r}")
        return wanted
    if repo_format(files, fmt) == "safetensors":
        return select_checkpoint(repo, files, quant, label)
    groups = group_files(files)
    if not groups:
        raise InvalidInput(f"{repo} has no GGUF files")
    if not quant and len(groups) > 1:
        raise InvalidInput(f"{repo} has several quants: pick one of {', '.join(g.label for g in groups)}")
    return files_to_pull(find_group(groups, quant) if quant else groups[0])


def repo_folder(repo: str) -> str:
    return f"models--{check_repo_id(repo).replace('/', '--')}"


def cache_paths(cache: Path, repo: str, commit: str, path: str, etag: str) -> tuple[Path, Path]:
    """(blob, snapshot link) in the Hugging Face cache layout that every HF-aware tool reads.

    Every part is checked against its format and the result against the cache root: a hostile
    endpoint's ``../`` in a file name, ETag or commit never leaves the cache."""
    folder = repo_folder(repo)
    blob = contained(cache, folder, "blobs", check_etag(etag))
    link = contained(cache, folder, "snapshots", check_commit(commit), *check_file_name(path).split("/"))
    return blob, link


def download_file(
    client: HubClient,
    repo: str,
    revision: str,
    f: RepoFile,
    on_progress: ProgressFn = lambda *_: None,
    cancel: threading.Event | None = None,
    retries: int = 5,
) -> Path:
    """One file into the HF cache, resumable across processes.

    huggingface_hub (2.x) writes each download to a fresh per-process temporary file, so a killed
    download starts over. Here the partial data lives at ``blobs/<etag>.incomplete`` (the name is
    stable), guarded by a lock file, and is continued with a Range request; it only becomes
    ``blobs/<etag>`` after its size and sha256 check out, then the snapshot link is made.
    """
    cache = Path(constants.HF_HUB_CACHE)
    check_repo_id(repo)
    check_revision(revision)
    check_file_name(f.path)
    url = client.url(repo, f.path, revision)
    meta = client.call(repo, lambda: get_hf_file_metadata(url, token=client.token or False))
    etag = check_etag(meta.etag or f.sha256 or hashlib.sha256(url.encode()).hexdigest())
    if meta.commit_hash:
        commit = check_commit(meta.commit_hash, f"X-Repo-Commit for {repo}/{f.path}")
    elif is_commit(revision):
        commit = revision
    else:
        raise RemoteError(f"{repo}/{f.path}: the Hub sent no commit id (X-Repo-Commit) for {revision!r}")
    blob, link = cache_paths(cache, repo, commit, f.path, etag)
    size = meta.size if meta.size is not None else f.size
    blob.parent.mkdir(parents=True, exist_ok=True)
    # where huggingface_hub keeps its own locks
    lock_path = contained(cache, ".locks", repo_folder(repo), f"{blob.name}.lock")
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "w") as lock:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)  # another process finishing the same blob waits here
        if not blob.exists():
            partial = blob.with_name(blob.name + ".incomplete")
            target = meta.location or url
            # the token goes to the Hub's own host only, never to a CDN it redirects to
            token = client.token if httpx.URL(target).host == httpx.URL(url).host else None
            _fetch_ranges(target, token, partial, size, f.path, on_progress, cancel, retries)
            if f.sha256 and sha256_file(partial) != f.sha256:
                partial.unlink()
                raise RemoteError(
                    f"{repo}/{f.path}: sha256 does not match the Hub's; the corrupt file was deleted"
                )
            os.replace(partial, blob)
    link.parent.mkdir(parents=True, exist_ok=True)
    if not link.exists():
        tmp = link.with_name(f".{link.name}.{os.getpid()}.tmp")
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(os.path.relpath(blob, link.parent))
        os.replace(tmp, link)
    if revision != commit and not is_commit(revision):
        ref = contained(cache, repo_folder(repo), "refs", *revision.split("/"))
        write_atomic(ref, commit.encode())
    return link


def _fetch_ranges(
    url: str,
    token: str | None,
    partial: Path,
    size: int,
    name: str,
    on_progress: ProgressFn,
    cancel: threading.Event | None,
    retries: int,
) -> None:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    timeout = httpx.Timeout(TRANSFER_TIMEOUT, connect=CONNECT_TIMEOUT)
    with httpx.Client(follow_redirects=True, timeout=timeout) as http:
        for attempt in range(retries + 1):
            done = partial.stat().st_size if partial.exists() else 0
            if done >= size:
                break
            try:
                with http.stream("GET", url, headers={**headers, "Range": f"bytes={done}-"}) as resp:
                    if resp.status_code == 416:
                        break
                    if resp.status_code in (401, 403):
                        raise AuthRequired(f"{name}: access denied (HTTP {resp.status_code}); set HF_TOKEN")
                    if resp.status_code not in (200, 206):
                        raise RemoteError(f"{name}: HTTP {resp.status_code}")
                    mode = "ab" if resp.status_code == 206 else "wb"  # 200: the server ignored Range
                    done = done if mode == "ab" else 0
                    with open(partial, mode) as out:
                        for chunk in resp.iter_bytes(1 << 20):
                            if cancel is not None and cancel.is_set():
                                raise DownloadCancelled(f"{name}: cancelled; {done} bytes kept for resuming")
                            if done + len(chunk) > size:  # never let a server fill the disk
                                raise RemoteError(
                                    f"{name}: the server sent more than the {size} bytes it announced"
                                )
                            out.write(chunk)
                            done += len(chunk)
                            on_progress(name, done, size)
            except (httpx.TransportError, httpx.RemoteProtocolError) as exc:
                if attempt == retries:
                    keep = "; the partial data is kept: resume the download to continue"
                    if isinstance(exc, (httpx.ConnectError, httpx.TimeoutException)):
                        origin = f"{exc.request.url.scheme}://{exc.request.url.netloc.decode()}"
                        err = unreachable(origin, exc, f" while downloading {name}", TRANSFER_TIMEOUT)
                        raise type(err)(err.message + keep, **err.details) from exc
                    raise RemoteError(f"{name}: {exc}{keep}") from exc
                time.sleep(min(2**attempt, 10))
    got = partial.stat().st_size if partial.exists() else 0
    if got != size:
        raise RemoteError(
            f"{name}: got {got} of {size} bytes (partial data kept; run the pull again to resume)"
        )


def pull_files(
    client: HubClient,
    repo: str,
    revision: str,
    files: list[RepoFile],
    on_progress: ProgressFn = lambda *_: None,
    cancel: threading.Event | None = None,
) -> list[Path]:
    check_repo_id(repo)
    check_revision(revision)
    for f in files:
        check_file_name(f.path)
    cache = Path(constants.HF_HUB_CACHE)
    cache.mkdir(parents=True, exist_ok=True)
    need = sum(f.size for f in files)
    free = shutil.disk_usage(cache).free
    if need > free:
        raise StorageError(
            f"{repo}: needs {need / 2**30:.1f} GiB but {cache} has {free / 2**30:.1f} GiB free"
        )
    return [download_file(client, repo, revision, f, on_progress, cancel) for f in files]
