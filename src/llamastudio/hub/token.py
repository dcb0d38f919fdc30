"""The Hugging Face token: from ``HF_TOKEN`` / ``HUGGINGFACE_API_KEY`` (then read-only), else a
file in the data directory written with 0600 permissions. No API ever returns it."""

from __future__ import annotations

import os
import re
from pathlib import Path

from llamastudio.errors import Conflict, InvalidInput
from llamastudio.fsutil import write_atomic

ENV_VARS = ("HF_TOKEN", "HUGGINGFACE_API_KEY")
_TOKEN = re.compile(r"[\x21-\x7e]{1,512}")  # printable ASCII, no spaces: it goes into an HTTP header


def check_token(token: str, where: str) -> str:
    """A token must fit in an ``Authorization`` header: refused (400) with non-ASCII, control or
    whitespace characters, before it is stored or sent — never a 500 from deep in httpx."""
    if not _TOKEN.fullmatch(token):
        raise InvalidInput(
            f"{where} is not a valid token: it must be one word of at most 512 printable ASCII "
            "characters (no spaces, control or non-ASCII characters)"
        )
    return token


def token_file(data_dir: Path) -> Path:
    return data_dir / "hf_token"


def token_source(data_dir: Path) -> str | None:
    if any(os.environ.get(v) for v in ENV_VARS):
        return "env"
    return "settings" if token_file(data_dir).exists() else None


def effective_token(data_dir: Path) -> str | None:
    """The token to send, checked: a malformed one (set in the environment, or stored before
    tokens were checked) is a clear 400 naming where it comes from."""
    for var in ENV_VARS:
        if os.environ.get(var):
            return check_token(os.environ[var], f"the Hugging Face token in ${var}")
    path = token_file(data_dir)
    if not path.exists():
        return None
    token = path.read_bytes().decode("utf-8", "replace").strip()
    if not token:
        return None
    return check_token(token, f"the stored Hugging Face token ({path}; replace it in Settings or delete it)")


def store_token(data_dir: Path, token: str | None) -> None:
    """Write (or, with None, delete) the stored token; refused while the environment sets one."""
    if token_source(data_dir) == "env":
        raise Conflict("the Hugging Face token is set by the environment (HF_TOKEN) and is read-only here")
    path = token_file(data_dir)
    if token is None:
        path.unlink(missing_ok=True)
        return
    check_token(token.strip(), "the Hugging Face token")
    token = token.strip()
    write_atomic(path, token.encode(), mode=0o600)  # never readable by others, even for a moment
