"""Downloads as jobs of the one job system (kind ``download``): the runner pulls the files in a
thread and reports bytes; a pause or cancel stops it between chunks (partial data stays in the HF
cache, so a resume — or a restart, which requeues it — continues where it stopped).

:class:`Downloads` resolves what a request means (repo + quant or file → files) before a job
exists, and keeps the REST shape of ``/api/downloads`` (bytes, speed, ETA, paths).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from llamastudio.checkpoint import CONFIG
from llamastudio.checkpoint.config import checkpoint_label
from llamastudio.checkpoint.remote import MAX_JSON, fetch_bytes, parse_json_object
from llamastudio.hub.client import HubClient
from llamastudio.hub.download import pull_files, repo_format, select_files
from llamastudio.hub.quants import RepoFile
from llamastudio.jobs import Job, JobContext, JobKind, JobManager, JobState, Recovery

DOWNLOAD = "download"
KINDS = (DOWNLOAD,)


def download_kind(client_factory: Callable[[], HubClient], concurrency: int = 2) -> JobKind:
    async def run(ctx: JobContext) -> dict[str, Any]:
        p = ctx.params
        files = [RepoFile(f["path"], f["size"], f["sha256"]) for f in p["files"]]
        total = float(p.get("bytes_total") or sum(f.size for f in files))
        finished: dict[str, int] = {}

        def on_progress(name: str, done: int, _size: int) -> None:  # on the transfer thread
            finished[name] = done
            ctx.progress(sum(finished.values()), total, unit="bytes")

        ctx.progress(0, total, f"downloading {len(files)} file(s)", unit="bytes")
        client = client_factory()
        paths = await asyncio.to_thread(
            pull_files, client, p["repo"], p["revision"], files, on_progress, ctx.stop
        )
        return {"paths": [str(path) for path in paths]}

    return JobKind(
        DOWNLOAD, run, concurrency=concurrency, recovery=Recovery.RESUME, pausable=True, retain=200
    )


def download_view(job: Job) -> dict[str, Any]:
    """The ``/api/downloads`` shape of a download job."""
    total = int(job.params.get("bytes_total", 0))
    done = total if job.state == JobState.DONE else int(job.progress.done)
    running = job.state == JobState.RUNNING
    return {
        "id": job.id,
        "state": job.state.value,
        "title": job.title,
        "progress": 1.0 if job.state == JobState.DONE else (job.progress.fraction or 0.0),
        "error": job.error,
        "repo": job.params.get("repo"),
        "format": job.params.get("format"),
        "files": [f["path"] for f in job.params.get("files", [])],
        "bytes_total": total,
        "bytes_done": done,
        "speed": (job.rate or 0.0) if running else 0.0,
        "eta_s": job.eta_s if running else None,
        "created_at": job.created_at.isoformat(),
        "paths": job.result.get("paths", []),
    }


class Downloads:
    """Download jobs: submit (files resolved first), and the REST views of the job system's."""

    def __init__(self, jobs: JobManager, client_factory: Callable[[], HubClient]) -> None:
        self.jobs = jobs
        self.client_factory = client_factory

    async def submit(
        self,
        repo: str,
        quant: str | None = None,
        file: str | None = None,
        revision: str | None = None,
        fmt: str | None = None,
    ) -> dict[str, Any]:
        """``fmt``: ``gguf`` or ``safetensors`` (a transformers checkpoint: its shards, configs
        and tokenizer); None: GGUF when the repo has GGUF files, else its checkpoint."""
        client = self.client_factory()

        def resolve() -> tuple[str, list[RepoFile]]:  # the Hub's file list; config.json for a quant
            sha, files = client.files(repo, revision)
            kind = repo_format(files, fmt)

            def label() -> str:
                config = fetch_bytes(client.url(repo, CONFIG, sha), client.token, most=MAX_JSON)
                return checkpoint_label(parse_json_object(f"{repo}/{CONFIG}", config), repo)

            return kind, select_files(repo, files, quant, file, kind, label)

        kind, wanted = await asyncio.to_thread(resolve)
        params = {
            "repo": repo,
            "revision": revision or "main",
            "quant": quant,
            "format": None if file else kind,
            "bytes_total": sum(f.size for f in wanted),
            "files": [{"path": f.path, "size": f.size, "sha256": f.sha256} for f in wanted],
        }
        title = f"{repo}:{quant or file}" if quant or file else repo
        return download_view(self.jobs.submit(DOWNLOAD, title, params))

    def get(self, job_id: str) -> dict[str, Any]:
        return download_view(self.jobs.get(job_id, KINDS))

    def list(self) -> list[dict[str, Any]]:
        return [download_view(j) for j in self.jobs.list(KINDS)]

    def cancel(self, job_id: str) -> dict[str, Any]:
        self.jobs.get(job_id, KINDS)
        return download_view(self.jobs.cancel(job_id))

    def pause(self, job_id: str) -> dict[str, Any]:
        self.jobs.get(job_id, KINDS)
        return download_view(self.jobs.pause(job_id))

    def resume(self, job_id: str) -> dict[str, Any]:
        self.jobs.get(job_id, KINDS)
        return download_view(self.jobs.resume(job_id))
