"""llama-swap configs with every key's documented meaning (issue 20, items 1-2).

Parsing and export are checked on a config that uses every key of llama-swap's own
``config.example.yaml`` (adapted to the rig's binary and tiny models); malformed configs each get
one clear 400; the group rules are checked on the pure policy. The behaviour through the gateway
(with the real ``openai`` SDK against a real ``llamastudio serve``) is in
``test_llama_swap_serve.py``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from alembic import command

from llamastudio.errors import InvalidInput
from llamastudio.gateway.filters import rewrite
from llamastudio.runtime.policy import View, place
from llamastudio.serving.llamaswap import export_llama_swap, read_llama_swap

SERVER = "/opt/llama/llama-server"
ENV = {"HOME": "/home/u", "API_KEY_1": "sk-env-1", "API_KEY_2": "sk-env-2", "OR_KEY": "sk-or"}


def example(model: str = "/models/llama.gguf") -> str:
    """llama-swap's config.example.yaml, every key, adapted."""
    return f"""
healthCheckTimeout: 500
logLevel: info
logTimeFormat: ""
logToStdout: "proxy"
metricsMaxInMemory: 1000
captureBuffer: 15
startPort: 10001
sendLoadingState: true
includeAliasesInList: false
macros:
  "latest-llama": >
    {SERVER}
    --port ${{PORT}}
  "default_ctx": 4096
  "default_args": "--ctx-size ${{default_ctx}}"
  "models_dir": "${{env.HOME}}/models"
apiKeys:
  - "sk-hunter2"
  - "${{env.API_KEY_1}}"
  - "${{env.API_KEY_2}}"
models:
  "llama":
    macros:
      "default_ctx": 16384
      "temp": 0.7
    cmd: |
      # ${{latest-llama}} is a macro that is defined above
      ${{latest-llama}}
      --model {model}
      ${{default_args}}
      --temp ${{temp}}
    name: "llama 3.1 8B"
    description: "A small but capable model used for quick testing"
    env:
      - "CUDA_VISIBLE_DEVICES=0,1,2"
    proxy: http://127.0.0.1:8999
    aliases:
      - "gpt-4o-mini"
      - "gpt-3.5-turbo"
    checkEndpoint: /custom-endpoint
    ttl: 60
    useModelName: "qwen:qwq"
    filters:
      stripParams: "temperature, top_p, top_k, model"
      setParams:
        temperature: 0.7
        top_p: 0.9
        model: "never-set"
    metadata:
      port: ${{PORT}}
      temperature: ${{temp}}
      note: "The ${{MODEL_ID}} is running on port ${{PORT}} temp=${{temp}}, context=${{default_ctx}}"
      a_list: [1, 1.23, "macros are OK in list and dictionary types: ${{MODEL_ID}}"]
      an_obj: {{a: "1", b: 2, c: ["${{temp}}", false, "model: ${{MODEL_ID}}"]}}
    concurrencyLimit: 0
    sendLoadingState: false
  "qwen-unlisted":
    unlisted: true
    cmd: {SERVER} --port ${{PORT}} -m {model} -ngl 0
  "docker-llama":
    proxy: "http://127.0.0.1:${{PORT}}"
    cmd: |
      docker run --name ${{MODEL_ID}}
      --init --rm -p ${{PORT}}:8080 -v /mnt/nvme/models:/models
      ghcr.io/ggml-org/llama.cpp:server
      --model '/models/Qwen2.5-Coder-0.5B-Instruct-Q4_K_M.gguf'
    cmdStop: docker stop ${{MODEL_ID}}
    metadata: {{llamastudio: {{reserve: {{CPU: 1000000}}}}}}
groups:
  "group1":
    swap: true
    exclusive: true
    members: ["llama", "qwen-unlisted"]
  "forever":
    persistent: true
    swap: false
    exclusive: false
    members: ["docker-llama"]
hooks:
  on_startup:
    preload: ["llama"]
peers:
  llama-swap-peer:
    proxy: http://192.168.1.23
    models: [model_a, model_b, embeddings/model_c]
  openrouter:
    proxy: https://openrouter.ai/api
    apiKey: ${{env.OR_KEY}}
    models: [meta-llama/llama-3.1-8b-instruct]
    filters:
      stripParams: "temperature, top_p"
      setParams:
        provider: {{data_collection: "deny", zdr: true}}
"""


