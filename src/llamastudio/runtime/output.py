"""An engine's output (stdout and stderr on one pipe): read in blocks, logged and kept by line.

llama-server at ``-lv 4`` (a configuration's first, measuring load: ``runtime/measured.py``) logs
a line for every slot it passes over for each request (``-np 64``: about 150 lines a request, each
its own write). Read a line at a time through a ``StreamReader``, that was
about 70 wakeups and 150 flushed log writes per request: over 1 ms of the studio's CPU for a
request that costs llama-server 1 ms (``bench/gateway``'s latency table). So:

- the pipe (its buffer raised to ``BLOCK`` where Linux allows) is read with ``os.read`` in blocks;
- whole lines go to the log file in one write per block, and to ``take`` as a list;
- while ``coalesce()`` holds (the engine is serving), output is read every ``COALESCE`` seconds
  while it flows (one wakeup per period, not one per line: each wakeup of the studio can take a
  core from the engine mid-computation), and awaited again once it stops; while the engine
  starts, every line comes at once (its fatal lines, its load progress);
- ``pump()`` reads what the pipe holds now without waiting: a crash's last lines are in the
  reason as soon as its exit is seen, not after the next wakeup.

A line longer than ``LINE_LIMIT`` is taken in pieces of that size: the ring of recent lines stays
bounded and the pipe keeps draining whatever an engine writes.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
from collections.abc import Callable

from llamastudio.runtime.logfile import RotatingLog

BLOCK = 1 << 20  # bytes read at once, and the pipe buffer asked for
LINE_LIMIT = 64 << 10  # characters of one line taken at once
COALESCE = 0.05  # seconds a serving engine's output may wait in the pipe


def pipe() -> tuple[int, int]:
    """A pipe for an engine's output: (our non-blocking read end, its write end)."""
    r, w = os.pipe()
    with contextlib.suppress(OSError, AttributeError):  # Linux only; capped by pipe-max-size
        fcntl.fcntl(w, fcntl.F_SETPIPE_SZ, BLOCK)
    os.set_blocking(r, False)
    return r, w


class Output:
    """The read end of an engine's output pipe; ``run`` owns it and closes it when done."""

    def __init__(self, fd: int, log: RotatingLog, take: Callable[[list[str]], None]) -> None:
        self.fd = fd
        self.log = log
        self.take = take
        self.eof = False
        self._partial = b""

    def pump(self) -> bool:
        """Read and hand over everything the pipe holds now (never waits); whether it held any."""
        got = False
        while not self.eof:
            try:
                chunk = os.read(self.fd, BLOCK)
            except BlockingIOError:
                return got
            except OSError:  # closed under us: the same as its end
                chunk = b""
            if not chunk:
                self.eof = True
                if self._partial:  # the last line, unterminated
                    self._emit(self._partial)
                    self._partial = b""
                return got
            got = True
            buf = self._partial + chunk
            cut = buf.rfind(b"\n") + 1
            if len(buf) - cut >= LINE_LIMIT:  # a line over the limit: taken in pieces
                cut = len(buf)
            self._partial = buf[cut:]
            if cut:
                self._emit(buf[:cut])
        return got

    def _emit(self, block: bytes) -> None:
        self.log.write(block)
        lines = block.decode(errors="replace").splitlines()
        if max(map(len, lines), default=0) > LINE_LIMIT:
            lines = [p[i : i + LINE_LIMIT] for p in lines for i in range(0, max(len(p), 1), LINE_LIMIT)]
        self.take(lines)

    async def run(self, coalesce: Callable[[], bool]) -> None:
        """Read to the pipe's end (the engine and every child holding it gone); closes it."""
        loop = asyncio.get_running_loop()
        flowing = False
        try:
            while not self.eof:
                if not flowing:  # wait for output; while it flows, a timer alone wakes the reader
                    readable = loop.create_future()
                    loop.add_reader(self.fd, _wake, readable)
                    try:
                        await readable
                    finally:
                        loop.remove_reader(self.fd)
                if coalesce():
                    await asyncio.sleep(COALESCE)
                flowing = self.pump() and coalesce()
        finally:
            self.eof = True  # a pump after this (a crash seen late) reads nothing
            os.close(self.fd)


def _wake(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)
