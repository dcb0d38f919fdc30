"""What a llama-swap import brings besides model configurations, stored in the key-value
``settings`` table (no migration): its ``apiKeys`` (accepted by the gateway next to the studio's
own key) and the top-level keys kept for export (``healthCheckTimeout``, ``logLevel`` …).

Each import that has a key replaces its stored value; an import without it keeps the stored one
(a config without ``apiKeys`` never opens a protected gateway). Blocking (database).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from llamastudio.store import Database
from llamastudio.store.settings import read_setting, setting_in, write_setting

API_KEYS, SETTINGS = "llama_swap.api_keys", "llama_swap.settings"


read = read_setting


def api_keys(db: Database) -> list[str]:
    value = read(db, API_KEYS)
    return [k for k in value if isinstance(k, str) and k] if isinstance(value, list) else []


def settings(db: Database) -> dict[str, Any]:
    value = read(db, SETTINGS)
    return value if isinstance(value, dict) else {}


write = write_setting  # inside the caller's transaction (the import's: all or nothing)


def merge(s: Session, key: str, value: dict[str, Any]) -> None:
    """Update the stored mapping ``key`` with ``value``'s keys (inside the caller's transaction)."""
    old = setting_in(s, key)
    write(s, key, {**(old if isinstance(old, dict) else {}), **value})
