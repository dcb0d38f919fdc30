"""The seed's LMDeploy API (``/api/models/safetensors/{model_id}/lmdeploy/...``) on the generic
serving service: its config is a model configuration on an LMDeploy engine, its start and stop
are the scheduler's, its status is the models running on LMDeploy. No second code path: what the
UI's config editor and the gateway see is the same configuration.

The fields map to ``lmdeploy serve api_server`` flags; anything else goes in ``args``.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Any

from pydantic import Field

from llamastudio.engines.kinds.base import flag_value
from llamastudio.errors import InvalidInput, NotFound
from llamastudio.services.snapshots import Snapshot
from llamastudio.services.studio import Permit, StudioService, allow_all
from llamastudio.serving.configs import ModelConfig

FAMILY = "lmdeploy"
# field → flag (values are given as the flag's value; None: left to LMDeploy's default)
FIELDS: dict[str, str] = {
    "backend": "--backend",
    "tp": "--tp",
    "session_len": "--session-len",
    "max_batch_size": "--max-batch-size",
    "cache_max_entry_count": "--cache-max-entry-count",
    "quant_policy": "--quant-policy",
    "model_format": "--model-format",
    "dtype": "--dtype",
}
BACKENDS = ("turbomind", "pytorch")


class LmdeployConfig(Snapshot):
    model_id: str
    name: str  # the gateway name (ports 2000 and 2001)
    engine_id: str | None
    configured: bool  # False: the defaults, nothing stored yet
    backend: str | None = None
    tp: int | None = None
    session_len: int | None = None
    max_batch_size: int | None = None
    cache_max_entry_count: float | None = None
    quant_policy: int | None = None
    model_format: str | None = None
    dtype: str | None = None
    args: list[str] = Field(default_factory=list)  # other `lmdeploy serve api_server` flags
    ttl: float | None = None


class LmdeployModel(Snapshot):
    name: str
    model: str
    state: str
    pid: int | None
    port: int | None
    reserve: dict[str, int]


class LmdeployStatus(Snapshot):
    engine_id: str | None  # the default LMDeploy engine (None: none registered)
    engine_version: str | None
    port: int  # the LMDeploy-only listener (-1: off)
    models: list[LmdeployModel]


def _split(args: list[str]) -> tuple[dict[str, Any], list[str]]:
    """The known fields out of an argv, and the rest."""
    fields: dict[str, Any] = {}
    rest: list[str] = []
    flags = {v: k for k, v in FIELDS.items()}
    it = iter(args)
    for token in it:
        flag, eq, inline = token.partition("=")
        if flag in flags:
            fields[flags[flag]] = inline if eq else next(it, None)
        else:
            rest.append(token)
    return fields, rest


class LmdeployService:
    def __init__(self, service: StudioService) -> None:
        self.service = service

    def _library_model(self, model_id: str) -> str:
        """Check it is a safetensors library model; its default gateway name (the library's rule:
        the repo id from the HF cache, an added directory's served name)."""
        local = self.service.runtime.library.get(model_id)  # NotFound for an unknown id
        if local.format != "safetensors":
            raise InvalidInput(
                f"{model_id} is a {local.format.upper()} model: LMDeploy runs safetensors checkpoints"
            )
        return local.id if local.source == "hf-cache" else local.served_name or local.id

    def _stored(self, model_id: str) -> ModelConfig | None:
        """The stored configuration of ``model_id`` on an LMDeploy engine (its name first)."""
        engines = {e.id: e.family for e in self.service.runtime.engines.all()}
        mine = [
            c
            for c in self.service.runtime.configs.stored()
            if c.model == model_id and engines.get(c.engine_id or "") == FAMILY
        ]
        mine.sort(key=lambda c: c.name != model_id)
        return mine[0] if mine else None

    def _view(self, model_id: str, cfg: ModelConfig | None, name: str) -> LmdeployConfig:
        default = self.service.runtime.engines.default(FAMILY)
        if cfg is None:
            return LmdeployConfig(
                model_id=model_id, name=name, engine_id=default.id if default else None, configured=False
            )
        fields, rest = _split(cfg.args)
        return LmdeployConfig(
            model_id=model_id,
            name=cfg.name,
            engine_id=cfg.engine_id,
            configured=True,
            args=rest,
            ttl=cfg.ttl,
            **fields,
        )

    async def get_config(self, model_id: str) -> LmdeployConfig:
        def read() -> LmdeployConfig:
            name = self._library_model(model_id)
            return self._view(model_id, self._stored(model_id), name)

        return await asyncio.to_thread(read)

    async def put_config(
        self, model_id: str, body: dict[str, Any], permit: Permit = allow_all
    ) -> LmdeployConfig:
        """Store the model's LMDeploy configuration (fields left out take LMDeploy's defaults)."""

        def build() -> ModelConfig:
            name = self._library_model(model_id)
            engine_id = body.get("engine_id")
            if engine_id:
                engine = self.service.runtime.engines.get(engine_id)
                if engine.family != FAMILY:
                    raise InvalidInput(f"engine {engine_id} is {engine.family}, not LMDeploy")
            else:
                default = self.service.runtime.engines.default(FAMILY)
                if default is None:
                    raise NotFound(
                        "no LMDeploy engine registered: install one (`llamastudio engines install "
                        "--family lmdeploy VERSION`), or set LMDEPLOY_BIN"
                    )
                engine_id = default.id
            backend = body.get("backend")
            if backend is not None and backend not in BACKENDS:
                raise InvalidInput(f"backend {backend!r}: turbomind or pytorch")
            args: list[str] = []
            for field, flag in FIELDS.items():
                if body.get(field) is not None:
                    args += [flag, str(body[field])]
            extra = list(body.get("args") or [])
            if flag_value(extra, tuple(FIELDS.values())) is not None:
                raise InvalidInput("set backend, tp, session_len ... as fields, not again in args")
            stored = self._stored(model_id)
            base = stored or ModelConfig(name=str(body.get("name") or name), model=model_id)
            return replace(
                base, engine_id=engine_id, args=args + extra, ttl=body.get("ttl", base.ttl), auto=False
            )

        cfg = await asyncio.to_thread(build)
        await self.service.put_config(cfg, permit)
        return await self.get_config(model_id)

    async def _name(self, model_id: str) -> str:
        cfg = await asyncio.to_thread(self._stored, model_id)
        if cfg is None:
            raise NotFound(f"{model_id} has no LMDeploy configuration yet: PUT its lmdeploy/config first")
        return cfg.name

    async def start(self, model_id: str) -> LmdeployModel:
        status = await self.service.start_model(await self._name(model_id))
        return await self._model(status.name)

    async def stop(self, model_id: str) -> LmdeployModel:
        status = await self.service.stop_model(await self._name(model_id))
        return await self._model(status.name)

    async def _model(self, name: str) -> LmdeployModel:
        facts = self.service.runtime.facts(name)
        status = await self.service.status(name)
        cfg = next((c for c in self.service.runtime.known if c.name == name), None)
        return LmdeployModel(
            name=name,
            model=cfg.model if cfg else "",
            state=status.state,
            pid=facts.pid,
            port=facts.port,
            reserve=facts.reserve,
        )

    async def status(self) -> LmdeployStatus:
        engines = await asyncio.to_thread(self.service.runtime.engines.all)
        default = next((e for e in engines if e.family == FAMILY and e.is_default), None)
        ours = {e.id for e in engines if e.family == FAMILY}
        # prepared on LMDeploy, or configured for it (a model that cannot be prepared is listed too)
        names = [
            c.name
            for c in self.service.runtime.known
            if c.engine_id in ours or await self.service.kind_of(c.name) == FAMILY
        ]
        return LmdeployStatus(
            engine_id=default.id if default else None,
            engine_version=default.version if default else None,
            port=self.service.runtime.settings.lmdeploy_port,
            models=[await self._model(n) for n in names],
        )
