"""Launch specs: what starting a model runs (argv with ``${PORT}``), on which engine, and the
memory it reserves per device — plus the planner and estimates for one configuration.

A spec is reused while its key holds: the configuration, the engine it resolves to (id *and* the
binary's size + mtime: switching the default engine, re-pinning or rebuilding changes it), and
the model file's size + mtime. (Regression, issue 14: the key once ignored the engine, so after
``PUT /api/engines/{id}/default`` the preview showed the new binary while ``start`` ran the old.)
"""

from __future__ import annotations

import contextlib
import functools
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from llamastudio.checkpoint import Checkpoint, read_checkpoint
from llamastudio.engines.kinds import COMMAND, FOR_FORMAT, ModelRequest, Traits, kind_named
from llamastudio.engines.registry import Engine, EngineRegistry
from llamastudio.errors import InvalidInput, NotFound, StudioError
from llamastudio.fit.argv import parse_server_args
from llamastudio.fit.companions import Companions
from llamastudio.fit.estimator import DeviceUsage, Estimate, estimate
from llamastudio.fit.loadkey import engine_build
from llamastudio.fit.measured import MemoryPlan, plan_memory
from llamastudio.fit.planner import Goal, Plan, plan
from llamastudio.gguf import GGUFModel, facts_from_model, load_model
from llamastudio.gguf.roles import draft_mismatch, projector_mismatch
from llamastudio.hardware.devices import Hardware
from llamastudio.hub.library import Library, LocalModel, check_gguf
from llamastudio.hub.quants import mmproj_preference
from llamastudio.serving.configs import ModelConfig, ModelConfigs
from llamastudio.serving.interop import export_llama_swap, export_preset, import_llama_swap, import_preset
from llamastudio.workers.plan import check_offered, local_reserve, rpc_for

Stamp = tuple[int, int]  # a file's size and mtime (ns)


@dataclass
class Prepared:
    """Everything needed to start one model, computed once per key (see the module docstring)."""

    config: ModelConfig
    argv: list[str]  # with ${PORT}
    reserve: dict[str, int]
    kind: str = "llama.cpp"  # the engine kind (``engines/kinds``)
    engine: Engine | None = None
    engine_stamp: tuple[str, Stamp] | None = None  # the engine's id and its binary's stamp
    model_path: Path | None = None
    model_bytes: int = 0
    estimate: Estimate | None = None
    reasons: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    stamp: Stamp = (0, 0)  # the model file's, when prepared
    threads: int = 0  # CPU threads it computes with; 0 = wholly on GPUs (kinds/threads.py)
    env: dict[str, str] = field(default_factory=dict)  # the kind's engine environment
    traits: Traits = field(default_factory=Traits)
    placement: list[str] = field(default_factory=list)  # flags in argv for this machine's CPUs
    companions: dict[str, Stamp] = field(default_factory=dict)  # projector and draft files, stamped
    # llama.cpp: its load key, estimate and (set by the runtime) measurement (fit/measured.py)
    memory: MemoryPlan | None = None

    def portable_argv(self) -> list[str]:
        """``argv`` without what only this machine's CPUs call for (an export's command)."""
        n = len(self.placement)
        if n:
            for i in range(len(self.argv) - n, -1, -1):
                if self.argv[i : i + n] == self.placement:
                    return self.argv[:i] + self.argv[i + n :]
        return list(self.argv)

    def to_json(self) -> dict[str, Any]:
        est = self.estimate
        return {
            "name": self.config.name,
            "argv": self.argv,
            "kind": self.kind,
            "engine": self.engine.id if self.engine else None,
            "model_path": str(self.model_path) if self.model_path else None,
            "reserve": self.reserve,
            "threads": self.threads,
            "env": self.env,
            "traits": asdict(self.traits),
            "estimate": None
            if est is None
            else {
                "devices": [
                    {"name": d.name, "label": d.label, "total": d.total, "parts": parts(d)}
                    for d in est.devices
                ],
                "n_ctx": est.context.n_ctx,
                "n_gpu_layers": est.n_gpu_layers,
            },
            "reasons": self.reasons,
            "dropped": self.dropped,
            "warnings": self.warnings,
            "memory": self.memory.to_json() if self.memory else None,
        }


