"""Issue 18 (Low): engine logs were never rotated, and a log tail read the whole file on the event
loop (0.9 s for a 300 MB log). Logs now rotate at a size cap, tails are read backwards from the end
in a thread, and ``tail`` is bounded."""

from __future__ import annotations

import io
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from huggingface_hub import constants

from llamastudio.api.app import create_app
from llamastudio.config import Settings
from llamastudio.errors import StartFailed
from llamastudio.runtime.logfile import MAX_TAIL, RotatingLog, read_tail, rotated, tail_lines
from llamastudio.runtime.manager import Runtime
from llamastudio.runtime.process import EngineProcess
from llamastudio.store.models import ServedModelRow


def test_a_log_rotates_at_its_cap_and_keeps_two_old_files(tmp_path: Path) -> None:
    path = tmp_path / "m.log"
    line = b"x" * 99 + b"\n"
    with RotatingLog(path, max_bytes=1000, keep=2) as log:
        for _ in range(55):  # 5500 bytes: five rotations
            log.write(line)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.log", "m.log.1", "m.log.2"]
    assert [rotated(path, i).stat().st_size for i in range(3)] == [500, 1000, 1000]  # whole lines
    with RotatingLog(path, max_bytes=500, keep=2) as log:  # reopened full: rotates first
        log.write(b"new\n")
    assert path.read_bytes() == b"new\n" and rotated(path, 1).stat().st_size == 500


class _Counting(io.BytesIO):
    read_bytes = 0

    def read(self, size: int | None = -1) -> bytes:
        data = super().read(size)
        self.read_bytes += len(data)
        return data


def test_a_tail_reads_only_the_end_of_the_file() -> None:
    body = b"".join(b"line %d\n" % i for i in range(1_000_000))  # 12.9 MB
    f = _Counting(body)
    lines, used = read_tail(f, 3)
    assert lines == ["line 999997", "line 999998", "line 999999"]
    assert used == f.read_bytes <= 64 << 10  # one block, not 12.9 MB
    lines, used = read_tail(_Counting(b"no newline at the end"), 5)
    assert lines == ["no newline at the end"]
    lines, used = read_tail(_Counting(b"a\n" + b"b" * 100 + b"\nc\n"), 2, budget=10)
    assert lines == ["c"] and used == 10  # the budget bounds a line without end


def test_a_tail_continues_into_the_rotated_file(tmp_path: Path) -> None:
    path = tmp_path / "m.log"
    with RotatingLog(path, max_bytes=60, keep=2) as log:
        for i in range(30):
            log.write(b"line %02d\n" % i)  # 8 bytes: 7 lines per file; .2 = 14-20, .1 = 21-27
    assert tail_lines(path, 10) == [f"line {i:02d}" for i in range(20, 30)]
    assert tail_lines(path, 1000) == [f"line {i:02d}" for i in range(14, 30)]  # what is kept
    assert tail_lines(tmp_path / "none.log", 5) == []


def test_a_block_of_lines_is_rotated_between_lines(tmp_path: Path) -> None:
    """The engine's output is written a block at a time (runtime/output.py): a block bigger than
    the room left, or than a whole file, still rotates between lines and keeps files in bounds."""
    path = tmp_path / "m.log"
    block = b"".join(b"line %02d\n" % i for i in range(30))  # 240 bytes, 8 a line
    with RotatingLog(path, max_bytes=60, keep=2) as log:
        log.write(b"first\n")
        log.write(block)
        log.write(b"x" * 100 + b"\n")  # one line over a file's size: alone in its file
        log.write(b"last\n")
    assert path.read_bytes() == b"last\n"
    assert rotated(path, 1).read_bytes() == b"x" * 100 + b"\n"
    assert rotated(path, 2).read_bytes() == b"".join(
        b"line %02d\n" % i for i in range(27, 30)
    )  # 7 lines a file: 0-5 (after "first"), 6-12, …, 27-29
    for i in range(3):
        assert all(
            ln.startswith((b"line", b"x", b"last")) for ln in rotated(path, i).read_bytes().splitlines()
        )


async def test_an_engine_process_rotates_its_log(tmp_path: Path) -> None:
    """The supervised process writes through RotatingLog (a real subprocess printing 2000 lines)."""
    script = "import sys\nfor i in range(2000): print('engine line', i)\nsys.exit(3)"
    log = tmp_path / "logs" / "m.log"
    proc = EngineProcess("m", [sys.executable, "-c", script], 1, log, timeout=30)
    proc.log_max_bytes = 4096
    with pytest.raises(StartFailed, match="exited with code 3"):
        await proc.ensure_ready()
    await proc.stop()  # the reader has drained the pipe
    assert sorted(p.name for p in log.parent.iterdir()) == ["m.log", "m.log.1", "m.log.2"]
    assert all(rotated(log, i).stat().st_size <= 4096 for i in range(3))
    assert tail_lines(log, 2) == ["engine line 1998", "engine line 1999"]


@pytest.fixture
async def client(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[tuple[httpx.AsyncClient, Runtime]]:
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    app = create_app(Settings(data_dir=tmp_path / "data", hardware="cpu"))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as c:
        yield c, app.state.studio.service.runtime


async def test_the_logs_route_reads_the_tail_and_bounds_it(client: tuple[httpx.AsyncClient, Runtime]) -> None:
    c, runtime = client
    with runtime.db.session() as s, s.begin():  # a configured model with a log from an earlier run
        s.add(ServedModelRow(name="m", model="", command=["srv", "${PORT}"], args=[], aliases=[], env={}))
    runtime.log_path("m").write_bytes(b"".join(b"old %d\n" % i for i in range(100_000)))
    r = await c.get("/api/models/m/logs", params={"tail": 3})
    assert r.status_code == 200, r.text
    assert r.json() == {"model": "m", "lines": ["old 99997", "old 99998", "old 99999"]}
    for tail in (0, MAX_TAIL + 1):
        r = await c.get("/api/models/m/logs", params={"tail": tail})
        assert r.status_code == 400 and str(MAX_TAIL) in r.json()["error"]["message"]
