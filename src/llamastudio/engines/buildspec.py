"""What a source build is asked to do (``BuildSpec``), its checks, and the CMake command line it
becomes; and which specs would run code of the caller's choosing (``foreign_code``: the API needs
the commands permission for those, see ``guard``/``require_commands``)."""

from __future__ import annotations

import os
import re
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

from llamastudio.engines.registry import Engine
from llamastudio.errors import InvalidInput

BACKENDS = ("cpu", "cuda", "vulkan", "metal", "openblas", "hip")
BUILD_TYPES = ("Release", "Debug", "RelWithDebInfo")
DEFAULT_GIT = "https://github.com/ggml-org/llama.cpp"
# the RPC backend (llama-server --rpc) and its server for `llamastudio worker` (tools/rpc's target)
RPC_CMAKE, RPC_TARGET = "-DGGML_RPC=ON", "ggml-rpc-server"


@dataclass(frozen=True)
class BuildSpec:
    source: str = DEFAULT_GIT  # a directory, a .tar.gz/.tgz/.tar file, or a git URL
    ref: str = "master"  # for git sources
    backends: tuple[str, ...] = ("cpu",)
    build_type: str = "Release"
    cuda_architectures: str | None = None  # e.g. "86;89"; None: from the detected GPUs
    cmake_args: tuple[str, ...] = ()
    cflags: str = ""
    cxxflags: str = ""
    targets: tuple[str, ...] = ("llama-server",)
    jobs: int | None = None
    patches: tuple[str, ...] = ()
    name: str | None = None
    build_number: str | None = None  # version to stamp on a source without git history
    native: bool = True

    def options(self) -> dict[str, object]:
        data = asdict(self)
        for key in ("source", "ref", "patches", "name", "jobs"):
            data.pop(key)
        return data


@dataclass
class BuildResult:
    engine: Engine
    reused: bool
    log_tail: list[str] = field(default_factory=list)


def missing_toolchain(backends: tuple[str, ...]) -> list[str]:
    """What is missing to build these backends, each with how to get it."""
    missing = []
    if not shutil.which("cmake"):
        missing.append("cmake (apt-get install cmake)")
    if not (shutil.which("c++") or shutil.which("g++") or shutil.which("clang++")):
        missing.append("a C++ compiler (apt-get install g++)")
    if not (shutil.which("make") or shutil.which("ninja")):
        missing.append("make or ninja (apt-get install make)")
    if "cuda" in backends and not (shutil.which("nvcc") or os.environ.get("CUDACXX")):
        missing.append("nvcc for CUDA (install the CUDA toolkit, or set CUDACXX)")
    if "vulkan" in backends:
        if not shutil.which("glslc"):
            missing.append("glslc for Vulkan shaders (apt-get install glslc)")
        if not Path("/usr/include/vulkan/vulkan.h").exists():
            missing.append("Vulkan headers (apt-get install libvulkan-dev)")
    if "hip" in backends and not shutil.which("hipcc"):
        missing.append("hipcc for ROCm (install ROCm)")
    if "openblas" in backends and not any(
        Path(p).exists()
        for p in (
            "/usr/include/openblas/cblas.h",
            "/usr/include/x86_64-linux-gnu/openblas-pthread/cblas.h",
            "/usr/include/aarch64-linux-gnu/openblas-pthread/cblas.h",
            "/usr/include/cblas.h",
        )
    ):
        missing.append("OpenBLAS headers (apt-get install libopenblas-dev)")
    if "metal" in backends and os.uname().sysname != "Darwin":
        missing.append("Metal needs macOS")
    return missing


def cmake_args(spec: BuildSpec, src: Path, build: Path) -> list[str]:
    args = [
        "cmake",
        "-S",
        str(src),
        "-B",
        str(build),
        f"-DCMAKE_BUILD_TYPE={spec.build_type}",
        f"-DGGML_NATIVE={'ON' if spec.native else 'OFF'}",
        "-DBUILD_SHARED_LIBS=OFF",
        "-DLLAMA_CURL=OFF",
        "-DLLAMA_OPENSSL=OFF",
        "-DLLAMA_BUILD_TESTS=OFF",
        "-DLLAMA_BUILD_EXAMPLES=OFF",
    ]
    flags = {
        "cuda": ["-DGGML_CUDA=ON"],
        "vulkan": ["-DGGML_VULKAN=ON"],
        "metal": ["-DGGML_METAL=ON"],
        "openblas": ["-DGGML_BLAS=ON", "-DGGML_BLAS_VENDOR=OpenBLAS"],
        "hip": ["-DGGML_HIP=ON"],
    }
    for backend in spec.backends:
        args += flags.get(backend, [])
    if "cuda" in spec.backends and spec.cuda_architectures:
        args.append(f"-DCMAKE_CUDA_ARCHITECTURES={spec.cuda_architectures}")
    if spec.cflags:
        args.append(f"-DCMAKE_C_FLAGS={spec.cflags}")
    if spec.cxxflags:
        args.append(f"-DCMAKE_CXX_FLAGS={spec.cxxflags}")
    if spec.build_number:
        args += [f"-DLLAMA_BUILD_NUMBER={spec.build_number}", "-DLLAMA_BUILD_COMMIT=sdist"]
    if shutil.which("ccache"):
        args.append("-DGGML_CCACHE=ON")
    return args + list(spec.cmake_args)


