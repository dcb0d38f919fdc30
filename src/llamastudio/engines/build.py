"""Source builds of llama.cpp: a local tree, a source tarball, or a git URL + ref; backends, build
type, CMake args, CFLAGS, patches.

Contract: the build runs in ``<engines>/.build-<id>/`` (``src/``, ``build/``, ``out/``); only a
finished, validated build is moved into ``<engines>/<id>/`` (one rename) and registered. A failed
or cancelled build leaves nothing registered and its workspace is removed. The same inputs (source
digest, options, patches) give the same build key, and a registered build with that key is reused.
The fixed workspace layout lets ccache (``CCACHE_BASEDIR``) hit across builds.
"""

from __future__ import annotations

import asyncio
import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

from llamastudio.engines import patches as patchlib
from llamastudio.engines import proc
from llamastudio.engines.registry import Engine, EngineRegistry
from llamastudio.engines.treehash import find_cmake_root, skip
from llamastudio.engines.validate import probe_async, revalidate_async
from llamastudio.errors import InvalidInput, NotFound, RemoteError, StudioError

BACKENDS = ("cpu", "cuda", "vulkan", "metal", "openblas", "hip")
BUILD_TYPES = ("Release", "Debug", "RelWithDebInfo")
DEFAULT_GIT = "https://github.com/ggml-org/llama.cpp"
LogFn = Callable[[str], None]


class BuildFailed(StudioError):
    code = "build_failed"


class BuildCancelled(StudioError):
    code = "build_cancelled"
    exit_code = 130


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


def _find_cmake_root(root: Path) -> Path:
    """The shallowest directory whose CMakeLists.txt declares the llama.cpp project. Blocking (a
    scan of the tree): run it in a thread."""
    found = find_cmake_root(root)
    if found is None:
        raise InvalidInput(f"no llama.cpp CMakeLists.txt found in {root}")
    return found


def _cancelled(cancel: asyncio.Event | None) -> None:
    if cancel is not None and cancel.is_set():
        raise BuildCancelled("build cancelled")


def _is_git_url(source: str) -> bool:
    remote = source.startswith(("http://", "https://", "git@", "file://"))
    return remote and not source.endswith((".tar.gz", ".tgz", ".tar"))


async def _local_digest(source: str) -> tuple[str, str]:
    """(kind, digest) of a local source: a tree's content digest (in a child process, see
    ``treehash.py``) or a tarball's sha256 (in a thread: hashlib releases the GIL)."""
    path = Path(source).expanduser()
    if await asyncio.to_thread(path.is_dir):
        argv = [sys.executable, "-m", "llamastudio.engines.treehash", str(path)]
        try:
            done = await proc.run(argv, timeout=3600)
        except (OSError, TimeoutError) as exc:
            raise BuildFailed(f"digesting the source tree {path}: {exc}") from exc
        if done.returncode != 0:
            raise BuildFailed(f"digesting the source tree {path}: {done.stderr.strip()[-300:]}")
        out = json.loads(done.stdout)
        if out["digest"] is None:
            raise InvalidInput(f"no llama.cpp CMakeLists.txt found in {path}")
        return "dir", str(out["digest"])
    if await asyncio.to_thread(path.is_file) and path.name.endswith((".tar.gz", ".tgz", ".tar")):
        return "tarball", await asyncio.to_thread(_file_digest, path)
    raise NotFound(f"source {source!r} is not a directory, a source tarball or a git URL")


def _file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _fetch_all(origins: tuple[str, ...]) -> list[patchlib.Patch]:
    return [patchlib.fetch(p) for p in origins]


def _try_lock(lock: IO[str]) -> bool:
    try:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


