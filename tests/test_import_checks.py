"""Issue 18 (Low items, item 9): what the studio refuses when configurations are saved or imported.

Bad llama-swap / preset imports are 400s naming the model and field (they were 500s); a 300-model
import is one transaction and one header read; one name precedence, with clashing aliases refused;
unknown llama-server flags refused at save and preview; numeric settings finite and in range.
In-process API (``httpx.ASGITransport``), a fake engine (its ``--help`` flags as a list), a tiny real
GGUF; nothing is started.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from huggingface_hub import constants
from sqlalchemy import event

from llamastudio.api.app import create_app
from llamastudio.config import Settings
from llamastudio.engines.registry import Engine
from llamastudio.gguf import GGUFModel, load_model
from llamastudio.runtime.manager import Runtime
from llamastudio.services import StudioService
from llamastudio.serving import launch as launch_module
from llamastudio.store.models import ServedModelRow, SettingRow
from tests.rig.factory import BUILDERS, Vocab

CAPS = [
    "-m", "--model", "--host", "--port", "-c", "--ctx-size", "-np", "--parallel", "-ngl",
    "--n-gpu-layers", "--alias", "-a", "--jinja", "--temp", "-t", "--threads", "-fa", "--flash-attn",
    "--embeddings", "--pooling", "--seed",
]  # fmt: skip


@pytest.fixture(scope="module")
def model_file(tmp_path_factory: pytest.TempPathFactory, vocab: Vocab) -> Path:
    path = tmp_path_factory.mktemp("models") / "tiny.gguf"
    BUILDERS["llama"](path, vocab)
    return path


Studio = tuple[httpx.AsyncClient, Runtime]


@pytest.fixture
async def studio(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Studio]:
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    app = create_app(Settings(data_dir=tmp_path / "data", hardware="cpu"))
    rt: Runtime = app.state.studio.service.runtime
    server = tmp_path / "bin" / "llama-server"
    rt.engines.add(
        Engine(id="fake", name="fake", kind="external", root=str(server.parent),
               binaries={"llama-server": str(server)}, capabilities=CAPS)
    )  # fmt: skip
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as client:
        yield client, rt


def _error(resp: httpx.Response, status: int) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert set(body) == {"error"} and body["error"]["source"] == "studio"
    err: dict[str, Any] = body["error"]
    return err


def _swap(model: str, **fields: str) -> str:
    """A llama-swap config of one model ``x`` with its fields as YAML fragments."""
    lines = [f"    cmd: llama-server -m {model} --port ${{PORT}}"] + [
        f"    {k}: {v}" for k, v in fields.items()
    ]
    return "models:\n  x:\n" + "\n".join(lines) + "\n"


# (case, fields of model x, the field the error names); each once a 500 or silently wrong
BAD_FIELDS = [
    ("cmd a list", {"cmd": "[llama-server, -m, m.gguf]"}, "cmd"),
    ("cmd a number", {"cmd": "3"}, "cmd"),
    ("ttl a string", {"ttl": "soon"}, "ttl"),
    ("ttl infinite", {"ttl": ".inf"}, "ttl"),
    ("ttl negative", {"ttl": "-1"}, "ttl"),
    ("aliases a string", {"aliases": "gpt"}, "aliases"),
    ("aliases nested", {"aliases": "[[a]]"}, "aliases"),
    ("env a string", {"env": "'A=B'"}, "env"),  # was stored as {"": ""}
    ("env entry without =", {"env": "[AB]"}, "env"),
    ("env entry a number", {"env": "[3]"}, "env"),
    ("env bad name", {"env": "['1A=B']"}, "env"),
    ("concurrencyLimit a string", {"concurrencyLimit": "many"}, "concurrencyLimit"),
    ("concurrencyLimit true", {"concurrencyLimit": "true"}, "concurrencyLimit"),
    ("metadata a list", {"metadata": "[1]"}, "metadata"),
    ("pinned a string", {"metadata": "{llamastudio: {pinned: 'yes'}}"}, "metadata.llamastudio.pinned"),
    (
        "engine_id a mapping",
        {"metadata": "{llamastudio: {engine_id: {a: 1}}}"},
        "metadata.llamastudio.engine_id",
    ),
    ("max_queue a float", {"metadata": "{llamastudio: {max_queue: 1.5}}"}, "metadata.llamastudio.max_queue"),
]


@pytest.mark.parametrize(("case", "fields", "field"), BAD_FIELDS, ids=[c[0] for c in BAD_FIELDS])
async def test_llama_swap_import_with_a_wrong_type_is_a_400_naming_model_and_field(
    studio: Studio, model_file: Path, case: str, fields: dict[str, str], field: str
) -> None:
    client, _ = studio
    text = _swap(str(model_file), **fields)
    if "cmd" in fields:
        text = f"models:\n  x:\n    cmd: {fields['cmd']}\n"
    err = _error(await client.post("/api/served/import", json={"format": "llama-swap", "text": text}), 400)
    assert err["details"]["model"] == "x" and err["details"]["field"] == field
    assert "'x'" in err["message"] and field in err["message"]
    assert (await client.get("/api/models/x/config")).status_code == 404  # nothing stored


BAD_DOCUMENTS = [
    ("models a list", "models: [a, b]\n", "models:"),
    ("model not a mapping", "models:\n  x: 3\n", "model 'x'"),
    ("model name null", "models:\n  ~: {cmd: s}\n", "model names"),
    ("groups a list", "models:\n  x: {cmd: 's --port ${PORT}'}\ngroups: [a]\n", "groups"),
    (
        "group members a string",
        "models:\n  x: {cmd: 's --port ${PORT}'}\ngroups: {g: {members: x}}\n",
        "members",
    ),
    ("macros a list", "macros: [a]\nmodels:\n  x: {cmd: 's --port ${PORT}'}\n", "macros"),
    ("macro a mapping", "macros: {a: {b: 1}}\nmodels:\n  x: {cmd: 's --port ${PORT}'}\n", "macros"),
    ("python tag", "models: !!python/object:os.system {}\n", "YAML"),
    ("nested 5000 deep", "models: " + "[" * 5000 + "]" * 5000 + "\n", "nested"),  # was RecursionError
    ("unclosed 100000 deep", "models:\n  x:\n    aliases: " + "[" * 100_000 + "\n", "nested"),
]


@pytest.mark.parametrize(("case", "text", "says"), BAD_DOCUMENTS, ids=[c[0] for c in BAD_DOCUMENTS])
async def test_malformed_llama_swap_documents_are_400(
    studio: Studio, case: str, text: str, says: str
) -> None:
    client, _ = studio
    err = _error(await client.post("/api/served/import", json={"format": "llama-swap", "text": text}), 400)
    assert says in err["message"]


async def test_yaml_bombs_are_refused_without_expanding(studio: Studio, model_file: Path) -> None:
    """An anchor bomb (10^8 items once expanded) and a macro bomb (100 MB once expanded) are
    refused by type or size, from their few-kilobyte text."""
    client, _ = studio
    levels = ["a: &a [x,x,x,x,x,x,x,x,x,x]"] + [
        f"{n}: &{n} [{', '.join(['*' + p] * 10)}]" for p, n in zip("abcdefg", "bcdefgh", strict=True)
    ]
    bomb = "\n".join(levels) + "\n" + _swap(str(model_file), aliases="*h", env="*h")
    err = _error(await client.post("/api/served/import", json={"format": "llama-swap", "text": bomb}), 400)
    assert err["details"]["field"] == "aliases"
    macro = "macros: {a: '" + "x" * 100_000 + "'}\nmodels:\n  x:\n    cmd: '" + "${a}" * 1000 + "'\n"
    err = _error(await client.post("/api/served/import", json={"format": "llama-swap", "text": macro}), 400)
    assert err["details"] == {"field": "cmd", "model": "x"} and "longer than" in err["message"]


BAD_PRESETS = [
    ("comment a list", "; llamastudio: [1]", ""),
    ("ttl a string", '; llamastudio: {"ttl": "x"}', "ttl"),
    ("ttl NaN", '; llamastudio: {"ttl": NaN}', "ttl"),
    ("env a list", '; llamastudio: {"env": ["A=B"]}', "env"),
    ("aliases a string", '; llamastudio: {"aliases": "a"}', "aliases"),
    ("engine_id a number", '; llamastudio: {"engine_id": 3}', "engine_id"),
    ("pinned a string", '; llamastudio: {"pinned": "no"}', "pinned"),
]


@pytest.mark.parametrize(("case", "comment", "field"), BAD_PRESETS, ids=[c[0] for c in BAD_PRESETS])
async def test_preset_import_with_a_wrong_type_is_a_400_naming_section_and_field(
    studio: Studio, model_file: Path, case: str, comment: str, field: str
) -> None:
    client, _ = studio
    text = f"version = 1\n\n[x]\n{comment}\nmodel = {model_file}\n"
    err = _error(await client.post("/api/served/import", json={"format": "preset", "text": text}), 400)
    assert err["details"]["model"] == "x" and err["details"].get("field", "") == field
    assert "preset section 'x'" in err["message"]


async def test_deeply_nested_preset_comment_is_a_400(studio: Studio, model_file: Path) -> None:
    client, _ = studio
    text = f"[x]\n; llamastudio: {'[' * 100_000}\nmodel = {model_file}\n"  # was RecursionError
    err = _error(await client.post("/api/served/import", json={"format": "preset", "text": text}), 400)
    assert "nested" in err["message"]


async def test_llama_swap_env_is_a_list_of_key_value_strings(studio: Studio, model_file: Path) -> None:
    """Regression: ``env: 'A=B'`` was iterated character by character and stored as {"": ""}."""
    client, _ = studio
    env = "['CUDA_VISIBLE_DEVICES=0', 'LLAMA_ARG_X=x=1 y=2', 'OMP_NUM_THREADS=']"  # allowed by default
    text = _swap(str(model_file), env=env, aliases="[123, b]", ttl="30")
    r = await client.post("/api/served/import", json={"format": "llama-swap", "text": text})
    assert r.status_code == 200, r.text
    cfg = (await client.get("/api/models/x/config")).json()["config"]
    assert cfg["env"] == {"CUDA_VISIBLE_DEVICES": "0", "LLAMA_ARG_X": "x=1 y=2", "OMP_NUM_THREADS": ""}
    assert cfg["aliases"] == ["123", "b"] and cfg["ttl"] == 30


def _cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "llamastudio", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        timeout=120,
    )


def test_cli_import_of_a_bad_config_is_one_error_line(tmp_path: Path, model_file: Path) -> None:
    env = {"LLAMASTUDIO_DATA_DIR": str(tmp_path / "data"), "HF_HOME": str(tmp_path / "hf")}
    cases = [
        ("ttl.yaml", _swap(str(model_file), ttl="soon"), "model 'x': `ttl` must be a number"),
        ("env.yaml", _swap(str(model_file), env="'A=B'"), "model 'x': `env` must be a list"),
        ("deep.yaml", "models: " + "[" * 5000 + "\n", "nested deeper"),
        ("meta.ini", f'[x]\n; llamastudio: {{"ttl": []}}\nmodel = {model_file}\n', "section 'x'"),
    ]
    for name, text, says in cases:
        (tmp_path / name).write_text(text)
        out = _cli("models", "import", str(tmp_path / name), env=env)
        assert out.returncode == 2, (name, out.stderr)
        lines = out.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error:") and says in lines[0], (name, out.stderr)


async def test_300_model_import_is_one_transaction_one_listing_one_header_read(
    studio: Studio, model_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Regression: a 300-model import took minutes (one library scan and one transaction per model,
    then one GGUF header read per model in the sync after it) and held /api/served meanwhile."""
    client, rt = studio
    commits: list[int] = []
    event.listen(rt.db.engine, "commit", lambda _conn: commits.append(1))
    listings: list[int] = []
    models = rt.library.models

    def listing(*args: Any, **kwargs: Any) -> Any:
        listings.append(1)
        return models(*args, **kwargs)

    monkeypatch.setattr(rt.library, "models", listing)
    launch_module.read_header.cache_clear()  # a header another test left
    reads: list[str] = []

    def read(path: str, **kwargs: Any) -> GGUFModel:
        reads.append(path)
        return load_model(path, **kwargs)

    monkeypatch.setattr(launch_module, "load_model", read)

    body = "".join(
        f"  m{i}:\n    cmd: llama-server -m {model_file} --port ${{PORT}} -c 512\n    aliases: [a{i}]\n"
        for i in range(300)
    )
    imported = await StudioService(rt).import_configs("llama-swap", "models:\n" + body)
    assert len(imported.imported) == 300
    # was 300 transactions and 300+ listings: now one of each, and one more listing for the sync after
    assert len(commits) == 1 and len(listings) == 2
    assert reads == [str(model_file)]  # the sync: was 300 reads of the same header
    served = {m["name"]: m for m in (await client.get("/api/served")).json()}
    assert served["m299"]["state"] == "stopped" and served["m299"]["aliases"] == ["a299"]
    assert sum(1 for m in served.values() if m["configured"]) == 300


