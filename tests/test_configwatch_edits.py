"""The watched llama-swap config file (``services/configwatch.py``) as editors and deployments
change it: a Kubernetes ConfigMap (the file is a link into a directory that is swapped, the old
one deleted) and an editor that rewrites the file in place (read half-way, a YAML cut at a line
is often valid and would remove the models after the cut). The importer records the texts it is
given (the real import is tested through ``llamastudio serve`` in ``test_llama_swap_serve.py``)."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

from llamastudio.events import EventBus
from llamastudio.services.configwatch import ConfigWatch
from llamastudio.services.swapimport import Imported


async def _nothing() -> list[str]:
    return []


def _watch(path: Path, seen: list[str], interval: float) -> ConfigWatch:
    async def importer(text: str, source: str) -> Imported:
        seen.append(text)
        return Imported(imported=[])

    return ConfigWatch(importer, _nothing, path, EventBus(), interval=interval)


async def _until(cond: object, what: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not cond():  # type: ignore[operator]
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.02)


async def test_a_configmap_swap_is_followed(tmp_path: Path) -> None:
    """config.yaml -> ..data/config.yaml, ..data -> ..v1: kubelet points ..data at ..v2 (an
    atomic rename of a new link) and deletes ..v1."""
    for version in ("v1", "v2"):
        (tmp_path / f"..{version}").mkdir()
        (tmp_path / f"..{version}" / "config.yaml").write_text(f"models: {{}}  # {version}\n")
    os.symlink("..v1", tmp_path / "..data")
    os.symlink("..data/config.yaml", tmp_path / "config.yaml")
    seen: list[str] = []
    watch = _watch(tmp_path / "config.yaml", seen, 0.05)
    await watch.start()
    try:
        assert seen == ["models: {}  # v1\n"] and watch.error is None
        os.symlink("..v2", tmp_path / "..data_tmp")
        os.replace(tmp_path / "..data_tmp", tmp_path / "..data")
        for f in (tmp_path / "..v1").iterdir():
            f.unlink()
        (tmp_path / "..v1").rmdir()
        await _until(lambda: len(seen) == 2, f"the new version is imported ({watch.status()})")
        assert seen[1] == "models: {}  # v2\n" and watch.error is None, watch.status()
        assert watch.status()["path"] == str(tmp_path / "config.yaml")
    finally:
        await watch.close()


async def test_a_file_being_written_is_read_once_it_settles(tmp_path: Path) -> None:
    """A file whose size or time changes at every poll is not imported until it stays the same
    for one poll: only the first and the last version reach the importer."""
    path = tmp_path / "config.yaml"
    path.write_text("models: {}\n")
    seen: list[str] = []
    watch = _watch(path, seen, 0.25)
    await watch.start()
    try:
        for i in range(60):  # a version every 10 ms for 0.6 s: each poll sees a new stamp
            path.write_text("models: {}\n" + "# line\n" * (i % 7) + f"# {i}\n")
            await asyncio.sleep(0.01)
        final = path.read_text()
        await _until(lambda: seen[-1] == final, "the last version is imported")
        assert seen == ["models: {}\n", final], seen
    finally:
        await watch.close()


async def test_a_file_any_user_may_write_is_refused_and_the_last_good_one_kept(tmp_path: Path) -> None:
    """The file runs commands with its owner's permission: one writable by every user is not
    the owner's word. Refused with why (the previous import keeps serving); fixed, it is imported."""
    path = tmp_path / "config.yaml"
    path.write_text("models: {}  # v1\n")
    seen: list[str] = []
    watch = _watch(path, seen, 0.05)
    await watch.start()
    try:
        assert seen == ["models: {}  # v1\n"]
        path.chmod(0o666)  # first: v2 is never read while it is safe
        path.write_text("models: {}  # v2\n")
        await _until(lambda: watch.error is not None, "the world-writable file is refused")
        assert "writable by every user" in str(watch.error) and seen == ["models: {}  # v1\n"], watch.status()
        path.chmod(0o644)
        await _until(lambda: watch.error is None, f"the fixed file is imported ({watch.status()})")
        assert seen == ["models: {}  # v1\n", "models: {}  # v2\n"]
    finally:
        await watch.close()
