"""LiteLLM's proxy (``litellm[proxy]`` from PyPI) as a reference relay for ``bench.gateway``: the
Python proxy users would otherwise pick, started with a local config in front of a llama-server.

It lives in its own virtual environment, ``~/.cache/llamastudio/bench-litellm/`` (its pins
conflict with the studio's), created on first use (needs PyPI); ``--no-litellm`` skips it.
Nothing is fetched at run time: the model cost map is the packaged one and telemetry is off.
"""

from __future__ import annotations

import os
import subprocess
import sys
import venv
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from llamastudio.procs import stop_process
from llamastudio.runtime.process import free_port

CACHE = Path(os.environ.get("LLAMASTUDIO_CACHE", Path.home() / ".cache" / "llamastudio"))
VENV = CACHE / "bench-litellm"
SPEC = "litellm[proxy]"


def litellm_binary() -> Path:
    """The ``litellm`` CLI in the bench's own environment, installed on first use."""
    exe = VENV / "bin" / "litellm"
    if not exe.exists():
        print(f"installing {SPEC} into {VENV} (once)", file=sys.stderr)
        venv.create(VENV, with_pip=True)
        subprocess.run([str(VENV / "bin" / "pip"), "install", "-q", SPEC], check=True)
    return exe


@contextmanager
def litellm_proxy(upstream: str, model: str, workdir: Path) -> Iterator[str]:
    """LiteLLM's proxy relaying ``model`` to the OpenAI-compatible ``upstream`` (…/v1); its URL."""
    config = workdir / "litellm.yaml"
    config.write_text(
        "model_list:\n"
        f"  - model_name: {model}\n"
        "    litellm_params:\n"
        f"      model: openai/{model}\n"
        f"      api_base: {upstream}/v1\n"
        "      api_key: none\n"
        "litellm_settings:\n"
        "  telemetry: false\n"
        "  drop_params: true\n"
    )
    port = free_port()
    env = {
        **os.environ,
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
        "LITELLM_TELEMETRY": "False",
        "LITELLM_LOG": "ERROR",
        "NO_PROXY": "127.0.0.1,localhost",
        # loopback only, and the other targets take no key either (LiteLLM refuses to start keyless)
        "LITELLM_DANGEROUSLY_PERMIT_WEAK_OR_UNSET_MASTER_KEY": "true",
    }
    argv = [str(litellm_binary()), "--config", str(config), "--host", "127.0.0.1", "--port", str(port)]
    with open(workdir / "litellm.log", "ab") as log:
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=workdir)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        stop_process(proc)
