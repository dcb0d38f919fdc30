"""The CLI as a user runs it: a real `llamastudio serve` process, settings from env and flags."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx

from llamastudio.config import Settings
from llamastudio.runtime.process import free_port


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "llamastudio", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=60,
    )


def test_serve_answers_status_and_stops_cleanly(tmp_path: Path) -> None:
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "llamastudio",
            "--data-dir",
            str(tmp_path / "d"),
            "serve",
            "--port",
            str(port),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 30
        body = None
        while time.monotonic() < deadline and body is None:
            try:
                body = httpx.get(f"http://127.0.0.1:{port}/api/status", timeout=2).json()
            except httpx.HTTPError:
                time.sleep(0.2)
        assert body is not None, "serve did not come up"
        assert body["db_ok"] is True
        assert Path(body["data_dir"]) == (tmp_path / "d").resolve()
    finally:
        proc.terminate()
        proc.wait(15)
    # uvicorn shuts down gracefully, then re-raises SIGTERM so the exit status tells why it ended
    assert proc.returncode in (0, -15)
    assert proc.stdout is not None
    assert "Finished server process" in proc.stdout.read().decode()


def test_env_and_flag_settings(tmp_path: Path, monkeypatch: object) -> None:
    env = {"LLAMASTUDIO_DATA_DIR": str(tmp_path / "env"), "LLAMASTUDIO_PORT": "9999"}
    os.environ.update(env)
    try:
        s = Settings()
        assert s.data_dir == (tmp_path / "env").resolve() and s.port == 9999
        assert Settings(port=1234).port == 1234  # init (CLI flag) beats env
    finally:
        for k in env:
            os.environ.pop(k)
    assert Settings().host == "127.0.0.1"


def test_bad_setting_is_one_line_exit_2(tmp_path: Path) -> None:
    out = _cli("serve", env={"LLAMASTUDIO_PORT": "99999", "LLAMASTUDIO_DATA_DIR": str(tmp_path)})
    assert out.returncode == 2
    assert "invalid setting" in out.stderr and "Traceback" not in out.stderr


def test_version_and_help() -> None:
    out = _cli("--version")
    assert out.returncode == 0 and out.stdout.startswith("llamastudio ")
    out = _cli("--help")
    assert out.returncode == 0 and "inspect" in out.stdout and "serve" in out.stdout
    out = _cli("no-such-command")
    assert out.returncode == 2 and "Traceback" not in out.stderr
