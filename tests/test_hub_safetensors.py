"""Safetensors (transformers) checkpoints in the Hub and the library, through the REST API: search
by format, memory before download from config.json + shard headers (≤ 2 range requests and
≤ 1 MiB per shard, cached), a pull that takes only the checkpoint's files, and the library
listing HF-cache snapshots and added directories as ``format: safetensors``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from huggingface_hub import scan_cache_dir

from llamastudio.checkpoint.remote import FIRST_RANGE, MAX_REMOTE_HEADER
from tests.rig import checkpoints as rig
from tests.rig.hub import HubServer, Repo, hub_server
from tests.test_api import assert_error_shape
from tests.test_api_hub import studio_api, use_hub, wait_for

ST = {"tags": ["transformers", "safetensors"], "library": "transformers"}
# what a pull of tiny/llama-st must take, and nothing else
WANTED = {
    "config.json",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "model.safetensors.index.json",
    "model-00001-of-00003.safetensors",
    "model-00002-of-00003.safetensors",
    "model-00003-of-00003.safetensors",
}
AWQ_SHARD: list[rig.Spec] = [
    ("model.layers.0.mlp.up_proj.qweight", "I32", (64, 16)),
    ("model.layers.0.mlp.up_proj.qzeros", "I32", (1, 16)),
    ("model.layers.0.mlp.up_proj.scales", "F16", (1, 128)),
]


@dataclass
class Files:
    root: Path
    llama: rig.Expected
    awq: rig.Expected


def _files(directory: Path) -> dict[str, Path]:
    return {str(p.relative_to(directory)): p for p in sorted(directory.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Files:
    root = tmp_path_factory.mktemp("st")
    # 300 KB of metadata per shard: each header takes the second range request
    llama = rig.write_checkpoint(root / "llama", metadata={"pad": "x" * 300_000})
    for name, data in {
        "pytorch_model.bin": b"\x80\x02pickle" * 100,
        "onnx/model.onnx": b"onnx" * 100,
        "README.md": b"# tiny",
        "modeling_llama.py": b"raise SystemExit('never fetched')",
        "original/params.json": b"{}",
    }.items():
        (root / "llama" / name).parent.mkdir(exist_ok=True)
        (root / "llama" / name).write_bytes(data)
    # the same weights in Mistral's format beside transformers' shards: not part of the checkpoint
    rig.write_raw(root / "llama" / "consolidated.safetensors", [("tok_embeddings.weight", "BF16", (128, 64))])
    awq_config = rig.CONFIG | {"quantization_config": {"quant_method": "awq", "bits": 4, "group_size": 128}}
    awq = rig.write_checkpoint(root / "awq", [AWQ_SHARD], awq_config)
    (root / "big").mkdir()
    (root / "big" / "config.json").write_text(json.dumps(rig.CONFIG))
    rig.write_big_header(root / "big" / "model.safetensors", 2 << 20)
    (root / "noconfig").mkdir()
    rig.write_raw(root / "noconfig" / "model.safetensors", [("w", "F16", (8,))])
    (root / "noconfig" / "README.md").write_text("# weights without a config")
    rig.write_checkpoint(root / "mixed", [[("w", "BF16", (8, 8))]])
    (root / "mixed" / "model-Q4_K_M.gguf").write_bytes(b"GGUF" + bytes(64))
    (root / "gguf").mkdir()
    (root / "gguf" / "m-Q8_0.gguf").write_bytes(b"GGUF" + bytes(64))
    return Files(root, llama, awq)


@pytest.fixture
def hub(files: Files, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[HubServer]:
    with hub_server() as srv:
        for name in ("llama", "awq", "big", "noconfig"):
            repo_id = "tiny/llama-st-AWQ" if name == "awq" else f"tiny/{name}-st"
            srv.add_repo(Repo(repo_id, _files(files.root / name), **ST))  # type: ignore[arg-type]
        srv.add_repo(Repo("tiny/mixed", _files(files.root / "mixed"), tags=["gguf", "safetensors"]))
        srv.add_repo(Repo("tiny/llama-GGUF", _files(files.root / "gguf")))
        use_hub(srv, monkeypatch, tmp_path)
        yield srv


@pytest.fixture
async def api(hub: HubServer, tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    async with studio_api(tmp_path) as client:
        yield client


def _resolved(hub: HubServer, repo: str) -> dict[str, int]:
    """Requests per file name of ``repo`` that were resolve (file) requests."""
    out: dict[str, int] = {}
    for path, n in hub.requests.items():
        if path.startswith(f"/{repo}/resolve/"):
            name = path.split("/", 5)[5]
            out[name] = out.get(name, 0) + n
    return out


async def test_search_by_format(api: httpx.AsyncClient) -> None:
    found = (await api.get("/api/hub/search", params={"q": "tiny", "format": "safetensors"})).json()
    assert {r["id"] for r in found} == {
        "tiny/llama-st",
        "tiny/llama-st-AWQ",
        "tiny/big-st",
        "tiny/noconfig-st",
        "tiny/mixed",
    }
    assert {r["format"] for r in found} == {"safetensors"}
    gguf = (await api.get("/api/hub/search", params={"q": "tiny"})).json()  # GGUF stays the default
    assert {r["id"] for r in gguf} == {"tiny/llama-GGUF", "tiny/mixed"}
    assert_error_shape(await api.get("/api/hub/search", params={"format": "onnx"}), 422, "invalid_input")


async def test_memory_before_download_reads_headers_only(
    hub: HubServer, api: httpx.AsyncClient, files: Files
) -> None:
    hub.reset_counts()
    resp = await api.get("/api/hub/repos/tiny/llama-st/quants", params={"hardware": "24GiB"})
    assert resp.status_code == 200, resp.text
    detail = resp.json()
    assert detail["format"] == "safetensors" and detail["revision"] == hub.repos["tiny/llama-st"].sha
    (row,) = detail["quants"]
    want = files.llama
    assert row["weight_bytes"] == want.weight_bytes and row["params"] == want.params
    assert row["bytes_by_dtype"] == want.bytes_by_dtype
    assert (row["quant"], row["dtype"], row["format"]) == ("BF16", "F16", "safetensors")
    assert row["kv_bytes_per_token"] == 2 * 2 * 2 * 16 * 2 and row["architecture"] == "LlamaForCausalLM"
    assert (row["layers"], row["kv_heads"], row["head_dim"], row["ctx_train"]) == (2, 2, 16, 2048)
    assert (row["fit"], row["max_context"]) == ("full", 2048)
    assert set(row["files"]) == WANTED
    assert row["size"] == sum((files.root / "llama" / f).stat().st_size for f in WANTED)
    # config.json once; each shard's header in 2 range requests (300 KB headers), under 1 MiB
    fetched = _resolved(hub, "tiny/llama-st")
    shards = sorted(f for f in WANTED if f.startswith("model-"))
    assert fetched == {"config.json": 1, **dict.fromkeys(shards, 2)}
    for shard in shards:
        sent = hub.bytes_sent[f"tiny/llama-st/{shard}"]
        assert 300_000 < sent <= MAX_REMOTE_HEADER
        assert sent < (files.root / "llama" / shard).stat().st_size  # never the tensor data
    # cached on disk per (repo, commit, file): asked again, nothing is fetched
    hub.reset_counts()
    cpu = (await api.get("/api/hub/repos/tiny/llama-st/quants", params={"hardware": "cpu"})).json()
    assert not _resolved(hub, "tiny/llama-st")
    assert cpu["quants"][0]["fit"] == "cpu" and cpu["quants"][0]["weight_bytes"] == want.weight_bytes
    small = await api.get("/api/hub/repos/tiny/llama-st/quants", params={"hardware": "0.0001GiB"})
    assert small.json()["quants"][0]["fit"] == "no"


async def test_quant_labels_and_rows_that_cannot_be_read(
    hub: HubServer, api: httpx.AsyncClient, files: Files
) -> None:
    awq = (await api.get("/api/hub/repos/tiny/llama-st-AWQ/quants", params={"hardware": "24GiB"})).json()
    (row,) = awq["quants"]
    assert row["quant"] == row["dtype"] == "AWQ"
    assert row["bytes_by_dtype"] == files.awq.bytes_by_dtype and row["weight_bytes"] == files.awq.weight_bytes
    # a header over 1 MiB: the row says why, after one 64 KiB request; the table still answers
    hub.reset_counts()
    big = await api.get("/api/hub/repos/tiny/big-st/quants", params={"hardware": "24GiB"})
    assert big.status_code == 200, big.text
    (row,) = big.json()["quants"]
    assert row["fit"] == "unknown" and "reading more than 1,048,576 bytes" in row["detail"]
    assert _resolved(hub, "tiny/big-st") == {"config.json": 1, "model.safetensors": 1}
    assert hub.bytes_sent["tiny/big-st/model.safetensors"] <= FIRST_RANGE
    # a repo with both formats: GGUF by default, its checkpoint when asked
    mixed = "/api/hub/repos/tiny/mixed/quants"
    assert (await api.get(mixed, params={"hardware": "cpu"})).json()["format"] == "gguf"
    asked = (await api.get(mixed, params={"hardware": "cpu", "format": "safetensors"})).json()
    assert asked["format"] == "safetensors" and asked["quants"][0]["weight_bytes"] == 8 * 8 * 2


async def test_a_repo_without_config_json_is_a_clear_400(hub: HubServer, api: httpx.AsyncClient) -> None:
    url = "/api/hub/repos/tiny/noconfig-st/quants"
    auto = await api.get(url)
    assert_error_shape(auto, 400, "invalid_input")
    assert "has no GGUF files and no safetensors checkpoint" in auto.json()["error"]["message"]
    asked = await api.get(url, params={"format": "safetensors"})
    assert_error_shape(asked, 400, "invalid_input")
    assert "no config.json" in asked.json()["error"]["message"]
    for body in ({"repo": "tiny/noconfig-st"}, {"repo": "tiny/noconfig-st", "format": "safetensors"}):
        assert_error_shape(await api.post("/api/downloads", json=body), 400, "invalid_input")
    assert (await api.get("/api/downloads")).json() == []  # no job was registered
    assert not _resolved(hub, "tiny/noconfig-st")  # nothing was fetched


async def test_pull_takes_only_the_checkpoint_and_the_library_lists_it(
    hub: HubServer, api: httpx.AsyncClient, files: Files, tmp_path: Path
) -> None:
    hub.reset_counts()
    resp = await api.post("/api/downloads", json={"repo": "tiny/llama-st"})
    assert resp.status_code == 201, resp.text
    assert resp.json()["format"] == "safetensors" and set(resp.json()["files"]) == WANTED
    job = await wait_for(api, resp.json()["id"], {"done", "failed"})
    assert job["state"] == "done", job
    assert set(_resolved(hub, "tiny/llama-st")) == WANTED  # no .bin, .onnx, .py, consolidated, README
    sha = hub.repos["tiny/llama-st"].sha
    snapshot = tmp_path / "hf-cache" / "models--tiny--llama-st" / "snapshots" / sha
    assert set(_files(snapshot)) == WANTED
    for name in WANTED:
        assert (snapshot / name).read_bytes() == (files.root / "llama" / name).read_bytes()
    (cached,) = [r for r in scan_cache_dir(tmp_path / "hf-cache").repos if r.repo_id == "tiny/llama-st"]
    assert cached.size_on_disk > files.llama.weight_bytes  # other HF tools see it

    listed = (await api.get("/api/models")).json()
    (model,) = [m for m in listed if m["format"] == "safetensors"]
    assert (model["id"], model["path"], model["source"], model["repo"]) == (
        "tiny/llama-st",
        str(snapshot),
        "hf-cache",
        "tiny/llama-st",
    )
    assert model["quant"] == "BF16" and model["revision"] == sha
    assert sorted(Path(f).name for f in model["files"]) == sorted(WANTED)
    assert model["size"] == sum((snapshot / f).stat().st_size for f in WANTED)
    facts = model["facts"]
    assert (facts["weight_bytes"], facts["params"], facts["dtype"]) == (
        files.llama.weight_bytes,
        files.llama.params,
        "F16",
    )
    assert (
        facts["architecture"],
        facts["layers"],
        facts["kv_heads"],
        facts["head_dim"],
        facts["ctx_train"],
    ) == (
        "LlamaForCausalLM",
        2,
        2,
        16,
        2048,
    )

    # a quant given must be the checkpoint's label (read from config.json)
    assert_error_shape(
        await api.post("/api/downloads", json={"repo": "tiny/llama-st", "quant": "AWQ"}), 404, "not_found"
    )
    again = await api.post("/api/downloads", json={"repo": "tiny/llama-st", "quant": "bf16"})
    assert again.status_code == 201, again.text
    # a repo with both formats, its checkpoint asked for: no GGUF is fetched
    hub.reset_counts()
    mixed = await api.post("/api/downloads", json={"repo": "tiny/mixed", "format": "safetensors"})
    assert (await wait_for(api, mixed.json()["id"], {"done", "failed"}))["state"] == "done"
    assert not any(name.endswith(".gguf") for name in _resolved(hub, "tiny/mixed"))
    assert "model.safetensors" in _resolved(hub, "tiny/mixed")


async def test_an_added_checkpoint_directory(api: httpx.AsyncClient, tmp_path: Path) -> None:
    directory = tmp_path / "my-checkpoint"
    want = rig.write_checkpoint(directory)
    (directory / "m-Q8_0.gguf").write_bytes(b"GGUF" + bytes(64))  # a GGUF beside it is not one of its files
    resp = await api.post("/api/models", json={"path": str(directory)})
    assert resp.status_code == 201, resp.text
    (added,) = [m for m in resp.json() if m["format"] == "safetensors"]
    assert (added["id"], added["path"], added["source"], added["quant"]) == (
        str(directory),
        str(directory),
        "added",
        "BF16",
    )
    assert added["served_name"] == "my-checkpoint"
    assert not any(f.endswith(".gguf") for f in added["files"])
    (listed,) = [m for m in (await api.get("/api/models")).json() if m["format"] == "safetensors"]
    assert listed["facts"]["weight_bytes"] == want.weight_bytes and listed["facts"]["params"] == want.params

    # weights without config.json, a lone shard file, a corrupt shard: refused, nothing registered
    bare = tmp_path / "bare"
    bare.mkdir()
    rig.write_raw(bare / "model.safetensors", [("w", "F16", (4,))])
    refused = await api.post("/api/models", json={"path": str(bare)})
    assert_error_shape(refused, 400, "invalid_input")
    assert refused.json()["error"]["message"] == f"{bare}: no config.json — not a transformers checkpoint"
    lone = await api.post("/api/models", json={"path": str(bare / "model.safetensors")})
    assert_error_shape(lone, 400, "invalid_input")
    assert "add a safetensors checkpoint by its directory" in lone.json()["error"]["message"]
    broken = tmp_path / "broken"
    rig.write_checkpoint(broken, [[("w", "F16", (4,))]])
    rig.write_past_eof(broken / "model.safetensors")
    corrupt = await api.post("/api/models", json={"path": str(broken)})
    assert_error_shape(corrupt, 400, "invalid_input")
    assert "model.safetensors: tensor data runs past the end" in corrupt.json()["error"]["message"]
    paths = {m["path"] for m in (await api.get("/api/models")).json()}
    assert str(bare) not in paths and str(broken) not in paths

    # removing it forgets the directory; its files stay
    removed = await api.delete("/api/models", params={"id": str(directory)})
    assert removed.json() == {"removed": [str(directory)]} and want.shards[0].exists()
    assert not (await api.get("/api/models")).json()


def _cli(hub: HubServer, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("HF_TOKEN", "HUGGINGFACE_API_KEY")}
    env |= {"HF_ENDPOINT": hub.url, "HF_HOME": str(tmp_path / "hf"), "HF_HUB_DISABLE_XET": "1"}
    argv = [sys.executable, "-m", "llamastudio", "--data-dir", str(tmp_path / "d"), *args]
    return subprocess.run(argv, capture_output=True, text=True, env=env, timeout=120)


def test_cli_pull_of_a_safetensors_repo(hub: HubServer, tmp_path: Path) -> None:
    """``llamastudio pull owner/name`` of a repo with no GGUF takes its checkpoint."""
    out = _cli(hub, tmp_path, "pull", "tiny/llama-st")
    assert out.returncode == 0, out.stderr
    assert {Path(p).name for p in out.stdout.split()} == WANTED


def test_cli_search_and_quants_by_format(hub: HubServer, tmp_path: Path) -> None:
    """The CLI shows what the API shows: the same search filter and the same repo detail."""
    found = _cli(hub, tmp_path, "search", "tiny", "--format", "safetensors", "--json")
    assert found.returncode == 0, found.stderr
    ids = {r["id"] for r in json.loads(found.stdout)}
    assert "tiny/llama-st" in ids and "tiny/llama-GGUF" not in ids
    detail = _cli(
        hub, tmp_path, "quants", "tiny/mixed", "--format", "safetensors", "--hardware", "cpu", "--json"
    )
    assert detail.returncode == 0, detail.stderr
    data = json.loads(detail.stdout)
    assert data["format"] == "safetensors" and len(data["quants"]) == 1
    bad = _cli(hub, tmp_path, "quants", "tiny/llama-st", "--format", "onnx")
    assert bad.returncode != 0 and "format 'onnx'" in bad.stderr and "Traceback" not in bad.stderr


def test_a_repo_listing_thousands_of_shards_is_refused_before_any_header_read() -> None:
    """A hostile listing must not turn into thousands of range requests."""
    from llamastudio.errors import InvalidInput
    from llamastudio.hub.checkpoints import MAX_SHARDS, find_checkpoint
    from llamastudio.hub.quants import RepoFile

    def listing(n: int) -> list[RepoFile]:
        shards = [RepoFile(f"model-{i:05d}-of-{n:05d}.safetensors", 10) for i in range(1, n + 1)]
        return [RepoFile("config.json", 2), *shards]

    found = find_checkpoint(listing(MAX_SHARDS))
    assert found is not None and len(found.shards) == MAX_SHARDS
    with pytest.raises(InvalidInput, match="shards"):
        find_checkpoint(listing(MAX_SHARDS + 1))
