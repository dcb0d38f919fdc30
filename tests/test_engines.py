"""Engines: the rig's build through `engines build`, patches, releases, capabilities, pins."""

from __future__ import annotations

import asyncio
import difflib
import hashlib
import io
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from llamastudio.engines.build import Builder
from llamastudio.engines.buildspec import BuildSpec
from llamastudio.engines.command import build_command
from llamastudio.engines.registry import Engine, EngineRegistry
from llamastudio.engines.releases import Asset, GitHubReleases, Release, install, select_asset, updates
from llamastudio.errors import Conflict, NotFound, RemoteError
from llamastudio.fit.flags import ServerFlags
from llamastudio.store import Database
from tests.rig import binaries
from tests.rig.github import github_server

RIG_DATA = Path(os.environ.get("LLAMASTUDIO_CACHE") or Path.home() / ".cache" / "llamastudio") / "rig"
PATCHED = "port to listen, patched by llamastudio"


def cli(*args: str, data_dir: Path | None = None) -> subprocess.CompletedProcess[str]:
    pre = ["--data-dir", str(data_dir)] if data_dir else []
    return subprocess.run(
        [sys.executable, "-m", "llamastudio", *pre, *args], capture_output=True, text=True, timeout=1200
    )


@pytest.fixture
def registry(tmp_path: Path) -> EngineRegistry:
    return EngineRegistry(Database(tmp_path / "studio.db"), tmp_path / "engines")


@pytest.fixture(scope="session")
def rig_engine() -> Engine:
    binaries.build_dir()  # make sure the rig's engine exists
    reg = EngineRegistry(Database(RIG_DATA / "studio.db"), RIG_DATA / "engines")
    engine = reg.default()
    assert engine is not None
    return engine


def test_rig_llama_server_comes_from_engines_build(rig_engine: Engine) -> None:
    assert rig_engine.kind == "source"
    assert rig_engine.source["kind"] == "dir"
    assert Path(rig_engine.source["location"]) == binaries.source_dir()
    assert rig_engine.version == "b11434"
    assert rig_engine.validation["ok"] is True
    assert binaries.binary("llama-server") == rig_engine.server
    assert {"llama-quantize", "llama-fit-params", "ggml-rpc-server"} <= set(rig_engine.binaries)
    out = cli("engines", "list", "--json", data_dir=RIG_DATA)
    assert out.returncode == 0 and rig_engine.id in out.stdout
    # a second build with the same inputs is a cache hit, not a rebuild
    again = cli(
        "engines",
        "build",
        "--source",
        str(binaries.source_dir()),
        "--build-number",
        "11434",
        "--target",
        "llama-quantize",
        "--target",
        "llama-fit-params",
        "--rpc",
        "--print-bin-dir",
        "-q",
        data_dir=RIG_DATA,
    )
    assert again.returncode == 0, again.stderr
    assert Path(again.stdout.strip()) == rig_engine.server.parent


def test_capabilities_come_from_help_and_missing_flags_are_not_emitted(rig_engine: Engine) -> None:
    caps = set(rig_engine.capabilities)
    assert {"-m", "--port", "-fa", "--flash-attn", "--n-cpu-moe", "-ot", "--swa-full", "-kvu"} <= caps
    flags = ServerFlags(ctx_size=4096, flash_attn="on", n_cpu_moe=2, swa_full=True)
    full = build_command(rig_engine, "m.gguf", flags, "127.0.0.1", 8000)
    assert full.argv[full.argv.index("--n-cpu-moe") + 1] == "2" and "--swa-full" in full.argv
    assert full.dropped == []
    old = Engine(
        **{**rig_engine.to_json(), "capabilities": sorted(caps - {"--n-cpu-moe", "-ncmoe", "--swa-full"})}
    )
    cmd = build_command(old, "m.gguf", flags, "127.0.0.1", 8000)
    assert "--n-cpu-moe" not in cmd.argv and "--swa-full" not in cmd.argv
    assert cmd.argv[cmd.argv.index("-ot") + 1] == r"blk\.(0|1)\.ffn_(up|down|gate|gate_up)_(ch|)exps=CPU"
    assert cmd.dropped == ["--swa-full"]


