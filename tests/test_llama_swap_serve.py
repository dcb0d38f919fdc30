"""A llama-swap config served by a real ``llamastudio serve --config`` (issue 20, items 1-2): every
behaviour checked through the gateway with the real ``openai`` SDK — keys, unlisted, aliases,
name/description/metadata, useModelName and the body filters (seen by an engine that echoes what
it receives), exclusive and persistent groups, preload after a restart, ``${env.X}`` and nested
macros — and the watched file: changes applied, a bad version reported while the previous one
keeps serving.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
import yaml
from websockets.sync.client import ClientConnection, connect

from llamastudio.runtime.process import free_port
from tests.rig.server import wait_healthy
from tests.rig.studio import Studio
from tests.test_llama_swap import SERVER, example

ECHO = """
import json, sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

class Echo(BaseHTTPRequestHandler):
    def do_GET(self):
        sick = sys.argv[2:] == ["sick"] and self.path != "/alive"  # /health never ready
        self.answer({"status": "ok"}, 503 if sick else 200)

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length") or 0)).decode()
        message = {"role": "assistant", "content": body}
        self.answer({
            "id": "echo", "object": "chat.completion", "created": 0, "model": "echo",
            "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
        })

    def answer(self, obj, status=200):
        data = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass

ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Echo).serve_forever()
"""


STOPPER = """
import os, signal, sys
open(sys.argv[1], "w").write(sys.argv[2])
os.kill(int(sys.argv[2]), signal.SIGTERM)
"""


def config(server: Path, models: dict[str, Path], echo: Path, fixed: int, extra: str = "") -> str:
    small = "-c ${ctx} -np 1 -t 1 -ngl 0"
    return f"""
healthCheckTimeout: 120
logLevel: debug
includeAliasesInList: true
macros:
  srv: "{server} --port ${{PORT}}"
  ctx: 512
  small: "{small}"
apiKeys: ["sk-file", "${{env.SWAP_TEST_KEY}}"]
models:
  chat:
    macros: {{ctx: 256}}
    cmd: ${{srv}} -m {models["llama"]} ${{small}}
    name: Tiny chat
    description: a tiny llama
    aliases: [gpt-4o-mini]
    metadata: {{ctx: "${{ctx}}", who: "${{MODEL_ID}}", llamastudio: {{max_queue: 8}}}}
  hidden:
    unlisted: true
    cmd: ${{srv}} -m {models["qwen3"]} ${{small}}
  echo:
    cmd: {sys.executable} {echo} ${{PORT}}
    useModelName: upstream-name
    filters:
      stripParams: "temperature, top_p, model"
      setParams: {{seed: 42, max_tokens: 3, model: ignored}}
    metadata: {{llamastudio: {{reserve: {{CPU: 1000000}}}}}}
  fixed:
    cmd: {sys.executable} {echo} {fixed}
    proxy: http://127.0.0.1:{fixed}/
    cmdStop: {sys.executable} {echo.parent / "stopper.py"} {echo.parent / "stopped"} ${{PID}}
    metadata: {{llamastudio: {{reserve: {{CPU: 1000000}}}}}}
  sick-alive:
    cmd: {sys.executable} {echo} ${{PORT}} sick
    checkEndpoint: /alive
    metadata: {{llamastudio: {{reserve: {{CPU: 1000000}}}}}}
  sick-none:
    cmd: {sys.executable} {echo} ${{PORT}} sick
    checkEndpoint: none
    metadata: {{llamastudio: {{reserve: {{CPU: 1000000}}}}}}
  solo:
    cmd: ${{srv}} -m {models["llama"]} ${{small}}
  pair-a:
    cmd: ${{srv}} -m {models["qwen3"]} ${{small}}
  pair-b:
    cmd: ${{srv}} -m {models["llama"]} ${{small}}
  keeper:
    cmd: ${{srv}} -m {models["qwen3"]} ${{small}}
groups:
  solo: {{swap: true, exclusive: true, members: [solo]}}
  pair: {{swap: false, exclusive: false, members: [pair-a, pair-b]}}
  forever: {{persistent: true, swap: false, exclusive: false, members: [keeper]}}
