"""The supervised process state machine, with the real llama-server and real misbehaving children."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from llamastudio.errors import StartFailed
from llamastudio.runtime import output
from llamastudio.runtime.logfile import RotatingLog
from llamastudio.runtime.process import EngineProcess, State, free_port, load_timeout


def server(rig_bin: Callable[[str], Path], model: Path, tmp_path: Path, **kw: object) -> EngineProcess:
    port = free_port()
    argv = [
        str(rig_bin("llama-server")),
        "-m",
        str(model),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "-c",
        "256",
        "-t",
        "2",
        "--no-webui",
    ]
    return EngineProcess("tiny", argv, port, tmp_path / "logs" / "tiny.log", **kw)  # type: ignore[arg-type]


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def test_start_ready_shared_and_stop(
    rig_bin: Callable[[str], Path], tiny_models: dict[str, Path], tmp_path: Path
) -> None:
    proc = server(rig_bin, tiny_models["qwen3"], tmp_path)
    assert proc.state == State.STOPPED
    await asyncio.gather(proc.ensure_ready(), proc.ensure_ready(), proc.ensure_ready())  # one start, shared
    assert proc.state == State.READY and proc.pid is not None
    async with httpx.AsyncClient() as c:
        assert (await c.get(f"{proc.url}/health")).status_code == 200
    pid = proc.pid
    await proc.ensure_ready()
    assert proc.pid == pid
    await proc.stop()
    assert proc.state == State.STOPPED and not alive(pid)
    assert "llama" in (tmp_path / "logs" / "tiny.log").read_text() and proc.lines


async def test_model_load_failure_is_failed_with_the_line(
    rig_bin: Callable[[str], Path], tiny_models: dict[str, Path], tmp_path: Path
) -> None:
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(tiny_models["qwen3"].read_bytes()[:200_000])  # header ok, tensor data missing
    proc = server(rig_bin, broken, tmp_path)
    with pytest.raises(StartFailed) as err:
        await proc.ensure_ready()
    assert proc.state == State.FAILED
    assert "load" in (proc.reason or "").lower()
    assert proc.reason in err.value.message


async def test_kill_9_while_ready_then_restart(
    rig_bin: Callable[[str], Path], tiny_models: dict[str, Path], tmp_path: Path
) -> None:
    proc = server(rig_bin, tiny_models["gemma3"], tmp_path)
    await proc.ensure_ready()
    first = proc.pid
    assert first is not None
    os.kill(first, signal.SIGKILL)
    for _ in range(100):
        proc.check_alive()
        if proc.state == State.FAILED:
            break
        await asyncio.sleep(0.05)
    assert proc.state == State.FAILED and "-9" in (proc.reason or "")
    await proc.ensure_ready()  # the next request starts it again
    assert proc.state == State.READY and proc.pid != first
    await proc.stop()


async def test_missing_binary_timeout_and_sigterm_ignoring_child(tmp_path: Path) -> None:
    missing = EngineProcess("x", [str(tmp_path / "nope")], free_port(), tmp_path / "x.log")
    with pytest.raises(StartFailed, match="cannot start"):
        await missing.ensure_ready()

    stubborn = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
    stubborn += "print('up', flush=True); time.sleep(60)"
    slow = EngineProcess(
        "slow", [sys.executable, "-c", stubborn], free_port(), tmp_path / "slow.log", timeout=1.0
    )
    with pytest.raises(StartFailed, match=r"not ready after 1s: up"):
        await slow.ensure_ready()
    assert slow.proc is not None and slow.proc.returncode is not None  # killed on timeout

    # a ready server that ignores SIGTERM is SIGKILLed after the grace period
    (tmp_path / "www").mkdir()
    (tmp_path / "www" / "health").write_text("ok")
    port = free_port()
    serve = (
        "import runpy, signal, sys; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
        f"sys.argv = ['http.server', '{port}', '--bind', '127.0.0.1', '--directory', '{tmp_path / 'www'}']; "
        "runpy.run_module('http.server', run_name='__main__')"
    )
    never_dies = EngineProcess("stubborn", [sys.executable, "-c", serve], port, tmp_path / "s.log", grace=0.5)
    await never_dies.ensure_ready()
    assert never_dies.state == State.READY
    await never_dies.stop()
    assert never_dies.state == State.STOPPED
    assert never_dies.proc is not None and never_dies.proc.returncode == -signal.SIGKILL


def test_load_timeout_grows_with_model_size() -> None:
    assert load_timeout(0) == 60 and load_timeout(40 << 30) == 60 + 30 * 40


async def test_output_lines_over_64_kib_do_not_stop_the_reader(tmp_path: Path) -> None:
    """Regression: ``readline`` raised on an engine output line over 64 KiB, which stopped the
    reader draining the pipe (the engine then blocks on a full pipe). Read in blocks now: every
    byte reaches the log, lines are taken whole (a long one in pieces), the last one unterminated."""
    r, w = output.pipe()
    data = b"short\n" + b"x" * 200_000 + b"\nafter\n" + b"tail"
    got: list[str] = []
    with RotatingLog(tmp_path / "e.log") as log:
        reader = asyncio.ensure_future(output.Output(r, log, got.extend).run(lambda: False))
        for i in range(0, len(data), 4096):  # in the engine's small writes
            await asyncio.to_thread(os.write, w, data[i : i + 4096])
        os.close(w)
        await asyncio.wait_for(reader, 10)
    assert (tmp_path / "e.log").read_bytes() == data
    assert got[0] == "short" and got[-2:] == ["after", "tail"]
    assert "".join(got[1:-2]) == "x" * 200_000 and max(len(line) for line in got) <= output.LINE_LIMIT


async def test_a_serving_engine_s_burst_of_lines_is_one_read(tmp_path: Path) -> None:
    """While coalescing (the engine serves), lines written in a burst are taken in one block, and
    ``pump`` takes what is waiting at once (a crash's last lines, for its reason)."""
    r, w = output.pipe()
    blocks: list[list[str]] = []
    with RotatingLog(tmp_path / "e.log") as log:
        out = output.Output(r, log, blocks.append)
        reader = asyncio.ensure_future(out.run(lambda: True))
        await asyncio.sleep(0.05)
        for i in range(150):  # one write per line, as llama-server logs its slots
            os.write(w, b"slot %d skipped\n" % i)
        await asyncio.sleep(output.COALESCE * 5)
        assert len(blocks) == 1 and len(blocks[0]) == 150, [len(b) for b in blocks]
        os.write(w, b"GGML_ASSERT: failed\n")
        out.pump()  # no wait for the reader's next wakeup
        assert blocks[-1] == ["GGML_ASSERT: failed"]
        os.close(w)
        await asyncio.wait_for(reader, 10)
    assert (tmp_path / "e.log").read_bytes().count(b"\n") == 151


async def test_stop_does_not_wait_for_a_grandchild_holding_the_pipe(tmp_path: Path) -> None:
    """Found by bench/faults: an engine wrapper whose child left the process group (its own
    session) kept stdout open, so ``stop`` waited on the output reader forever."""
    (tmp_path / "health").write_text("ok")
    port = free_port()
    script = tmp_path / "wrapper.py"
    script.write_text(
        "import functools, http.server, subprocess, sys\n"
        "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'], start_new_session=True)\n"
        f"h = functools.partial(http.server.SimpleHTTPRequestHandler, directory={str(tmp_path)!r})\n"
        f"http.server.ThreadingHTTPServer(('127.0.0.1', {port}), h).serve_forever()\n"
    )
    proc = EngineProcess("wrapped", [sys.executable, str(script)], port, tmp_path / "w.log", grace=1.0)
    await proc.ensure_ready()
    await asyncio.wait_for(proc.stop(), 10)  # hung forever before
    assert proc.state == State.STOPPED
