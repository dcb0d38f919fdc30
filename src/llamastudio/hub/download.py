"""Downloads into the Hugging Face cache with ``huggingface_hub``'s own machinery (resumes a
partial ``.incomplete`` file, shares blobs with every other tool), plus what it leaves out:
a disk-space check before starting and the sha256 of every LFS file checked at the end."""

from __future__ import annotations

import hashlib
import io
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from huggingface_hub import constants, hf_hub_download
from huggingface_hub.utils.tqdm import tqdm as hf_tqdm

from llamastudio.errors import RemoteError, StorageError
from llamastudio.hub.client import HubClient
from llamastudio.hub.quants import QuantGroup, RepoFile

ProgressFn = Callable[[str, int, int], None]  # file, bytes done, bytes total


def _progress_class(on_progress: ProgressFn) -> type[hf_tqdm]:
    class _Progress(hf_tqdm):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs["file"] = io.StringIO()  # the CLI draws its own bar
            self._name = str(kwargs.get("desc") or "")
            self._total = int(kwargs.get("total") or 0)
            self._done = int(kwargs.get("initial") or 0)  # a resumed download starts part-way
            super().__init__(*args, **kwargs)  # type: ignore[no-untyped-call]

        def update(self, n: float | None = 1) -> bool | None:
            out: bool | None = super().update(n)
            self._done += int(n or 0)  # tracked here: a disabled tqdm counts nothing
            on_progress(self._name, self._done, self._total)
            return out

    return _Progress


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def files_to_pull(group: QuantGroup) -> list[RepoFile]:
    """All shards, plus one mmproj companion (F16 preferred) when the repo has any."""
    extra = sorted(group.mmproj, key=lambda f: ("f16" not in f.path.lower(), f.path))[:1]
    return [*group.files, *extra]


def pull_files(
    client: HubClient,
    repo: str,
    revision: str,
    files: list[RepoFile],
    on_progress: ProgressFn = lambda *_: None,
) -> list[Path]:
    cache = Path(constants.HF_HUB_CACHE)
    cache.mkdir(parents=True, exist_ok=True)
    need = sum(f.size for f in files)
    free = shutil.disk_usage(cache).free
    if need > free:
        raise StorageError(
            f"{repo}: needs {need / 2**30:.1f} GiB but {cache} has {free / 2**30:.1f} GiB free"
        )
    out = []
    for f in files:
        path = Path(client.call(repo, _downloader(client, repo, revision, f.path, on_progress)))
        if f.sha256 and sha256_file(path) != f.sha256:
            blob = path.resolve()
            path.unlink(missing_ok=True)
            blob.unlink(missing_ok=True)
            raise RemoteError(
                f"{repo}/{f.path}: sha256 does not match the Hub's; the corrupt file was deleted"
            )
        out.append(path)
    return out


def _downloader(
    client: HubClient, repo: str, revision: str, path: str, on_progress: ProgressFn
) -> Callable[[], str]:
    def run() -> str:
        return hf_hub_download(
            repo,
            path,
            revision=revision,
            endpoint=client.endpoint,
            token=client.token or False,
            tqdm_class=_progress_class(on_progress),
        )

    return run