def test_every_key_of_the_example_has_its_meaning() -> None:
    got = read_llama_swap(example(), [], ENV)
    llama, unlisted, docker = got.configs
    # macros: per-model over global, macro-in-macro bound in the model's scope, env, MODEL_ID
    assert llama.model == "/models/llama.gguf"
    assert llama.args == ["--ctx-size", "16384", "--temp", "0.7"]
    assert docker.command is not None and docker.command[:4] == ["docker", "run", "--name", "docker-llama"]
    assert "${PORT}:8080" in docker.command  # the runtime fills it at each start
    assert llama.metadata == {
        "port": "${PORT}",
        "temperature": 0.7,  # a whole-string macro keeps its type
        "note": "The llama is running on port ${PORT} temp=0.7, context=16384",
        "a_list": [1, 1.23, "macros are OK in list and dictionary types: llama"],
        "an_obj": {"a": "1", "b": 2, "c": [0.7, False, "model: llama"]},
    }
    assert (llama.title, llama.description) == (
        "llama 3.1 8B",
        "A small but capable model used for quick testing",
    )
    assert llama.env == {"CUDA_VISIBLE_DEVICES": "0,1,2"} and llama.aliases == [
        "gpt-4o-mini",
        "gpt-3.5-turbo",
    ]
    assert llama.check_endpoint == "/custom-endpoint" and llama.ttl == 60
    assert llama.use_model_name == "qwen:qwq"
    assert llama.strip_params == ["temperature", "top_p", "top_k"]  # never `model`
    assert llama.set_params == {"temperature": 0.7, "top_p": 0.9}
    assert llama.max_concurrency == 0 and llama.start_timeout == 500
    assert unlisted.unlisted and not llama.unlisted
    assert docker.cmd_stop == ["docker", "stop", "docker-llama"] and docker.proxy is None  # the default
    assert llama.proxy == "http://127.0.0.1:8999"
    assert (llama.group, llama.group_swap, llama.group_exclusive, llama.group_persistent) == (
        "group1", True, True, False,
    )  # fmt: skip
    assert (docker.group, docker.group_swap, docker.group_exclusive, docker.group_persistent) == (
        "forever", False, False, True,
    )  # fmt: skip
    assert llama.preload and not unlisted.preload
    assert got.api_keys == ["sk-hunter2", "sk-env-1", "sk-env-2"]
    assert [p.name for p in got.peers or []] == ["llama-swap-peer", "openrouter"]
    router = (got.peers or [])[1]
    assert router.api_key == "sk-or" and router.strip_params == ["temperature", "top_p"]
    assert router.set_params == {"provider": {"data_collection": "deny", "zdr": True}}
    # what the studio cannot apply: reported, each with why, and kept for export
    ignored = {i["key"]: i["why"] for i in got.ignored}
    assert set(ignored) == {
        "logLevel", "logTimeFormat", "logToStdout", "metricsMaxInMemory", "captureBuffer", "startPort",
        "sendLoadingState", "models.llama.sendLoadingState",
    }  # fmt: skip
    assert all(ignored.values())
    assert got.settings["startPort"] == 10001 and got.settings["healthCheckTimeout"] == 500
    assert got.settings["includeAliasesInList"] is False  # applied by the gateway
    assert unlisted.ttl == 0 and docker.ttl == 0  # no ttl: llama-swap never unloads it for idling


