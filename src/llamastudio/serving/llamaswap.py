"""llama-swap ``config.yaml``, read and written with the meaning llama-swap documents for each key
(its ``config.example.yaml``; macros in ``swapmacros.py``).

Per model: ``cmd`` (a llama-server command becomes a model + flags configuration, any other is
kept whole as a command), ``aliases``, ``ttl`` (absent: 0, never unloaded for idling — llama-swap's
default; memory still evicts it), ``env``, ``concurrencyLimit``, ``unlisted``,
``name`` / ``description`` / ``metadata`` (shown in ``/v1/models``), ``useModelName``,
``filters.stripParams`` / ``setParams`` (the gateway rewrites the body), ``checkEndpoint`` (the
readiness path), ``proxy`` (the URL requests and readiness checks go to instead of the port given
as ``${PORT}``), ``cmdStop`` (run to stop the engine, ``${PID}`` = its process; SIGKILL after the
grace period all the same);
``groups`` (``swap``, ``exclusive``, ``persistent``: see ``runtime/policy.py``);
``hooks.on_startup.preload``; ``healthCheckTimeout`` (each model's start timeout);
``includeAliasesInList`` (the gateway lists each alias as an entry of its own); ``apiKeys``
(accepted by the gateway besides its own key); ``peers`` (``PeerSpec``).

What the studio cannot apply is kept, so an export writes it back, and is listed in
``SwapImport.ignored`` as (key, why) — never dropped without a word. Studio-only fields (pin,
queue, engine …) travel in ``metadata.llamastudio``, which llama-swap passes through.
"""

from __future__ import annotations

import math
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from llamastudio.engines.registry import Engine
from llamastudio.errors import InvalidInput
from llamastudio.serving.configs import MAX_BYTES, MAX_COUNT, MAX_TTL, RESERVED_FLAGS, ModelConfig
from llamastudio.serving.fields import Fields, kind, load_yaml
from llamastudio.serving.peers import PeerSpec
from llamastudio.serving.swapmacros import Scope, check_nodes, read_macros

MAX_MODELS = 10_000
MIN_HEALTH = 15  # llama-swap raises a smaller healthCheckTimeout to this
_DEFAULT_PROXIES = ("http://127.0.0.1:${PORT}", "http://localhost:${PORT}")
# top-level keys kept for export but not applied, and why
_GLOBAL_IGNORED = {
    "logLevel": "the studio's log level is LLAMASTUDIO_LOG_LEVEL",
    "logTimeFormat": "the studio's log format is its own",
    "logToStdout": "engine logs are kept per model (the Logs view, GET /api/models/{id}/logs)",
    "metricsMaxInMemory": "the studio keeps Prometheus counters (/metrics), not a list of requests",
    "captureBuffer": "the studio does not capture request bodies",
    "startPort": "the studio picks a free port for each start (${PORT})",
    "sendLoadingState": "loading progress is shown in the UI and /api/served, not in the reply",
}
_GLOBAL_KEYS = {"healthCheckTimeout", "macros", "apiKeys", "models", "groups", "hooks", "peers"}
_GLOBAL_KEPT = {"includeAliasesInList"}  # applied by the gateway from the stored settings
_MODEL_IGNORED = {
    "sendLoadingState": _GLOBAL_IGNORED["sendLoadingState"],
}
_MODEL_KEYS = {
    "cmd", "macros", "aliases", "ttl", "env", "concurrencyLimit", "unlisted", "name", "description",
    "metadata", "useModelName", "filters", "checkEndpoint", "cmdStop", "proxy", "sendLoadingState",
}  # fmt: skip


@dataclass
class SwapImport:
    """Everything a llama-swap config says, as the studio holds it."""

    configs: list[ModelConfig]
    api_keys: list[str] | None = None  # None: the config has no `apiKeys` (the stored ones stay)
    peers: list[PeerSpec] | None = None  # None: the config has no `peers`
    settings: dict[str, Any] = field(default_factory=dict)  # top-level keys kept for export
    ignored: list[dict[str, str]] = field(default_factory=list)  # {"key", "why"}


def _is_llama_server(argv: list[str]) -> bool:
    return (
        bool(argv)
        and Path(argv[0]).name.startswith("llama-server")
        and any(a in ("-m", "--model") or a.startswith("--model=") for a in argv)
    )


