"""Registered engines (in the database, files under ``<data>/engines/<id>/``), the default engine,
and which engine each model is pinned to."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import select

from llamastudio.errors import Conflict, NotFound
from llamastudio.store import Database
from llamastudio.store.models import EngineRow, ModelPinRow

LLAMA_CPP = "llama.cpp"


@dataclass
class Engine:
    id: str
    name: str
    kind: str  # release | source | external | venv (a Python environment the studio made)
    root: str
    binaries: dict[str, str]
    version: str = ""
    commit: str = ""
    backends: list[str] = field(default_factory=list)
    build_options: dict[str, Any] = field(default_factory=dict)
    patches: list[dict[str, Any]] = field(default_factory=list)
    source: dict[str, Any] = field(default_factory=dict)
    build_key: str = ""
    validation: dict[str, Any] = field(default_factory=dict)
    capabilities: list[str] = field(default_factory=list)
    is_default: bool = False  # the default of its family
    family: str = LLAMA_CPP  # the server it runs: llama.cpp | vllm | sglang | lmdeploy

    @property
    def server(self) -> Path:
        """The program a start runs: llama-server, or the Python (or CLI) of another family."""
        return Path(self.binaries["llama-server" if self.family == LLAMA_CPP else "entry"])

    def supports(self, flag: str) -> bool:
        return flag in self.capabilities

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_row(cls, row: EngineRow) -> Engine:
        return cls(**{f: getattr(row, f) for f in cls.__dataclass_fields__})


class EngineRegistry:
    def __init__(self, db: Database, engines_dir: Path) -> None:
        self.db = db
        self.dir = engines_dir

    def all(self) -> list[Engine]:
        with self.db.session() as s:
            return [Engine.from_row(r) for r in s.scalars(select(EngineRow).order_by(EngineRow.created_at))]

    def get(self, engine_id: str) -> Engine:
        with self.db.session() as s:
            row = s.get(EngineRow, engine_id)
            if row is None:
                known = ", ".join(e.id for e in self.all()) or "none registered"
                raise NotFound(f"no engine {engine_id!r} (engines: {known})")
            return Engine.from_row(row)

    def find_build(self, build_key: str) -> Engine | None:
        """A registered build with this key whose files are still there."""
        with self.db.session() as s:
            for row in s.scalars(select(EngineRow).where(EngineRow.build_key == build_key)):
                engine = Engine.from_row(row)
                if all(Path(p).exists() for p in engine.binaries.values()):
                    return engine
        return None

    def add(self, engine: Engine) -> Engine:
        with self.db.session() as s, s.begin():
            if s.get(EngineRow, engine.id) is not None:
                raise Conflict(f"an engine {engine.id!r} is already registered")
            family = select(EngineRow).where(EngineRow.family == engine.family)
            first = s.scalars(family.limit(1)).first() is None
            engine.is_default = engine.is_default or first
            if engine.is_default:
                for row in s.scalars(family.where(EngineRow.is_default)):
                    row.is_default = False
            data = asdict(engine)
            s.add(EngineRow(**data))
        return engine

    def update(self, engine: Engine) -> None:
        with self.db.session() as s, s.begin():
            row = s.get(EngineRow, engine.id)
            if row is None:
                raise NotFound(f"no engine {engine.id!r}")
            for key, value in asdict(engine).items():
                setattr(row, key, value)

    def set_default(self, engine_id: str) -> Engine:
        """Make it the default of its family (each family has one: llama.cpp, vllm, ...)."""
        family = self.get(engine_id).family
        with self.db.session() as s, s.begin():
            for row in s.scalars(select(EngineRow).where(EngineRow.family == family)):
                row.is_default = row.id == engine_id
        return self.get(engine_id)

    def default(self, family: str = LLAMA_CPP) -> Engine | None:
        with self.db.session() as s:
            query = select(EngineRow).where(EngineRow.is_default, EngineRow.family == family)
            row = s.scalars(query).first()
            return Engine.from_row(row) if row else None

    def default_of(self, families: tuple[str, ...]) -> Engine | None:
        """The default engine of the first of ``families`` that has one registered."""
        for family in families:
            engine = self.default(family)
            if engine is not None:
                return engine
        return None

    def pin(self, model: str, engine_id: str | None) -> None:
        """Pin ``model`` to an engine; ``None`` unpins (the default engine applies again)."""
        if engine_id is not None:
            self.get(engine_id)
        with self.db.session() as s, s.begin():
            row = s.get(ModelPinRow, model)
            if engine_id is None:
                if row is not None:
                    s.delete(row)
            elif row is None:
                s.add(ModelPinRow(model=model, engine_id=engine_id))
            else:
                row.engine_id = engine_id

    def engine_for(self, model: str, families: tuple[str, ...] = (LLAMA_CPP,)) -> Engine:
        """The engine a model runs with: its pin, else the default of the first of ``families``
        (the ones that can serve its format) that has an engine."""
        with self.db.session() as s:
            pin = s.get(ModelPinRow, model)
        if pin is not None:
            return self.get(pin.engine_id)
        default = self.default_of(families)
        if default is None:
            if families == (LLAMA_CPP,):
                raise NotFound("no engine registered: build one (`llamastudio engines build`) or add one")
            raise NotFound(
                f"no {' / '.join(families)} engine registered to serve it: install one "
                f"(`llamastudio engines install --family {families[0]}`) or add one"
            )
        return default

    def pins(self, engine_id: str) -> list[str]:
        with self.db.session() as s:
            return list(s.scalars(select(ModelPinRow.model).where(ModelPinRow.engine_id == engine_id)))

    def remove(self, engine_id: str, in_use: Callable[[str], bool] = lambda _id: False) -> Engine:
        """Unregister and delete the files the studio owns; refuses while a model runs on it."""
        engine = self.get(engine_id)
        if in_use(engine_id):
            raise Conflict(f"engine {engine_id!r} is running a model: stop it first")
        with self.db.session() as s, s.begin():
            for pin in s.scalars(select(ModelPinRow).where(ModelPinRow.engine_id == engine_id)):
                s.delete(pin)
            row = s.get(EngineRow, engine_id)
            s.delete(row)
        root = Path(engine.root)
        if engine.kind != "external" and root.is_relative_to(self.dir) and root.exists():
            shutil.rmtree(root)
        if engine.is_default:
            rest = [e for e in self.all() if e.family == engine.family]
            if rest:
                self.set_default(rest[-1].id)
        return engine