def test_round_trip_is_lossless() -> None:
    first = read_llama_swap(example(), [], ENV)
    argv = {c.name: c.command or [SERVER, "-m", c.model, "--port", "${PORT}", *c.args] for c in first.configs}
    text = export_llama_swap(first.configs, argv, first.api_keys, first.peers, first.settings)
    data = yaml.safe_load(text)
    assert data["models"]["qwen-unlisted"]["unlisted"] is True
    assert data["groups"]["forever"] == {
        "swap": False, "exclusive": False, "persistent": True, "members": ["docker-llama"],
    }  # fmt: skip
    assert data["hooks"] == {"on_startup": {"preload": ["llama"]}}
    assert data["models"]["llama"]["filters"]["stripParams"] == "temperature, top_p, top_k"
    again = read_llama_swap(text, [], {})  # nothing left to expand: no environment needed
    assert again.configs == first.configs
    assert again.api_keys == first.api_keys and again.peers == first.peers
    assert again.settings == first.settings and again.ignored == first.ignored


def _bad(text: str, *needles: str) -> None:
    with pytest.raises(InvalidInput) as exc:
        read_llama_swap(text, [], ENV)
    for needle in needles:
        assert needle in exc.value.message, exc.value.message


M = "models:\n  m:\n    cmd: srv --port ${PORT}\n"


@pytest.mark.parametrize(
    ("text", "needles"),
    [
        ("- a list\n", ["`models:` mapping"]),
        ("models: [a]\n", ["`models:` mapping"]),
        ("models:\n  m: 3\n", ["model 'm'", "mapping"]),
        ("models:\n  m: {cmd: [a]}\n", ["model 'm'", "cmd", "string"]),
        (M + "    ttl: soon\n", ["model 'm'", "ttl", "number"]),
        (M + "    aliases: x\n", ["aliases", "list"]),
        (M + "    env: {A: b}\n", ["env", "KEY=VALUE"]),
        (M + "    unlisted: 'yes'\n", ["unlisted", "true or false"]),
        (M + "    filters: {stripParams: [a]}\n", ["stripParams", "string"]),
        (M + "    filters: {setParams: 3}\n", ["setParams", "mapping"]),
        (M + "    metadata: [1]\n", ["metadata", "mapping"]),
        (M + "    concurrencyLimit: -1\n", ["concurrencyLimit"]),
        (M + "    macros: {a: [1]}\n", ["macro 'a'", "string, number"]),
        (M + "    macros: {PORT: 1}\n", ["reserved"]),
        (M + "    macros: {'a b': 1}\n", ["macro name"]),
        ("healthCheckTimeout: x\n" + M, ["healthCheckTimeout", "number"]),
        ("apiKeys: sk\n" + M, ["apiKeys", "list"]),
        ("apiKeys: ['']\n" + M, ["apiKeys", "non-empty"]),
        ("macros: 3\n" + M, ["macros", "mapping"]),
        ("groups: {g: {members: [nope]}}\n" + M, ["group 'g'", "'nope' is not a model"]),
        ("groups: {g: {swap: 1, members: [m]}}\n" + M, ["swap", "true or false"]),
        ("groups: {g: {members: [m]}, h: {members: [m]}}\n" + M, ["already in group 'g'"]),
        ("groups: {g: {}}\n" + M, ["members", "required"]),
        ("hooks: {on_startup: {preload: [nope]}}\n" + M, ["preload", "'nope' is not a model"]),
        ("peers: {p: {models: [a]}}\n" + M, ["peer 'p'", "proxy", "required"]),
        ("peers: {p: {proxy: 'http://x', models: a}}\n" + M, ["peer 'p'", "models", "list"]),
        # macros: unknown, cycles, an unset environment variable
        ("models:\n  m:\n    cmd: srv ${nope}\n", ["unknown macro ${nope}"]),
        ("macros: {a: '${b}', b: '${a}'}\n" + "models:\n  m:\n    cmd: srv ${a}\n", ["cycle", "a → b → a"]),
        ("macros: {a: 'x ${a}'}\n" + "models:\n  m:\n    cmd: srv ${a}\n", ["cycle", "a → a"]),
        ("models:\n  m:\n    cmd: srv ${env.NOT_SET_ANYWHERE}\n", ["'NOT_SET_ANYWHERE'", "not set"]),
        ("apiKeys: ['${env.NOPE}']\n" + M, ["'NOPE'", "not set"]),
        # an expansion bomb: each level doubles; refused at the size bound, not built
        (
            "macros:\n"
            + "".join(
                f"  m{i}: '${{m{i - 1}}}${{m{i - 1}}}'\n" if i else "  m0: xxxxxxxx\n" for i in range(40)
            )
            + "models:\n  m:\n    cmd: srv ${m39}\n",
            ["longer than"],
        ),
        ("a: " + "[" * 5000 + "]" * 5000 + "\n" + M, ["nested deeper"]),
        ("models:\n  m:\n    cmd: srv\n    metadata: " + "{a: " * 5000 + "1" + "}" * 5000, ["nested deeper"]),
        ("models: {[1]: {cmd: x}}\n", ["YAML"]),
        ("a:\n  " + "- " * 5000 + "x\n" + M, ["nested deeper"]),
        # 9000 metadata strings of one 100 KiB macro: 900 MB if built; refused at 32 MiB in all
        (
            f"macros: {{big: {'x' * 100_000}}}\n"
            + "models: {m: {cmd: srv, metadata: {l: ["
            + ", ".join(["'${big}'"] * 9000)
            + "]}}}\n",
            ["more than 32 MiB in all"],
        ),
        # an anchor bomb: 9^7 values from a few lines, refused at 10000 (never walked whole)
        (
            "a: &a [x,x,x,x,x,x,x,x,x]\n"
            + "".join(
                f"{n}: &{n} [{', '.join([f'*{p}'] * 9)}]\n" for p, n in zip("abcdef", "bcdefg", strict=True)
            )
            + "models: {m: {cmd: srv, metadata: {x: *g}}}\n",
            ["metadata: more than 10000 values"],
        ),
        (
            "a: &a [x,x,x,x,x,x,x,x,x]\n"
            + "".join(
                f"{n}: &{n} [{', '.join([f'*{p}'] * 9)}]\n" for p, n in zip("abcdef", "bcdefg", strict=True)
            )
            + "models: {m: {cmd: srv, filters: {setParams: {y: *g}}}}\n",
            ["setParams: more than 10000 values"],
        ),
    ],
)
def test_malformed_configs_are_one_clear_400(text: str, needles: list[str]) -> None:
    _bad(text, *needles)