async def test_an_import_is_stored_whole_or_not_at_all(studio: Studio, model_file: Path) -> None:
    client, _ = studio
    good = "".join(f"  ok{i}:\n    cmd: llama-server -m {model_file} --port ${{PORT}}\n" for i in range(5))
    bad = "  bad:\n    cmd: llama-server -m /no/such.gguf --port ${PORT}\n"
    r = await client.post(
        "/api/served/import", json={"format": "llama-swap", "text": "models:\n" + good + bad}
    )
    err = _error(r, 404)
    assert err["details"]["model"] == "bad" and "'bad'" in err["message"]
    assert (await client.get("/api/models/ok0/config")).status_code == 404


# -- the name index -------------------------------------------------------------------------------


def _second_model(model_file: Path, tmp_path: Path, name: str) -> Path:
    path = tmp_path / name
    shutil.copyfile(model_file, path)
    return path


async def test_an_alias_cannot_take_a_library_models_name(
    studio: Studio, model_file: Path, tmp_path: Path
) -> None:
    """Regression: an alias equal to a library model's name hijacked it (requests for ``tiny`` went
    to the other model; the library model fell back to its path)."""
    client, rt = studio
    rt.library.add(model_file)  # served as "tiny"
    other = _second_model(model_file, tmp_path, "other.gguf")
    r = await client.put("/api/models/other/config", json={"model": str(other), "aliases": ["tiny"]})
    err = _error(r, 409)
    assert "'tiny'" in err["message"] and "name of model 'tiny'" in err["message"]
    assert err["details"] == {"model": "other", "alias": "tiny"}
    r = await client.put("/api/models/other/config", json={"model": str(other), "aliases": ["tiny2"]})
    assert r.status_code == 200, r.text
    r = await client.put("/api/models/third/config", json={"model": str(other), "aliases": ["other"]})
    assert "name of model 'other'" in _error(r, 409)["message"]
    r = await client.put("/api/models/third/config", json={"model": str(other), "aliases": ["tiny2"]})
    assert "already an alias of model 'other'" in _error(r, 409)["message"]
    r = await client.put("/api/models/tiny2/config", json={"model": str(other)})
    assert "already an alias" in _error(r, 409)["message"]