def _patch_text(source: Path, old: str, new: str) -> str:
    path = source / "common" / "arg.cpp"
    before = path.read_text().splitlines(keepends=True)
    after = [line.replace(old, new) for line in before]
    assert before != after
    return "".join(difflib.unified_diff(before, after, "a/common/arg.cpp", "b/common/arg.cpp"))


def test_pr_patch_is_fetched_applied_and_built(registry: EngineRegistry, rig_engine: Engine) -> None:
    """A real patch from a PR URL, built (ccache: only the patched file recompiles)."""
    source = binaries.source_dir()
    patch = _patch_text(source, "port to listen", PATCHED)
    with github_server() as gh:
        gh.add("/ggml-org/llama.cpp/pull/4242.patch", patch)
        spec = BuildSpec(
            source=str(source), build_number="11434", patches=(f"{gh.url}/ggml-org/llama.cpp/pull/4242",)
        )
        lines: list[str] = []
        result = asyncio.run(Builder(registry).build(spec, lines.append))
        assert "/ggml-org/llama.cpp/pull/4242.patch" in gh.requests
    engine = result.engine
    assert not result.reused and engine.patches[0]["url"].endswith("/pull/4242.patch")
    assert any("applying patch" in line for line in lines) and any("Linking" in line for line in lines)
    help_text = subprocess.run([str(engine.server), "--help"], capture_output=True, text=True).stdout
    assert PATCHED in help_text
    unpatched = subprocess.run([str(rig_engine.server), "--help"], capture_output=True, text=True).stdout
    assert PATCHED not in unpatched
    assert engine.build_key != rig_engine.build_key
    assert [e.id for e in registry.all()] == [engine.id] and engine.is_default


def test_missing_or_conflicting_patch_registers_nothing(registry: EngineRegistry, tmp_path: Path) -> None:
    source = binaries.source_dir()
    with github_server() as gh:
        spec = BuildSpec(source=str(source), patches=(f"{gh.url}/ggml-org/llama.cpp/pull/999999",))
        with pytest.raises(NotFound, match=r"pull/999999\.patch: not found \(HTTP 404\)"):
            asyncio.run(Builder(registry).build(spec))
    conflicting = _patch_text(source, "port to listen", "x").replace(
        '-        string_format("port to listen', '-        string_format("port to hear'
    )
    bad = tmp_path / "conflict.patch"
    bad.write_text(conflicting)
    with pytest.raises(Conflict, match=r"does not apply:\n(.|\n)*common/arg.cpp(.|\n)*Hunk #1 FAILED"):
        asyncio.run(Builder(registry).build(BuildSpec(source=str(source), patches=(str(bad),))))
    assert registry.all() == []
    assert not [p for p in registry.dir.iterdir() if p.name.startswith(".build-")]


def test_bad_build_input_is_explained(tmp_path: Path) -> None:
    out = cli("engines", "build", "--source", str(tmp_path), "--backend", "quantum", data_dir=tmp_path)
    assert (
        out.returncode == 2 and "unknown backend(s) quantum" in out.stderr and "Traceback" not in out.stderr
    )
    out = cli("engines", "build", "--source", str(tmp_path), "--backend", "hip", data_dir=tmp_path)
    assert out.returncode == 2 and "hipcc" in out.stderr
    out = cli("engines", "build", "--source", str(tmp_path), data_dir=tmp_path)
    assert out.returncode == 2 and "no llama.cpp CMakeLists.txt" in out.stderr


def _release_zip(rig_engine: Engine) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        for tool in ("llama-server", "llama-quantize"):
            zf.write(
                rig_engine.binaries[tool], f"build/bin/{tool}"
            )  # zips carry no exec bit: install fixes it
    return buf.getvalue()


