"""What a llama-server binary can do, read from its own ``--version`` and ``--help``."""

from __future__ import annotations

import re

_FLAG = re.compile(r"(?<![\w-])(--?[a-zA-Z][\w-]*)")
_VERSION_NEW = re.compile(r"version:\s*\S+\s*\(build\s*(\d+),\s*commit\s*(\w+)\)")
_VERSION_OLD = re.compile(r"version:\s*(\d+)\s*\((\w+)\)")


_PLACEHOLDER = re.compile(r"^[A-Z0-9_|,.=-]+$|^[\[<{].*|.*[\]>}],?$")


def parse_help(text: str) -> list[str]:
    """Every flag spelling the help lists (``-fa``, ``--flash-attn``, ``--n-cpu-moe`` …): on each
    line starting with ``-``, flags and their placeholders (``N``, ``[on|off]``, ``<dev1,..>``)
    until the first word of the description."""
    flags: set[str] = set()
    for line in text.splitlines():
        tokens = line.split()
        if not tokens or not tokens[0].startswith("-"):
            continue
        for token in tokens:
            word = token.rstrip(",")
            if word.startswith("-") and _FLAG.fullmatch(word):
                flags.add(word)
            elif not _PLACEHOLDER.match(word):
                break
    return sorted(flags)


def parse_version(text: str) -> tuple[str, str]:
    """Build number and commit: ``version: 0.6.0-dev (build 7345, commit a1b2c3d)`` or the older
    ``version: 7345 (a1b2c3d)`` → ("7345", "a1b2c3d"); ("", "") when absent."""
    m = _VERSION_NEW.search(text) or _VERSION_OLD.search(text)
    return (m.group(1), m.group(2)) if m else ("", "")
