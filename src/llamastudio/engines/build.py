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
import shutil
import subprocess
import sys
import tarfile
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from llamastudio.archives import extract_tar
from llamastudio.engines import patches as patchlib
from llamastudio.engines import proc
from llamastudio.engines.buildspec import (
    BuildResult,
    BuildSpec,
    cmake_args,
    validate_spec,
)
from llamastudio.engines.registry import Engine, EngineRegistry
from llamastudio.engines.treehash import find_cmake_root, skip
from llamastudio.engines.validate import probe_async, revalidate_async
from llamastudio.errors import BuildCancelled, BuildFailed, InvalidInput, NotFound, RemoteError, StudioError

LogFn = Callable[[str], None]


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
        extract_tar(tf, dest, tarball.name)
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
