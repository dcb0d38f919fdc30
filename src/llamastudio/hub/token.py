"""The Hugging Face token: from ``HF_TOKEN`` / ``HUGGINGFACE_API_KEY`` (then read-only), else a
file in the data directory written with 0600 permissions. No API ever returns it."""

from __future__ import annotations

import os
from pathlib import Path

from llamastudio.errors import Conflict, InvalidInput
from llamastudio.fsutil import write_atomic

ENV_VARS = ("HF_TOKEN", "HUGGINGFACE_API_KEY")


def token_file(data_dir: Path) -> Path:
    return data_dir / "hf_token"


def token_source(data_dir: Path) -> str | None:
    if any(os.environ.get(v) for v in ENV_VARS):
        return "env"
    return "settings" if token_file(data_dir).exists() else None


def effective_token(data_dir: Path) -> str | None:
    for var in ENV_VARS:
        if os.environ.get(var):
            return os.environ[var]
    path = token_file(data_dir)
    return path.read_text().strip() or None if path.exists() else None


def store_token(data_dir: Path, token: str | None) -> None:
    """Write (or, with None, delete) the stored token; refused while the environment sets one."""
    if token_source(data_dir) == "env":
        raise Conflict("the Hugging Face token is set by the environment (HF_TOKEN) and is read-only here")
    path = token_file(data_dir)
    if token is None:
        path.unlink(missing_ok=True)
        return
    token = token.strip()
    if not token or any(c.isspace() for c in token) or len(token) > 512:
        raise InvalidInput("a Hugging Face token is one word of at most 512 characters")
    write_atomic(path, token.encode(), mode=0o600)  # never readable by others, even for a moment
