"""Issue 18, the Hub layer's share: a hostile Hub mirror writes nothing outside the HF cache (item
2), an unreachable Hub is a quick 502/504 and one CLI line, a malformed HF token is a 400 (never a
500), and hostile local paths (symlink loops, non-GGUF files, huge directories, spaced or
non-ASCII names) get clean answers."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from huggingface_hub import constants

from llamastudio.errors import InvalidInput, RemoteError, ScanLimit
from llamastudio.gguf import load_model
from llamastudio.hub import client as hub_client
from llamastudio.hub import library as hub_library
from llamastudio.hub.client import HubClient
from llamastudio.hub.download import download_file
from llamastudio.hub.library import find_ggufs, served_name_for
from llamastudio.hub.paths import (
    check_commit,
    check_etag,
    check_file_name,
    check_repo_id,
    check_revision,
    contained,
)
from llamastudio.hub.quants import RepoFile
from tests.rig.hub import HubServer, Repo, hub_server

SHA256 = "a" * 64
OID = "b" * 40
SECRET = b"TOPSECRET-9f8e7d-password=hunter2\n"
MARKER = f"llamastudio-pwned-{os.getpid()}"


# -- formats -------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "name",
    ["../x.gguf", "a/../../x.gguf", "/etc/x.gguf", "..\\..\\x.gguf", "a\0b.gguf", "", "a//b.gguf",
     "./a.gguf", "a/./b.gguf", "a\nb.gguf", "..", "a/"],
)  # fmt: skip
def test_unsafe_file_names_are_refused(name: str) -> None:
    with pytest.raises(RemoteError, match="unsafe file name"):
        check_file_name(name)


@pytest.mark.parametrize(
    "name", ["x.gguf", "Q4_K_M/x-00001-of-00002.gguf", "sub dir/modèle.gguf", "a..b.gguf"]
)
def test_ordinary_file_names_pass(name: str) -> None:
    assert check_file_name(name) == name


@pytest.mark.parametrize(
    ("etag", "value"),
    [(f'"{SHA256}"', SHA256), (f'W/"{OID}"', OID), (SHA256, SHA256)],
)
def test_etags_naming_a_blob(etag: str, value: str) -> None:
    assert check_etag(etag) == value


@pytest.mark.parametrize(
    "etag", ['"../../x"', 'W/"/../x"', f"{SHA256}/..", f'"{SHA256[:-1]}/"', "", None, SHA256.upper()]
)
def test_malformed_etags_are_refused(etag: str | None) -> None:
    with pytest.raises(RemoteError, match="malformed ETag"):
        check_etag(etag)


@pytest.mark.parametrize("commit", ["../../etc", "main", OID.upper(), OID + "0", "", None])
def test_malformed_commits_are_refused(commit: str | None) -> None:
    with pytest.raises(RemoteError, match="malformed"):
        check_commit(commit)


@pytest.mark.parametrize("revision", ["main", "v1.0", "refs/pr/1", "release-2+cpu", OID])
def test_revisions_that_pass(revision: str) -> None:
    assert check_revision(revision) == revision


@pytest.mark.parametrize(
    "revision",
    ["../x", "/main", "a/../b", "a..b", ".hidden", "a/.b", "main.lock", "a//b", "main/", "ü", "a b",
     "a\\b", "", "a\0"],
)  # fmt: skip
def test_revisions_that_are_refused(revision: str) -> None:
    with pytest.raises(InvalidInput, match="revision"):
        check_revision(revision)


@pytest.mark.parametrize("repo", ["../..", "a/b/c", "a--b/c", "/a", "a/.b", "a/b.", "ä/b", "a", "a/b\n"])
def test_malformed_repo_ids_are_refused(repo: str) -> None:
    with pytest.raises(InvalidInput, match="owner/name"):
        check_repo_id(repo)


def test_contained_checks_the_resolved_path(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "a").mkdir(parents=True)
    outside = tmp_path / "outside"
    outside.mkdir()
    (root / "out").symlink_to(outside)
    assert contained(root, "a", "b") == root.resolve() / "a" / "b"
    with pytest.raises(RemoteError, match="outside"):
        contained(root, "..", "x")
    with pytest.raises(RemoteError, match="outside"):
        contained(root, "a", "../../x")
    with pytest.raises(RemoteError, match="outside"):
        contained(root, "out", "x")  # through a symlink that leaves the root


def test_download_file_refuses_a_hostile_name_at_the_write_site(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """download_file checks again what it writes, whatever its caller checked (a job's file list
    comes back from the database)."""
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "cache"))
    client = HubClient(endpoint="http://127.0.0.1:9", token="")
    for bad in ("../../../x.gguf", "/tmp/x.gguf"):
        with pytest.raises(RemoteError, match="unsafe file name"):
            download_file(client, "tiny/x-GGUF", "main", RepoFile(bad, 10))
    with pytest.raises(InvalidInput, match="revision"):
        download_file(client, "tiny/x-GGUF", "../../x", RepoFile("x.gguf", 10))
    assert not list(tmp_path.rglob("*"))


# -- a hostile Hub mirror (item 2) ---------------------------------------------------------------
HOSTILE = {
    # repo → what is hostile about it
    "evil/dotdot-GGUF": "file name ../../../../",
    "evil/deep-GGUF": "file name ../ ×16 then /tmp",
    "evil/abs-GGUF": "absolute file name",
    "evil/backslash-GGUF": "file name with backslashes",
    "evil/etag-GGUF": "ETag ../../",
    "evil/weak-etag-GGUF": "weak ETag /..",
    "evil/commit-GGUF": "X-Repo-Commit ../../",
    "evil/sha-GGUF": "repo sha ../../",
}


@pytest.fixture(scope="module")
def abs_target(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("abs-target") / "abs-Q8_0.gguf"


@pytest.fixture(scope="module")
def evil_hub(tiny_models: dict[str, Path], abs_target: Path) -> Iterator[HubServer]:
    q8 = tiny_models["llama-Q8_0"]
    with hub_server() as srv:
        srv.add_repo(Repo("evil/fine-GGUF", {"fine-Q8_0.gguf": q8}))  # the control: a normal pull
        srv.add_repo(Repo("evil/dotdot-GGUF", {"../../../../pwned-Q8_0.gguf": q8}))
        srv.add_repo(Repo("evil/deep-GGUF", {"../" * 16 + f"tmp/{MARKER}-Q8_0.gguf": q8}))
        srv.add_repo(Repo("evil/abs-GGUF", {str(abs_target): q8}))
        srv.add_repo(Repo("evil/backslash-GGUF", {"..\\..\\..\\..\\pwned-Q8_0.gguf": q8}))
        srv.add_repo(
            Repo("evil/etag-GGUF", {"e-Q8_0.gguf": q8}, etags={"e-Q8_0.gguf": '"../../../../pwned"'})
        )
        srv.add_repo(
            Repo("evil/weak-etag-GGUF", {"e-Q8_0.gguf": q8}, etags={"e-Q8_0.gguf": 'W/"/../../../pwned"'})
        )
        srv.add_repo(Repo("evil/commit-GGUF", {"c-Q8_0.gguf": q8}, commit_header="../../../../pwned-commit"))
        srv.add_repo(Repo("evil/sha-GGUF", {"s-Q8_0.gguf": q8}, sha="../../../../pwned-sha"))
        yield srv


def snapshot(root: Path) -> dict[str, tuple[str, int]]:
    """Every entry under ``root``: kind and size (links not followed)."""
    out: dict[str, tuple[str, int]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in [*dirnames, *filenames]:
            p = Path(dirpath) / name
            st = p.lstat()
            kind = "link" if p.is_symlink() else "dir" if p.is_dir() else "file"
            out[str(p.relative_to(root))] = (kind, 0 if kind == "dir" else st.st_size)
    return out


def changes(before: dict[str, tuple[str, int]], after: dict[str, tuple[str, int]]) -> dict[str, str]:
    return {p: kind for p, (kind, size) in after.items() if before.get(p) != (kind, size)}


def assert_nothing_escaped(tmp_path: Path, before: dict[str, tuple[str, int]], abs_target: Path) -> None:
    changed = changes(before, snapshot(tmp_path))
    cache_dirs = {"fs/hf": "dir", "fs/hf/hub": "dir"}  # the cache itself, made by the pull
    outside = [p for p in changed if not p.startswith("fs/hf/hub/") and cache_dirs.get(p) != changed[p]]
    assert outside == [], f"written outside the HF cache: {outside}"
    written = [p for p, kind in changed.items() if kind != "dir"]
    assert written == [], f"files written for a refused download: {written}"
    assert not abs_target.exists()
    assert not Path("/tmp", f"{MARKER}-Q8_0.gguf").exists()


def cli(
    endpoint: str, tmp_path: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if k not in ("HF_TOKEN", "HUGGINGFACE_API_KEY")}
    base |= {"HF_ENDPOINT": endpoint, "HF_HOME": str(tmp_path / "fs" / "hf"), "HF_HUB_DISABLE_XET": "1"}
    data_dir = tmp_path.parent / f"{tmp_path.name}-data"  # outside the snapshot: the studio's own
    return subprocess.run(
        [sys.executable, "-m", "llamastudio", "--data-dir", str(data_dir), *args],
        capture_output=True,
        text=True,
        env=base | (env or {}),
        timeout=120,
    )


def one_error_line(out: subprocess.CompletedProcess[str]) -> str:
    assert out.returncode != 0, out.stdout
    assert "Traceback" not in out.stderr, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), out.stderr
    return lines[0]


def test_the_snapshot_sees_a_normal_pull(evil_hub: HubServer, tmp_path: Path) -> None:
    """The control for the hostile tests below: a download does show up in the snapshot diff."""
    (tmp_path / "fs").mkdir()
    before = snapshot(tmp_path)
    out = cli(evil_hub.url, tmp_path, "pull", "evil/fine-GGUF:Q8_0")
    assert out.returncode == 0, out.stderr
    written = [p for p, kind in changes(before, snapshot(tmp_path)).items() if kind != "dir"]
    assert any(
        p.endswith("snapshots/" + evil_hub.repos["evil/fine-GGUF"].sha + "/fine-Q8_0.gguf") for p in written
    )
    assert all(p.startswith("fs/hf/hub/") for p in written)


@pytest.mark.parametrize("repo", sorted(HOSTILE))
def test_hostile_hub_cli_pull_writes_nothing_outside_the_cache(
    evil_hub: HubServer, tmp_path: Path, abs_target: Path, repo: str
) -> None:
    """Issue 18 item 2: server-supplied names (rfilename, ETag, X-Repo-Commit) were joined into
    cache paths unchecked; a hostile mirror wrote outside the HF cache."""
    (tmp_path / "fs").mkdir()
    before = snapshot(tmp_path)
    line = one_error_line(cli(evil_hub.url, tmp_path, "pull", f"{repo}:Q8_0"))
    assert "unsafe file name" in line or "malformed" in line, line
    assert_nothing_escaped(tmp_path, before, abs_target)


@pytest.fixture
async def studio_api(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[httpx.AsyncClient]:
    from llamastudio.api.app import create_app
    from llamastudio.config import Settings

    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("HUGGINGFACE_API_KEY", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "fs" / "hf" / "hub"))
    data_dir = tmp_path.parent / f"{tmp_path.name}-data"
    app = create_app(Settings(data_dir=data_dir))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(
        transport=transport, base_url="http://127.0.0.1", headers={"X-Studio-Client": "test"}, timeout=60
    ) as client:
        client.app = app  # type: ignore[attr-defined]
        yield client
    await app.state.studio.jobs.close()


def assert_studio_error(resp: httpx.Response, status: int, code: str) -> str:
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert set(body) == {"error"} and body["error"]["code"] == code and body["error"]["source"] == "studio"
    return str(body["error"]["message"])


async def wait_job(api: httpx.AsyncClient, job_id: str, timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job: dict[str, Any] = (await api.get(f"/api/downloads/{job_id}")).json()
        if job["state"] in ("done", "failed", "cancelled"):
            return job
        await asyncio.sleep(0.05)
    raise AssertionError(f"job {job_id} did not finish")


@pytest.mark.parametrize("repo", sorted(HOSTILE))
async def test_hostile_hub_api_download_writes_nothing_outside_the_cache(
    evil_hub: HubServer,
    studio_api: httpx.AsyncClient,
    tmp_path: Path,
    abs_target: Path,
    monkeypatch: pytest.MonkeyPatch,
    repo: str,
) -> None:
    """Issue 18 item 2, through the API's download job."""
    monkeypatch.setenv("HF_ENDPOINT", evil_hub.url)
    (tmp_path / "fs").mkdir(exist_ok=True)
    before = snapshot(tmp_path)
    resp = await studio_api.post("/api/downloads", json={"repo": repo, "quant": "Q8_0"})
    if resp.status_code == 201:  # names looked fine: the ETag / commit is refused when it arrives
        job = await wait_job(studio_api, resp.json()["id"])
        assert job["state"] == "failed" and "malformed" in job["error"], job
    else:  # the file list or the repo's commit is refused before a job exists
        message = assert_studio_error(resp, 502, "remote_error")
        assert "unsafe file name" in message or "malformed" in message
    assert_nothing_escaped(tmp_path, before, abs_target)


