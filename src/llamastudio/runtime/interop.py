"""Import and export model configurations as llama-swap ``config.yaml`` and llama-server
``--models-preset`` INI, so a user can move in from (or out to) either without retyping.

llama-swap: ``models.<name>.cmd`` (with ``${PORT}`` and ``macros``), ``aliases``, ``ttl``, ``env``
and ``concurrencyLimit``; ``groups`` with ``swap: true`` become exclusive groups (members never run
together). Studio-only fields (pin, queue) travel in ``metadata.llamastudio``, which llama-swap
ignores. A ``cmd`` that runs llama-server becomes a model + flags config; any other command is
kept whole (another engine under the same supervisor).

Preset INI: one section per model, ``model = <path>`` and one ``key = value`` per flag (the flag
without dashes; ``true`` for flags without a value), as llama-server's router reads it.
Studio-only fields travel in a ``; llamastudio: {json}`` comment line, which llama-server skips.
"""

from __future__ import annotations

import configparser
import io
import json
import re
import shlex
from pathlib import Path
from typing import Any

import yaml

from llamastudio.engines.registry import Engine
from llamastudio.errors import InvalidInput
from llamastudio.runtime.models import RESERVED_FLAGS, ModelConfig

_NEG_NUMBER = re.compile(r"^-\d")
_META = "; llamastudio: "


def _is_flag(token: str) -> bool:
    return token.startswith("-") and not _NEG_NUMBER.match(token) and token != "-"


def _split_cmd(cmd: str) -> list[str]:
    try:
        return shlex.split(cmd.replace("\\\n", " "), comments=True)
    except ValueError as exc:
        raise InvalidInput(f"cannot parse cmd {cmd!r}: {exc}") from exc


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


def _macros(text: str, macros: dict[str, Any]) -> str:
    for key, value in macros.items():
        text = text.replace("${" + str(key) + "}", str(value))
    return text


def import_llama_swap(text: str, engines: list[Engine]) -> list[ModelConfig]:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise InvalidInput(f"not valid YAML: {exc}") from exc
    if not isinstance(data, dict) or not isinstance(data.get("models"), dict):
        raise InvalidInput("a llama-swap config needs a `models:` mapping")
    macros = data.get("macros") or {}
    groups: dict[str, str] = {}
    for gname, group in (data.get("groups") or {}).items():
        if isinstance(group, dict) and group.get("swap", True):
            for member in group.get("members") or []:
                groups[str(member)] = str(gname)
    out = []
    for name, m in data["models"].items():
        if not isinstance(m, dict) or not isinstance(m.get("cmd"), str):
            raise InvalidInput(f"model {name!r}: `cmd` (a string) is required")
        argv = _split_cmd(_macros(m["cmd"], macros))
        if _is_llama_server(argv):
            cfg = _from_server_argv(str(name), argv, engines)
        else:
            cfg = ModelConfig(name=str(name), model="", command=argv)
        meta = (m.get("metadata") or {}).get("llamastudio") or {}
        cfg.aliases = [str(a) for a in m.get("aliases") or []]
        cfg.ttl = float(m["ttl"]) if m.get("ttl") is not None else None
        cfg.env = dict(str(e).split("=", 1) for e in m.get("env") or [] if "=" in str(e))
        cfg.max_concurrency = int(m.get("concurrencyLimit") or 0)
        cfg.group = groups.get(str(name))
        cfg.pinned = bool(meta.get("pinned", False))
        cfg.max_queue = int(meta.get("max_queue", cfg.max_queue))
        cfg.auto = bool(meta.get("auto", False))
        if meta.get("model"):
            cfg.model = str(meta["model"])  # a library id the cmd's path came from
        if "engine_id" in meta:
            cfg.engine_id = meta["engine_id"]
        out.append(cfg)
    return out