async def test_an_alias_cannot_be_another_models_library_id(
    studio: Studio, model_file: Path, tmp_path: Path
) -> None:
    client, rt = studio
    snapshot = Path(constants.HF_HUB_CACHE) / "models--org--repo" / "snapshots" / ("a" * 40)
    snapshot.mkdir(parents=True)
    shutil.copyfile(model_file, snapshot / "repo-Q8_0.gguf")
    (snapshot.parents[1] / "refs").mkdir()
    (snapshot.parents[1] / "refs" / "main").write_text("a" * 40)
    assert [m.id for m in rt.library.models(with_facts=False)] == ["org/repo:Q8_0"]
    alias = {"model": str(model_file), "aliases": ["org/repo:Q8_0"]}
    r = await client.put("/api/models/mine/config", json=alias)  # served under that id
    assert "is the name of model 'org/repo:Q8_0'" in _error(r, 409)["message"]
    r = await client.put("/api/models/fast/config", json={"model": "org/repo:Q8_0"})
    assert r.status_code == 200, r.text  # now served as "fast": the id is only an id
    r = await client.put("/api/models/mine/config", json=alias)
    assert "library id of another model" in _error(r, 409)["message"]
    # its own library id is fine as an alias (it already resolves to it)
    r = await client.put(
        "/api/models/mine/config", json={"model": "org/repo:Q8_0", "aliases": ["org/repo:Q8_0"]}
    )
    assert r.status_code == 200, r.text


