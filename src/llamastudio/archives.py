"""Unpacking archives from the network (release assets, source tarballs) without letting a member
escape the destination.

``tarfile``'s ``filter="data"`` does this, but only from Python 3.11.4 (Debian bookworm ships
3.11.2, where the argument is a ``TypeError``); there the same rules are applied by hand:
absolute names made relative, no ``..``, links only to places inside the destination, no device
files, no set-id bits.
"""

from __future__ import annotations

import os
import tarfile
from pathlib import Path, PurePosixPath

from llamastudio.errors import InvalidInput


def extract_tar(tf: tarfile.TarFile, dest: Path, what: str) -> None:
    """Every member of ``tf`` into ``dest``; ``what`` names the archive in errors."""
    if hasattr(tarfile, "data_filter"):
        try:
            tf.extractall(dest, filter="data")
        except tarfile.FilterError as exc:
            raise InvalidInput(f"{what}: {exc}") from None
        return
    root = dest.resolve()
    for member in tf.getmembers():  # one at a time: each check sees the links unpacked before it
        member.name = member.name.lstrip("/")  # as the data filter does: inside the destination
        name = PurePosixPath(member.name)
        if ".." in name.parts:
            raise InvalidInput(f"{what}: member {member.name!r} escapes the archive")
        if member.isdev() or not (member.isfile() or member.isdir() or member.issym() or member.islnk()):
            raise InvalidInput(f"{what}: member {member.name!r} is not a file, directory or link")
        # a symlink unpacked earlier (``a`` → ``.``, then ``b`` → ``a/..``) can lead a later name
        # or link target out, which a check of the names alone, before unpacking, cannot see; a
        # link member replaces what is at its name, a file or directory is written through it
        link = member.issym() or member.islnk()
        if not _inside(root / name.parent if link else root / name, root):
            raise InvalidInput(f"{what}: member {member.name!r} escapes the archive through a link")
        if link:
            base = root / name.parent if member.issym() else root
            if not _inside(base / member.linkname, root):
                raise InvalidInput(f"{what}: link {member.name!r} points outside the archive")
        member.mode &= 0o755  # no set-id bits, no world-writable files
        if member.isdir():
            member.mode |= 0o700  # unpacked one at a time: its files come after it
        tf.extract(member, dest)


def _inside(path: Path, root: Path) -> bool:
    """Whether ``path``, with every link on the disk now followed, is ``root`` or below it."""
    return Path(os.path.realpath(path)).is_relative_to(root)
