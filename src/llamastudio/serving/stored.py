"""Serving settings changed at run time (UI/API) and stored in the database: the default TTL.

Values from the environment (``LLAMASTUDIO_DEFAULT_TTL``) are the fallback; a stored value wins.
Blocking (database): callers on the event loop run these in a thread.
"""

from __future__ import annotations

import logging

from llamastudio.errors import InvalidInput
from llamastudio.serving.configs import MAX_TTL, valid_ttl
from llamastudio.store import Database
from llamastudio.store.settings import read_setting, save_setting

log = logging.getLogger(__name__)
_DEFAULT_TTL = "default_ttl"


def default_ttl(db: Database, fallback: float) -> float:
    """The TTL set in the UI (stored), else ``fallback`` (``LLAMASTUDIO_DEFAULT_TTL``)."""
    value = read_setting(db, _DEFAULT_TTL)
    if value is None:
        return fallback
    if not valid_ttl(value):  # e.g. Infinity stored by an older version: would break /ws JSON
        log.warning("ignoring the stored default_ttl %r: not a TTL", value)
        return fallback
    return float(value)


def set_default_ttl(db: Database, seconds: float) -> None:
    if not valid_ttl(seconds):
        raise InvalidInput(f"default_ttl must be a finite number of seconds from 0 to {MAX_TTL}")
    save_setting(db, _DEFAULT_TTL, seconds)
