"""Hub search, quant groups, fit before download and pulls, against a local Hub-compatible
server (``HF_ENDPOINT``) serving tiny real GGUF files; huggingface_hub is used unchanged."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from huggingface_hub import hf_hub_download, scan_cache_dir

from llamastudio.hub.quants import RepoFile, group_files, quant_label
from tests.rig.hub import HubServer, Repo, hub_server


@pytest.fixture(scope="module")
def hub(
    tiny_models: dict[str, Path], split_model: list[Path], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[HubServer]:
    mmproj = tmp_path_factory.mktemp("mm") / "mmproj-tiny-f16.gguf"
    shutil.copy(tiny_models["mamba"], mmproj)  # any small GGUF stands in for a projector here
    readme = mmproj.parent / "README.md"
    readme.write_text("# no gguf here")
    with hub_server() as srv:
        srv.add_repo(
            Repo(
                "tiny/llama-GGUF",
                {
                    "tiny-llama-F16.gguf": tiny_models["llama"],
                    "tiny-llama-Q8_0.gguf": tiny_models["llama-Q8_0"],
                    "tiny-llama-Q4_K_M.gguf": tiny_models["llama-Q4_K_M"],
                    "mmproj-tiny-f16.gguf": mmproj,
                    "README.md": readme,
                },
                downloads=500,
                likes=7,
            )
        )
        srv.add_repo(
            Repo(
                "tiny/qwen3-split-GGUF",
                {f"Q8_0/{p.name.replace('qwen3', 'tiny-qwen3-Q8_0')}": p for p in split_model},
                downloads=900,
            )
        )
        srv.add_repo(Repo("tiny/gated-GGUF", {"tiny-gated-Q8_0.gguf": tiny_models["llama-Q8_0"]}, gated=True))
        srv.add_repo(
            Repo(
                "tiny/corrupt-GGUF", {"tiny-Q8_0.gguf": tiny_models["llama-Q8_0"]}, corrupt={"tiny-Q8_0.gguf"}
            )
        )
        srv.add_repo(Repo("tiny/no-gguf", {"README.md": readme}, tags=["text"]))
        yield srv


def run(
    hub: HubServer, tmp_path: Path, *args: str, token: str | None = None
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("HF_TOKEN", "HUGGINGFACE_API_KEY")}
    env |= {"HF_ENDPOINT": hub.url, "HF_HOME": str(tmp_path / "hf"), "HF_HUB_DISABLE_XET": "1"}
    if token:
        env["HF_TOKEN"] = token
    return subprocess.run(
        [sys.executable, "-m", "llamastudio", "--data-dir", str(tmp_path / "data"), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )


@pytest.mark.parametrize(
    ("name", "label"),
    [
        ("Qwen3-8B-Q4_K_M.gguf", "Q4_K_M"),
        ("model.Q8_0.gguf", "Q8_0"),
        ("x-UD-Q4_K_XL-00001-of-00003.gguf", "UD-Q4_K_XL"),
        ("x.i1-IQ2_XS.gguf", "i1-IQ2_XS"),
        ("gpt-oss-20b-mxfp4.gguf", "MXFP4"),
        ("m-bf16.gguf", "BF16"),
        ("sub/dir/m-f16.gguf", "F16"),
        ("weird-name.gguf", "weird-name"),
    ],
)
def test_quant_labels(name: str, label: str) -> None:
    assert quant_label(name) == label


def test_grouping_shards_and_companions() -> None:
    files = [RepoFile(f"Q4_K_M/m-Q4_K_M-0000{i}-of-00003.gguf", 10) for i in (1, 2, 3)]
    files += [
        RepoFile("m-Q8_0-00001-of-00002.gguf", 5),
        RepoFile("mmproj-m-f16.gguf", 1),
        RepoFile("m-F16.gguf", 40),
    ]
    groups = group_files(files)
    assert [(g.label, len(g.files), g.size) for g in groups] == [
        ("Q4_K_M", 3, 30),
        ("F16", 1, 40),
    ]  # Q8_0 incomplete
    assert all(g.mmproj[0].path == "mmproj-m-f16.gguf" for g in groups)


def test_search(hub: HubServer, tmp_path: Path) -> None:
    out = run(hub, tmp_path, "search", "tiny", "--json")
    assert out.returncode == 0, out.stderr
    rows = json.loads(out.stdout)
    assert [r["id"] for r in rows][:2] == ["tiny/qwen3-split-GGUF", "tiny/llama-GGUF"]  # by downloads
    assert "tiny/no-gguf" not in [r["id"] for r in rows]  # the gguf filter
    assert rows[1]["likes"] == 7 and rows[1]["license"] == "mit"


def test_quants_fit_before_download_reads_headers_only(hub: HubServer, tmp_path: Path) -> None:
    hub.reset_counts()
    out = run(hub, tmp_path, "quants", "tiny/llama-GGUF", "--hardware", "24GiB", "--json")
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    rows = {r["quant"]: r for r in data["quants"]}
    assert set(rows) == {"F16", "Q8_0", "Q4_K_M"}
    assert all(r["fit"] == "full" and r["max_context"] == 4096 for r in rows.values())
    assert rows["Q8_0"]["mmproj"] == ["mmproj-tiny-f16.gguf"]
    for name in ("tiny-llama-F16.gguf", "tiny-llama-Q8_0.gguf", "tiny-llama-Q4_K_M.gguf"):
        path = f"tiny/llama-GGUF/{name}"
        sha = hub.repos["tiny/llama-GGUF"].sha
        assert hub.requests[f"/tiny/llama-GGUF/resolve/{sha}/{name}"] <= 3
        assert hub.bytes_sent[path] < 2 * 1024 * 1024
    # cached per (repo, revision, file): asking again reads no header
    hub.reset_counts()
    again = run(hub, tmp_path, "quants", "tiny/llama-GGUF", "--hardware", "cpu", "--json")
    assert again.returncode == 0 and not any("/resolve/" in p for p in hub.requests)
    assert {r["fit"] for r in json.loads(again.stdout)["quants"]} == {"cpu"}


def test_split_quant_is_one_group(hub: HubServer, tmp_path: Path) -> None:
    out = run(hub, tmp_path, "quants", "tiny/qwen3-split-GGUF", "--hardware", "cpu", "--json")
    assert out.returncode == 0, out.stderr
    (row,) = json.loads(out.stdout)["quants"]
    assert row["quant"] == "Q8_0" and len(row["files"]) == 4 and row["fit"] == "cpu"


def test_pull_gets_exactly_the_quant_into_the_hf_cache(
    hub: HubServer, tmp_path: Path, tiny_models: dict[str, Path]
) -> None:
    out = run(hub, tmp_path, "pull", "tiny/llama-GGUF:Q8_0")
    assert out.returncode == 0, out.stderr
    paths = [Path(p) for p in out.stdout.split()]
    assert [p.name for p in paths] == ["tiny-llama-Q8_0.gguf", "mmproj-tiny-f16.gguf"]
    assert paths[0].read_bytes() == tiny_models["llama-Q8_0"].read_bytes()
    assert "models--tiny--llama-GGUF/snapshots/" in str(paths[0])
    offline = hf_hub_download(
        "tiny/llama-GGUF", "tiny-llama-Q8_0.gguf", cache_dir=tmp_path / "hf" / "hub", local_files_only=True
    )  # huggingface_hub itself finds it, offline
    assert Path(offline) == paths[0]
    cache = scan_cache_dir(tmp_path / "hf" / "hub")  # other tools see it
    (repo,) = [r for r in cache.repos if r.repo_id == "tiny/llama-GGUF"]
    assert {f.file_name for rev in repo.revisions for f in rev.files} == {
        "tiny-llama-Q8_0.gguf",
        "mmproj-tiny-f16.gguf",
    }


def test_pull_split_model_all_shards(hub: HubServer, tmp_path: Path) -> None:
    out = run(hub, tmp_path, "pull", "tiny/qwen3-split-GGUF:Q8_0")
    assert out.returncode == 0, out.stderr
    assert len(out.stdout.split()) == 4
    facts = run(hub, tmp_path, "inspect", "--json", out.stdout.split()[1])
    assert json.loads(facts.stdout)["split_count"] == 4


def test_dropped_connection_resumes(hub: HubServer, tmp_path: Path, tiny_models: dict[str, Path]) -> None:
    """The connection dies at 21 MB of 35 MB; huggingface_hub resumes from its last whole 10 MB chunk."""
    hub.reset_counts()
    key = "tiny/llama-GGUF/tiny-llama-F16.gguf"
    hub.drop_after[key] = 21_000_000
    out = run(hub, tmp_path, "pull", "tiny/llama-GGUF", "--file", "tiny-llama-F16.gguf")
    assert out.returncode == 0, out.stderr
    size = tiny_models["llama"].stat().st_size
    assert Path(out.stdout.strip()).read_bytes() == tiny_models["llama"].read_bytes()
    assert key not in hub.drop_after  # the drop happened
    assert size < hub.bytes_sent[key] <= size + 1_000_000  # resumed at 20 MB, not restarted at 0


def test_gated_corrupt_and_empty_repos(hub: HubServer, tmp_path: Path) -> None:
    gated = run(hub, tmp_path, "pull", "tiny/gated-GGUF:Q8_0")
    assert gated.returncode == 2 and "tiny/gated-GGUF is gated" in gated.stderr and "HF_TOKEN" in gated.stderr
    assert "Traceback" not in gated.stderr
    ok = run(hub, tmp_path, "pull", "tiny/gated-GGUF:Q8_0", token="hf_good")
    assert ok.returncode == 0, ok.stderr
    bad = run(hub, tmp_path, "pull", "tiny/corrupt-GGUF:Q8_0")
    assert bad.returncode == 1 and "sha256 does not match" in bad.stderr
    assert not list((tmp_path / "hf" / "hub" / "models--tiny--corrupt-GGUF" / "blobs").glob("*"))
    empty = run(hub, tmp_path, "quants", "tiny/no-gguf")
    assert empty.returncode == 2 and "has no GGUF files" in empty.stderr
    missing = run(hub, tmp_path, "pull", "tiny/llama-GGUF:Q2_K")
    assert missing.returncode == 2 and "available: Q4_K_M, Q8_0, F16" in missing.stderr


def test_resume_after_kill_9(hub: HubServer, tmp_path: Path, tiny_models: dict[str, Path]) -> None:
    """kill -9 mid-download keeps the partial file; the next pull continues it, never takes it for done."""
    key = "tiny/llama-GGUF/tiny-llama-F16.gguf"
    size = tiny_models["llama"].stat().st_size
    env = {k: v for k, v in os.environ.items() if k not in ("HF_TOKEN", "HUGGINGFACE_API_KEY")}
    env |= {"HF_ENDPOINT": hub.url, "HF_HOME": str(tmp_path / "hf"), "HF_HUB_DISABLE_XET": "1"}
    argv = [
        sys.executable,
        "-m",
        "llamastudio",
        "--data-dir",
        str(tmp_path / "d"),
        "pull",
        "tiny/llama-GGUF",
        "--file",
        "tiny-llama-F16.gguf",
    ]
    hub.reset_counts()
    hub.throttle = 0.01  # ~6 MB/s
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while hub.bytes_sent[key] < 22_000_000 and time.monotonic() < deadline:
            time.sleep(0.05)
        proc.kill()  # SIGKILL: no cleanup of any kind
        proc.wait()
    finally:
        hub.throttle = 0.0
    partial = list((tmp_path / "hf" / "hub" / "models--tiny--llama-GGUF" / "blobs").glob("*.incomplete"))
    assert len(partial) == 1 and partial[0].stat().st_size >= 10_000_000
    assert not list(
        (tmp_path / "hf" / "hub" / "models--tiny--llama-GGUF").glob("snapshots/*/tiny-llama-F16.gguf")
    )
    kept = partial[0].stat().st_size
    first = hub.bytes_sent[key]
    out = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert Path(out.stdout.strip()).read_bytes() == tiny_models["llama"].read_bytes()
    second = hub.bytes_sent[key] - first
    assert size - kept <= second <= size - kept + 128 * 1024  # continued where the partial file ended


def test_library_cache_and_added_paths(hub: HubServer, tmp_path: Path, tiny_models: dict[str, Path]) -> None:
    assert run(hub, tmp_path, "pull", "tiny/llama-GGUF:Q4_K_M").returncode == 0
    assert run(hub, tmp_path, "pull", "tiny/llama-GGUF:Q8_0").returncode == 0
    mine = tmp_path / "mine"
    mine.mkdir()
    own = mine / "own-model-Q8_0.gguf"
    shutil.copy(tiny_models["qwen3"], own)
    added = run(hub, tmp_path, "models", "add", str(mine))
    assert added.returncode == 0 and added.stdout.strip() == str(own)
    listed = {m["id"]: m for m in json.loads(run(hub, tmp_path, "ls", "--json").stdout)}
    assert set(listed) == {"tiny/llama-GGUF:Q4_K_M", "tiny/llama-GGUF:Q8_0", str(own)}
    assert (
        listed[str(own)]["path"] == str(own)
        and Path(listed[str(own)]["path"]).stat().st_ino == own.stat().st_ino
    )
    assert listed[str(own)]["facts"]["architecture"] == "qwen3" and listed[str(own)]["source"] == "added"
    assert listed["tiny/llama-GGUF:Q8_0"]["other_quants"] == ["Q4_K_M"]
    assert listed["tiny/llama-GGUF:Q8_0"]["mmproj"]
    # removing a cache model deletes its blob; the other quant stays
    blob = Path(listed["tiny/llama-GGUF:Q8_0"]["path"]).resolve()
    assert run(hub, tmp_path, "rm", "tiny/llama-GGUF:Q8_0").returncode == 0
    assert not blob.exists() and Path(listed["tiny/llama-GGUF:Q4_K_M"]["path"]).exists()
    # an added model is never deleted unless asked
    refused = run(hub, tmp_path, "rm", str(own))
    assert refused.returncode == 2 and "--delete-files" in refused.stderr and own.exists()
    assert run(hub, tmp_path, "rm", str(mine)).returncode == 0 and own.exists()
    left = {m["id"] for m in json.loads(run(hub, tmp_path, "ls", "--json").stdout)}
    assert left == {"tiny/llama-GGUF:Q4_K_M"}
    assert run(hub, tmp_path, "models", "add", str(tmp_path / "nope")).returncode == 2