class Builder:
    """Builds engines into a registry; one build at a time per workspace.

    Nothing here blocks the event loop it runs on (the studio's, shared with the gateway): the
    source digest, file copies, registry reads and writes run in threads, and every program (git,
    cmake, patch, the built llama-server's probe) is an async subprocess in its own process group,
    killed when the build is cancelled."""

    def __init__(self, registry: EngineRegistry) -> None:
        self.registry = registry

    async def build(
        self, spec: BuildSpec, on_log: LogFn = lambda _line: None, cancel: asyncio.Event | None = None
    ) -> BuildResult:
        await asyncio.to_thread(validate_spec, spec)  # looks for the toolchain on disk
        fetched = await asyncio.to_thread(_fetch_all, spec.patches)  # a 404 fails here, before any work
        source_kind, digest = await self._source_digest(spec)
        _cancelled(cancel)
        key_payload = {"source": digest, "options": spec.options(), "patches": [p.sha256 for p in fetched]}
        build_key = hashlib.sha256(json.dumps(key_payload, sort_keys=True).encode()).hexdigest()[:32]
        found = await asyncio.to_thread(self.registry.find_build, build_key)
        if found is not None:
            on_log(f"reusing engine {found.id} (same source, options and patches)")
            return BuildResult(await revalidate_async(self.registry, found), reused=True)
        await asyncio.to_thread(self.registry.dir.mkdir, parents=True, exist_ok=True)
        with open(self.registry.dir / ".build.lock", "w") as lock:
            # one build at a time per engines dir: a second one waits (still cancellable), then
            # finds the first's result
            if not _try_lock(lock):
                on_log(f"waiting for another build in {self.registry.dir} to finish")
                while not _try_lock(lock):
                    _cancelled(cancel)
                    await asyncio.sleep(0.5)
            found = await asyncio.to_thread(self.registry.find_build, build_key)
            if found is not None:
                on_log(f"reusing engine {found.id} (built meanwhile by another process)")
                return BuildResult(found, reused=True)
            await asyncio.to_thread(self._remove_stale)
            return await self._build_locked(spec, fetched, build_key, source_kind, digest, on_log, cancel)

    def _remove_stale(self) -> None:
        for stale in self.registry.dir.glob(".build-*"):  # left by a killed build; none runs now
            shutil.rmtree(stale, ignore_errors=True)

    async def _build_locked(
        self,
        spec: BuildSpec,
        fetched: list[patchlib.Patch],
        build_key: str,
        source_kind: str,
        digest: str,
        on_log: LogFn,
        cancel: asyncio.Event | None,
    ) -> BuildResult:
        ws = self.registry.dir / f".build-{uuid.uuid4().hex[:12]}"
        ws.mkdir()
        tail: list[str] = []

        def log(line: str) -> None:
            tail.append(line)
            del tail[:-40]
            on_log(line)

        try:
            src = await self._materialize(spec, source_kind, ws / "src", log, cancel)
            commit = await self._git_commit(src)
            for p in fetched:
                log(f"applying patch {p.origin}")
                await patchlib.apply(p, src)
            _cancelled(cancel)
            env = dict(os.environ, CCACHE_BASEDIR=str(ws), CCACHE_NOHASHDIR="true")
            await self._run(cmake_args(spec, src, ws / "build"), env, log, cancel)
            jobs = str(spec.jobs or os.cpu_count() or 2)
            build_cmd = [
                "cmake",
                "--build",
                str(ws / "build"),
                "--config",
                spec.build_type,
                "-j",
                jobs,
                "--target",
                *spec.targets,
            ]
            await self._run(build_cmd, env, log, cancel)
            engine = await self._install(spec, ws, build_key, source_kind, digest, commit, fetched)
        except BaseException as exc:
            await asyncio.to_thread(shutil.rmtree, ws, ignore_errors=True)
            if isinstance(exc, OSError | subprocess.SubprocessError):
                raise BuildFailed(f"build failed: {exc}") from exc
            raise
        await asyncio.to_thread(shutil.rmtree, ws, ignore_errors=True)
        return BuildResult(engine, reused=False, log_tail=tail)

    async def _source_digest(self, spec: BuildSpec) -> tuple[str, str]:
        source = spec.source
        if not _is_git_url(source):
            return await _local_digest(source)
        try:
            out = await proc.run(["git", "ls-remote", source, spec.ref], timeout=60)
        except TimeoutError:
            raise RemoteError(f"git ls-remote {source}: no answer within 60 s") from None
        except OSError as exc:
            raise InvalidInput(f"cannot run git: {exc}") from exc
        if out.returncode != 0 or not out.stdout.strip():
            raise NotFound(f"git ref {spec.ref!r} not found at {source}: {out.stderr.strip()[-300:]}")
        return "git", out.stdout.split()[0]

    async def _materialize(
        self, spec: BuildSpec, kind: str, dest: Path, log: LogFn, cancel: asyncio.Event | None
    ) -> Path:
        if kind == "git":
            log(f"cloning {spec.source} at {spec.ref}")
            env = dict(os.environ)
            await self._run(["git", "clone", "--quiet", spec.source, str(dest)], env, log, cancel)
            await self._run(["git", "checkout", "--quiet", spec.ref], env, log, cancel, cwd=dest)
            return dest
        if kind == "tarball":
            log(f"unpacking {spec.source}")
            src = await asyncio.to_thread(_unpack, Path(spec.source), dest)
        else:
            root = await asyncio.to_thread(_find_cmake_root, Path(spec.source).expanduser())
            log(f"copying source tree {root}")
            src = await asyncio.to_thread(_copy_tree, root, dest)
        _cancelled(cancel)
        return src

    @staticmethod
    async def _git_commit(src: Path) -> str:
        if not (src / ".git").exists():
            return ""
        out = await proc.run(["git", "rev-parse", "--short", "HEAD"], cwd=src, timeout=60)
        return out.stdout.strip()

    async def _run(
        self,
        argv: list[str],
        env: dict[str, str],
        log: LogFn,
        cancel: asyncio.Event | None,
        cwd: Path | None = None,
    ) -> None:
        """Run one build step, streaming its output line by line; cancel kills its process group."""
        process = await proc.spawn(argv, cwd=cwd, env=env, merge_stderr=True)
        assert process.stdout is not None
        stdout = process.stdout

        async def follow() -> None:
            async for line in proc.lines(stdout):
                log(line.decode(errors="replace").rstrip())

        reading = asyncio.ensure_future(follow())
        waiter = asyncio.ensure_future(cancel.wait()) if cancel else None
        try:
            pending = {reading} | ({waiter} if waiter else set())
            done, _ = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            if waiter in done:
                proc.kill_group(process.pid)
                reading.cancel()
                await asyncio.gather(reading, return_exceptions=True)
                await asyncio.to_thread(process.wait)
                raise BuildCancelled("build cancelled")
            reading.result()
            code = await proc.wait(process)
        except asyncio.CancelledError:
            proc.kill_group(process.pid)
            reading.cancel()
            await asyncio.to_thread(process.wait)
            raise
        finally:
            if waiter:
                waiter.cancel()
        if code != 0:
            raise BuildFailed(f"`{' '.join(argv[:3])} …` failed with exit code {code}")

    async def _install(
        self,
        spec: BuildSpec,
        ws: Path,
        build_key: str,
        kind: str,
        digest: str,
        commit: str,
        fetched: list[patchlib.Patch],
    ) -> Engine:
        """Stage the built files, check that llama-server runs, then publish and register."""
        out = await asyncio.to_thread(_stage, spec, ws)
        check = await probe_async(out / "bin" / "llama-server")
        if not check["ok"]:
            raise BuildFailed(f"the built llama-server does not run: {check['error']}")
        return await asyncio.to_thread(
            self._publish, spec, out, build_key, kind, digest, commit, fetched, check
        )

    def _publish(
        self,
        spec: BuildSpec,
        out: Path,
        build_key: str,
        kind: str,
        digest: str,
        commit: str,
        fetched: list[patchlib.Patch],
        check: dict[str, Any],
    ) -> Engine:
        version = check.get("version") or spec.build_number or ""
        backends = "-".join(spec.backends)
        engine_id = f"llama.cpp-b{version or 'dev'}-{backends}-{build_key[:6]}"
        final = self.registry.dir / engine_id
        binaries = {target: str(final / "bin" / target) for target in spec.targets}
        if final.exists():
            shutil.rmtree(final)
        out.rename(final)  # atomic publish: a half-built engine never appears under this name
        flags = check.pop("flags")
        engine = Engine(
            id=engine_id,
            name=spec.name or engine_id,
            kind="source",
            root=str(final),
            binaries=binaries,
            version=f"b{version}" if version else "",
            commit=check.get("commit") or commit,
            backends=list(spec.backends),
            build_options=spec.options(),
            patches=[p.describe() for p in fetched],
            source={
                "kind": kind,
                "location": spec.source,
                "ref": spec.ref if kind == "git" else "",
                "digest": digest,
            },
            build_key=build_key,
            validation=check,
            capabilities=flags,
        )
        try:
            return self.registry.add(engine)
        except StudioError:
            shutil.rmtree(final, ignore_errors=True)
            raise


def _unpack(tarball: Path, dest: Path) -> Path:
    dest.mkdir()
    with tarfile.open(tarball) as tf:
        tf.extractall(dest, filter="data")
    return _find_cmake_root(dest)


def _copy_tree(root: Path, dest: Path) -> Path:
    shutil.copytree(
        root,
        dest,
        symlinks=True,
        ignore=lambda d, names: [n for n in names if skip(root, Path(d), n)],
    )
    return dest


def _stage(spec: BuildSpec, ws: Path) -> Path:
    """Copy the built targets and their shared libraries into ``ws/out/bin``; returns ``ws/out``."""
    out = ws / "out"
    (out / "bin").mkdir(parents=True)
    built = ws / "build" / "bin"
    for target in spec.targets:
        if not (built / target).exists():
            raise BuildFailed(f"the build did not produce {target}")
        shutil.copy2(built / target, out / "bin" / target)
    for lib in list(built.glob("*.so*")) + list(built.glob("*.dylib")):
        shutil.copy2(lib, out / "bin" / lib.name)
    return out
