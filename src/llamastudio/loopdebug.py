"""Debug mode of the serving loop: find what holds it.

``llamastudio serve`` with ``LLAMASTUDIO_ASYNCIO_DEBUG=1`` (or ``PYTHONASYNCIODEBUG=1``, or
``python -X dev``) runs the stdlib loop in asyncio debug mode (uvloop times only its timer
callbacks, not task steps or I/O callbacks), with ``slow_callback_duration`` from
``LLAMASTUDIO_SLOW_CALLBACK_S``. Logged to stderr:

- asyncio's own ``Executing <callback> took N seconds`` for each callback over the threshold;
- ``the loop was held N s; its thread was at:`` with the loop thread's stack, caught by a watchdog
  thread while the loop is held (asyncio names the callback, the stack shows the blocking line);
- garbage collections that take a quarter of the threshold or more (a pause of every thread).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import sys
import threading
import time
from collections.abc import Coroutine
from types import FrameType
from typing import Any

log = logging.getLogger("llamastudio.loop")


def setup_logging(threshold: float) -> None:
    """asyncio's warnings and this module's go to stderr, whatever else configured logging."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s:  %(name)s: %(message)s"))
    for name in ("asyncio", log.name):
        logger = logging.getLogger(name)
        logger.addHandler(handler)
        logger.propagate = False
    log.setLevel(logging.INFO)
    log.info("asyncio debug mode (stdlib loop): callbacks holding the loop over %.3f s are logged", threshold)
    _watch_gc(threshold / 4)


def _watch_gc(floor: float) -> None:
    started = [0.0]

    def pause(phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            started[0] = time.perf_counter()
        elif (took := time.perf_counter() - started[0]) >= floor:
            log.warning(
                "garbage collection of generation %d took %.3f s (%d collected)",
                info["generation"],
                took,
                info["collected"],
            )

    gc.callbacks.append(pause)


class Watchdog:
    """Logs the loop thread's stack when the loop has not come round for ``threshold`` seconds.

    A task on the loop stamps a heartbeat every ``threshold / 4``; a daemon thread checks it as
    often, and once per stall takes the loop thread's current frame."""

    def __init__(self, threshold: float) -> None:
        self.threshold = threshold
        self.period = threshold / 4
        self._beat = time.monotonic()
        self._stop = threading.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        loop_thread = threading.get_ident()
        self._task = asyncio.get_running_loop().create_task(self._heartbeat(), name="loop-watchdog")
        threading.Thread(target=self._watch, args=(loop_thread,), name="loop-watchdog", daemon=True).start()

    def stop(self) -> None:
        self._stop.set()
        if self._task is not None:
            self._task.cancel()

    async def _heartbeat(self) -> None:
        while True:
            self._beat = time.monotonic()
            await asyncio.sleep(self.period)

    def _watch(self, loop_thread: int) -> None:
        reported = 0.0
        while not self._stop.wait(self.period):
            beat = self._beat
            held = time.monotonic() - beat - self.period
            if held <= self.threshold or beat == reported:
                continue
            reported = beat
            frame = sys._current_frames().get(loop_thread)
            log.warning("the loop was held %.3f s so far; its thread was at:\n%s", held, _where(frame))


def _where(frame: FrameType | None, depth: int = 12) -> str:
    """The innermost frames, ``file:line in function``: no source lines, so ``linecache`` stays
    empty (debug mode ``stat``s every cached file on each future and handle it creates)."""
    lines: list[str] = []
    while frame is not None and len(lines) < depth:
        lines.append(f"  {frame.f_code.co_filename}:{frame.f_lineno} in {frame.f_code.co_name}")
        frame = frame.f_back
    return "\n".join(lines) or "  (no frame)"


def wanted(setting: bool) -> bool:
    """Debug mode: the setting, ``PYTHONASYNCIODEBUG`` (as asyncio reads it) or ``python -X dev``."""
    env = not sys.flags.ignore_environment and bool(os.environ.get("PYTHONASYNCIODEBUG"))
    return setting or env or sys.flags.dev_mode


def run(main: Coroutine[Any, Any, None], threshold: float) -> None:
    """Run ``main`` on a stdlib loop in debug mode, slow callbacks over ``threshold`` logged."""
    setup_logging(threshold)

    async def watched() -> None:
        dog = Watchdog(threshold)
        dog.start()
        try:
            await main
        finally:
            dog.stop()

    with asyncio.Runner(debug=True) as runner:
        runner.get_loop().slow_callback_duration = threshold
        runner.run(watched())