def export_llama_swap(configs: list[ModelConfig], argv_of: dict[str, list[str]]) -> str:
    """``argv_of``: the exact argv (with ``${PORT}``) each model runs, from the runtime."""
    models: dict[str, Any] = {}
    groups: dict[str, list[str]] = {}
    for c in configs:
        entry: dict[str, Any] = {"cmd": shlex.join(argv_of[c.name])}
        if c.aliases:
            entry["aliases"] = list(c.aliases)
        if c.ttl is not None:
            entry["ttl"] = int(c.ttl) if float(c.ttl).is_integer() else c.ttl
        if c.env:
            entry["env"] = [f"{k}={v}" for k, v in c.env.items()]
        if c.max_concurrency:
            entry["concurrencyLimit"] = c.max_concurrency
        meta = {
            "pinned": c.pinned,
            "max_queue": c.max_queue,
            "auto": c.auto,
            "model": c.model,
            "engine_id": c.engine_id,  # None: the model's pin or the default engine at load time
        }
        entry["metadata"] = {"llamastudio": meta}
        models[c.name] = entry
        if c.group:
            groups.setdefault(c.group, []).append(c.name)
    data: dict[str, Any] = {"models": models}
    if groups:
        data["groups"] = {g: {"swap": True, "exclusive": False, "members": ms} for g, ms in groups.items()}
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True)


def _args_to_ini(args: list[str]) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    i = 0
    while i < len(args):
        token = args[i]
        if not _is_flag(token):
            raise InvalidInput(f"cannot express {token!r} in a preset (values must follow a flag)")
        flag, eq, inline = token.partition("=")
        key = flag.lstrip("-")
        if eq:
            out.append((key, inline))
            i += 1
        elif i + 1 < len(args) and not _is_flag(args[i + 1]):
            out.append((key, args[i + 1]))
            i += 2
        else:
            out.append((key, "true"))
            i += 1
    return out


def _ini_to_args(items: list[tuple[str, str]], caps: set[str]) -> list[str]:
    args: list[str] = []
    for key, value in items:
        flag = next(
            (f for f in (f"--{key}", f"-{key}") if f in caps), f"--{key}" if len(key) > 3 else f"-{key}"
        )
        args += [flag] if value.lower() == "true" else [flag, value]
    return args


def export_preset(configs: list[ModelConfig], paths: dict[str, str]) -> str:
    """``paths``: the GGUF file each model loads. Models run by a custom command are left out."""
    buf = io.StringIO()
    buf.write("version = 1\n")
    for c in configs:
        if c.command is not None:
            continue
        buf.write(f"\n[{c.name}]\n")
        meta = {
            "model": c.model,
            "aliases": c.aliases,
            "ttl": c.ttl,
            "pinned": c.pinned,
            "group": c.group,
            "auto": c.auto,
            "max_concurrency": c.max_concurrency,
            "max_queue": c.max_queue,
            "engine_id": c.engine_id,
            "env": c.env,
        }
        buf.write(_META + json.dumps(meta) + "\n")
        buf.write(f"model = {paths[c.name]}\n")
        for key, value in _args_to_ini(c.args):
            buf.write(f"{key} = {value}\n")
    return buf.getvalue()


def import_preset(text: str, caps: set[str]) -> list[ModelConfig]:
    metas: dict[str, dict[str, Any]] = {}
    section = ""
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("[") and stripped.endswith("]"):
            section = stripped[1:-1]
        elif stripped.startswith(_META.strip()):
            try:
                metas[section] = json.loads(stripped[len(_META.strip()) :])
            except ValueError as exc:
                raise InvalidInput(f"[{section}]: unreadable llamastudio comment: {exc}") from exc
    parser = configparser.ConfigParser(interpolation=None, comment_prefixes=("#", ";"), strict=False)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    try:
        parser.read_string("[__top__]\n" + text)
    except configparser.Error as exc:
        raise InvalidInput(f"not a valid preset INI: {exc}") from exc
    glob = list(parser.items("*")) if parser.has_section("*") else []
    out = []
    for section in parser.sections():
        if section in ("__top__", "*"):
            continue
        meta = metas.get(section, {})
        items = [(k, v) for k, v in parser.items(section) if k not in parser.defaults()]
        values = dict(items)
        model = values.pop("model", "") or values.pop("m", "")
        if not model and "hf" not in values:
            raise InvalidInput(f"[{section}]: `model = <path>` is required")
        rest = [(k, v) for k, v in glob if k not in values] + [
            (k, v) for k, v in items if k not in ("model", "m")
        ]
        cfg = ModelConfig(name=section, model=str(meta.get("model") or model), args=_ini_to_args(rest, caps))
        for field_name in (
            "aliases",
            "ttl",
            "pinned",
            "group",
            "auto",
            "max_concurrency",
            "max_queue",
            "env",
        ):
            if meta.get(field_name) is not None:
                setattr(cfg, field_name, meta[field_name])
        cfg.engine_id = meta.get("engine_id")
        out.append(cfg)
    return out