class Launcher:
    """Builds launch specs for configurations (blocking: header reads; call it in a thread)."""

    def __init__(
        self, configs: ModelConfigs, engines: EngineRegistry, library: Library, pin_threads: bool = False
    ) -> None:
        self.configs = configs
        self.engines = engines
        self.library = library
        self.pin_threads = pin_threads  # settings.pin_threads (engines/kinds/threads.py)

    def engine_of(self, cfg: ModelConfig, fmt: str = "gguf") -> Engine:
        """The engine ``cfg`` runs on: its ``engine_id``, else its pin, else the default of the
        first family that serves its model's format."""
        if cfg.engine_id:
            return self.engines.get(cfg.engine_id)
        families = FOR_FORMAT.get(fmt, FOR_FORMAT["gguf"])
        for key in (cfg.name, cfg.model):
            with contextlib.suppress(NotFound):
                pinned = self.engines.engine_for(key, families)
                if not pinned.is_default:
                    return pinned
        return self.engines.engine_for(cfg.model, families)

    def fresh(self, p: Prepared, cfg: ModelConfig) -> bool:
        """Whether ``p`` is still what starting ``cfg`` would run."""
        if p.config != cfg:
            return False
        if p.model_path is None:  # a command: its own argv
            return True
        try:  # the format it was prepared for (no library listing on every sync)
            engine = self.engine_of(cfg, kind_named(p.kind).formats[0])
        except NotFound:
            return False
        return (
            p.model_path.exists()
            and _stamp(p.model_path) == p.stamp
            and p.engine_stamp == _engine_stamp(engine)
            and all(_stamp_or_none(Path(c)) == st for c, st in p.companions.items())
        )

    def prepare(self, cfg: ModelConfig, hw: Hardware, library: list[LocalModel] | None = None) -> Prepared:
        """The exact argv (with ``${PORT}``) and the per-device reservation for ``cfg``."""
        if cfg.command is not None:
            request = ModelRequest(cfg.name, command=cfg.command, reserve=cfg.reserve, proxy=cfg.proxy)
            done = COMMAND.plan(request, None, hw)
            return Prepared(cfg, done.argv, done.reserve, kind=COMMAND.name)
        path, fmt = self.configs.model_source(cfg, library)
        engine = self.engine_of(cfg, fmt)
        kind = kind_named(engine.family)
        if fmt not in kind.formats:
            raise InvalidInput(_wrong_format(cfg, fmt, engine))
        rpc = None
        if fmt == "safetensors":
            ck = read_checkpoint_cached(str(path), *_stamp(path))
            request = ModelRequest(
                cfg.name, cfg.args, cfg.auto, cfg.reserve, None, path, checkpoint=ck, env=cfg.env
            )
            size = ck.weight_bytes
        else:
            header = read_header(str(path), *_stamp(path))
            mmproj, draft = self._companions(cfg, path, library)
            rpc = rpc_for(cfg.name, cfg.args, engine, hw, self.configs.db, header)  # --rpc auto|always
            args, hw = (rpc.args, rpc.hardware) if rpc else (cfg.args, hw)
            request = ModelRequest(
                cfg.name,
                args,
                cfg.auto,
                cfg.reserve,
                None,
                path,
                header,
                mmproj=mmproj,
                draft=draft,
                env=cfg.env,
                pin=self.pin_threads,
            )
            size = header.file_size
        done = kind.plan(request, engine, hw)
        if rpc is not None:  # the workers' devices: checked against what they offer, not reserved here
            check_offered(cfg.name, done.estimate, rpc.offered)
            done.reserve = local_reserve(done.reserve, rpc)
            done.reasons, done.warnings = [*rpc.reasons, *done.reasons], [*rpc.warnings, *done.warnings]
        memory = None
        if fmt == "gguf" and done.estimate is not None:  # the reservation is the (perturbable) estimate's
            used = [m for m in (request.mmproj, request.draft) if m is not None and m.location in done.argv]
            build = engine_build(engine.id, engine.server)
            manual = bool(cfg.reserve)
            memory = plan_memory(header, used, build, done.argv, done.estimate, done.reserve, manual)
        reserve = memory.estimated_reserve if memory else done.reserve
        return Prepared(
            cfg,
            done.argv,
            local_reserve(reserve, rpc) if rpc else reserve,
            kind=kind.name,
            threads=done.threads,
            engine=engine,
            engine_stamp=_engine_stamp(engine),
            model_path=path,
            model_bytes=size,
            estimate=done.estimate,
            reasons=done.reasons,
            dropped=done.dropped,
            warnings=done.warnings,
            stamp=_stamp(path),
            env=done.env,
            traits=done.traits,
            placement=done.placement,
            companions={
                m.location: _stamp(Path(m.location)) for m in (request.mmproj, request.draft) if m is not None
            },
            memory=memory,
        )

    def _companions(
        self, cfg: ModelConfig, path: Path, library: list[LocalModel] | None
    ) -> tuple[GGUFModel | None, GGUFModel | None]:
        """The projector (``--mmproj``: a path; else the model's mmproj file unless ``--no-mmproj``)
        and the draft model (``-md``: a library id or a path) of a GGUF configuration, read."""
        flags = parse_server_args(cfg.args)
        mm_path: Path | None = None
        if flags.mmproj:
            mm_path = self._companion_path(cfg, flags.mmproj, "--mmproj", library, models=False)
        elif flags.mmproj_auto:
            mm_path = self._auto_mmproj(cfg, path, library)
        draft_path = (
            self._companion_path(cfg, flags.draft_model, "-md", library, models=True)
            if flags.draft_model
            else None
        )
        if draft_path is not None and draft_path == path:
            raise InvalidInput(f"{cfg.name}: -md names the model itself; a draft model is a smaller one")
        return tuple(  # type: ignore[return-value]
            read_header(str(p), *_stamp(p)) if p is not None else None for p in (mm_path, draft_path)
        )

    def _companion_path(
        self, cfg: ModelConfig, value: str, flag: str, library: list[LocalModel] | None, models: bool
    ) -> Path:
        """A companion's GGUF file: a library model's (``models``), or an absolute path."""
        if models:
            listing = self.library.models(with_facts=False) if library is None else library
            local = next((m for m in listing if value in (m.id, m.path) and m.format == "gguf"), None)
            if local is not None:
                return Path(local.path)
        path = Path(value).expanduser()
        if not path.is_absolute():
            what = "a library id or an absolute path" if models else "an absolute path"
            raise InvalidInput(f"{cfg.name}: {flag} {value!r}: give {what} of a .gguf file")
        if not path.is_file():
            raise NotFound(f"{cfg.name}: {flag} {value}: no such file")
        return check_gguf(path)

    def _auto_mmproj(self, cfg: ModelConfig, path: Path, library: list[LocalModel] | None) -> Path | None:
        """The model's own projector: an mmproj file of its repository (HF cache) or directory that
        fits it. A directory of several models holds other models' projectors too: one of another
        width is passed over (a text model beside a vision model's mmproj stays a text model)."""
        listing = self.library.models(with_facts=False) if library is None else library
        local = next((m for m in listing if cfg.model in (m.id, m.path)), None)
        found = local.mmproj if local is not None else [str(p) for p in path.parent.glob("mmproj*.gguf")]
        if not found:
            return None
        width = facts_from_model(read_header(str(path), *_stamp(path))).embedding_length
        for candidate in sorted(found, key=mmproj_preference):
            try:
                mm = read_header(candidate, *_stamp(Path(candidate)))
            except (OSError, StudioError):
                continue  # vanished or unreadable: not this model's projector either
            if projector_mismatch(mm.metadata, {t.name: t.shape for t in mm.tensors}, width) is None:
                return Path(candidate)
        return None

    def smart_auto(
        self,
        name: str,
        hw: Hardware,
        goal: Goal = "balanced",
        ctx: int | None = None,
        parallel: int | None = None,
        args: list[str] | None = None,
    ) -> Plan:
        """The planner's flags for a model (Smart Auto), with ``args`` kept as its starting point."""
        model, extra = self._with_companions(name, args or [])
        return plan(model, hw, goal, ctx, parallel, base=parse_server_args(args or []), companions=extra)

    def estimate_for(self, name: str, args: list[str], hw: Hardware) -> dict[str, Any]:
        """Per-device memory of a model with these flags, against each device's free memory."""
        model, extra = self._with_companions(name, args)
        est = estimate(model, parse_server_args(args), hw.gpus, companions=extra)
        free = {g.device_name: g.free for g in hw.gpus} | {"CPU": hw.ram_free}
        devices: list[dict[str, Any]] = [
            {
                "name": d.name,
                "label": d.label,
                "total": d.total,
                "free": free.get(d.name, 0),
                "fits": d.total <= free.get(d.name, 0),
                "parts": parts(d),
            }
            for d in est.devices
        ]
        return {
            "devices": devices,
            "fits": all(d["fits"] for d in devices),
            "n_ctx": est.context.n_ctx,
            "n_gpu_layers": est.n_gpu_layers,
        }

    def _with_companions(self, name: str, args: list[str]) -> tuple[GGUFModel, Companions]:
        """A model's GGUF header and the companions these flags load beside it."""
        cfg = self.configs.get(name)
        path = self.configs.gguf_path(cfg)
        mmproj, draft = self._companions(replace(cfg, args=list(args)), path, None)
        return load_model(str(path)), Companions(mmproj, draft)

    def draft_candidates(self, name: str, limit: int = 20) -> list[LocalModel]:
        """Library models that can draft for ``name``: GGUF chat models with the same vocabulary
        (llama.cpp's compatibility checks), smaller than it; smallest first."""
        cfg = self.configs.get(name)
        path = self.configs.gguf_path(cfg)
        target = load_model(str(path))
        size = target.file_size
        out: list[LocalModel] = []
        for m in sorted(self.library.models(with_facts=False), key=lambda m: m.size):
            if m.format != "gguf" or m.size >= size or Path(m.path) == path:
                continue
            try:
                draft = load_model(m.path)
            except StudioError:
                continue
            if (
                facts_from_model(draft).role == "chat"
                and draft_mismatch(target.metadata, draft.metadata) is None
            ):
                out.append(m)
                if len(out) >= limit:
                    break
        return out

    def export_configs(self, fmt: str, hw: Hardware) -> str:
        """Stored configurations as llama-swap ``config.yaml`` or a ``--models-preset`` INI."""
        configs = self.configs.stored()
        if not configs:
            raise NotFound("no stored model configurations to export")
        library = self.library.models(with_facts=False)  # listed once for all of them
        if fmt == "llama-swap":
            try:
                argv = {c.name: self.prepare(c, hw, library).portable_argv() for c in configs}
            finally:
                read_header.cache_clear()
            return export_llama_swap(configs, argv)
        if fmt == "preset":
            sources = {c.name: self.configs.model_source(c, library) for c in configs if c.command is None}
            # llama-server's presets hold GGUF models only
            paths = {name: str(path) for name, (path, fmt) in sources.items() if fmt == "gguf"}
            return export_preset([c for c in configs if c.command is not None or c.name in paths], paths)
        raise InvalidInput(f"format {fmt!r}: llama-swap or preset")

    def parse_import(self, fmt: str, text: str) -> list[ModelConfig]:
        """Configurations from a llama-swap ``config.yaml`` or a ``--models-preset`` INI."""
        if fmt == "llama-swap":
            return import_llama_swap(text, self.engines.all())
        if fmt == "preset":
            default = self.engines.default()
            return import_preset(text, set(default.capabilities) if default else set())
        raise InvalidInput(f"format {fmt!r}: llama-swap or preset")


