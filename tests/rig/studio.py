"""Run the real ``llamastudio serve`` (API + gateway) as a subprocess for a test.

It gets its own data directory and Hugging Face cache, the rig's llama-server as its engine
(through ``LLAMASTUDIO_LLAMA_SERVER``), free ports, and optional keys and hardware profile; it is
ready when both ports answer, and is always stopped (SIGTERM, then SIGKILL) afterwards.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx

from llamastudio import runinfo
from llamastudio.config import SEED_NAMES
from llamastudio.guard import OWNER_HEADER
from llamastudio.procs import stop_process
from llamastudio.runtime.process import free_port
from tests.rig.server import wait_healthy

SEED_ENV = frozenset(name for names in SEED_NAMES.values() for name in names)


def _samples(text: str, name: str, labels: dict[str, str]) -> list[str]:
    return [
        line
        for line in text.splitlines()
        if (line.startswith(name + "{") or line.startswith(name + " "))
        and all(f'{k}="{v}"' in line for k, v in labels.items())
    ]


class Studio:
    def __init__(
        self,
        root: Path,
        llama_server: Path,
        *,
        hardware: str | None = None,
        gateway_key: str | None = None,
        api_key: str | None = None,
        env: dict[str, str] | None = None,
        timeout: float = 60,
    ) -> None:
        self.root = root
        self.data_dir = root / "data"
        self.log_path = root / "studio.log"
        self.port = free_port()
        self.gateway_port = free_port()
        self.lmdeploy_port = free_port()
        self.gateway_key = gateway_key
        self.api_key = api_key
        self.timeout = timeout
        # a developer's exported MODEL, PORT, HOST … (the seeds' names) must not change the studio
        inherited = {k: v for k, v in os.environ.items() if k not in SEED_ENV}
        self.env = {
            **inherited,
            "LLAMASTUDIO_DATA_DIR": str(self.data_dir),
            "LLAMASTUDIO_LLAMA_SERVER": str(llama_server),
            "LLAMASTUDIO_LOG_LEVEL": "warning",
            "HF_HOME": str(root / "hf"),
            "LLAMASTUDIO_LMDEPLOY_PORT": str(self.lmdeploy_port),
            **(env or {}),
        }
        for key, value in (
            ("LLAMASTUDIO_HARDWARE", hardware),
            ("LLAMASTUDIO_GATEWAY_API_KEY", gateway_key),
            ("LLAMASTUDIO_API_KEY", api_key),
        ):
            if value:
                self.env[key] = value
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def gateway_url(self) -> str:
        return f"http://127.0.0.1:{self.gateway_port}"

    def api(self) -> httpx.Client:
        """A client of the management API, as the CLI and UI are (the client header lets bodyless
        POSTs through the cross-site guard)."""
        headers = {"X-Studio-Client": "tests"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        return httpx.Client(base_url=self.api_url, headers=headers, timeout=120)

    def owner(self) -> httpx.Client:
        """A management API client with the data directory's owner key, as the CLI on this
        machine sends it: it may store what runs commands or sends data elsewhere."""
        client = self.api()
        key = runinfo.read_owner_key(self.data_dir)
        assert key, "the studio wrote no owner key"
        client.headers[OWNER_HEADER] = key
        return client

    def gateway(self) -> httpx.Client:
        headers = {"Authorization": f"Bearer {self.gateway_key}"} if self.gateway_key else {}
        return httpx.Client(base_url=self.gateway_url, headers=headers, timeout=120)

    def metric(self, name: str, **labels: str) -> float:
        """The sum of a ``/metrics`` series' samples with these labels."""
        with self.gateway() as g:
            text = g.get("/metrics").text
        return sum(float(line.rsplit(" ", 1)[1]) for line in _samples(text, name, labels))

    def wait_metric(self, name: str, at_least: float, timeout: float = 10, **labels: str) -> float:
        """Wait until the series reaches ``at_least``: a request is counted when the relay is done,
        just after its client has read the last byte (and may already ask for ``/metrics``)."""
        deadline = time.monotonic() + timeout
        while (value := self.metric(name, **labels)) < at_least and time.monotonic() < deadline:
            time.sleep(0.05)
        if value < at_least:
            with self.gateway() as g:
                text = g.get("/metrics").text
            shown = "\n".join(line for line in text.splitlines() if line.startswith(name))
            raise AssertionError(f"{name}{labels} is {value}, not >= {at_least}, after {timeout} s:\n{shown}")
        return value

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        argv = [sys.executable, "-m", "llamastudio", "--data-dir", str(self.data_dir), *args]
        env = {
            **self.env,
            "LLAMASTUDIO_PORT": str(self.port),
            "LLAMASTUDIO_GATEWAY_PORT": str(self.gateway_port),
            "LLAMASTUDIO_LMDEPLOY_PORT": str(self.lmdeploy_port),
        }
        done = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=180)
        if check and done.returncode != 0:
            raise AssertionError(f"{args} exited {done.returncode}: {done.stderr}")
        return done

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def configure(self, name: str, **config: Any) -> dict[str, Any]:
        with self.api() as c:
            r = c.put(f"/api/models/{name}/config", json=config)
        assert r.status_code == 200, r.text
        data: dict[str, Any] = r.json()
        return data

    def status(self, name: str) -> dict[str, Any]:
        with self.api() as c:
            served = c.get("/api/served").json()
        return next(m for m in served if m["name"] == name)

    def start(self) -> Studio:
        argv = [
            sys.executable,
            "-m",
            "llamastudio",
            "serve",
            "--port",
            str(self.port),
            "--gateway-port",
            str(self.gateway_port),
        ]
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=self.env)
        urls = [f"{self.gateway_url}/health", f"{self.api_url}/"]  # neither needs a key
        try:
            wait_healthy(self.proc, urls, self.timeout, self.log, "studio")
        except TimeoutError:
            self.stop()
            raise
        return self

    def kill(self) -> None:
        """``kill -9`` the studio itself (its engine processes live on: orphans)."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> None:
        if self.proc:
            stop_process(self.proc, grace=40)

    def __enter__(self) -> Studio:
        return self.start()

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