def test_300_models_with_one_bad_is_refused_naming_it() -> None:
    models = "".join(
        f"  m{i}:\n    cmd: {SERVER} -m /m{i}.gguf --port ${{PORT}}\n    ttl: 5\n" for i in range(300)
    )
    assert len(read_llama_swap("models:\n" + models, [], ENV).configs) == 300
    _bad("models:\n" + models + "  last:\n    cmd: srv\n    ttl: '5'\n", "model 'last'", "ttl")


def _v(name: str, group: str | None = None, **kw: object) -> View:
    kw.setdefault("reserve", {"CPU": 1})
    return View(name=name, state="ready", group=group, **kw)  # type: ignore[arg-type]


def test_groups_swap_exclusive_persistent_in_the_policy() -> None:
    budgets = {"CPU": 100}  # memory is plentiful: only the group rules stop models
    a = View(name="a", reserve={"CPU": 1}, group="solo", swap=True, exclusive=True)
    running = [
        _v("b", "pair", swap=False),
        _v("c", "pair", swap=False),
        _v("d", "keep", swap=False, persistent=True),
        _v("free"),
        _v("pinned", "pair", pinned=True),
    ]
    plan = place(a, running, budgets)  # exclusive: every other non-persistent, unpinned model
    assert plan.start is False and set(plan.evict) == {"b", "c", "free"}
    b2 = View(name="b2", reserve={"CPU": 1}, group="pair", swap=False, exclusive=False)
    assert place(b2, running, budgets).start  # swap: false, not exclusive: runs beside them all
    s = View(name="s2", reserve={"CPU": 1}, group="solo", swap=True, exclusive=False)
    assert place(s, [*running, _v("a", "solo")], budgets).evict == ("a",)  # swap: one at a time
    # persistent: not stopped for another group's model even when memory is short
    tight = View(name="x", reserve={"CPU": 60}, group="pair", swap=False)
    assert place(tight, [_v("d", "keep", persistent=True, reserve={"CPU": 50})], budgets).possible is False
    assert place(tight, [_v("e", "other", reserve={"CPU": 50})], budgets).evict == ("e",)