@functools.lru_cache(maxsize=4)
def read_header(path: str, size: int, mtime_ns: int) -> GGUFModel:
    """The GGUF header of one version of a file (size + mtime in the key), kept while one sync
    prepares every configuration of it: an import of 300 configurations of one file reads it once.
    Callers clear it after a batch (headers hold whole vocabularies)."""
    return load_model(path)


@functools.lru_cache(maxsize=8)
def read_checkpoint_cached(path: str, size: int, mtime_ns: int) -> Checkpoint:
    """A checkpoint directory's facts (config + every shard header), per version of the directory."""
    return read_checkpoint(Path(path))


def _wrong_format(cfg: ModelConfig, fmt: str, engine: Engine) -> str:
    if fmt == "gguf":
        return (
            f"{cfg.name}: {cfg.model} is a GGUF file and engine {engine.id} is {engine.family}, which "
            "serves safetensors checkpoints: run it on a llama.cpp engine, or give the checkpoint directory"
        )
    return (
        f"{cfg.name}: {cfg.model} is a safetensors checkpoint and engine {engine.id} is llama.cpp, which "
        "runs GGUF files: install vLLM, SGLang or LMDeploy (`llamastudio engines install --family vllm`) "
        "or download a GGUF of the model"
    )


def _stamp(path: Path) -> Stamp:
    st = path.stat()
    return st.st_size, st.st_mtime_ns


def parts(d: DeviceUsage) -> dict[str, int]:
    """A device's bytes by category (the UI's stacked memory bar)."""
    return {k: getattr(d, k) for k in ("model", "kv", "rs", "output", "compute", "mmproj", "draft")}


def _stamp_or_none(path: Path) -> Stamp | None:
    try:
        return _stamp(path)
    except OSError:
        return None


def _engine_stamp(engine: Engine) -> tuple[str, Stamp]:
    try:
        return engine.id, _stamp(engine.server)
    except OSError:  # a deleted binary: never equal to what was prepared with it
        return engine.id, (-1, -1)
