"""How each model is served: the stored configurations plus every library model not configured.

A configuration names the model for the gateway (``name`` + ``aliases``), says what to run (a
library id or a GGUF path on an engine, with llama-server flags or ``auto`` = the planner's; or,
for other engines, a whole ``command`` with ``${PORT}``), and its lifecycle (TTL, pin, group,
concurrency and queue limits). Library models nobody configured are served too, under their
library id, with the planner's flags: download, then use.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from sqlalchemy import select

from llamastudio.errors import InvalidInput, NotFound
from llamastudio.fit.flags import parse_server_args
from llamastudio.hub.library import Library, LocalModel
from llamastudio.store import Database
from llamastudio.store.models import ServedModelRow

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/@+-]{0,255}$")
# set by the runtime for every instance; a configuration may not choose them
RESERVED_FLAGS = frozenset({"-m", "--model", "--port", "--host", "-hf", "--hf-repo", "-mu", "--model-url"})
PORT = "${PORT}"


@dataclass
class ModelConfig:
    name: str
    model: str  # library id or GGUF path ("" for a command config)
    engine_id: str | None = None
    args: list[str] = field(default_factory=list)
    auto: bool = False
    command: list[str] | None = None
    aliases: list[str] = field(default_factory=list)
    ttl: float | None = None
    pinned: bool = False
    group: str | None = None
    max_concurrency: int = 0
    max_queue: int = 64
    reserve: dict[str, int] | None = None
    env: dict[str, str] = field(default_factory=dict)
    configured: bool = True  # False: a library model served with defaults

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_row(cls, row: ServedModelRow) -> ModelConfig:
        return cls(**{f.name: getattr(row, f.name) for f in fields(cls) if f.name != "configured"})


def _check_flag_list(args: list[str], what: str) -> None:
    for a in args:
        if not isinstance(a, str) or "\0" in a:
            raise InvalidInput(f"{what}: every argument must be a string without NUL bytes")
        if a.partition("=")[0] in RESERVED_FLAGS:
            raise InvalidInput(f"{what}: {a.partition('=')[0]} is set by the studio for each instance")


def validate(cfg: ModelConfig) -> None:
    if not _NAME.match(cfg.name):
        raise InvalidInput(f"model name {cfg.name!r}: use letters, digits and . _ - : / @ + (max 256)")
    for alias in cfg.aliases:
        if not _NAME.match(alias) or alias == cfg.name:
            raise InvalidInput(f"alias {alias!r} is not a valid, distinct model name")
    if cfg.ttl is not None and cfg.ttl < 0:
        raise InvalidInput("ttl must be ≥ 0 seconds (0 = never unload)")
    if cfg.max_concurrency < 0 or cfg.max_queue < 0:
        raise InvalidInput("max_concurrency and max_queue must be ≥ 0")
    for dev, n in (cfg.reserve or {}).items():
        if not isinstance(n, int) or n < 0:
            raise InvalidInput(f"reserve[{dev}] must be a byte count ≥ 0")
    if cfg.command is not None:
        if not cfg.command:
            raise InvalidInput("command must not be empty")
        if not any(PORT in a for a in cfg.command):
            raise InvalidInput(f"command must contain {PORT} where the studio puts the instance's port")
        _check_flag_list([a for a in cfg.command if PORT not in a], "command")
        return
    if not cfg.model:
        raise InvalidInput("model: a library id or the path of a .gguf file is required")
    _check_flag_list(cfg.args, "args")
    parse_server_args(cfg.args)  # with ``auto``, the planner's starting point


class ModelConfigs:
    def __init__(self, db: Database, library: Library) -> None:
        self.db = db
        self.library = library

    def stored(self) -> list[ModelConfig]:
        with self.db.session() as s:
            return [ModelConfig.from_row(r) for r in s.scalars(select(ServedModelRow))]

    def all(self) -> list[ModelConfig]:
        """Stored configurations, then library models that no configuration serves."""
        out = self.stored()
        taken = {c.name for c in out} | {a for c in out for a in c.aliases}
        used = {c.model for c in out}
        for m in self.library.models(with_facts=False):
            if m.id in used or m.path in used:
                continue
            name = m.id if m.source == "hf-cache" else _stem(m)
            if name in taken:
                name = m.id
            if name in taken or not _NAME.match(name):
                continue
            taken.add(name)
            out.append(ModelConfig(name=name, model=m.id, auto=True, configured=False))
        return out

    def get(self, name: str) -> ModelConfig:
        """By name, alias, or library id/path."""
        every = self.all()
        for c in every:
            if c.name == name or name in c.aliases:
                return c
        for c in every:
            if c.model == name:
                return c
        raise NotFound(f"model {name!r} is not configured and not in the library (see /v1/models)")

    def put(self, cfg: ModelConfig) -> ModelConfig:
        validate(cfg)
        if cfg.command is None:
            self.model_path(cfg)  # the model must exist now
        for other in self.stored():
            if other.name == cfg.name:
                continue
            clash = {cfg.name, *cfg.aliases} & {other.name, *other.aliases}
            if clash:
                raise InvalidInput(f"{', '.join(sorted(clash))} is already used by model {other.name!r}")
        values = {f.name: getattr(cfg, f.name) for f in fields(ModelConfig) if f.name != "configured"}
        with self.db.session() as s, s.begin():
            row = s.get(ServedModelRow, cfg.name)
            if row is None:
                s.add(ServedModelRow(**values))
            else:
                for k, v in values.items():
                    setattr(row, k, v)
        cfg.configured = True
        return cfg

    def delete(self, name: str) -> None:
        with self.db.session() as s, s.begin():
            row = s.get(ServedModelRow, name)
            if row is None:
                raise NotFound(f"model {name!r} has no stored configuration")
            s.delete(row)

    def model_path(self, cfg: ModelConfig) -> Path:
        """The GGUF file to pass to ``-m`` (first shard of a split model)."""
        local = self.local(cfg)
        if local is not None:
            return Path(local.path)
        path = Path(cfg.model).expanduser()
        if not path.is_absolute():
            raise NotFound(f"{cfg.model!r} is neither a library model nor an absolute path")
        if not path.is_file():
            raise NotFound(f"{cfg.model}: no such file")
        return path

    def local(self, cfg: ModelConfig) -> LocalModel | None:
        try:
            return self.library.get(cfg.model)
        except NotFound:
            return None


def _stem(m: LocalModel) -> str:
    stem = Path(m.path).name.removesuffix(".gguf")
    return re.sub(r"-00001-of-\d{5}$", "", stem)
