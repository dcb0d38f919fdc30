"""llama.cpp's llama-server: a GGUF on a registered build.

The argv is built from the engine's own ``--help`` (flags it lacks are rewritten or left out,
``engines/command.py``); memory is the estimator's per-device figures for the flags it will run
with (or the planner's, with ``auto``), unless the configuration reserves its own; it takes a
per-process key with ``--api-key-file``; ready when ``/health`` says 200.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from llamastudio.engines.command import build_command
from llamastudio.engines.kinds.base import COMMON_FATAL, PORT, EngineKind, LaunchPlan, ModelRequest, Traits
from llamastudio.engines.kinds.threads import (
    SPIN,
    cpu_threads,
    links_libgomp,
    one_per_core,
    placement,
    usable_cpus,
)
from llamastudio.engines.registry import Engine
from llamastudio.errors import InvalidInput
from llamastudio.fit.argv import parse_server_args
from llamastudio.fit.companions import MAX_EMBED_BATCH, Companions
from llamastudio.fit.estimator import estimate
from llamastudio.fit.flags import ServerFlags
from llamastudio.fit.planner import plan
from llamastudio.gguf import ModelFacts, facts_from_model
from llamastudio.hardware.devices import Hardware


class LlamaCppKind(EngineKind):
    name = "llama.cpp"
    fatal = re.compile(
        f"({COMMON_FATAL}|failed to load model|error loading model|GGML_ASSERT|"
        r"exiting due to model loading error|unable to load model|"
        # an RPC worker (--rpc) gone or on another build: ggml-rpc.cpp aborts with these
        r"Failed to connect to \S+|RPC handshake failed|Remote RPC server crashed|"
        r"RPC server version mismatch)",
        re.IGNORECASE,
    )

    def plan(self, request: ModelRequest, engine: Engine | None, hw: Hardware) -> LaunchPlan:
        if engine is None or request.model_path is None or request.header is None:
            raise InvalidInput(f"{request.name}: a llama.cpp model needs an engine and a GGUF file")
        facts = facts_from_model(request.header)
        base, traits, warnings = _purpose_flags(request, engine, facts)
        reasons: list[str] = []
        extra = Companions(request.mmproj if traits.vision else None, request.draft)
        if request.auto:
            # flags the user gave are kept; the planner chooses the rest
            ctx = base.ctx_size or None
            parallel = base.parallel if base.parallel > 0 else None
            p = plan(request.header, hw, ctx=ctx, parallel=parallel, base=base, companions=extra)
            flags, est, reasons = p.flags, p.estimate, p.reasons
            warnings += p.warnings
        else:
            flags, est = base, estimate(request.header, base, hw.gpus, facts=facts, companions=extra)
        reserve = {d.name: d.total for d in est.devices if d.total}
        if request.reserve:  # the user's own figure wins
            reserve = dict(request.reserve)
        cmd = build_command(engine, str(request.model_path), flags, "127.0.0.1", 0)
        argv = list(cmd.argv)
        argv[argv.index("--port") + 1] = PORT
        if "--alias" in engine.capabilities and "--alias" not in request.args and "-a" not in request.args:
            argv += ["--alias", request.name]
        threads = cpu_threads(argv, flags, est, hw.cpu_cores)
        env: dict[str, str] = {}
        pinned: list[str] = []
        if request.pin and "--cpu-strict" in engine.capabilities and links_libgomp(engine.server):
            cpus = usable_cpus()
            pinned = placement(argv, threads, cpus, one_per_core(cpus))
            if pinned:
                argv += pinned
                if not {"GOMP_SPINCOUNT", "OMP_WAIT_POLICY"} & (request.env.keys() | os.environ.keys()):
                    env["GOMP_SPINCOUNT"] = SPIN  # unless the configuration or the studio's own says
                spin = f", GOMP_SPINCOUNT={SPIN}" if env else ""
                reasons.append(
                    f"{threads} compute threads take every core: each pinned to its own CPU "
                    f"(-C {pinned[1]} --cpu-strict 1{spin}), so two never share a core while another idles"
                )
        return LaunchPlan(
            argv,
            reserve,
            threads=threads,
            env=env,
            placement=pinned,
            estimate=est,
            reasons=reasons,
            warnings=warnings,
            dropped=cmd.dropped,
            traits=traits,
        )

    def takes_key(self, engine: Engine | None) -> bool:
        return engine is not None and "--api-key-file" in engine.capabilities


LLAMA_CPP = LlamaCppKind()
# flags that give a model a chat template other than the one in its file
_TEMPLATE_FLAGS = ("--chat-template", "--chat-template-file")


def _purpose_flags(
    request: ModelRequest, engine: Engine, facts: ModelFacts
) -> tuple[ServerFlags, Traits, list[str]]:
    """The flags a model's purpose needs (embedding, reranking, its projector and draft, jinja for
    tools), what it does for the gateway, and warnings for the faces."""
    base = parse_server_args(request.args)
    warnings: list[str] = []
    name = request.name
    if facts.role == "mmproj":
        raise InvalidInput(
            f"{name}: {request.model_path} is a multimodal projector (mmproj), not a model: it is "
            "loaded beside its text model (set it with --mmproj in that model's flags)"
        )
    role = "rerank" if base.reranking else "embedding" if base.embedding else facts.role
    if role == "rerank" and not (facts.classifier or facts.pooling == "rank"):
        # llama-server starts it with a warning and answers with meaningless scores
        raise InvalidInput(
            f"{name}: --reranking needs a reranker (a model with a classification head, cls.*, or "
            "rank pooling); this model has neither: use an embedding model's /v1/embeddings instead"
        )
    if role == "rerank":
        base = base.with_(reranking=True, embedding=False)
    elif role == "embedding":
        base = base.with_(embedding=True)
    if role != "chat":
        # bidirectional models see a whole input in one micro-batch: llama-server refuses an input
        # longer than -ub, so the batch sizes cover the context the model was trained for
        n = min(facts.context_length or 512, base.ctx_size or 1 << 30, MAX_EMBED_BATCH)
        if base.ubatch_size < n or base.batch_size < n:
            base = base.with_(batch_size=max(base.batch_size, n), ubatch_size=max(base.ubatch_size, n))
    mmproj = request.mmproj
    if mmproj is not None and role != "chat":
        warnings.append(f"{name} is an {role} model: its projector {mmproj.location} is left out")
        mmproj = None
    draft = request.draft
    try:
        if request.header is not None:
            Companions(mmproj, draft).check(request.header, facts.embedding_length)
    except InvalidInput as exc:
        raise InvalidInput(f"{name}: {exc.message}") from None
    base = base.with_(mmproj=mmproj.location if mmproj is not None else None)
    if draft is not None:
        base = base.with_(draft_model=draft.location)
        if "--spec-type" in engine.capabilities and "--spec-type" not in _flag_names(base.extra):
            # this llama.cpp loads -md without --spec-type but never drafts with it
            base = base.with_(extra=(*base.extra, "--spec-type", "draft-simple"))
    _check_template_file(name, base.extra)
    templated = facts.chat_template or any(f in _TEMPLATE_FLAGS for f in _flag_names(base.extra))
    jinja_default = "--no-jinja" in engine.capabilities  # builds that can turn it off have it on
    if (
        role == "chat"
        and facts.tools
        and not jinja_default
        and "--jinja" in engine.capabilities
        and "--jinja" not in base.extra
    ):
        base = base.with_(extra=(*base.extra, "--jinja"))  # tool calls need the jinja renderer
    if role == "chat" and not templated:
        warnings.append(
            f"{name} has no chat template (a base model): chat requests get llama-server's fallback "
            "template and rambling answers; use /v1/completions, or set --chat-template"
        )
    traits = Traits(
        role=role,
        vision=mmproj is not None,
        chat_template=templated if role == "chat" else None,
        template_family=facts.template_family,
        tools=facts.tools or templated != facts.chat_template or _overridden(base.extra),
        draft=draft.location if draft is not None else None,
    )
    return base, traits, warnings


MAX_TEMPLATE = 1 << 20


def _check_template_file(name: str, extra: tuple[str, ...]) -> None:
    """``--chat-template-file``: an absolute path to a readable text file of at most 1 MiB (the
    engine would start and then fail, or read something that is no template)."""
    tokens = list(extra)
    for i, token in enumerate(tokens):
        flag, eq, value = token.partition("=")
        if flag != "--chat-template-file":
            continue
        value = value if eq else (tokens[i + 1] if i + 1 < len(tokens) else "")
        path = Path(value)
        if not path.is_absolute():
            raise InvalidInput(f"{name}: --chat-template-file {value!r}: give an absolute path")
        try:
            if not path.is_file() or path.stat().st_size > MAX_TEMPLATE:
                raise InvalidInput(f"{name}: --chat-template-file {value}: not a file of at most 1 MiB")
            path.read_bytes().decode("utf-8")
        except OSError as exc:
            raise InvalidInput(
                f"{name}: --chat-template-file {value}: cannot be read ({exc.strerror})"
            ) from None
        except UnicodeDecodeError:
            raise InvalidInput(f"{name}: --chat-template-file {value}: not UTF-8 text") from None


def _overridden(extra: tuple[str, ...]) -> bool:
    """Whether the flags replace the model's chat template (what it renders is then not known)."""
    return any(f in _TEMPLATE_FLAGS for f in _flag_names(extra))


def _flag_names(tokens: tuple[str, ...]) -> list[str]:
    return [t.partition("=")[0] for t in tokens if t.startswith("-")]