async def test_user_revision_is_checked_before_refs(
    evil_hub: HubServer, studio_api: httpx.AsyncClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 18 item 2: the user-given revision went into ``refs/<revision>`` unchecked."""
    monkeypatch.setenv("HF_ENDPOINT", evil_hub.url)
    (tmp_path / "fs").mkdir(exist_ok=True)
    before = snapshot(tmp_path)
    bad = "../../../../pwned-ref"
    resp = await studio_api.post(
        "/api/downloads", json={"repo": "evil/fine-GGUF", "quant": "Q8_0", "revision": bad}
    )
    assert "revision" in assert_studio_error(resp, 400, "invalid_input")
    assert "revision" in one_error_line(
        cli(evil_hub.url, tmp_path, "pull", "evil/fine-GGUF:Q8_0", "--revision", bad)
    )
    assert "owner/name" in one_error_line(cli(evil_hub.url, tmp_path, "pull", "../..:Q8_0"))
    assert changes(before, snapshot(tmp_path)) == {}


# -- the Hub unreachable ---------------------------------------------------------------------------
def closed_port() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"  # nothing listens there once the socket is closed


@pytest.mark.parametrize(
    "args",
    [("search", "qwen"), ("pull", "org/repo:Q4_K_M"), ("quants", "org/repo")],
    ids=["search", "pull", "quants"],
)
def test_unreachable_hub_is_one_quick_cli_line(tmp_path: Path, args: tuple[str, ...]) -> None:
    """Issue 18 (Low): `search qwen` printed a 114-line traceback after 24 s, `pull` a traceback."""
    endpoint = closed_port()
    started = time.monotonic()
    out = cli(endpoint, tmp_path, *args)
    elapsed = time.monotonic() - started
    line = one_error_line(out)
    assert f"the Hugging Face Hub at {endpoint} is unreachable" in line
    assert elapsed < 5, f"{elapsed:.1f} s"


def test_inspect_of_an_unreachable_url_is_one_line(tmp_path: Path) -> None:
    started = time.monotonic()
    line = one_error_line(cli(closed_port(), tmp_path, "inspect", f"{closed_port()}/x/resolve/main/m.gguf"))
    assert "ConnectError" in line and time.monotonic() - started < 5


async def test_unreachable_hub_is_a_quick_502_on_the_api(
    studio_api: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 18 (Low): a 500 ConnectError after 23 s."""
    endpoint = closed_port()
    monkeypatch.setenv("HF_ENDPOINT", endpoint)
    for call in (
        studio_api.get("/api/hub/search", params={"q": "qwen"}),
        studio_api.get("/api/hub/repos/org/repo/quants"),
        studio_api.post("/api/downloads", json={"repo": "org/repo", "quant": "Q4_K_M"}),
    ):
        started = time.monotonic()
        message = assert_studio_error(await call, 502, "hub_unreachable")
        assert f"the Hugging Face Hub at {endpoint} is unreachable" in message
        assert time.monotonic() - started < 5


@pytest.fixture
def silent_hub() -> Iterator[str]:
    """Accepts connections and never answers."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.1)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except OSError:
                continue

    t = threading.Thread(target=accept, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{server.getsockname()[1]}"
    stop.set()
    t.join()
    for c in held:
        c.close()
    server.close()


async def test_a_hub_that_never_answers_is_a_504(
    studio_api: httpx.AsyncClient, silent_hub: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_ENDPOINT", silent_hub)
    monkeypatch.setattr(hub_client, "READ_TIMEOUT", 1.0)
    started = time.monotonic()
    message = assert_studio_error(await studio_api.get("/api/hub/search"), 504, "hub_timeout")
    assert f"the Hugging Face Hub at {silent_hub} did not answer in time" in message
    assert time.monotonic() - started < 5  # one timeout, not huggingface_hub's five retries


# -- the HF token --------------------------------------------------------------------------------
@pytest.mark.parametrize("token", ["hf_é", "hf_a b", "hf_\x01x", "hf_\u200bx", "", " "])
async def test_malformed_tokens_are_refused_and_never_stored(
    studio_api: httpx.AsyncClient, token: str
) -> None:
    """Issue 18 (Low): a non-ASCII HF token was accepted, then every Hub call failed with 500."""
    resp = await studio_api.put("/api/settings/hf-token", json={"token": token})
    assert "token" in assert_studio_error(resp, 400, "invalid_input")
    assert (await studio_api.get("/api/settings/hf-token")).json()["set"] is False


async def test_a_stored_malformed_token_is_a_clear_400(
    evil_hub: HubServer, studio_api: httpx.AsyncClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_ENDPOINT", evil_hub.url)
    data_dir = tmp_path.parent / f"{tmp_path.name}-data"
    (data_dir / "hf_token").write_bytes("hf_é".encode())  # stored before tokens were checked
    for call in (
        studio_api.get("/api/hub/search"),
        studio_api.get("/api/hub/repos/evil/fine-GGUF/quants"),
        studio_api.post("/api/downloads", json={"repo": "evil/fine-GGUF", "quant": "Q8_0"}),
    ):
        assert "stored Hugging Face token" in assert_studio_error(await call, 400, "invalid_input")
    monkeypatch.setenv("HF_TOKEN", "hf_ü")
    assert "$HF_TOKEN" in assert_studio_error(await studio_api.get("/api/hub/search"), 400, "invalid_input")


def test_a_malformed_env_token_is_one_cli_line(evil_hub: HubServer, tmp_path: Path) -> None:
    line = one_error_line(cli(evil_hub.url, tmp_path, "search", "fine", env={"HF_TOKEN": "hf_ü"}))
    assert "$HF_TOKEN" in line
    url = f"{evil_hub.url}/evil/fine-GGUF/resolve/main/fine-Q8_0.gguf"
    line = one_error_line(cli(evil_hub.url, tmp_path, "inspect", url, env={"HF_TOKEN": "hf_ü"}))
    assert "not a valid token" in line


# -- local paths ---------------------------------------------------------------------------------
@pytest.fixture
def loop_path(tmp_path: Path) -> Path:
    a, b = tmp_path / "loop-a.gguf", tmp_path / "loop-b.gguf"
    a.symlink_to(b)
    b.symlink_to(a)
    return a


async def test_symlink_loops_are_a_400_on_the_api(
    studio_api: httpx.AsyncClient, loop_path: Path, tmp_path: Path, tiny_models: dict[str, Path]
) -> None:
    """Issue 18 (Low): symlink loops → 500 (API)."""
    resp = await studio_api.post("/api/models", json={"path": str(loop_path)})
    assert "symlink loop" in assert_studio_error(resp, 400, "invalid_input")
    # loops inside an added directory (a looping file, a directory linking to itself) are skipped
    d = tmp_path / "dir"
    d.mkdir()
    shutil.copy(tiny_models["llama-Q8_0"], d / "good-Q8_0.gguf")
    (d / "self.gguf").symlink_to(d / "self.gguf")
    (d / "again").symlink_to(d)
    resp = await studio_api.post("/api/models", json={"path": str(d)})
    assert resp.status_code == 201, resp.text
    assert [m["path"] for m in resp.json()] == [str(d / "good-Q8_0.gguf")]
    # an added file that later becomes a loop does not break the listing
    shutil.copy(tiny_models["llama-Q8_0"], tmp_path / "later.gguf")
    assert (
        await studio_api.post("/api/models", json={"path": str(tmp_path / "later.gguf")})
    ).status_code == 201
    (tmp_path / "later.gguf").unlink()
    (tmp_path / "later.gguf").symlink_to(tmp_path / "later.gguf")
    listed = await studio_api.get("/api/models")
    assert listed.status_code == 200 and str(d / "good-Q8_0.gguf") in {m["path"] for m in listed.json()}


def test_symlink_loops_are_one_cli_line(tmp_path: Path, loop_path: Path) -> None:
    """Issue 18 (Low): symlink loops → a 56-line traceback (CLI)."""
    assert "symlink loop" in one_error_line(cli(closed_port(), tmp_path, "models", "add", str(loop_path)))


async def test_a_non_gguf_file_is_refused_and_its_bytes_never_shown(
    studio_api: httpx.AsyncClient, tmp_path: Path, tiny_models: dict[str, Path]
) -> None:
    """Issue 18 (Low): a model path could be any readable file, and its first bytes appeared in
    /v1/models reasons."""
    secret = tmp_path / "secret.gguf"
    secret.write_bytes(SECRET)
    resp = await studio_api.post("/api/models", json={"path": str(secret)})
    assert "not a GGUF file" in assert_studio_error(resp, 400, "invalid_input")
    assert b"TOPSECRET" not in resp.content and b"TOPS" not in resp.content
    resp = await studio_api.put("/api/models/leak/config", json={"model": str(secret)})
    assert resp.status_code == 400 and b"TOPS" not in resp.content, resp.text
    # a configured model whose file is replaced by another file later: its reason quotes nothing
    victim = tmp_path / "victim.gguf"
    shutil.copy(tiny_models["llama-Q8_0"], victim)
    assert (await studio_api.put("/api/models/victim/config", json={"model": str(victim)})).status_code == 200
    victim.write_bytes(SECRET)
    served = await studio_api.get("/api/served")
    assert served.status_code == 200 and b"TOPS" not in served.content
    reason = next(m for m in served.json() if m["name"] == "victim").get("reason") or ""
    assert "not a GGUF" in reason, served.json()
    with pytest.raises(InvalidInput) as err:
        load_model(str(victim))
    assert "TOPS" not in err.value.message


def test_directory_scans_are_bounded(tmp_path: Path, tiny_models: dict[str, Path]) -> None:
    """Issue 18 (Low): adding a 271k-file directory stalled the gateway; a scan has limits."""
    big = tmp_path / "big"
    big.mkdir()
    for i in range(120):
        (big / f"f{i}.txt").touch()
    with pytest.raises(ScanLimit, match="more than 100 files and folders"):
        find_ggufs(big, max_entries=100)
    deep = tmp_path / "deep"
    nested = deep.joinpath(*[f"d{i}" for i in range(4)])
    nested.mkdir(parents=True)
    shutil.copy(tiny_models["llama-Q8_0"], nested / "m-Q8_0.gguf")
    (deep / "fake.gguf").write_bytes(SECRET)  # named .gguf, is not one
    assert find_ggufs(deep, max_depth=3) == []
    assert find_ggufs(deep, max_depth=4) == [nested / "m-Q8_0.gguf"]


async def test_adding_a_directory_runs_off_the_event_loop_and_is_bounded(
    studio_api: httpx.AsyncClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    big = tmp_path / "big"
    big.mkdir()
    for i in range(60):
        (big / f"f{i}.txt").touch()
    threads: list[int] = []
    original = hub_library.find_ggufs

    def spy(*args: Any, **kwargs: Any) -> list[Path]:
        threads.append(threading.get_ident())
        return original(*args, **kwargs)

    monkeypatch.setattr(hub_library, "find_ggufs", spy)
    monkeypatch.setattr(hub_library, "MAX_ENTRIES", 50)
    resp = await studio_api.post("/api/models", json={"path": str(big)})
    assert "more than 50 files and folders" in assert_studio_error(resp, 400, "invalid_input")
    assert threads and threading.get_ident() not in threads  # the scan ran in a worker thread


def test_removing_a_cache_model_never_deletes_outside_the_cache(
    tmp_path: Path, tiny_models: dict[str, Path]
) -> None:
    """A snapshot entry that links out of the cache is unlinked; its target is left alone."""
    from llamastudio.hub.library import Library
    from llamastudio.store import Database

    cache = tmp_path / "hub"
    outside = tmp_path / "elsewhere" / "precious-Q8_0.gguf"
    outside.parent.mkdir()
    shutil.copy(tiny_models["llama-Q8_0"], outside)
    snap = cache / "models--a--b" / "snapshots" / OID
    snap.mkdir(parents=True)
    (cache / "models--a--b" / "refs").mkdir()
    (cache / "models--a--b" / "refs" / "main").write_text(OID)
    (snap / "precious-Q8_0.gguf").symlink_to(outside)
    lib = Library(Database(tmp_path / "db.sqlite"), hub_cache=cache)
    assert [m.id for m in lib.models(with_facts=False)] == ["a/b:Q8_0"]
    assert lib.remove("a/b:Q8_0") == [str(snap / "precious-Q8_0.gguf")]
    assert not (snap / "precious-Q8_0.gguf").is_symlink() and outside.exists()


@pytest.mark.parametrize(
    ("name", "served"),
    [
        ("tiny.gguf", "tiny"),
        ("my model Q8_0.gguf", "my-model-Q8_0"),
        ("café Q8_0.gguf", "cafe-Q8_0"),
        ("m@v2:beta.gguf", "m@v2:beta"),
        ("qwen (1)-00001-of-00002.gguf", "qwen-1"),
    ],
)
def test_served_names_for_added_files(name: str, served: str) -> None:
    assert served_name_for(Path("/m") / name) == served


def test_served_name_of_a_name_in_another_script_is_stable_and_distinct() -> None:
    a, b = served_name_for(Path("/m/модель.gguf")), served_name_for(Path("/n/модель.gguf"))
    assert a.startswith("model-") and b.startswith("model-") and a != b
    assert a == served_name_for(Path("/m/модель.gguf"))


def test_spaced_and_non_ascii_added_files_are_served(
    tmp_path: Path, tiny_models: dict[str, Path], rig_bin: Callable[[str], Path]
) -> None:
    """Issue 18 (Low): added files with non-ASCII or spaced names were listed but never served:
    their stems are not valid gateway names, so no served configuration was made for them."""
    from tests.rig.studio import Studio

    models = tmp_path / "my models"
    models.mkdir()
    shutil.copy(tiny_models["llama-Q8_0"], models / "my model Q8_0.gguf")
    shutil.copy(tiny_models["llama-Q8_0"], models / "модель Q8_0.gguf")
    with Studio(tmp_path / "s", rig_bin("llama-server")) as studio:
        api = studio.api()
        added = api.post("/api/models", json={"path": str(models)}, headers={"X-Studio-Client": "test"})
        assert added.status_code == 201, added.text
        listed = {m["path"] for m in api.get("/api/models").json()}
        assert {str(models / "my model Q8_0.gguf"), str(models / "модель Q8_0.gguf")} <= listed
        gw = studio.gateway()
        names = {m["id"] for m in gw.get("/v1/models").json()["data"]}
        other = served_name_for(models / "модель Q8_0.gguf")
        assert {"my-model-Q8_0", other} <= names, names
        for name in ("my-model-Q8_0", other):
            r = gw.post(
                "/v1/chat/completions",
                json={"model": name, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4},
            )
            assert r.status_code == 200, r.text
            assert r.json()["choices"][0]["message"]["content"] is not None