def _from_server_argv(name: str, argv: list[str], engines: list[Engine]) -> ModelConfig:
    """``llama-server -m M --port ${PORT} <flags>`` → model M, flags, and the engine owning the binary."""
    model = ""
    args: list[str] = []
    it = iter(argv[1:])
    for token in it:
        flag, eq, inline = token.partition("=")
        if flag in ("-m", "--model"):
            model = inline if eq else next(it, "")
        elif flag in RESERVED_FLAGS or flag in ("-a", "--alias"):
            if not eq:
                next(it, None)
        else:
            args.append(token)
    binary = str(Path(argv[0]).expanduser())
    engine = next((e.id for e in engines if str(e.server) == binary), None)
    return ModelConfig(name=name, model=model, args=args, engine_id=engine)


def _split(cmd: str, f: Fields, key: str) -> list[str]:
    try:
        return shlex.split(cmd.replace("\\\n", " "), comments=True)
    except ValueError as exc:
        raise f.error(key, f"cannot be parsed: {exc}") from exc


def _uncomment(cmd: str) -> str:
    """``cmd`` without its comment lines, removed before macros expand (a macro named in a
    comment must not bring its lines into the command)."""
    return "\n".join(line for line in cmd.splitlines() if not line.lstrip().startswith("#"))


def _name(key: object, what: str) -> str:
    """A mapping key used as a name: YAML reads ``123:`` as a number, taken as ``"123"``."""
    if isinstance(key, str):
        return key
    if isinstance(key, int) and not isinstance(key, bool):
        return str(key)
    raise InvalidInput(f"{what} names must be strings (got {kind(key)})", field=what)


def _params(f: Fields, scope: Scope) -> tuple[list[str], dict[str, Any]]:
    """``filters``: ``stripParams`` (a comma-separated string) and ``setParams`` (a mapping);
    ``model`` is never stripped nor set (llama-swap's rule)."""
    filters = f.mapping("filters")
    strip_text = filters.text("stripParams") or ""
    strip = [
        p.strip()
        for p in scope.text(strip_text, "filters.stripParams").split(",")
        if p.strip() and p.strip() != "model"
    ]
    sets = filters.mapping("setParams").data
    check_nodes(sets, f"{f.where}: filters.setParams")
    return strip, {str(k): v for k, v in sets.items() if k != "model"}


def _model(
    name: str, f: Fields, scope: Scope, engines: list[Engine], out: SwapImport, health: float | None
) -> ModelConfig:
    for key in f.data:
        if key not in _MODEL_KEYS:
            out.ignored.append({"key": f"models.{name}.{key}", "why": "not a llama-swap key"})
        elif key in _MODEL_IGNORED and f.data[key] is not None:
            out.ignored.append({"key": f"models.{name}.{key}", "why": _MODEL_IGNORED[key]})
    cmd = f.text("cmd")
    if cmd is None:
        raise InvalidInput(f"model {name!r}: `cmd` (a string) is required", model=name, field="cmd")
    argv = _split(scope.text(_uncomment(cmd), "cmd"), f, "cmd")
    cfg = (
        _from_server_argv(name, argv, engines)
        if _is_llama_server(argv)
        else ModelConfig(name, "", command=argv)
    )
    cfg.aliases = f.names("aliases")
    cfg.ttl = f.number("ttl", 0, MAX_TTL)  # absent: llama-swap's 0 (never), unless default_ttl below
    cfg.env = f.env_list("env")
    cfg.max_concurrency = f.integer("concurrencyLimit", 0, 0, MAX_COUNT)
    cfg.unlisted = f.flag("unlisted")
    cfg.title = f.text("name")
    cfg.description = f.text("description")
    cfg.use_model_name = f.text("useModelName") or None
    cfg.strip_params, cfg.set_params = _params(f, scope)
    check = f.text("checkEndpoint")
    cfg.check_endpoint = scope.text(check, "checkEndpoint") if check else None
    stop = f.text("cmdStop")
    cfg.cmd_stop = _split(scope.text(_uncomment(stop), "cmdStop"), f, "cmdStop") if stop else None
    proxy = f.text("proxy")
    proxy = scope.text(proxy, "proxy").rstrip("/") if proxy else None
    cfg.proxy = proxy if proxy not in _DEFAULT_PROXIES else None  # the default: the port itself
    if "sendLoadingState" in f:
        cfg.extra = {"sendLoadingState": f.flag("sendLoadingState")}
    cfg.start_timeout = health
    metadata = scope.value(f.mapping("metadata").data)
    own = Fields(metadata.pop("llamastudio", None) or {}, f.where, name, "metadata.llamastudio")
    cfg.metadata = metadata
    _studio_fields(cfg, own)
    if cfg.ttl is None and not own.flag("default_ttl"):
        cfg.ttl = 0  # llama-swap unloads a model without `ttl` only to swap it (memory, here)
    return cfg


