"""Names that become paths, checked before they touch the disk.

Everything the Hub layer writes lives under one root (the Hugging Face cache, or the data
directory) at a path built from names that came from outside: the repo id and revision the user
typed, and the file names (``rfilename``), ``ETag`` and ``X-Repo-Commit`` that a Hub endpoint —
possibly a hostile mirror — sent back. Each name is checked against its format here, and the
final path is resolved and checked to stay inside its root with :func:`contained`.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from llamastudio.errors import InvalidInput, RemoteError

_REPO_PART = r"[A-Za-z0-9_](?:[A-Za-z0-9._-]{0,94}[A-Za-z0-9_])?"  # the Hub's rule, ASCII only
_REPO_ID = re.compile(rf"{_REPO_PART}/{_REPO_PART}")
_COMMIT = re.compile(r"[0-9a-f]{40}")
_ETAG = re.compile(r"[0-9a-f]{64}|[0-9a-f]{40}")
_REF_CHARS = re.compile(r"[A-Za-z0-9._/+-]{1,255}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def check_repo_id(repo: str) -> str:
    """``owner/name`` as the Hub allows it (letters, digits, ``. _ -``; no ``--`` or ``..``), so that
    ``models--owner--name`` names exactly one cache folder."""
    if not isinstance(repo, str) or not _REPO_ID.fullmatch(repo) or "--" in repo or ".." in repo:
        raise InvalidInput(
            f"repository {repo!r}: expected owner/name (letters, digits, '.', '_', '-'; "
            "no '--' or '..'; at most 96 characters each)"
        )
    return repo


def is_commit(value: str) -> bool:
    return bool(_COMMIT.fullmatch(value))


def check_revision(revision: str) -> str:
    """A 40-hex commit, or a branch / tag name by git's rules (no ``..``, no leading or trailing
    ``/``, no empty or dot-led component, no ``.lock`` ending), from a conservative charset."""
    bad = (
        not isinstance(revision, str)
        or not _REF_CHARS.fullmatch(revision)
        or ".." in revision
        or revision.startswith("/")
        or revision.endswith(("/", ".", ".lock"))
        or any(not part or part.startswith(".") for part in revision.split("/"))
    )
    if bad:
        raise InvalidInput(
            f"revision {revision!r}: expected a branch or tag name (letters, digits, '.', '_', '-', '+', "
            "'/'; no '..', no leading '/' or '.') or a 40-character commit id"
        )
    return revision


def check_commit(commit: str | None, what: str = "commit") -> str:
    """A commit id a server sent (``X-Repo-Commit``, a repo's ``sha``): 40 lowercase hex."""
    if not isinstance(commit, str) or not is_commit(commit):
        raise RemoteError(f"the Hub sent a malformed {what} {_show(commit)}; expected 40 hex digits")
    return commit


def check_etag(etag: str | None) -> str:
    """An ``ETag`` that names a blob: a sha256 (LFS files) or a git object id, quotes and ``W/``
    stripped."""
    value = (etag or "").strip()
    value = value.removeprefix("W/").strip('"')
    if not _ETAG.fullmatch(value):
        raise RemoteError(
            f"the Hub sent a malformed ETag {_show(etag)}; expected a sha256 or a git object id"
        )
    return value


def check_file_name(name: str) -> str:
    """A repo file name (``rfilename``): relative POSIX, no ``..`` / ``.`` / empty components,
    no backslash, no control characters, not absolute."""
    ok = (
        isinstance(name, str)
        and 0 < len(name) <= 1024
        and not name.startswith("/")
        and "\\" not in name
        and not _CONTROL.search(name)
        and all(part not in ("", ".", "..") for part in name.split("/"))
    )
    if not ok:
        raise RemoteError(f"the Hub sent an unsafe file name {_show(name)}; refusing to write it")
    return name


def contained(root: Path, *parts: str) -> Path:
    """``root / parts...``, refused unless it stays inside ``root`` both as written and with every
    symlink and ``..`` resolved. Every path the Hub layer writes is built with this.

    Returns the path as written (under the resolved root), not its resolution: a snapshot entry
    is a link whose own location matters."""
    base = Path(os.path.realpath(root))
    lexical = Path(os.path.normpath(base.joinpath(*parts)))
    for path in (lexical, Path(os.path.realpath(lexical))):
        if path != base and base not in path.parents:
            raise RemoteError(f"refusing to write outside {base}: {_show('/'.join(parts))}")
    return lexical


def _show(value: object, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"