def test_filters_rewrite_the_json_body_only() -> None:
    body = b'{"model":"alias","temperature":0.5,"top_p":1,"messages":[{"role":"user","content":"\xc3\xa9"}]}'
    out = json.loads(rewrite(body, ["temperature", "model"], {"seed": 1, "model": "x"}, "upstream"))
    assert out == {"model": "upstream", "top_p": 1, "seed": 1, "messages": [{"role": "user", "content": "é"}]}
    kept = json.loads(rewrite(body, ["model"], {"model": "x"}, None))
    assert kept["model"] == "alias"  # `model` is never stripped nor set by the params
    for raw in (b"", b"not json", b"[1, 2]", b"--boundary\r\nmultipart"):
        assert rewrite(raw, ["a"], {"b": 1}, "m") == raw  # not a JSON object: relayed as it came


def test_a_served_model_of_migration_0008_keeps_its_meaning(tmp_path: Path) -> None:
    """Migration 0009 gives an existing row llama-swap's fields with the meaning it had: a group
    is swap-only (members never run together, nothing else stopped), listed, no filters."""
    from sqlalchemy import text

    from llamastudio.serving.configs import ModelConfig
    from llamastudio.store import Database
    from llamastudio.store.db import alembic_config, make_engine
    from llamastudio.store.models import ServedModelRow

    path = tmp_path / "old.db"
    engine = make_engine(path)
    command.upgrade(alembic_config(engine), "0008")
    with engine.begin() as conn:
        conn.execute(
            text(
                'INSERT INTO served_models (name, model, args, auto, aliases, pinned, "group", '
                "max_concurrency, max_queue, env, preload, updated_at) VALUES ('m', '/m.gguf', '[]', 0, "
                "'[]', 0, 'g', 0, 64, '{}', 0, '2026-11-23 10:00:00')"
            )
        )
    engine.dispose()
    db = Database(path)  # migrates to the head
    try:
        with db.session() as s:
            cfg = ModelConfig.from_row(s.get(ServedModelRow, "m"))
        assert cfg.group == "g" and cfg.group_swap and not cfg.group_exclusive and not cfg.group_persistent
        assert not cfg.unlisted and cfg.metadata == {} and cfg.strip_params == [] and cfg.set_params == {}
        assert cfg.proxy is None and cfg.cmd_stop is None and cfg.source is None and cfg.extra == {}
    finally:
        db.close()


def test_filters_leave_a_body_that_is_not_a_json_object_unchanged() -> None:
    """stripParams/setParams on a body the gateway cannot read as an object (nested past Python's
    recursion limit, not JSON, a list): relayed as sent, for the engine to refuse — never a 500."""
    for body in (b"[" * 100_000, b"not json", b"[1, 2]", b""):
        assert rewrite(body, ["temperature"], {"top_k": 1}, "alias") == body
    out = json.loads(
        rewrite(b'{"model": "m", "temperature": 1, "x": 2}', ["temperature", "model"], {"top_k": 1}, None)
    )
    assert out == {"model": "m", "x": 2, "top_k": 1}
