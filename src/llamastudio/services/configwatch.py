"""A watched llama-swap config file (``serve --config FILE`` / ``LLAMASTUDIO_CONFIG_FILE``).

The file is imported at start and again whenever it changes: its size and modification time are
read every ``interval`` (1 s), and a change of either — or of the content's SHA-256, read when
they change and every ``REHASH`` polls (an edit within the same second that keeps the size) —
re-imports it, once they have stayed the same for one poll: an editor that writes the file in
place is not read half-way (a YAML cut at a line is often valid, and would remove the models
after the cut). The path is watched as given, symlinks followed at each read (a Kubernetes
ConfigMap swaps the directory its link points to). A file writable by every user, or owned by
another user than the studio's (or root), is refused: what it runs, it runs with the owner's
permission. The models it defines are owned by it
(``source = "file:<path>"``): an import adds and changes them, and removes those it no longer
defines, in one transaction. After each good import its ``hooks.on_startup.preload`` models are
started (llama-swap reloads a watched config by starting again, so its on_startup hook runs
again too).

A version that cannot be imported (bad YAML, a wrong type, an unknown macro …) changes nothing:
the previous good state keeps serving. The error is logged, published on the event bus
(``{"type": "config_file", "ok": false, "error": …}``) and kept for ``GET
/api/served/config-file`` until a good version is imported. The checks run in a thread, never on
the loop that serves the gateway.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import stat
import time
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any

from llamastudio.errors import StudioError
from llamastudio.events import EventBus
from llamastudio.services.swapimport import Imported
from llamastudio.serving.fields import MAX_TEXT

Importer = Callable[[str, str], Awaitable[Imported]]  # (text, source) → what was imported

log = logging.getLogger(__name__)
REHASH = 5  # polls between content hashes when size and mtime are unchanged


Stamp = tuple[int, int, int, int]  # size, mtime_ns, mode, owner


def _stamp(st: os.stat_result) -> Stamp:
    return st.st_size, st.st_mtime_ns, st.st_mode, st.st_uid


def unsafe(st: os.stat_result) -> str | None:
    """Why a file's commands are not its owner's (the file runs commands with the owner's
    permission): writable by any user, or owned by someone else than the studio's user or root."""
    if st.st_mode & stat.S_IWOTH:
        return "it is writable by every user (chmod o-w): its commands would run as the studio's user"
    if st.st_uid not in (os.getuid(), 0):
        return f"it belongs to user {st.st_uid}, not to the studio's user (or root)"
    return None


def _read(path: Path) -> tuple[Stamp | None, bytes | None, str | None]:
    """The stamp, the bytes (None: unreadable or missing) and why the file is refused; blocking."""
    try:
        st = path.stat()
        if (why := unsafe(st)) is not None:
            return _stamp(st), None, why
        if st.st_size > MAX_TEXT * 4:
            return _stamp(st), b"", None
        return _stamp(st), path.read_bytes(), None
    except OSError:
        return None, None, None


def _stat(path: Path) -> Stamp | None:
    try:
        return _stamp(path.stat())
    except OSError:
        return None


class ConfigWatch:
    def __init__(
        self,
        importer: Importer,
        preload: Callable[[], Coroutine[Any, Any, list[str]]],
        path: Path,
        bus: EventBus,
        interval: float = 1.0,
    ) -> None:
        """``importer``: the service's llama-swap import; ``preload``: the runtime's."""
        self.importer = importer
        self.preload = preload
        self.path = Path(os.path.abspath(path.expanduser()))  # not resolved: links may be swapped
        self.source = f"file:{self.path}"
        self.bus = bus
        self.interval = interval
        self.digest: str | None = None  # of the last version tried (good or not)
        self.loaded_at: float | None = None  # wall-clock time of the last good import
        self.error: str | None = None  # why the current version is not applied
        self.imported: list[str] = []
        self.ignored: list[dict[str, str]] = []
        self._stamp: Stamp | None = None
        self._task: asyncio.Task[None] | None = None
        self._preload: asyncio.Task[list[str]] | None = None

    async def start(self) -> None:
        """The first import (the studio starts even when it fails), then the watch."""
        try:
            await self.check()
        except Exception as exc:  # a bug or the database: logged and shown, the studio serves on
            log.exception("config file %s: import failed", self.path)
            self._fail(f"import failed: {exc}")
        self._task = asyncio.create_task(self._loop())

    async def close(self) -> None:
        for task in (self._task, self._preload):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task

    def status(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "ok": self.error is None,
            "error": self.error,
            "loaded_at": self.loaded_at,
            "imported": self.imported,
            "ignored": self.ignored,
        }

    async def _loop(self) -> None:
        polls = 0
        seen = self._stamp  # the stamp of the previous poll: a change is read once it settles
        while True:
            await asyncio.sleep(self.interval)
            polls += 1
            stamp = await asyncio.to_thread(_stat, self.path)
            settled, seen = stamp == seen, stamp
            if settled and (stamp != self._stamp or polls % REHASH == 0):
                try:
                    await self.check()
                except Exception:  # a bug: logged, the watch goes on
                    log.exception("config file %s: re-import failed", self.path)

    async def check(self) -> None:
        """Import the file if its content changed since the last version tried."""
        stamp, data, refused = await asyncio.to_thread(_read, self.path)
        self._stamp = stamp
        if data is None:
            self.digest = None  # read again once readable (or safe), even if its text is the same
            self._fail(f"{self.path} is not imported: {refused}" if refused else f"cannot read {self.path}")
            return
        digest = hashlib.sha256(data).hexdigest()
        if digest == self.digest:
            return
        self.digest = digest
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            self._fail("not UTF-8 text")
            return
        try:
            done = await self.importer(text, self.source)
        except StudioError as exc:
            self._fail(exc.message)
            return
        self.error, self.loaded_at = None, time.time()
        self.imported, self.ignored = done.imported, done.ignored
        log.info("config file %s: %d models (%d removed)", self.path, len(done.imported), len(done.removed))
        self.bus.publish({"type": "config_file", **self.status(), "removed": done.removed})
        if done.preload and (self._preload is None or self._preload.done()):
            # llama-swap runs on_startup again when it reloads its config: so does the studio
            self._preload = asyncio.create_task(self.preload())

    def _fail(self, why: str) -> None:
        if why == self.error:
            return
        log.error("config file %s: not applied, the previous version keeps serving: %s", self.path, why)
        self.error = why
        self.bus.publish({"type": "config_file", **self.status()})
