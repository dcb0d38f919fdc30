"""How each model is served: the stored configurations plus every library model not configured.

A configuration names the model for the gateway (``name`` + ``aliases``), says what to run (a
library id or a GGUF path on an engine, with llama-server flags or ``auto`` = the planner's; or,
for other engines, a whole ``command`` with ``${PORT}``), and its lifecycle (TTL, pin, group,
concurrency and queue limits). Library models nobody configured are served too, under their
library id, with the planner's flags: download, then use.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Collection
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import select
from sqlalchemy.orm import Session

from llamastudio.checkpoint import read_config, shard_names
from llamastudio.checkpoint.config import arch_facts
from llamastudio.engines.command import check_flags
from llamastudio.engines.kinds import COMMAND, ModelRequest
from llamastudio.engines.kinds.hfserve import check_architecture
from llamastudio.engines.registry import LLAMA_CPP, Engine
from llamastudio.errors import InvalidInput, NotFound, StudioError
from llamastudio.fit.argv import parse_server_args
from llamastudio.hub.library import Library, LocalModel, check_gguf
from llamastudio.serving.names import check_names, name_index
from llamastudio.serving.validate import check_server_args
from llamastudio.store import Database
from llamastudio.store.models import ServedModelRow
from llamastudio.workers.plan import MODES as RPC_MODES

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/@+-]{0,255}$")
# set by the runtime for every instance; a configuration may not choose them
RESERVED_FLAGS = frozenset(
    {"-m", "--model", "--port", "--host"}
    # the studio downloads models itself (a pull, with progress, resume and the HF cache), and an
    # engine never gets the Hub token; keys and TLS are the gateway's; router mode is the studio's
    | {"-hf", "-hfr", "--hf-repo", "-hff", "--hf-file", "-hft", "--hf-token", "-dr", "--docker-repo"}
    | {"-hfd", "-hfrd", "--hf-repo-draft", "--spec-draft-hf", "-mu", "--model-url", "-mmu", "--mmproj-url"}
    | {"--api-key", "--api-key-file", "--ssl-key-file", "--ssl-cert-file", "--models-dir", "--models-preset"}
    # vLLM, SGLang, LMDeploy: the checkpoint, the name the gateway routes by, the address
    | {"--model-path", "--served-model-name", "--model-name", "--server-name", "--server-port"}
)
# llama-server flags naming a file or directory it reads or writes at the configuration's choice:
# through the gateway they can show a file's contents (``/props`` returns a template file,
# ``--path`` serves a directory, ``--media-path`` reads local media) or overwrite one (logs,
# caches, slot saves). Like a command, they need the command permission.
FILE_FLAGS = frozenset(
    {"--chat-template-file", "--grammar-file", "-jf", "--json-schema-file", "--log-file", "--path"}
    | {"-lcs", "--lookup-cache-static", "-lcd", "--lookup-cache-dynamic", "--slot-save-path"}
    | {"--media-path", "--ui-config-file", "--webui-config-file", "--lora", "--lora-scaled"}
    | {"--control-vector", "--control-vector-scaled", "--prompt-cache"}
)
MAX_TTL = 10 * 365 * 86400  # seconds; the same bound as the ``default_ttl`` setting
MAX_COUNT = 1_000_000  # max_concurrency, max_queue
MAX_BYTES = 1 << 52  # a reservation; JSON numbers stay exact in the UI below 2^53


def valid_ttl(value: object) -> bool:
    """A TTL the scheduler and every JSON client can take: a finite number in [0, MAX_TTL]."""
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(value)
        and 0 <= value <= MAX_TTL
    )


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
    preload: bool = False  # started when the studio starts (in order, by memory); see LLAMASTUDIO_PRELOAD
    # llama-swap's per-model keys (``serving/llamaswap.py``): listing, the request body, readiness
    unlisted: bool = False  # served, but not in /v1/models
    title: str | None = None  # llama-swap ``name``: the display name in /v1/models and the UI
    description: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)  # shown in /v1/models (``meta.llamaswap``)
    use_model_name: str | None = None  # the ``model`` the engine receives (llama-swap ``useModelName``)
    strip_params: list[str] = field(default_factory=list)  # body keys removed before relay (never model)
    set_params: dict[str, Any] = field(default_factory=dict)  # body keys set before relay (never model)
    check_endpoint: str | None = None  # readiness path, or "none"; None: the engine kind's
    start_timeout: float | None = None  # seconds a start may take (llama-swap healthCheckTimeout)
    cmd_stop: list[str] | None = None  # llama-swap ``cmdStop`` argv (kept, see the import's ignored)
    proxy: str | None = None  # llama-swap ``proxy``: the upstream URL (kept, see the import's ignored)
    group_swap: bool = True  # members of ``group`` never run together
    group_exclusive: bool = False  # starting a member stops the models of other groups
    group_persistent: bool = False  # other groups never stop this group's members
    source: str | None = None  # "file:<path>": owned by a watched config file (``configwatch.py``)
    extra: dict[str, Any] = field(default_factory=dict)  # llama-swap keys kept for export only
    configured: bool = True  # False: a library model served with defaults

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_row(cls, row: ServedModelRow) -> ModelConfig:
        cfg = cls(**{f.name: getattr(row, column(f.name)) for f in fields(cls) if f.name != "configured"})
        if cfg.ttl is not None and not valid_ttl(cfg.ttl):
            cfg.ttl = None  # an Infinity stored by an older version: the default applies, JSON stays valid
        return cfg


def column(name: str) -> str:
    """The ``ServedModelRow`` attribute of a field (``metadata`` is SQLAlchemy's own name)."""
    return "metadata_" if name == "metadata" else name


def _check_flag_list(args: list[str], what: str, reserved: frozenset[str] = RESERVED_FLAGS) -> None:
    for a in args:
        if not isinstance(a, str) or "\0" in a:
            raise InvalidInput(f"{what}: every argument must be a string without NUL bytes")
        if a.partition("=")[0] in reserved:
            raise InvalidInput(f"{what}: {a.partition('=')[0]} is set by the studio for each instance")


def validate(cfg: ModelConfig) -> None:
    if not _NAME.match(cfg.name):
        raise InvalidInput(f"model name {cfg.name!r}: use letters, digits and . _ - : / @ + (max 256)")
    for alias in cfg.aliases:
        if not _NAME.match(alias) or alias == cfg.name:
            raise InvalidInput(f"alias {alias!r} is not a valid, distinct model name")
    if cfg.ttl is not None and not valid_ttl(cfg.ttl):
        raise InvalidInput(f"ttl must be a finite number of seconds from 0 to {MAX_TTL} (0 = never unload)")
    for what, n in (("max_concurrency", cfg.max_concurrency), ("max_queue", cfg.max_queue)):
        if isinstance(n, bool) or not isinstance(n, int) or not 0 <= n <= MAX_COUNT:
            raise InvalidInput(f"{what} must be a whole number from 0 to {MAX_COUNT}")
    for dev, n in (cfg.reserve or {}).items():
        if isinstance(n, bool) or not isinstance(n, int) or not 0 <= n <= MAX_BYTES:
            raise InvalidInput(f"reserve[{dev}] must be a byte count from 0 to 2^52")
    if cfg.start_timeout is not None and not (valid_ttl(cfg.start_timeout) and cfg.start_timeout > 0):
        raise InvalidInput(f"start_timeout must be a number of seconds from 1 to {MAX_TTL}")
    if (
        cfg.check_endpoint is not None
        and cfg.check_endpoint != "none"
        and not cfg.check_endpoint.startswith("/")
    ):
        raise InvalidInput("check_endpoint must be a path starting with / (or none)")
    if cfg.proxy is not None:
        parts = urlsplit(cfg.proxy.replace("${PORT}", "1"))
        if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment:
            raise InvalidInput(f"proxy {cfg.proxy[:200]!r} must be http(s)://host[:port][/path]")
    if cfg.cmd_stop is not None and (not cfg.cmd_stop or not all(isinstance(a, str) for a in cfg.cmd_stop)):
        raise InvalidInput("cmd_stop must be a non-empty list of strings (an argv, ${PID} = the engine)")
    if "model" in cfg.strip_params or "model" in cfg.set_params:
        raise InvalidInput("strip_params / set_params may not touch `model` (use use_model_name)")
    if cfg.command is not None:
        # another program's own argv: its model and host flags are the user's (only the port is ours)
        _check_flag_list(cfg.command, "command", reserved=frozenset())
        COMMAND.check(ModelRequest(cfg.name, command=cfg.command, reserve=cfg.reserve, proxy=cfg.proxy))
        return
    if not cfg.model:
        raise InvalidInput("model: a library id or the path of a .gguf file is required")
    _check_flag_list(cfg.args, "args")
    check_server_args(cfg.args)  # with ``auto``, the planner's starting point; as llama-server reads it


# Engine environment a configuration may set without the command permission: device selection,
# thread placement, llama-server's own LLAMA_ARG_* (its flags) and ggml's switches. Anything else
# may load code: LD_PRELOAD, GGML_BACKEND_PATH, VK_ICD_FILENAMES, OMP_TOOL_LIBRARIES, ...
_SAFE_ENV = re.compile(
    r"CUDA_VISIBLE_DEVICES|CUDA_DEVICE_ORDER|HIP_VISIBLE_DEVICES|ROCR_VISIBLE_DEVICES|GPU_DEVICE_ORDINAL"
    r"|ZE_AFFINITY_MASK|OMP_NUM_THREADS|OMP_PROC_BIND|OMP_PLACES|OMP_WAIT_POLICY|GOMP_SPINCOUNT"
    r"|LLAMA_ARG_[A-Z0-9_]+"
)
_GGML_SWITCH = re.compile(r"GGML_[A-Z0-9_]+")
_NAMES_CODE = ("PATH", "DIR", "FILE", "LIB", "LLDB", "GDB", "BACKTRACE", "KERNEL", "PROGRAM", "TOOL")
# llama-server's (b11434) experimental agent features, which its ``/tools`` endpoint (relayed by
# the gateway) and MCP servers use to run commands, read and write files, or reach any address
# for a client: ``--tools exec_shell_command``, ``--mcp-servers-json`` (commands it spawns) …
_COMMAND_FLAGS = {
    "--tools": "LLAMA_ARG_TOOLS",
    "--tools-runtime": "LLAMA_ARG_TOOLS_RUNTIME",
    "--mcp-servers-config": "LLAMA_ARG_MCP_SERVERS_CONFIG",
    "--mcp-servers-json": "LLAMA_ARG_MCP_SERVERS_JSON",
    "-ag": "LLAMA_ARG_AGENT",
    "--agent": "LLAMA_ARG_AGENT",
    "--ui-mcp-proxy": "LLAMA_ARG_UI_MCP_PROXY",
    "--webui-mcp-proxy": "LLAMA_ARG_UI_MCP_PROXY",
}
_COMMAND_ENV = frozenset(_COMMAND_FLAGS.values())


# llama-server's own LLAMA_ARG_* names of the flags above (a model, a file, a URL, a key, the
# address): set through the environment they would bypass the same checks
_ARG_UNSAFE = (
    "FILE", "PATH", "DIR", "HF", "URL", "KEY", "SSL", "MODEL", "PORT", "HOST", "LORA", "CONTROL",
    "GRAMMAR", "SCHEMA", "MEDIA", "LOOKUP", "LOG", "SLOT", "DOCKER", "MMPROJ", "PRESET", "CHAT_TEMPLATE",
)  # fmt: skip


def _safe_env(name: str) -> bool:
    if name in _COMMAND_ENV:
        return False
    if name.startswith("LLAMA_ARG_") and any(word in name[10:] for word in _ARG_UNSAFE):
        return False
    if _SAFE_ENV.fullmatch(name):
        return True
    return bool(_GGML_SWITCH.fullmatch(name)) and not any(word in name for word in _NAMES_CODE)


def _value_of(args: list[str], flag: str) -> str | None:
    """The value of ``flag`` in ``args`` (``--flag V`` or ``--flag=V``; the last one wins)."""
    value = None
    for i, arg in enumerate(args):
        if arg == flag:
            value = args[i + 1] if i + 1 < len(args) else ""
        elif arg.startswith(flag + "="):
            value = arg[len(flag) + 1 :]
    return value


def runs_command(cfg: ModelConfig) -> str | None:
    """What in this configuration runs code of its author's choosing, in words (None: nothing
    does): a ``command``, engine environment outside the safe set (``LD_PRELOAD`` …),
    llama-server's agent tools and MCP servers (``--tools``, ``--mcp-servers-json`` …), or files
    the engine reads or writes at the configuration's choice (``FILE_FLAGS``)."""
    if cfg.command is not None:
        return f"model {cfg.name!r} runs a command ({' '.join(cfg.command)[:200]})"
    if cfg.cmd_stop is not None:
        return f"model {cfg.name!r} runs a stop command ({' '.join(cfg.cmd_stop)[:200]})"
    if cfg.proxy is not None:  # requests (and the engine's key) go where the configuration says
        return f"model {cfg.name!r} relays its requests to {cfg.proxy[:200]}"
    unsafe = sorted(name for name in cfg.env if not _safe_env(name))
    if unsafe:
        return f"model {cfg.name!r} sets {', '.join(unsafe)} in its engine's environment"
    flags = {a.partition("=")[0] for a in cfg.args}
    agent = sorted(flags & _COMMAND_FLAGS.keys())
    if agent:
        return f"model {cfg.name!r} turns on llama-server's tools or MCP servers ({', '.join(agent)})"
    rpc = _value_of(cfg.args, "--rpc")
    if rpc is not None and rpc not in RPC_MODES:  # llama-server trusts the rpc-servers it names
        return f"model {cfg.name!r} sends its weights to the RPC servers it names ({rpc[:200]})"
    files = sorted(flags & FILE_FLAGS)
    if files:
        return f"model {cfg.name!r} names files the engine reads or writes ({', '.join(files)})"
    return None


class ModelConfigs:
    def __init__(
        self,
        db: Database,
        library: Library,
        engine_of: Callable[[ModelConfig, str], Engine] | None = None,
    ) -> None:
        """``engine_of``: the engine a configuration runs on (its ``engine_id``, pin or the
        default); its ``--help`` decides which flags a configuration may pass."""
        self.db = db
        self.library = library
        self.engine_of = engine_of

    def stored(self) -> list[ModelConfig]:
        with self.db.session() as s:
            return [ModelConfig.from_row(r) for r in s.scalars(select(ServedModelRow))]

    def all(
        self, stored: list[ModelConfig] | None = None, library: list[LocalModel] | None = None
    ) -> list[ModelConfig]:
        """Stored configurations, then library models that no configuration serves (under their
        id, or an added file's name unless a configured name has it: names win, see names.py)."""
        out = self.stored() if stored is None else list(stored)
        taken = {c.name for c in out}  # not aliases: an alias never takes a library model's name
        used = {c.model for c in out}
        for m in self.library.models(with_facts=False) if library is None else library:
            if m.id in used or m.path in used:
                continue
            name = m.id if m.source == "hf-cache" else m.served_name or _stem(m)  # spaces, non-ASCII
            if name in taken:
                name = m.id
            if name in taken or not _NAME.match(name):
                continue
            taken.add(name)
            out.append(ModelConfig(name=name, model=m.id, auto=True, configured=False))
        return out

    def get(self, name: str) -> ModelConfig:
        """By name, alias, or library id/path (in that precedence, see names.py)."""
        every = self.all()
        owner = name_index(every).get(name)
        for c in every:
            if c.name == owner:
                return c
        raise NotFound(f"model {name!r} is not configured and not in the library (see /v1/models)")

    def put(self, cfg: ModelConfig) -> ModelConfig:
        return self.put_many([cfg])[0]

    def put_many(
        self,
        configs: list[ModelConfig],
        remove: Collection[str] = (),
        also: Callable[[Session], None] | None = None,
    ) -> list[ModelConfig]:
        """Check each configuration (values, model file, flags against its engine's ``--help``,
        names against every other model), then store them all in one transaction: all or none.
        The library is listed once for the whole batch, not once per configuration. ``remove``:
        stored configurations deleted in the same transaction; ``also``: more writes in it."""
        library = self.library.models(with_facts=False)
        for cfg in configs:
            try:
                self.check(cfg, library)
            except StudioError as exc:  # name the model: an import has hundreds
                details = {"model": cfg.name, **exc.details}
                raise type(exc)(f"model {cfg.name!r}: {exc.message}", **details) from exc
        kept = [c for c in self.stored() if c.name not in remove]
        check_names(configs, kept, library, lambda final: self.all(final, library))
        names = [f.name for f in fields(ModelConfig) if f.name != "configured"]
        with self.db.session() as s, s.begin():
            for name in remove:
                row = s.get(ServedModelRow, name)
                if row is not None:
                    s.delete(row)
            if also is not None:
                also(s)
            for cfg in configs:
                values = {column(k): getattr(cfg, k) for k in names}
                row = s.get(ServedModelRow, cfg.name)
                if row is None:
                    s.add(ServedModelRow(**values))
                else:
                    for k, v in values.items():
                        setattr(row, k, v)
        for cfg in configs:
            cfg.configured = True
        return configs

    def check(self, cfg: ModelConfig, library: list[LocalModel] | None = None) -> None:
        """What saving ``cfg`` checks on its own: its values, that its model file exists, and its
        flags (``check_flags``)."""
        validate(cfg)
        if cfg.command is None:
            source = self.model_source(cfg, library)
            self.check_flags(cfg, source)

    def check_flags(self, cfg: ModelConfig, source: tuple[Path, str] | None = None) -> None:
        """Refuse a flag ``cfg`` passes through that its engine's ``--help`` does not list (with
        no engine registered yet there is nothing to check against: the start will say), and a
        model its engine cannot run (``check_engine``). ``source``: the model's path and format,
        when already found."""
        if cfg.command is not None or self.engine_of is None:
            return
        if source is None:
            try:
                source = self.model_source(cfg)
            except NotFound:
                source = None
        try:
            engine = self.engine_of(cfg, source[1] if source else "gguf")
        except NotFound:
            return
        if source is not None:
            self.check_engine(cfg, engine, *source)
        # llama-server flags the estimator models are rewritten, not passed through; other engines'
        # flags all go to the engine as given
        check_flags(engine, parse_server_args(cfg.args).extra if engine.family == "llama.cpp" else cfg.args)

    def check_engine(self, cfg: ModelConfig, engine: Engine, path: Path, fmt: str) -> None:
        """Refuse a model its engine cannot run: a GGUF on vLLM / SGLang / LMDeploy, a checkpoint
        on llama.cpp, or an architecture the engine does not list (read from config.json)."""
        if (fmt == "gguf") != (engine.family == LLAMA_CPP):
            what = "a GGUF file" if fmt == "gguf" else "a safetensors checkpoint"
            serves = "GGUF files" if engine.family == LLAMA_CPP else "safetensors checkpoints"
            raise InvalidInput(
                f"{cfg.model} is {what} and engine {engine.id} ({engine.family}) runs {serves}: "
                "choose an engine of the other kind, or another copy of the model"
            )
        if fmt == "safetensors":
            check_architecture(arch_facts(read_config(path), str(path)).architectures, engine)

    def delete(self, name: str) -> None:
        with self.db.session() as s, s.begin():
            row = s.get(ServedModelRow, name)
            if row is None:
                raise NotFound(f"model {name!r} has no stored configuration")
            s.delete(row)

    def model_path(self, cfg: ModelConfig, library: list[LocalModel] | None = None) -> Path:
        """The GGUF file to pass to ``-m`` (first shard of a split model), or a safetensors
        checkpoint's directory; ``library``: a listing already made (else the library is listed)."""
        return self.model_source(cfg, library)[0]

    def model_source(self, cfg: ModelConfig, library: list[LocalModel] | None = None) -> tuple[Path, str]:
        """The model's path and format (``gguf`` | ``safetensors``)."""
        if library is None:
            local = self.local(cfg)
        else:
            local = next((m for m in library if cfg.model in (m.id, m.path)), None)
        if local is not None:
            return Path(local.path), local.format
        path = Path(cfg.model).expanduser()
        if not path.is_absolute():
            raise NotFound(f"{cfg.model!r} is neither a library model nor an absolute path")
        if path.is_dir():
            read_config(path)  # a clear error for a directory that is not a checkpoint
            if not shard_names(path):
                raise InvalidInput(f"{cfg.model}: no *.safetensors weights in this directory")
            return path, "safetensors"
        if not path.is_file():
            raise NotFound(f"{cfg.model}: no such file")
        return check_gguf(path), "gguf"  # not any readable file: a GGUF (its bytes are never quoted)

    def gguf_path(self, cfg: ModelConfig) -> Path:
        """The GGUF file of a model, refusing a checkpoint (the estimator and planner read GGUF)."""
        path, fmt = self.model_source(cfg)
        if fmt != "gguf":
            raise InvalidInput(
                f"{cfg.name}: a safetensors checkpoint; the llama.cpp estimator and Smart Auto read GGUF "
                "files (the start preview shows what vLLM / SGLang / LMDeploy will reserve)"
            )
        return path

    def local(self, cfg: ModelConfig) -> LocalModel | None:
        try:
            return self.library.get(cfg.model)
        except NotFound:
            return None


def _stem(m: LocalModel) -> str:
    stem = Path(m.path).name.removesuffix(".gguf")
    return re.sub(r"-00001-of-\d{5}$", "", stem)
