"""Debug mode of the serving loop: find what holds it.

``llamastudio serve`` with ``LLAMASTUDIO_ASYNCIO_DEBUG=1`` (or ``PYTHONASYNCIODEBUG=1``, or
``python -X dev``) runs the stdlib loop in asyncio debug mode (uvloop times only its timer
callbacks, not task steps or I/O callbacks), with ``slow_callback_duration`` from
``LLAMASTUDIO_SLOW_CALLBACK_S``. Logged to stderr:

- asyncio's own ``Executing <callback> took N seconds`` for each callback over the threshold;
- ``the loop was held N s; its thread was at:`` with the loop thread's stack, caught by a watchdog
  thread while the loop is held (asyncio names the callback, the stack shows the blocking line);
- with each of those, on Linux, how much of the time the loop thread waited for a CPU: a loop
  that had work but no CPU (the machine busy with other processes) is not held by the studio's
  code, and on a small machine this tells the two apart;
- garbage collections that take a quarter of the threshold or more (a pause of every thread).
"""

from __future__ import annotations

import asyncio
import gc
import linecache
import logging
import os
import sys
import threading
import time
from collections import deque
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
    """Logs the loop thread's stack when the loop has not come round for ``threshold`` seconds,
    and adds to asyncio's slow-callback warnings how much of the time the loop thread was ready to
    run but had no CPU (Linux ``schedstat`` run-queue delay: other processes ran).

    A task on the loop stamps a heartbeat every ``threshold / 4``; a daemon thread checks it as
    often (once per stall it takes the loop thread's current frame) and samples the run-queue
    delay."""

    def __init__(self, threshold: float) -> None:
        self.threshold = threshold
        self.period = threshold / 4
        self._beat = time.monotonic()
        self._stop = threading.Event()
        self._task: asyncio.Task[None] | None = None
        self._native = 0
        self._samples: deque[tuple[float, float]] = deque(maxlen=2000)

    def start(self) -> None:
        loop_thread = threading.get_ident()
        self._native = threading.get_native_id()
        self._task = asyncio.get_running_loop().create_task(self._heartbeat(), name="loop-watchdog")
        threading.Thread(target=self._watch, args=(loop_thread,), name="loop-watchdog", daemon=True).start()
        logging.getLogger("asyncio").addFilter(self._annotate)

    def stop(self) -> None:
        self._stop.set()
        logging.getLogger("asyncio").removeFilter(self._annotate)
        if self._task is not None:
            self._task.cancel()

    def waited_since(self, start: float) -> float | None:
        """Seconds the loop thread waited for a CPU since ``start`` (from the first sample at or
        after it, so not more than it waited); None without ``schedstat``."""
        now = _cpu_wait(self._native)
        if now is None:
            return None
        then = next((delay for t, delay in list(self._samples) if t >= start), now)
        return min(max(0.0, now - then), time.monotonic() - start)

    def _annotate(self, record: logging.LogRecord) -> bool:
        if record.msg == _SLOW and isinstance(record.args, tuple) and len(record.args) == 2:
            waited = self.waited_since(time.monotonic() - float(record.args[1]))  # type: ignore[arg-type]
            if waited is not None:
                record.msg = _SLOW + " (%.3f s of it the loop waited for a CPU)"
                record.args = (*record.args, waited)
        return True

    async def _heartbeat(self) -> None:
        n = 0
        while True:
            self._beat = time.monotonic()
            if n % 40 == 0:
                _settle_linecache()
            n += 1
            await asyncio.sleep(self.period)

    def _watch(self, loop_thread: int) -> None:
        reported = 0.0
        while not self._stop.wait(self.period):
            delay = _cpu_wait(self._native)
            if delay is not None:
                self._samples.append((time.monotonic(), delay))
            beat = self._beat
            held = time.monotonic() - beat - self.period
            if held <= self.threshold or beat == reported:
                continue
            reported = beat
            frame = sys._current_frames().get(loop_thread)
            waited = self.waited_since(beat + self.period)
            cpu = "" if waited is None else f" ({waited:.3f} s of it the loop waited for a CPU)"
            log.warning("the loop was held %.3f s so far%s; its thread was at:\n%s", held, cpu, _where(frame))


def _settle_linecache() -> None:
    """Mark the source files ``linecache`` holds as not to be checked again.

    Debug mode extracts a stack for every future and handle it creates, and ``traceback`` then
    ``stat``s each file of that stack ``linecache`` holds whole (any traceback formatted with
    source lines puts them there): thousands of ``stat`` calls a second while streaming, each one
    letting another thread take the GIL. That is the debugger's cost, not the studio's, and the
    studio's source does not change while it runs. (Assigning an entry is atomic: other threads
    see the old entry or the new one.)"""
    for name, entry in list(linecache.cache.items()):
        if len(entry) == 4 and entry[1] is not None:
            size, _mtime, lines, fullname = entry
            linecache.cache[name] = (size, None, lines, fullname)


_SLOW = "Executing %s took %.3f seconds"  # asyncio's slow-callback warning (base_events.py)


def _cpu_wait(native_tid: int) -> float | None:
    """Seconds the thread has spent runnable but not running (Linux schedstat run-queue delay),
    None elsewhere. The loop thread's only: threads waiting for the GIL wake up every few
    milliseconds, so all threads together would count the loop's own work as waiting."""
    try:
        with open(f"/proc/self/task/{native_tid}/schedstat") as f:
            return int(f.read().split()[1]) / 1e9
    except (OSError, ValueError, IndexError):
        return None


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