RELEASE_NAMES = [
    "llama-{tag}-bin-ubuntu-vulkan-x64.zip",
    "llama-{tag}-bin-macos-arm64.zip",
    "llama-{tag}-bin-win-cuda-11.7-x64.zip",
    "llama-{tag}-bin-win-cuda-12.4-x64.zip",
    "cudart-llama-bin-win-cuda-12.4-x64.zip",
    "llama-{tag}-bin-win-cpu-x64.zip",
]


def test_release_install_digest_and_updates(registry: EngineRegistry, rig_engine: Engine) -> None:
    repo = "ggml-org/llama.cpp"
    zipped = _release_zip(rig_engine)
    digest = "sha256:" + hashlib.sha256(zipped).hexdigest()
    with github_server() as gh:
        others = {n.format(tag="b11434"): (b"not a real build", None) for n in RELEASE_NAMES}
        gh.add_release(repo, "b11434", {"llama-b11434-bin-ubuntu-x64.zip": (zipped, digest), **others})
        gh.add_release(repo, "b11430", {"llama-b11430-bin-ubuntu-x64.zip": (zipped, "sha256:" + "0" * 64)})
        client = GitHubReleases(gh.url, repo)
        engine = install(client, registry, "b11434")
        assert engine.kind == "release" and engine.version == "b11434" and engine.validation["ok"]
        assert os.access(engine.server, os.X_OK) and "--n-cpu-moe" in engine.capabilities
        with pytest.raises(RemoteError, match="does not match the published"):
            install(client, registry, "b11430")
        assert [e.id for e in registry.all()] == [engine.id]
        assert not [p for p in registry.dir.iterdir() if p.name.startswith(".install-")]

        gh.add_release(repo, "b11500", {"llama-b11500-bin-ubuntu-x64.zip": (zipped, None)}, latest=True)
        rows = updates(client, registry.all())
        assert rows == [
            {
                "engine": engine.id,
                "kind": "release",
                "installed": "b11434",
                "latest": "b11500",
                "update": True,
                "error": None,
                "note": None,
            }
        ]
        with pytest.raises(NotFound, match="has no sycl build for linux-x64"):
            install(client, registry, "b11434", backend="sycl")


@pytest.mark.parametrize(
    ("os_name", "arch", "backend", "expected"),
    [
        ("linux", "x64", "cpu", "llama-b1-bin-ubuntu-x64.zip"),
        ("linux", "x64", "vulkan", "llama-b1-bin-ubuntu-vulkan-x64.zip"),
        ("macos", "arm64", "cpu", "llama-b1-bin-macos-arm64.zip"),
        ("windows", "x64", "cuda", "llama-b1-bin-win-cuda-12.4-x64.zip"),
        ("windows", "x64", "cpu", "llama-b1-bin-win-cpu-x64.zip"),
    ],
)
def test_asset_selection(os_name: str, arch: str, backend: str, expected: str) -> None:
    names = ["llama-{tag}-bin-ubuntu-x64.zip", *RELEASE_NAMES, "llama-{tag}-xcframework.zip"]
    release = Release("b1", "b1", "", tuple(Asset(n.format(tag="b1"), "u") for n in names))
    assert select_asset(release, os_name, arch, backend).name == expected