def _studio_fields(cfg: ModelConfig, meta: Fields) -> None:
    """``metadata.llamastudio``: what only the studio has (an export writes them there)."""
    cfg.pinned = meta.flag("pinned")
    cfg.max_queue = meta.integer("max_queue", cfg.max_queue, 0, MAX_COUNT)
    cfg.auto = meta.flag("auto")
    reserve = meta.mapping("reserve")
    if reserve.data:  # bytes per device (command configs need it: their memory is not estimated)
        cfg.reserve = {str(dev): reserve.integer(str(dev), 0, 0, MAX_BYTES) for dev in reserve.data}
    library_id = meta.text("model")
    if library_id:
        cfg.model = library_id  # a library id the cmd's path came from
    if "engine_id" in meta.data:
        cfg.engine_id = meta.text("engine_id")
    if "start_timeout" in meta:
        cfg.start_timeout = meta.number("start_timeout", 1, MAX_TTL)


def _groups(doc: Fields, names: set[str], by_name: dict[str, ModelConfig]) -> None:
    """``groups``: each member gets its group's name and rules (defaults: swap and exclusive on,
    persistent off, as llama-swap's)."""
    seen: dict[str, str] = {}
    for key, group in doc.mapping("groups").data.items():
        gname = _name(key, "group")
        g = Fields(group, f"group {gname!r}", path="groups." + gname)
        swap, exclusive, persistent = g.flag("swap", True), g.flag("exclusive", True), g.flag("persistent")
        if "members" not in g:
            raise g.error("members", "is required (a list of model ids)")
        for member in g.names("members"):
            if member not in names:
                raise g.error("members", f"{member[:60]!r} is not a model of this config")
            if member in seen:
                raise g.error("members", f"{member!r} is already in group {seen[member]!r} (one group each)")
            seen[member] = gname
            cfg = by_name[member]
            cfg.group, cfg.group_swap, cfg.group_exclusive, cfg.group_persistent = (
                gname, swap, exclusive, persistent,
            )  # fmt: skip


def _peers(doc: Fields, scope: Scope) -> list[PeerSpec]:
    out = []
    for key, value in doc.mapping("peers").data.items():
        pname = _name(key, "peer")
        p = Fields(value, f"peer {pname!r}", path="peers." + pname)
        url = p.text("proxy")
        if not url:
            raise p.error("proxy", "is required (the peer's base URL)")
        if "models" not in p:
            raise p.error("models", "is required (the model ids the peer serves)")
        strip, sets = _params(p, scope)
        key_text = p.text("apiKey")
        out.append(
            PeerSpec(
                name=pname,
                url=scope.text(url),
                api_key=scope.text(key_text) if key_text else None,
                models=p.names("models"),
                strip_params=strip,
                set_params=sets,
            )
        )
    return out


def read_llama_swap(text: str, engines: list[Engine], env: Mapping[str, str]) -> SwapImport:
    """Everything in a llama-swap ``config.yaml``; a value of the wrong type or out of range, an
    unknown macro, a macro cycle, an unset ``${env.X}`` is a 400 naming where (``fields.py``)."""
    data = load_yaml(text)
    if not isinstance(data, dict) or not isinstance(data.get("models"), dict):
        raise InvalidInput("a llama-swap config needs a `models:` mapping", field="models")
    if len(data["models"]) > MAX_MODELS:
        raise InvalidInput(f"more than {MAX_MODELS} models in one config", field="models")
    doc = Fields(data, "llama-swap config")
    out = SwapImport(configs=[])
    for key in data:
        if key in _GLOBAL_KEPT:
            out.settings[key] = doc.flag(key)
        elif key in _GLOBAL_IGNORED:
            out.settings[key] = data[key]
            out.ignored.append({"key": key, "why": _GLOBAL_IGNORED[key]})
        elif key not in _GLOBAL_KEYS:
            out.ignored.append({"key": str(key)[:100], "why": "not a llama-swap key"})
    health = doc.number("healthCheckTimeout", 0, MAX_TTL)
    if health is not None:
        out.settings["healthCheckTimeout"] = health
        health = max(float(health), MIN_HEALTH)
    top = Scope(read_macros(data.get("macros"), "macros"), env, None, "llama-swap config")
    for key, m in data["models"].items():
        name = _name(key, "model")
        f = Fields(m, f"model {name!r}", name)  # errors name the field within the model (details.model)
        scope = top.child(read_macros(f.data.get("macros"), f"model {name!r}"), name, f"model {name!r}")
        out.configs.append(_model(name, f, scope, engines, out, health))
    by_name = {c.name: c for c in out.configs}
    _groups(doc, set(by_name), by_name)
    for model in doc.mapping("hooks").mapping("on_startup").names("preload"):
        if model not in by_name:
            raise InvalidInput(f"hooks.on_startup.preload: {model[:60]!r} is not a model of this config")
        by_name[model].preload = True
    if "apiKeys" in data:
        out.api_keys = [top.text(k) for k in doc.texts("apiKeys")]
        if any(not k.strip() for k in out.api_keys):
            raise InvalidInput("apiKeys: every key must be a non-empty string", field="apiKeys")
    if "peers" in data:
        out.peers = _peers(doc, top)
    return out


