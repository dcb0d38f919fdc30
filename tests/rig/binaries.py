"""Locate (building once if needed) the rig's llama.cpp binaries.

The build itself lives in ``scripts/rig_llama.py`` and is cached under ``~/.cache/llamastudio``;
``make test`` runs it before pytest, so here it is normally a cache hit.
"""

from __future__ import annotations

import os
import subprocess
import sys
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


@cache
def build_dir() -> Path:
    override = os.environ.get("LLAMASTUDIO_RIG_DIR")
    if override:
        return Path(override)
    out = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "rig_llama.py")],
        check=True,
        capture_output=True,
        text=True,
    )
    return Path(out.stdout.strip().splitlines()[-1])


def binary(name: str) -> Path:
    path = build_dir() / "bin" / name
    if not path.exists():
        raise FileNotFoundError(f"{path} missing: run `make rig`")
    return path


@cache
def source_dir() -> Path:
    out = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "rig_llama.py"), "--source"],
        check=True,
        capture_output=True,
        text=True,
    )
    return Path(out.stdout.strip().splitlines()[-1])