def test_two_engines_side_by_side_pins_and_removal(
    registry: EngineRegistry, rig_engine: Engine, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    out = cli("engines", "add", str(rig_engine.server), "--name", "rig copy", data_dir=data)
    assert out.returncode == 0, out.stderr
    zipped = _release_zip(rig_engine)
    with github_server() as gh:
        gh.add_release("ggml-org/llama.cpp", "b11434", {"llama-b11434-bin-ubuntu-x64.zip": (zipped, None)})
        reg = EngineRegistry(Database(data / "studio.db"), data / "engines")
        release = install(GitHubReleases(gh.url, "ggml-org/llama.cpp"), reg, "b11434")
    external = next(e for e in reg.all() if e.kind == "external")
    assert reg.default() is not None and reg.default().id == external.id  # the first one registered
    reg.pin("/models/a.gguf", release.id)
    assert reg.engine_for("/models/a.gguf").id == release.id
    assert reg.engine_for("/models/b.gguf").id == external.id
    assert cli("engines", "pin", "/models/b.gguf", release.id, data_dir=data).returncode == 0
    assert reg.engine_for("/models/b.gguf").id == release.id
    assert cli("engines", "default", release.id, data_dir=data).returncode == 0
    with pytest.raises(Conflict, match="running a model"):
        reg.remove(release.id, in_use=lambda _id: True)
    root = Path(release.root)
    reg.remove(release.id)
    assert not root.exists() and reg.engine_for("/models/a.gguf").id == external.id
    assert cli("engines", "rm", external.id, data_dir=data).returncode == 0
    assert rig_engine.server.exists()  # an external binary is never deleted
    gone = cli("engines", "rm", "nope", data_dir=data)
    assert gone.returncode == 2 and "no engine 'nope'" in gone.stderr
    listed = json.loads(cli("engines", "list", "--json", data_dir=data).stdout)
    assert listed == []


def test_cancelled_build_leaves_nothing(registry: EngineRegistry) -> None:
    from llamastudio.errors import BuildCancelled

    async def run() -> None:
        cancel = asyncio.Event()

        def on_log(line: str) -> None:
            if "copying source tree" not in line:  # the first line cmake prints
                cancel.set()

        spec = BuildSpec(source=str(binaries.source_dir()), build_number="11435")
        await Builder(registry).build(spec, on_log, cancel)

    with pytest.raises(BuildCancelled):
        asyncio.run(run())
    assert registry.all() == []
    assert [p.name for p in registry.dir.iterdir() if not p.name.startswith(".build.lock")] == []


def test_validate_with_a_tiny_model(tiny_models: dict[str, Path], rig_engine: Engine, tmp_path: Path) -> None:
    data = tmp_path / "data"
    assert cli("engines", "add", str(rig_engine.server), data_dir=data).returncode == 0
    engine_id = json.loads(cli("engines", "list", "--json", data_dir=data).stdout)[0]["id"]
    out = cli("engines", "validate", engine_id, "--model", str(tiny_models["qwen3"]), data_dir=data)
    assert out.returncode == 0, out.stderr
    stored = json.loads(cli("engines", "list", "--json", data_dir=data).stdout)[0]["validation"]
    assert stored["ok"] is True and stored["health"]["ok"] is True
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(b"GGUF" + b"\0" * 64)
    bad = cli("engines", "validate", engine_id, "--model", str(broken), data_dir=data)
    assert bad.returncode == 2 and "failed validation" in bad.stderr


def test_git_source_update_check(tmp_path: Path) -> None:
    repo = tmp_path / "llama.cpp"
    repo.mkdir()
    git = ["git", "-C", str(repo), "-c", "user.email=t@t", "-c", "user.name=t"]
    subprocess.run([*git, "init", "-q", "-b", "master"], check=True)
    (repo / "README").write_text("one")
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-qm", "one"], check=True)
    first = subprocess.run(
        [*git, "rev-parse", "HEAD"], capture_output=True, text=True, check=True
    ).stdout.strip()
    engine = Engine(
        id="e",
        name="e",
        kind="source",
        root=str(tmp_path),
        binaries={},
        source={"kind": "git", "location": str(repo), "ref": "master", "digest": first},
    )
    assert updates(None, [engine])[0]["update"] is False
    (repo / "README").write_text("two")
    subprocess.run([*git, "commit", "-qam", "two"], check=True)
    row = updates(None, [engine])[0]
    assert row["update"] is True and row["latest"] != first[:10]
