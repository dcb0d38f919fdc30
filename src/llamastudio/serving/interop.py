"""Import and export model configurations as llama-swap ``config.yaml`` (``llamaswap.py``, every
key with llama-swap's meaning) and llama-server ``--models-preset`` INI, so a user can move in from
(or out to) either without retyping.

Preset INI: one section per model, ``model = <path>`` and one ``key = value`` per flag (the flag
without dashes; ``true`` for flags without a value), as llama-server's router reads it.
Studio-only fields travel in a ``; llamastudio: {json}`` comment line, which llama-server skips.

Both are documents from outside: every field is read with its type and range checked
(``fields.py``), so a wrong one is a 400 naming the model and the field; nesting, size and macro
expansion are bounded.
"""

from __future__ import annotations

import configparser
import io
import json
import re

from llamastudio.errors import InvalidInput
from llamastudio.serving.configs import MAX_COUNT, MAX_TTL, ModelConfig
from llamastudio.serving.fields import MAX_TEXT, Fields, load_json
from llamastudio.serving.llamaswap import SwapImport, export_llama_swap, import_llama_swap, read_llama_swap

__all__ = [
    "SwapImport", "export_llama_swap", "export_preset", "import_llama_swap", "import_preset",
    "read_llama_swap",
]  # fmt: skip

_NEG_NUMBER = re.compile(r"^-\d")
_META = "; llamastudio: "


def _is_flag(token: str) -> bool:
    return token.startswith("-") and not _NEG_NUMBER.match(token) and token != "-"


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