def import_llama_swap(
    text: str, engines: list[Engine], env: Mapping[str, str] | None = None
) -> list[ModelConfig]:
    """The model configurations of a llama-swap config (``read_llama_swap`` for the rest)."""
    return read_llama_swap(text, engines, env or {}).configs


def _number(x: float) -> float | int:
    return int(x) if math.isfinite(x) and float(x).is_integer() else x


def _entry(c: ModelConfig, argv: list[str], health: float | None) -> dict[str, Any]:
    entry: dict[str, Any] = {"cmd": shlex.join(argv)}
    for key, value in (
        ("name", c.title),
        ("description", c.description),
        ("aliases", list(c.aliases)),
        ("ttl", None if c.ttl is None else _number(c.ttl)),
        ("env", [f"{k}={v}" for k, v in c.env.items()]),
        ("concurrencyLimit", c.max_concurrency),
        ("unlisted", c.unlisted),
        ("useModelName", c.use_model_name),
        ("checkEndpoint", c.check_endpoint),
        ("cmdStop", shlex.join(c.cmd_stop) if c.cmd_stop else None),
        ("proxy", c.proxy),
    ):
        if value:
            entry[key] = value
    if c.ttl == 0:
        entry["ttl"] = 0
    _put_filters(entry, c.strip_params, c.set_params)
    entry.update(c.extra)
    meta: dict[str, Any] = {
        "pinned": c.pinned,
        "max_queue": c.max_queue,
        "auto": c.auto,
        "model": c.model,
        "engine_id": c.engine_id,  # None: the model's pin or the default engine at load time
    }
    if c.reserve:
        meta["reserve"] = dict(c.reserve)
    if c.ttl is None:
        meta["default_ttl"] = True  # the studio's default TTL (llama-swap's absent ttl is 0)
    if c.start_timeout is not None and c.start_timeout != health:
        meta["start_timeout"] = _number(c.start_timeout)
    entry["metadata"] = {**c.metadata, "llamastudio": meta}
    return entry


def export_llama_swap(
    configs: list[ModelConfig],
    argv_of: dict[str, list[str]],
    api_keys: list[str] | None = None,
    peers: list[PeerSpec] | None = None,
    settings: dict[str, Any] | None = None,
) -> str:
    """``argv_of``: the exact argv (with ``${PORT}``) each model runs, from the runtime;
    ``settings``: top-level keys kept from an import (``SwapImport.settings``)."""
    data: dict[str, Any] = dict(settings or {})
    health = data.get("healthCheckTimeout")
    health = max(float(health), MIN_HEALTH) if isinstance(health, int | float) else None
    if api_keys:
        data["apiKeys"] = list(api_keys)
    data["models"] = {c.name: _entry(c, argv_of[c.name], health) for c in configs}
    groups: dict[str, dict[str, Any]] = {}
    for c in configs:
        if c.group:
            g = groups.setdefault(
                c.group,
                {"swap": c.group_swap, "exclusive": c.group_exclusive, "persistent": c.group_persistent},
            )
            g.setdefault("members", []).append(c.name)
    if groups:
        data["groups"] = groups
    preload = [c.name for c in configs if c.preload]
    if preload:
        data["hooks"] = {"on_startup": {"preload": preload}}
    if peers:
        data["peers"] = {p.name: _peer_entry(p) for p in peers}
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True)


def _peer_entry(p: PeerSpec) -> dict[str, Any]:
    entry: dict[str, Any] = {"proxy": p.url, "models": list(p.models)}
    if p.api_key:
        entry["apiKey"] = p.api_key
    _put_filters(entry, p.strip_params, p.set_params)
    return entry


def _put_filters(entry: dict[str, Any], strip: list[str], set_params: Mapping[str, Any]) -> None:
    """llama-swap's ``filters`` (``stripParams`` as its comma list, ``setParams``), when any."""
    filters: dict[str, Any] = {}
    if strip:
        filters["stripParams"] = ", ".join(strip)
    if set_params:
        filters["setParams"] = dict(set_params)
    if filters:
        entry["filters"] = filters
