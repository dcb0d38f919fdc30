"""The content digest of a llama.cpp source tree, computed in a child process.

A build digests its whole source tree (thousands of files) to find a build it can reuse. That
work is Python-heavy (``os.walk``, many small files): in a thread of the studio it would hold the
GIL, and every socket write of the event loop serving the gateway would wait for it (worse when
the machine is busy and the thread holding the GIL is not running). ``python -m
llamastudio.engines.treehash DIR`` imports nothing but the standard library (and this package's
light ``__init__``), and a cancelled build kills it.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path

_SKIP_DIRS = {".git", "__pycache__", "node_modules"}


def skip(root: Path, directory: Path, name: str) -> bool:
    """Not part of a source tree: VCS data, caches, model files, and top-level build directories."""
    if name in _SKIP_DIRS or name.endswith(".gguf"):
        return True
    return directory == root and name.startswith("build") and (directory / name).is_dir()


def tree_digest(root: Path) -> str:
    """Content digest of a source tree (the files a build reads; .git, builds and models excluded)."""
    h = hashlib.sha256()
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        dirnames[:] = sorted(d for d in dirnames if not skip(root, here, d))
        for name in sorted(filenames):
            if skip(root, here, name):
                continue
            path = Path(dirpath) / name
            h.update(str(path.relative_to(root)).encode() + b"\0")
            with open(path, "rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    h.update(chunk)
    return h.hexdigest()


def find_cmake_root(root: Path) -> Path | None:
    """The shallowest directory whose CMakeLists.txt declares the llama.cpp project."""
    candidates = sorted(root.rglob("CMakeLists.txt"), key=lambda p: len(p.parts))
    for path in candidates:
        if 'project("llama.cpp"' in path.read_text(errors="replace"):
            return path.parent
    return None


def main(argv: list[str]) -> int:
    """Prints ``{"cmake_root": …, "digest": …}`` for the tree ``argv[0]`` (no digest when it holds
    no llama.cpp CMakeLists.txt)."""
    root = Path(argv[0])
    cmake_root = find_cmake_root(root)
    out = {"cmake_root": str(cmake_root) if cmake_root else None, "digest": None}
    if cmake_root is not None:
        out["digest"] = tree_digest(root)
    sys.stdout.write(json.dumps(out) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