async def test_stored_aliases_never_shadow_a_name(studio: Studio, model_file: Path, tmp_path: Path) -> None:
    """Configurations stored before the save-time check (older versions) resolve by precedence:
    name, then alias, then library id, whatever their order in the database."""
    client, rt = studio
    rt.library.add(model_file)  # served as "tiny"
    other = _second_model(model_file, tmp_path, "other.gguf")
    with rt.db.session() as s, s.begin():
        s.add(
            ServedModelRow(name="aaa", model=str(other), aliases=["tiny", "zzz", "shared"], args=[], env={})
        )
        s.add(ServedModelRow(name="zzz", model=str(other), aliases=["shared"], args=[], env={}))
    await rt.sync()
    assert await rt.resolve("tiny") == "tiny"  # the library model, not aaa
    assert await rt.resolve("zzz") == "zzz"  # a name beats aaa's alias
    assert await rt.resolve("shared") == "aaa"  # between aliases: the first stored
    assert (await client.get("/api/models/tiny/config")).json()["config"]["model"] == str(model_file)
    assert (await client.get("/api/models/zzz/config")).json()["config"]["name"] == "zzz"


# -- unknown flags --------------------------------------------------------------------------------


async def test_unknown_flags_are_refused_at_save_and_preview_with_a_suggestion(
    studio: Studio, model_file: Path
) -> None:
    """Regression: the README promises only flags the engine's --help lists are passed, but flags
    the estimator does not model went through and llama-server failed at start."""
    client, _ = studio
    body = {"model": str(model_file), "args": ["-c", "512", "--ctx-sise", "1024"]}
    for r in (
        await client.put("/api/models/x/config", json=body),
        await client.post("/api/models/x/preview", json=body),
    ):
        err = _error(r, 400)
        assert "--ctx-sise" in err["message"] and "did you mean --ctx-size?" in err["message"]
        details = {k: v for k, v in err["details"].items() if k != "model"}  # PUT names the model too
        assert details == {"flag": "--ctx-sise", "engine": "fake", "suggestion": "--ctx-size"}
    assert (await client.get("/api/models/x/config")).status_code == 404
    # flags the estimator does not model are fine when the engine lists them; flags it models are
    # rewritten or left out by the command builder (-ctk is not in this engine's --help)
    ok = {"model": str(model_file), "args": ["--jinja", "--temp", "0.5", "--seed", "-1", "-ctk", "q8_0"]}
    r = await client.put("/api/models/x/config", json=ok)
    assert r.status_code == 200, r.text
    view = r.json()
    argv = view["prepared"]["argv"]
    assert view["error"] is None and view["prepared"]["dropped"] == ["-ctk q8_0"]
    assert {"--jinja", "--temp", "0.5", "--seed", "-1"} <= set(argv) and "-ctk" not in argv
    text = _swap(str(model_file)).replace("${PORT}", "${PORT} --no-such-flag")
    err = _error(await client.post("/api/served/import", json={"format": "llama-swap", "text": text}), 400)
    assert err["details"]["model"] == "x" and "--no-such-flag" in err["message"]


