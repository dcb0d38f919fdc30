"""One-model mode: the seeds' single-model images (``MODEL=org/repo:QUANT``, ``MODEL_PATH=…``)
on the studio. ``serve`` with ``model`` or ``model_path`` set (``Settings.one_model``) runs it in
two steps:

1. :meth:`OneModel.resolve`, before the listeners open: which file — ``model_path``; a quant
   already in the Hugging Face cache (no Hub request); else the Hub's file list — and whether it
   fits this machine with the requested context (``onefit.py``). For ``org/repo`` alone the
   largest quant that fits fully is chosen, each candidate's verdict logged. A model that cannot
   fit ends the start there: :class:`DoesNotFit` with the estimate (``serve`` exits 3).
2. :meth:`OneModel.run`, once the listeners answer: the download as a ``download`` job (one a
   previous start left unfinished is resumed, not repeated), the configuration stored (the fit's
   flags; ``max_tokens`` as llama-server's ``-n``, the default of a request that sets none),
   pinned, and loaded. :attr:`OneModel.ready` turns true only then: ``/health`` says 503 until it
   does (``server.py``).

Every step is one plain log line (``docker logs``): what was chosen and why, download progress
every few seconds, the load's stages. The configuration is stored under the model's name like
any other (it stays, pinned, when the studio later starts without ``MODEL``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from llamastudio.config import Settings
from llamastudio.engines.load_progress import LoadProgress
from llamastudio.errors import DoesNotFit, HubUnreachable, InvalidInput, NotFound, RemoteError
from llamastudio.events import EventBus
from llamastudio.gguf import GGUFModel, load_model
from llamastudio.hub.jobs import Downloads
from llamastudio.hub.library import LocalModel, check_gguf, resolve_local, served_name_for
from llamastudio.hub.paths import check_repo_id
from llamastudio.hub.quants import find_group, group_files
from llamastudio.hub.remote import HeaderCache, remote_model
from llamastudio.services.onefit import Fit, MiB, check_fit
from llamastudio.services.studio import StudioService
from llamastudio.serving.configs import ModelConfig

log = logging.getLogger("llamastudio.onemodel")
PROGRESS_EVERY = 5.0  # seconds between download progress lines
_ACTIVE = ("queued", "running", "paused")


@dataclass(frozen=True)
class Choice:
    """What one-model mode serves: a library id or a path, fitted; ``quant`` is downloaded first
    when ``download`` is set."""

    name: str  # the name it is served under
    model: str  # library id (``org/repo:QUANT``) or the GGUF's path
    fit: Fit
    repo: str | None = None
    quant: str | None = None
    download: bool = False


def parse_model(spec: str) -> tuple[str, str | None]:
    """``org/repo:QUANT`` → (repo, quant); ``org/repo`` → (repo, None); anything else is a 400."""
    repo, _, quant = spec.strip().partition(":")
    check_repo_id(repo)
    if quant and not quant.replace("-", "").replace("_", "").isalnum():
        raise InvalidInput(f"MODEL={spec!r}: the quant after ':' must look like Q4_K_M")
    return repo, quant or None


class OneModel:
    def __init__(
        self, settings: Settings, service: StudioService, downloads: Downloads, bus: EventBus
    ) -> None:
        """``bus``: where the engine's output lines are published (the load's stages are read
        from them)."""
        self.settings = settings
        self.service = service
        self.downloads = downloads
        self.bus = bus
        self.phase = "starting"  # resolving → downloading → loading → ready
        self.detail = ""
        self.choice: Choice | None = None

    @property
    def ready(self) -> bool:
        return self.phase == "ready"

    def health(self) -> dict[str, Any]:
        """The body of ``/health``: ``ok`` once the model is loaded, else what it is doing."""
        body: dict[str, Any] = {"status": "ok" if self.ready else "loading", "phase": self.phase}
        if self.choice is not None:
            body["model"] = self.choice.name
        if self.detail and not self.ready:
            body["detail"] = self.detail
        return body

    # -- 1. before the listeners -----------------------------------------------------------------
    async def resolve(self) -> Choice:
        self.phase = "resolving"
        self.choice = await asyncio.to_thread(self._resolve)
        return self.choice

    def _resolve(self) -> Choice:
        """Blocking: the library listing, headers (local, or ranges from the Hub), the planner."""
        s = self.settings
        if s.model_path is not None:
            path = check_gguf(resolve_local(s.model_path))
            fit = self._fitted(f"MODEL_PATH={s.model_path}", load_model(str(path)))
            return Choice(s.model_name or served_name_for(path), str(path), fit)
        assert s.model is not None
        repo, quant = parse_model(s.model)
        name = s.model_name or s.model.strip()
        library = self.service.runtime.library.models(with_facts=False)
        local = {m.quant.upper(): m for m in library if m.repo == repo and m.format == "gguf"}
        if quant and quant.upper() in local:  # downloaded before: no Hub request at all
            m = local[quant.upper()]
            log.info("one-model: %s is in the Hugging Face cache: %s", m.id, m.path)
            return Choice(name, m.id, self._fitted(f"MODEL={s.model}", load_model(m.path)), repo, m.quant)
        if quant:
            client = self.downloads.client_factory()
            sha, files = client.files(repo)
            group = find_group(group_files(files), quant)
            cache = HeaderCache(s.header_cache_dir, client.token)
            fit = self._fitted(f"MODEL={s.model}", remote_model(client, repo, sha, group, cache))
            return Choice(name, f"{repo}:{group.label}", fit, repo, group.label, download=True)
        return self._pick(name, repo, local)

    def _fitted(self, what: str, model: GGUFModel) -> Fit:
        try:
            fit = check_fit(model, self.service.runtime.hw, self.settings)
        except DoesNotFit as exc:
            raise DoesNotFit(
                f"{what} cannot be served on this machine: {exc.message}. Lower CTX_SIZE or PARALLEL, "
                "or choose a smaller quant"
            ) from exc
        log.info("one-model: %s fits: %s", what, fit.summary())
        if not fit.full:
            log.warning("one-model: %s does not fit fully on the GPUs: part of it runs on the CPU", what)
        return fit

    def _pick(self, name: str, repo: str, local: dict[str, LocalModel]) -> Choice:
        """``org/repo`` alone: the largest quant that fits fully; if none does, the smallest that
        fits at all (most of it on the GPUs); if none fits, DoesNotFit with the smallest's estimate."""
        s = self.settings
        client = self.downloads.client_factory()
        cache = HeaderCache(s.header_cache_dir, client.token)
        candidates: list[tuple[str, int, Callable[[], GGUFModel]]] = []  # (quant, bytes, header)
        try:
            sha, files = client.files(repo)
            for g in group_files(files):
                cached = local.get(g.label.upper())
                loader: Callable[[], GGUFModel] = (
                    partial(load_model, cached.path)
                    if cached
                    else partial(remote_model, client, repo, sha, g, cache)
                )
                candidates.append((g.label, g.size, loader))
        except HubUnreachable as exc:
            if not local:
                raise
            log.warning(
                "one-model: %s; choosing among the %d quant(s) already downloaded", exc.message, len(local)
            )
            candidates = [(m.quant, m.size, partial(load_model, m.path)) for m in local.values()]
        if not candidates:
            raise NotFound(f"MODEL={repo}: the repository has no GGUF files")
        candidates.sort(key=lambda c: -c[1])
        hw = self.service.runtime.hw
        where = "on the GPUs" if hw.gpus else "in RAM"
        log.info(
            "one-model: %s has %d quant(s): %s; choosing the largest that fits fully %s",
            repo,
            len(candidates),
            ", ".join(f"{q} ({n / MiB:,.0f} MiB)" for q, n, _ in candidates),
            where,
        )
        fallback: tuple[str, Fit] | None = None
        failure: DoesNotFit | None = None
        for quant, size, loader in candidates:
            try:
                fit = check_fit(loader(), hw, s)
            except DoesNotFit as exc:
                log.info(
                    "one-model: %s:%s (%s MiB) does not fit: %s",
                    repo,
                    quant,
                    f"{size / MiB:,.0f}",
                    exc.message,
                )
                failure = exc
                continue
            if fit.full:
                log.info(
                    "one-model: chose %s:%s, the largest quant that fits fully %s: %s",
                    repo,
                    quant,
                    where,
                    fit.summary(),
                )
                return Choice(name, f"{repo}:{quant}", fit, repo, quant, quant.upper() not in local)
            log.info("one-model: %s:%s fits only partly: %s", repo, quant, fit.summary())
            fallback = (quant, fit)  # candidates go from large to small: the last is the smallest
        if fallback is not None:
            quant, fit = fallback
            log.warning(
                "one-model: no quant of %s fits fully %s; chose the smallest, %s, which fits with %s",
                repo,
                where,
                quant,
                fit.summary(),
            )
            return Choice(name, f"{repo}:{quant}", fit, repo, quant, quant.upper() not in local)
        smallest = candidates[-1]
        detail = failure.message if failure else "no estimate"
        raise DoesNotFit(
            f"MODEL={repo} cannot be served on this machine: no quant fits; the smallest, {smallest[0]} "
            f"({smallest[1] / MiB:,.0f} MiB): {detail}. Lower CTX_SIZE or PARALLEL"
        )

    # -- 2. once the listeners answer --------------------------------------------------------------
    async def run(self) -> None:
        """Download (if needed), configure, load and pin; ``ready`` once loaded. Raises on a
        failure (``serve`` then exits non-zero with the message)."""
        c = self.choice or await self.resolve()
        model = c.model
        if c.download:
            model = await self._download(c)
        args = c.fit.args(self.settings.max_tokens)
        cfg = ModelConfig(name=c.name, model=model, args=args, pinned=True)
        await self.service.put_config(cfg)
        log.info("one-model: %s configured (pinned): llama-server %s", c.name, " ".join(args))
        self.phase, self.detail = "loading", ""
        log.info("one-model: loading %s", c.name)
        lines = self.bus.subscribe()  # before the start: no line of the engine's is missed
        watch = asyncio.create_task(self._watch_load(c.name, lines))
        started = time.monotonic()
        try:
            await self.service.start_model(c.name)
        finally:
            watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watch
            self.bus.unsubscribe(lines)
        self.phase = "ready"
        log.info(
            "one-model: %s is loaded and ready (%.1f s): serving requests", c.name, time.monotonic() - started
        )

    async def _download(self, c: Choice) -> str:
        """The quant's files into the HF cache as a download job; returns its library id."""
        title = f"{c.repo}:{c.quant}"
        self.phase = "downloading"
        job = next((v for v in self.downloads.list() if v["title"] == title and v["state"] in _ACTIVE), None)
        if job is None:
            # a download job a killed start left is resumed when the studio starts, and may have
            # finished since the quant was looked for
            found = await asyncio.to_thread(self._local_id, c)
            if found is not None:
                log.info(
                    "one-model: %s is in the Hugging Face cache now (the download a previous start left)",
                    title,
                )
                return found
            assert c.repo is not None
            job = await self.downloads.submit(c.repo, quant=c.quant)
        elif job["state"] == "paused":
            job = self.downloads.resume(job["id"])
        else:
            log.info("one-model: continuing the download a previous start left: %s", title)
        log.info(
            "one-model: downloading %s: %s (%s MiB) into the Hugging Face cache",
            title,
            ", ".join(job["files"]),
            f"{job['bytes_total'] / MiB:,.1f}",
        )
        last = 0.0
        while True:
            view = self.downloads.get(job["id"])
            state = view["state"]
            if state == "done":
                log.info("one-model: downloaded %s", title)
                break
            if state in ("failed", "cancelled"):
                raise RemoteError(
                    f"MODEL={self.settings.model}: the download of {title} {state}: {view['error']}"
                )
            done, total = view["bytes_done"], view["bytes_total"] or 1
            self.detail = f"downloading {100 * done / total:.0f}%"
            if time.monotonic() - last >= PROGRESS_EVERY:
                last = time.monotonic()
                eta = f", about {view['eta_s']:.0f} s left" if view["eta_s"] else ""
                log.info(
                    "one-model: downloading %s: %.0f%% (%s of %s MiB, %s MiB/s%s)",
                    title,
                    100 * done / total,
                    f"{done / MiB:,.1f}",
                    f"{total / MiB:,.1f}",
                    f"{view['speed'] / MiB:,.1f}",
                    eta,
                )
            await asyncio.sleep(0.5)
        return await asyncio.to_thread(self._library_id, c, view["paths"])

    def _local_id(self, c: Choice) -> str | None:
        """The library id of the chosen quant when it is in the Hugging Face cache."""
        for m in self.service.runtime.library.models(with_facts=False):
            if m.repo == c.repo and m.quant.upper() == (c.quant or "").upper() and m.format == "gguf":
                return m.id
        return None

    def _library_id(self, c: Choice, paths: list[str]) -> str:
        """The library id of what was downloaded (else its first file's path)."""
        found = self._local_id(c)
        if found is not None:
            return found
        if not paths:
            raise NotFound(f"{c.repo}:{c.quant}: downloaded, but not found in the Hugging Face cache")
        return str(Path(paths[0]))

    async def _watch_load(self, name: str, events: asyncio.Queue[dict[str, Any]]) -> None:
        """Log each stage of the load as the engine's output reaches it (the stages the load job
        shows: ``engines/load_progress.py``)."""
        stages = LoadProgress(_StageLog(self, name))
        while not stages.done:
            event = await events.get()
            if event.get("type") == "log" and event.get("model") == name:
                stages.feed(str(event.get("line", "")))


class _StageLog:
    """A load-progress reporter that logs each stage reached as one line."""

    def __init__(self, one: OneModel, name: str) -> None:
        self.one, self.name = one, name

    def progress(
        self, done: float, total: float | None = None, message: str | None = None, unit: str | None = None
    ) -> None:
        if message and done:
            self.one.detail = message
            log.info("one-model: loading %s: %s (%d/%d)", self.name, message, done, total or 0)

    def log(self, line: str) -> None:
        """The engine's lines stay in its own log."""
