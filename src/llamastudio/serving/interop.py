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

Both are documents from outside: every field is read with its type and range checked
(``fields.py``), so a wrong one is a 400 naming the model and the field; nesting, size and macro
expansion are bounded. ``env`` in llama-swap is its list of ``"KEY=VALUE"`` strings.
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
from llamastudio.serving.configs import MAX_BYTES, MAX_COUNT, MAX_TTL, RESERVED_FLAGS, ModelConfig
from llamastudio.serving.fields import MAX_TEXT, Fields, kind, load_json, load_yaml

_NEG_NUMBER = re.compile(r"^-\d")
_META = "; llamastudio: "
MAX_CMD = 128 << 10  # characters of one expanded ``cmd`` (Linux refuses longer arguments anyway)


def _is_flag(token: str) -> bool:
    return token.startswith("-") and not _NEG_NUMBER.match(token) and token != "-"


def _split_cmd(cmd: str, f: Fields) -> list[str]:
    try:
        return shlex.split(cmd.replace("\\\n", " "), comments=True)
    except ValueError as exc:
        raise f.error("cmd", f"cannot be parsed: {exc}") from exc


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


def _macros(doc: Fields) -> dict[str, str]:
    """``macros``: names → scalar values (llama-swap takes strings, newer versions any scalar)."""
    macros = doc.mapping("macros")
    out: dict[str, str] = {}
    for key, value in macros.data.items():
        if not isinstance(key, str) or isinstance(value, list | dict) or value is None:
            raise InvalidInput(
                f"macros: {str(key)[:60]!r} must name a string or number (got {kind(value)})", field="macros"
            )
        out[key] = str(value).lower() if isinstance(value, bool) else str(value)
    return out


def _expand(cmd: str, macros: dict[str, str], f: Fields) -> str:
    """``${name}`` → the macro's value, refusing an expansion past MAX_CMD characters (a few
    large macros used many times would otherwise make gigabytes out of kilobytes)."""
    for key, value in macros.items():
        token = "${" + key + "}"
        n = cmd.count(token)
        if n and len(cmd) + n * (len(value) - len(token)) > MAX_CMD:
            raise f.error("cmd", f"is longer than {MAX_CMD} characters with its macros")
        cmd = cmd.replace(token, value)
    return cmd


def _name(key: object, what: str) -> str:
    """A mapping key used as a name: YAML reads ``123:`` as a number, taken as ``"123"``."""
    if isinstance(key, str):
        return key
    if isinstance(key, int) and not isinstance(key, bool):
        return str(key)
    raise InvalidInput(f"{what} names must be strings (got {kind(key)})", field=what)


def _groups(doc: Fields) -> dict[str, str]:
    """Member → group, for groups with ``swap: true`` (the default)."""
    out: dict[str, str] = {}
    for key, group in doc.mapping("groups").data.items():
        gname = _name(key, "group")
        g = Fields(group, f"group {gname!r}", path="groups." + gname)
        if g.flag("swap", True):
            for member in g.names("members"):
                out[member] = gname
    return out


def _swap_model(
    name: str, f: Fields, macros: dict[str, str], groups: dict[str, str], engines: list[Engine]
) -> ModelConfig:
    cmd = f.text("cmd")
    if cmd is None:
        raise InvalidInput(f"model {name!r}: `cmd` (a string) is required", model=name, field="cmd")
    argv = _split_cmd(_expand(cmd, macros, f), f)
    if _is_llama_server(argv):
        cfg = _from_server_argv(name, argv, engines)
    else:
        cfg = ModelConfig(name=name, model="", command=argv)
    cfg.aliases = f.names("aliases")
    cfg.ttl = f.number("ttl", 0, MAX_TTL)
    cfg.env = f.env_list("env")
    cfg.max_concurrency = f.integer("concurrencyLimit", 0, 0, MAX_COUNT)
    cfg.group = groups.get(name)
    meta = f.mapping("metadata").mapping("llamastudio")
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
    return cfg


def import_llama_swap(text: str, engines: list[Engine]) -> list[ModelConfig]:
    """Configurations from a llama-swap ``config.yaml``; a value of the wrong type or out of range
    is a 400 naming the model and field (``fields.py``)."""
    data = load_yaml(text)
    if not isinstance(data, dict) or not isinstance(data.get("models"), dict):
        raise InvalidInput("a llama-swap config needs a `models:` mapping", field="models")
    doc = Fields(data, "llama-swap config")
    macros = _macros(doc)
    groups = _groups(doc)
    out = []
    for key, m in data["models"].items():
        name = _name(key, "model")
        out.append(_swap_model(name, Fields(m, f"model {name!r}", name), macros, groups, engines))
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
        if c.reserve:
            meta["reserve"] = dict(c.reserve)
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


def _preset_meta(cfg: ModelConfig, meta: Fields) -> None:
    """Studio-only fields from a section's ``; llamastudio: {json}`` comment, each type-checked."""
    if "aliases" in meta:
        cfg.aliases = meta.names("aliases")
    if "ttl" in meta:
        cfg.ttl = meta.number("ttl", 0, MAX_TTL)
    cfg.pinned = meta.flag("pinned", cfg.pinned)
    cfg.group = meta.text("group", cfg.group)
    cfg.auto = meta.flag("auto", cfg.auto)
    cfg.max_concurrency = meta.integer("max_concurrency", cfg.max_concurrency, 0, MAX_COUNT)
    cfg.max_queue = meta.integer("max_queue", cfg.max_queue, 0, MAX_COUNT)
    if "env" in meta:
        cfg.env = meta.env_map("env")
    cfg.engine_id = meta.text("engine_id")


def import_preset(text: str, caps: set[str]) -> list[ModelConfig]:
    """Configurations from a ``--models-preset`` INI; a malformed section or studio comment is a
    400 naming the section (the model) and field."""
    if len(text) > MAX_TEXT:
        raise InvalidInput(f"the preset is larger than {MAX_TEXT >> 20} MiB")
    metas: dict[str, Fields] = {}
    section = ""
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("[") and stripped.endswith("]"):
            section = stripped[1:-1]
        elif stripped.startswith(_META.strip()):
            where = f"preset section {section!r}, llamastudio comment"
            metas[section] = Fields(load_json(stripped[len(_META.strip()) :], where), where, section)
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
        meta = metas.get(section) or Fields({}, f"preset section {section!r}", section)
        items = [(k, v) for k, v in parser.items(section) if k not in parser.defaults()]
        values = dict(items)
        model = values.pop("model", "") or values.pop("m", "")
        if not model and "hf" not in values:
            raise InvalidInput(f"[{section}]: `model = <path>` is required", model=section, field="model")
        rest = [(k, v) for k, v in glob if k not in values] + [
            (k, v) for k, v in items if k not in ("model", "m")
        ]
        cfg = ModelConfig(name=section, model=meta.text("model") or model, args=_ini_to_args(rest, caps))
        _preset_meta(cfg, meta)
        out.append(cfg)
    return out