async def test_a_stored_unknown_flag_makes_the_model_unavailable_with_the_reason(
    studio: Studio, model_file: Path
) -> None:
    _, rt = studio
    with rt.db.session() as s, s.begin():
        s.add(ServedModelRow(name="old", model=str(model_file), args=["--frobnicate"], aliases=[], env={}))
    await rt.sync()
    status = await StudioService(rt).status("old")
    assert status.state == "unavailable" and status.reason and "--frobnicate" in status.reason


# -- settings -------------------------------------------------------------------------------------


def _strict_json(text: str) -> Any:
    def refuse(name: str) -> None:
        raise ValueError(f"{name} is not JSON")

    return json.loads(text, parse_constant=refuse)


@pytest.mark.parametrize("raw", ["1e309", "Infinity", "NaN", "-1", "4e8", '"soon"'])
async def test_put_settings_refuses_a_ttl_that_is_not_finite_or_in_range(studio: Studio, raw: str) -> None:
    """Regression: ``default_ttl: 1e309`` was stored as Infinity and broke every /ws frame."""
    client, rt = studio
    r = await client.put(
        "/api/settings", content=f'{{"default_ttl": {raw}}}', headers={"content-type": "application/json"}
    )
    assert _error(r, 422)["code"] == "invalid_input"
    assert await StudioService(rt).default_ttl() == 600