def validate_spec(spec: BuildSpec) -> None:
    bad = [b for b in spec.backends if b not in BACKENDS]
    if bad:
        raise InvalidInput(f"unknown backend(s) {', '.join(bad)} (choose from {', '.join(BACKENDS)})")
    if spec.build_type not in BUILD_TYPES:
        raise InvalidInput(f"build type {spec.build_type!r}: choose from {', '.join(BUILD_TYPES)}")
    for arg in spec.cmake_args:
        if not arg.startswith("-D"):
            raise InvalidInput(f"CMake argument {arg!r} must look like -DNAME=VALUE")
    for target in spec.targets:
        if not re.fullmatch(r"[\w.-]+", target):
            raise InvalidInput(f"bad target name {target!r}")
    if not re.fullmatch(r"[\w./-]{1,200}", spec.ref) or spec.ref.startswith("-"):
        raise InvalidInput(f"git ref {spec.ref!r}: a branch, tag or commit name")
    if spec.build_number is not None and not re.fullmatch(r"\d{1,9}", spec.build_number):
        # it is pasted into C source (build-info.cpp) and the engine's directory name
        raise InvalidInput(f"build number {spec.build_number!r}: digits only")
    if "llama-server" not in spec.targets:
        raise InvalidInput("targets must include llama-server")
    missing = missing_toolchain(spec.backends)
    if missing:
        raise InvalidInput("missing build tools: " + "; ".join(missing))


# What a build may take without the command permission: the official repository's own code,
# built with switches that neither name programs or files nor reach a shell. CMAKE_C_FLAGS ends up
# in Makefile recipes run by /bin/sh, a -D value can be a toolchain file or a compiler launcher,
# and a compiler flag can load a plugin (-fplugin, -B, -specs, -Wl,--plugin).
_SAFE_CMAKE = re.compile(
    r"-D(GGML|LLAMA)_[A-Z0-9_]+(:BOOL|:STRING)?=([\w.+][\w.+-]*)?|-DCMAKE_CUDA_ARCHITECTURES=[\w;-]+"
)
_CODE_WORDS = ("COMPILER", "TOOLCHAIN", "PROGRAM", "LAUNCHER", "PATH", "DIR", "FILE", "INCLUDE", "COMMAND")
# no -D/-U either: ``-Dfopen=popen`` turns a model path into a shell command
_SAFE_CFLAG = re.compile(
    r"-(O[0-3sgz]?|g[0-3]?|w|W(no-)?[\w=-]+|m(arch|tune|cpu)=[\w.+-]+|m(no-)?[a-z0-9][\w.-]*"
    r"|f(no-)?(?![\w-]*plugin)[a-z][\w-]*(=[\w.+-]+)?|std=[\w+]+|pipe)"
)


def _official(source: str, repo: str) -> bool:
    url = source.strip().lower().removesuffix("/").removesuffix(".git")
    return url in (f"https://github.com/{repo.lower()}", f"https://www.github.com/{repo.lower()}")


def foreign_code(spec: BuildSpec, official_repo: str) -> str | None:
    """What in this build would run code other than the official llama.cpp's own build, in words
    (None: nothing): a local or other source, patches, or CMake args / C flags outside the safe
    switches. ``official_repo``: ``owner/name`` on GitHub (``settings.github_repo``)."""
    if not _official(spec.source, official_repo):
        return f"a build from {spec.source!r} (not https://github.com/{official_repo})"
    if spec.patches:
        return "a build with patches"
    for arg in spec.cmake_args:
        name = arg.partition("=")[0]
        if not _SAFE_CMAKE.fullmatch(arg) or any(word in name for word in _CODE_WORDS):
            return f"a build with the CMake argument {arg!r}"
    for flag in (spec.cflags + " " + spec.cxxflags).split():
        if not _SAFE_CFLAG.fullmatch(flag):
            return f"a build with the compiler flag {flag!r}"
    return None
