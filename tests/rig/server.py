"""Run a real llama-server on an ephemeral port for a test, and always clean it up."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path
from types import TracebackType

import httpx

from llamastudio.procs import stop_process
from llamastudio.runtime.process import free_port


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
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"llama-server exited with {self.proc.returncode}:\n{self.log()[-3000:]}")
            try:
                if httpx.get(f"{self.url}/health", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        self.stop()
        raise TimeoutError(f"llama-server not healthy after {self.timeout}s:\n{self.log()[-3000:]}")

    def stop(self) -> None:
        """terminate → wait → kill: never leaves a process behind."""
        if self.proc:
            stop_process(self.proc)

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
