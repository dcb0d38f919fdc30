"""Run a real llama-server on an ephemeral port for a test, and always clean it up."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

import httpx

from llamastudio.procs import stop_process
from llamastudio.runtime.process import free_port


def wait_healthy(
    proc: subprocess.Popen[bytes], urls: list[str], timeout: float, log: Callable[[], str], what: str
) -> None:
    """Until every URL answers 200; raises with the log's tail if the process exits or time runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}:\n{log()[-3000:]}")
        try:
            if all(httpx.get(u, timeout=2).status_code == 200 for u in urls):
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise TimeoutError(f"{what} not healthy after {timeout}s:\n{log()[-3000:]}")


class LlamaServer:
    """``with LlamaServer(binary, model, log) as srv: srv.url`` — ready when entered."""

    def __init__(self, binary: Path, model: Path, log_path: Path, *args: str, timeout: float = 120) -> None:
        self.binary = binary
        self.model = model
        self.log_path = log_path
        self.args = list(args)
        self.timeout = timeout
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def __enter__(self) -> LlamaServer:
        argv = [
            str(self.binary),
            "-m",
            str(self.model),
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "-t",
            "2",
            "--no-webui",
            *self.args,
        ]
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_healthy(self.proc, [f"{self.url}/health"], self.timeout, self.log, "llama-server")
        except TimeoutError:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """terminate → wait → kill: never leaves a process behind."""
        if self.proc:
            stop_process(self.proc)

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
