"""Peers stored in the database (the key-value ``settings`` table, no migration): the ones the
user registered (API/CLI) under ``peers``, and the ones a llama-swap import brought under
``peers.imported`` (replaced whole by each import). Each is checked here, once, on the way in.

Blocking (database): callers on the event loop run these in a thread.
"""

from __future__ import annotations

import re
from dataclasses import asdict
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy.orm import Session

from llamastudio.errors import InvalidInput
from llamastudio.serving.peers import PeerSpec
from llamastudio.store import Database
from llamastudio.store.settings import read_setting, write_setting

USER, IMPORTED = "peers", "peers.imported"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_MODEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/@+-]{0,255}$")
MAX_PEERS = 64


def check(spec: PeerSpec) -> PeerSpec:
    """``spec`` with its URL normalised (no trailing ``/`` or ``/v1``); a bad one is a 400."""
    if not isinstance(spec.name, str) or not _NAME.match(spec.name):
        raise InvalidInput(f"peer name {spec.name!r}: use letters, digits and . _ - (max 64)")
    if not isinstance(spec.url, str):
        raise InvalidInput(f"peer {spec.name}: url must be a string")
    try:
        parts = urlsplit(spec.url.strip())
        parts.port  # noqa: B018  (a bad port raises)
    except ValueError as exc:
        raise InvalidInput(f"peer {spec.name}: url {spec.url!r}: {exc}") from exc
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidInput(f"peer {spec.name}: url {spec.url!r} must be http(s)://host[:port][/path]")
    if parts.username or parts.password or parts.query or parts.fragment:
        raise InvalidInput(
            f"peer {spec.name}: url {spec.url!r}: no credentials, query or fragment (use api_key)"
        )
    path = parts.path.rstrip("/").removesuffix("/v1").rstrip("/")
    url = f"{parts.scheme}://{parts.netloc}{path}"
    if spec.api_key is not None and (not isinstance(spec.api_key, str) or not spec.api_key.isprintable()):
        raise InvalidInput(f"peer {spec.name}: api_key must be printable text")
    if not isinstance(spec.models, list) or not all(
        isinstance(m, str) and _MODEL.match(m) for m in spec.models
    ):
        raise InvalidInput(f"peer {spec.name}: models must be a list of model ids")
    if not isinstance(spec.strip_params, list) or not all(isinstance(p, str) for p in spec.strip_params):
        raise InvalidInput(f"peer {spec.name}: strip_params must be a list of names")
    if not isinstance(spec.set_params, dict):
        raise InvalidInput(f"peer {spec.name}: set_params must be a mapping")
    if "model" in spec.strip_params or "model" in spec.set_params:
        raise InvalidInput(f"peer {spec.name}: strip_params / set_params may not touch `model`")
    return PeerSpec(
        name=spec.name,
        url=url,
        api_key=spec.api_key or None,
        models=list(dict.fromkeys(spec.models)),
        strip_params=list(spec.strip_params),
        set_params=dict(spec.set_params),
    )


def _from_json(value: Any) -> list[PeerSpec]:
    out = []
    for item in value if isinstance(value, list) else []:
        try:
            out.append(check(PeerSpec(**item)))
        except (TypeError, InvalidInput):
            continue  # written by another version: skipped, never a crash at start
    return out


def load(db: Database, key: str) -> list[PeerSpec]:
    value = read_setting(db, key)
    return _from_json(value) if value is not None else []


def save(db: Database, key: str, peers: list[PeerSpec]) -> None:
    with db.session() as s, s.begin():
        write(s, key, peers)


def write(s: Session, key: str, peers: list[PeerSpec]) -> None:
    """Store ``peers`` under ``key`` in the caller's transaction (a llama-swap import stores its
    peers with its configurations: all or none; ``check`` each first)."""
    write_setting(s, key, [asdict(p) for p in peers])


def add(db: Database, spec: PeerSpec) -> PeerSpec:
    """Store a user peer (replacing one of the same name); its name may not be an imported one's."""
    spec = check(spec)
    if any(p.name == spec.name for p in load(db, IMPORTED)):
        raise InvalidInput(f"peer {spec.name!r} comes from the imported llama-swap config: change it there")
    peers = [p for p in load(db, USER) if p.name != spec.name]
    if len(peers) >= MAX_PEERS:
        raise InvalidInput(f"at most {MAX_PEERS} peers")
    save(db, USER, [*peers, spec])
    return spec


def remove(db: Database, name: str) -> bool:
    peers = load(db, USER)
    kept = [p for p in peers if p.name != name]
    if len(kept) != len(peers):
        save(db, USER, kept)
        return True
    return False
