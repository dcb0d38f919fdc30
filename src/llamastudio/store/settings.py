"""The key-value settings table (``SettingRow``): one JSON value per key, for what the studio
keeps beside its configurations (the default TTL, peers, workers, llama-swap's keys and globals)."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from llamastudio.store.db import Database
from llamastudio.store.models import SettingRow


def read_setting(db: Database, key: str) -> Any:
    """The stored value of ``key`` (None when unset)."""
    with db.session() as s:
        return setting_in(s, key)


def setting_in(s: Session, key: str) -> Any:
    """The value of ``key`` as the caller's transaction sees it (None when unset)."""
    row = s.get(SettingRow, key)
    return None if row is None else row.value


def write_setting(s: Session, key: str, value: Any) -> None:
    """Store ``value`` under ``key`` inside the caller's transaction."""
    row = s.get(SettingRow, key)
    if row is None:
        s.add(SettingRow(key=key, value=value))
    else:
        row.value = value


def save_setting(db: Database, key: str, value: Any) -> None:
    """Store ``value`` under ``key`` in a transaction of its own."""
    with db.session() as s, s.begin():
        write_setting(s, key, value)