async def test_put_settings_takes_a_valid_ttl(studio: Studio) -> None:
    client, rt = studio
    r = await client.put("/api/settings", json={"default_ttl": 60})
    assert r.status_code == 200 and r.json()["default_ttl"] == 60
    assert await StudioService(rt).default_ttl() == 60


async def test_an_infinity_stored_by_an_older_version_is_ignored_on_read(
    studio: Studio, model_file: Path
) -> None:
    client, rt = studio
    with rt.db.session() as s, s.begin():
        s.add(SettingRow(key="default_ttl", value=float("inf")))
        s.add(ServedModelRow(name="m", model=str(model_file), ttl=float("inf"), args=[], aliases=[], env={}))
    settings = _strict_json((await client.get("/api/settings")).text)
    assert settings["default_ttl"] == 600  # LLAMASTUDIO_DEFAULT_TTL's default
    config = _strict_json((await client.get("/api/models/m/config")).text)["config"]
    assert config["ttl"] is None  # the default applies
    await rt.scheduler.start()
    try:
        await rt.sync()
        for _ in range(100):  # the scheduler's owner task applies the new specs
            if "m" in rt.scheduler.entries:
                break
            await asyncio.sleep(0)
        served = _strict_json((await client.get("/api/served")).text)
        assert next(m for m in served if m["name"] == "m")["ttl"] == 600, served
        models = [m.model_dump(mode="json") for m in await StudioService(rt).served(refresh=False)]
        json.dumps({"type": "hello", "models": models}, allow_nan=False)  # what /ws sends first
    finally:
        await rt.scheduler.close()


@pytest.mark.parametrize(
    ("field", "raw"),
    [
        ("ttl", "1e309"),
        ("ttl", "-5"),
        ("max_queue", "-1"),
        ("max_concurrency", "1e9"),
        ("reserve", '{"CPU": 1e18}'),
    ],
)
async def test_config_numbers_must_be_finite_and_in_range(
    studio: Studio, model_file: Path, field: str, raw: str
) -> None:
    client, _ = studio
    body = f'{{"model": {json.dumps(str(model_file))}, "{field}": {raw}}}'
    r = await client.put("/api/models/x/config", content=body, headers={"content-type": "application/json"})
    assert r.status_code in (400, 422), r.text
    assert (await client.get("/api/models/x/config")).status_code == 404