hooks:
  on_startup:
    preload: [chat]
{extra}"""


def until(check: Callable[[], Any], what: str, timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        got = check()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout:.0f}s: {what}")
        time.sleep(0.2)


def states(studio: Studio) -> dict[str, str]:
    with studio.api() as api:
        return {m["name"]: m["state"] for m in api.get("/api/served").json()}


@pytest.fixture(scope="module")
def setup(
    tmp_path_factory: pytest.TempPathFactory, rig_bin: Callable[[str], Path], tiny_models: dict[str, Path]
) -> Iterator[tuple[Studio, Path, Callable[[str], str]]]:
    root = tmp_path_factory.mktemp("swap")
    echo = root / "echo.py"
    echo.write_text(ECHO)
    (root / "stopper.py").write_text(STOPPER)
    path = root / "llama-swap.yaml"
    server = rig_bin("llama-server")
    fixed = free_port()

    def text(extra: str = "") -> str:
        return config(server, tiny_models, echo, fixed, extra)

    path.write_text(text())
    env = {"LLAMASTUDIO_CONFIG_FILE": str(path), "SWAP_TEST_KEY": "sk-env"}
    studio = Studio(root / "studio", server, env=env, timeout=120)
    with studio:
        yield studio, path, text


def client(studio: Studio, key: str = "sk-file") -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{studio.gateway_url}/v1", api_key=key, max_retries=0, timeout=120)


def test_keys_from_the_config_are_enforced(setup: tuple[Studio, Path, Callable[[str], str]]) -> None:
    studio, _, _ = setup
    with pytest.raises(openai.AuthenticationError):
        client(studio, "sk-wrong").models.list()
    assert client(studio, "sk-env").models.list().data  # ${env.SWAP_TEST_KEY}
    assert client(studio, "sk-file").models.list().data


def test_listing_unlisted_alias_and_metadata(setup: tuple[Studio, Path, Callable[[str], str]]) -> None:
    studio, _, _ = setup
    c = client(studio)
    listed = {m.id: m.model_dump() for m in c.models.list().data}
    assert "hidden" not in listed and {"chat", "echo", "solo", "keeper"} <= set(listed)
    chat = listed["chat"]
    assert chat["name"] == "Tiny chat" and chat["description"] == "a tiny llama"
    assert chat["meta"] == {"llamaswap": {"ctx": 256, "who": "chat"}}  # nested macro, its type kept
    assert listed["gpt-4o-mini"]["name"] == "Tiny chat"  # includeAliasesInList: the alias listed too
    # served though unlisted, by name; and the alias reaches its model
    assert c.completions.create(model="hidden", prompt="hi", max_tokens=2).choices
    reply = c.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}], max_tokens=2
    )
    assert reply.choices and states(studio)["chat"] == "ready"
    with studio.api() as api:
        served = {m["name"]: m for m in api.get("/api/served").json()}
        cfg = api.get("/api/models/chat/config").json()["config"]
    assert served["hidden"]["unlisted"] is True and served["chat"]["title"] == "Tiny chat"
    assert cfg["args"][:2] == ["-c", "256"] and cfg["max_queue"] == 8  # the model's macro wins


def test_use_model_name_and_filters_reach_the_engine(
    setup: tuple[Studio, Path, Callable[[str], str]],
) -> None:
    studio, _, _ = setup
    reply = client(studio).chat.completions.create(
        model="echo",
        messages=[{"role": "user", "content": "hi"}],
        temperature=0.5,
        top_p=0.3,
        max_tokens=50,
    )
    received = json.loads(reply.choices[0].message.content or "")
    assert received["model"] == "upstream-name"
    assert "temperature" not in received and "top_p" not in received
    assert received["seed"] == 42 and received["max_tokens"] == 3
    assert received["messages"] == [{"role": "user", "content": "hi"}]


def test_proxy_and_cmd_stop(setup: tuple[Studio, Path, Callable[[str], str]]) -> None:
    """``proxy``: the command listens on a port of its own and requests go there; ``cmdStop``
    stops it, with ``${PID}``."""
    studio, path, _ = setup
    reply = client(studio).chat.completions.create(model="fixed", messages=[{"role": "user", "content": "x"}])
    assert json.loads(reply.choices[0].message.content or "")["model"] == "fixed"
    pid = studio.status("fixed")["pid"]
    with studio.api() as api:
        assert api.post("/api/models/fixed/stop").json()["state"] == "stopped"
    assert (path.parent / "stopped").read_text() == str(pid)


def test_check_endpoint_path_and_none(setup: tuple[Studio, Path, Callable[[str], str]]) -> None:
    """Both engines answer 503 on /health: one is ready by its checkEndpoint, the other with
    none (ready once started; its first request may come before it listens: retried here)."""
    studio, _, _ = setup
    c = client(studio)
    reply = c.chat.completions.create(model="sick-alive", messages=[{"role": "user", "content": "x"}])
    assert json.loads(reply.choices[0].message.content or "")["model"] == "sick-alive"

    def ask() -> bool:
        try:
            return bool(
                c.chat.completions.create(model="sick-none", messages=[{"role": "user", "content": "x"}])
            )
        except openai.APIError:
            return False

    until(ask, "sick-none answers")
    assert states(studio)["sick-none"] == "ready"


def test_exclusive_and_persistent_groups(setup: tuple[Studio, Path, Callable[[str], str]]) -> None:
    studio, _, _ = setup
    c = client(studio)

    def call(model: str) -> None:
        assert c.completions.create(model=model, prompt="x", max_tokens=1).choices

    for model in ("pair-a", "pair-b", "keeper", "chat"):
        call(model)
    now = states(studio)
    assert all(now[m] == "ready" for m in ("pair-a", "pair-b", "keeper", "chat")), now  # swap: false
    call("solo")  # exclusive: the other groups (and ungrouped models) stop; persistent stays
    stopped = ("pair-a", "pair-b", "chat")
    after = until(
        lambda: (now := states(studio)) and all(now[m] == "stopped" for m in stopped) and now,
        "solo's exclusive start stops pair-a, pair-b and chat",
    )
    assert after["solo"] == "ready" and after["keeper"] == "ready", after
    call("pair-a")  # pair is not exclusive: solo keeps running
    now = states(studio)
    assert now["pair-a"] == "ready" and now["solo"] == "ready" and now["keeper"] == "ready", now


def test_the_watched_file_applies_changes_and_keeps_the_last_good_state(
    setup: tuple[Studio, Path, Callable[[str], str]], tiny_models: dict[str, Path]
) -> None:
    studio, path, text = setup
    doc = yaml.safe_load(text())
    del doc["models"]["hidden"]
    doc["models"]["fresh"] = {"cmd": "${srv} -m " + str(tiny_models["qwen3"]) + " ${small}", "ttl": 30}
    path.write_text(yaml.safe_dump(doc))
    until(lambda: "fresh" in (now := states(studio)) and "hidden" not in now, "the edit is applied")
    with studio.api() as api:
        status = api.get("/api/served/config-file").json()
    assert status["ok"] is True and status["path"] == str(path.resolve()) and "fresh" in status["imported"]
    assert {"key": "logLevel", "why": "the studio's log level is LLAMASTUDIO_LOG_LEVEL"} in status["ignored"]

    good = path.read_text()
    with connect(f"ws://127.0.0.1:{studio.port}/ws", open_timeout=30) as ws:
        ws.recv(timeout=30)  # hello
        path.write_text(good.replace("${small}", "${nope}", 1))  # an unknown macro
        event = until(lambda: _config_event(ws), "a config_file event on /ws")
    assert event["ok"] is False and "unknown macro ${nope}" in event["error"]
    with studio.api() as api:
        bad = until(
            lambda: (got := api.get("/api/served/config-file").json()) and not got["ok"] and got,
            "the error shows",
        )
    assert "unknown macro ${nope}" in bad["error"]
    assert "fresh" in states(studio) and "hidden" not in states(studio)  # the previous good state serves
    assert client(studio).completions.create(model="fresh", prompt="x", max_tokens=1).choices
    path.write_text(good)
    with studio.api() as api:
        until(lambda: api.get("/api/served/config-file").json()["ok"], "the fixed file is applied")


def _config_event(ws: ClientConnection) -> dict[str, Any] | None:
    """The next ``config_file`` event on /ws (other events skipped), or None for now."""
    try:
        event: dict[str, Any] = json.loads(ws.recv(timeout=1))
    except TimeoutError:
        return None
    return event if event.get("type") == "config_file" else None


def test_import_answer_lists_what_is_ignored(
    setup: tuple[Studio, Path, Callable[[str], str]], tiny_models: dict[str, Path]
) -> None:
    studio, _, _ = setup
    text = "startPort: 9000\nmodels:\n  api-one:\n    cmd: llama-server -m {} --port ${{PORT}}\n"
    with studio.api() as api:
        r = api.post("/api/served/import", json={"format": "llama-swap", "text": text.format("/nope.gguf")})
        assert r.status_code == 404 and "/nope.gguf" in r.json()["error"]["message"], r.text
        ok = api.post(
            "/api/served/import", json={"format": "llama-swap", "text": text.format(tiny_models["llama"])}
        )
        assert ok.status_code == 200, ok.text
        answer = ok.json()
        assert answer["imported"] == ["api-one"] and answer["api_keys"] is None  # no apiKeys: kept
        assert answer["ignored"] == [
            {"key": "startPort", "why": "the studio picks a free port for each start (${PORT})"}
        ]
        with pytest.raises(openai.AuthenticationError):
            client(studio, "sk-wrong").models.list()
        assert api.delete("/api/models/api-one/config").status_code == 204
        secret = (
            "models: {a: {cmd: 'llama-server -m x --port ${PORT}', metadata: {t: '${env.SWAP_TEST_KEY}'}}}"
        )
        refused = api.post("/api/served/import", json={"format": "llama-swap", "text": secret})
        assert refused.status_code == 403 and "${env.SWAP_TEST_KEY}" in refused.json()["error"]["message"]
        assert "sk-env" not in refused.text  # the value is never shown
        bad = api.post("/api/served/import", json={"format": "llama-swap", "text": "models: {a: {cmd: 3}}"})
        assert bad.status_code == 400 and "model 'a'" in bad.json()["error"]["message"]
        assert "a" not in {m["name"] for m in api.get("/api/served").json()}  # nothing half-imported


MALFORMED = {
    "wrong type, top level": ("apiKeys: sk\nmodels: {m: {cmd: srv}}\n", "apiKeys"),
    "wrong type, model": ("models: {m: {cmd: srv --port ${PORT}, ttl: soon}}\n", "ttl"),
    "wrong type, group": ("models: {m: {cmd: srv}}\ngroups: {g: {swap: 1, members: [m]}}\n", "swap"),
    "unknown macro": ("models: {m: {cmd: 'srv ${nope}'}}\n", "unknown macro"),
    "macro cycle": ("macros: {a: '${b}', b: '${a}'}\nmodels: {m: {cmd: 'srv ${a}'}}\n", "cycle"),
    "5000-deep YAML": ("a: " + "[" * 5000 + "]" * 5000 + "\nmodels: {}\n", "nested deeper"),
}


@pytest.mark.parametrize("case", MALFORMED)
def test_malformed_through_the_api_one_400_nothing_stored(
    setup: tuple[Studio, Path, Callable[[str], str]], case: str
) -> None:
    studio, _, _ = setup
    text, needle = MALFORMED[case]
    with studio.api() as api:
        before = {m["name"] for m in api.get("/api/served").json()}
        r = api.post("/api/served/import", json={"format": "llama-swap", "text": text})
        assert r.status_code == 400 and needle in r.json()["error"]["message"], r.text
        assert {m["name"] for m in api.get("/api/served").json()} == before


def test_300_models_one_bad_nothing_half_imported(
    setup: tuple[Studio, Path, Callable[[str], str]], tiny_models: dict[str, Path]
) -> None:
    studio, _, _ = setup
    models = "".join(
        f"  bulk{i}:\n    cmd: llama-server -m {tiny_models['llama']} --port ${{PORT}} -c 256\n"
        for i in range(300)
    )
    bad = (
        "models:\n"
        + models
        + f"  bulk-bad:\n    cmd: llama-server -m {tiny_models['llama']} -c 256 --nope 1\n"
    )
    with studio.api() as api:
        r = api.post("/api/served/import", json={"format": "llama-swap", "text": bad})
        assert r.status_code == 400 and "bulk-bad" in r.json()["error"]["message"], r.text
        assert not any(m["name"].startswith("bulk") for m in api.get("/api/served").json())


def test_peers_go_to_the_registry_and_the_export_round_trips(
    setup: tuple[Studio, Path, Callable[[str], str]],
) -> None:
    studio, _, _ = setup
    with studio.api() as api:
        # the keys (sk-env is the owner's ${env.X}) are not for an API caller without the command
        # permission: apiKeys left out (an import without it keeps them); the owner's CLI has them
        shown = yaml.safe_load(api.get("/api/served/export", params={"format": "llama-swap"}).text)
        assert "apiKeys" not in shown and "sk-env" not in json.dumps(shown) and shown["logLevel"] == "debug"
        doc = yaml.safe_load(studio.cli("models", "export").stdout)
        assert doc["apiKeys"] == ["sk-file", "sk-env"] and doc["logLevel"] == "debug"
        assert {k: v for k, v in doc.items() if k != "apiKeys"} == shown
        assert doc["groups"]["forever"]["persistent"] is True
        assert doc["models"]["fixed"]["proxy"].startswith("http://127.0.0.1:")
        assert doc["models"]["echo"]["useModelName"] == "upstream-name"
        doc["peers"] = {"far": {"proxy": "http://127.0.0.1:9", "models": ["remote-x"], "apiKey": "sk-peer"}}
        text = yaml.safe_dump(doc)
        r = api.post("/api/served/import", json={"format": "llama-swap", "text": text})
        assert r.status_code == 403 and "runs a command" in r.json()["error"]["message"]  # commands: off
        file = studio.root / "exported.yaml"
        file.write_text(text)
        done = studio.cli("models", "import", str(file))  # the data directory's owner may
        assert "imported echo" in done.stdout and "ignored logLevel: " in done.stderr, done
        peers = {p["name"]: p for p in api.get("/api/peers").json()}
        assert peers["far"]["imported"] is True and peers["far"]["has_key"] is True
        again = yaml.safe_load(studio.cli("models", "export").stdout)
        assert again == doc  # storage and export lose nothing
        shown = yaml.safe_load(api.get("/api/served/export", params={"format": "llama-swap"}).text)
        assert shown["peers"]["far"]["apiKey"] == "${env.LLAMASTUDIO_REDACTED_KEY}", shown["peers"]
        assert "sk-peer" not in json.dumps(shown)


def test_preload_and_keys_after_a_restart(setup: tuple[Studio, Path, Callable[[str], str]]) -> None:
    studio, _, _ = setup
    studio.stop()
    studio.start()
    until(lambda: states(studio).get("chat") == "ready", "chat is preloaded after the restart")
    with pytest.raises(openai.AuthenticationError):
        client(studio, "sk-wrong").models.list()
    assert client(studio).models.list().data


def test_serve_config_flag(
    tmp_path: Path, rig_bin: Callable[[str], Path], tiny_models: dict[str, Path]
) -> None:
    """``llamastudio serve --config FILE`` watches FILE (as LLAMASTUDIO_CONFIG_FILE does); a file
    that is bad from the start is reported, and the studio still starts."""
    path = tmp_path / "swap.yaml"
    path.write_text("models:\n  m:\n    cmd: srv ${missing}\n")
    studio = Studio(tmp_path / "s", rig_bin("llama-server"))
    argv = [sys.executable, "-m", "llamastudio", "serve", "--port", str(studio.port)]
    argv += ["--gateway-port", str(studio.gateway_port), "--config", str(path)]
    studio.root.mkdir(parents=True)
    with open(studio.log_path, "ab") as log:
        studio.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=studio.env)
    try:
        wait_healthy(studio.proc, [f"{studio.api_url}/"], 60, studio.log, "studio")
        with studio.api() as api:
            status = api.get("/api/served/config-file").json()
            assert status["path"] == str(path.resolve()) and status["ok"] is False
            assert "unknown macro ${missing}" in status["error"]
            path.write_text(f"models:\n  m:\n    cmd: llama-server -m {tiny_models['llama']} -c 256\n")
            until(lambda: api.get("/api/served/config-file").json()["ok"], "the fixed file is applied")
            assert "m" in {m["name"] for m in api.get("/api/served").json()}
    finally:
        studio.stop()


def test_llama_swaps_own_example_imports_whole(
    tmp_path: Path, rig_bin: Callable[[str], Path], tiny_models: dict[str, Path]
) -> None:
    """llama-swap's config.example.yaml, every key, with the rig's binary and a tiny model, through
    the CLI of the studio's owner (it has commands: docker): stored whole, and what cannot apply
    is said on stderr."""
    server = rig_bin("llama-server")
    text = example(str(tiny_models["llama"])).replace(SERVER, str(server))
    text = text.replace("https://openrouter.ai/api", "http://127.0.0.1:9/api")  # never the internet
    text = text.replace("http://192.168.1.23", "http://127.0.0.1:9")
    env = {"API_KEY_1": "sk-env-1", "API_KEY_2": "sk-env-2", "OR_KEY": "sk-or"}
    with Studio(tmp_path / "s", server, env=env) as studio:
        file = tmp_path / "config.yaml"
        file.write_text(text)
        done = studio.cli("models", "import", str(file))
        assert done.stdout.split() == [
            "imported",
            "llama",
            "imported",
            "qwen-unlisted",
            "imported",
            "docker-llama",
        ]
        assert "ignored startPort: the studio picks a free port" in done.stderr
        assert "ignored models.llama.sendLoadingState" in done.stderr
        with studio.api() as api:
            served = {m["name"]: m for m in api.get("/api/served").json()}
            peers = {p["name"] for p in api.get("/api/peers").json()}
        assert served["llama"]["title"] == "llama 3.1 8B" and served["qwen-unlisted"]["unlisted"] is True
        assert peers == {"llama-swap-peer", "openrouter"}
        with pytest.raises(openai.AuthenticationError):
            client(studio, "sk-wrong").models.list()
        ids = {m.id for m in client(studio, "sk-hunter2").models.list().data}
        assert {"llama", "docker-llama"} <= ids and "qwen-unlisted" not in ids
