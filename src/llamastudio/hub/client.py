"""The Hub through ``huggingface_hub`` (``HF_ENDPOINT`` honoured), its errors mapped once, here."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Literal, TypeVar

import httpx
import httpx2
from huggingface_hub import HfApi, hf_hub_url, set_client_factory
from huggingface_hub.errors import (
    EntryNotFoundError,
    GatedRepoError,
    HfHubHTTPError,
    RepositoryNotFoundError,
)
from huggingface_hub.utils._http import hf_request_event_hook

from llamastudio.errors import (
    AuthRequired,
    HubTimeout,
    HubUnreachable,
    InvalidInput,
    NotFound,
    RemoteError,
)
from llamastudio.hub.paths import check_commit, check_file_name, check_repo_id, check_revision
from llamastudio.hub.quants import RepoFile
from llamastudio.hub.token import check_token

T = TypeVar("T")
FORMATS = ("gguf", "safetensors")  # what a search looks for, and the formats a repo is read in
SortKey = Literal["downloads", "likes", "trending_score", "last_modified"]
SORTS: dict[str, SortKey] = {
    "downloads": "downloads",
    "likes": "likes",
    "trending": "trending_score",
    "updated": "last_modified",
}


def hub_token() -> str | None:
    return os.environ.get("HF_TOKEN") or os.environ.get("HUGGINGFACE_API_KEY") or None


def hub_endpoint() -> str:
    return os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")


def _seconds(name: str, default: float) -> float:
    try:
        value = float(os.environ.get(name) or default)
    except ValueError:
        return default
    return value if value > 0 else default


# An unreachable Hub is reported within seconds, not after minutes: a refused connection at once,
# no connection within CONNECT_TIMEOUT, or no answer to an API call (search, a repo's file list, a
# file's metadata) within READ_TIMEOUT, which huggingface_hub's own HF_HUB_ETAG_TIMEOUT changes
# (the Hub answers these in about a second; a slow proxy may need more). Downloads stream with
# their own, longer timeout (download.py).
CONNECT_TIMEOUT = 3.0
READ_TIMEOUT = _seconds("HF_HUB_ETAG_TIMEOUT", 4.0)


def unreachable(
    origin: str, exc: Exception, doing: str = "", read_timeout: float | None = None
) -> HubUnreachable:
    """The one message for a Hub that cannot be reached: 504 on a timeout, 502 otherwise; it names
    the endpoint and what to check. ``details.endpoint`` carries the endpoint for the UI."""
    advice = (
        "Check this machine's network connection and proxy (HTTPS_PROXY), or set HF_ENDPOINT to a "
        "reachable Hub or mirror"
    )
    if isinstance(exc, (httpx2.TimeoutException, httpx.TimeoutException)):
        connecting = isinstance(exc, (httpx2.ConnectTimeout, httpx.ConnectTimeout))
        what = (
            f"no connection within {CONNECT_TIMEOUT:g} s"
            if connecting
            else f"no answer within {read_timeout or READ_TIMEOUT:g} s"
        )
        return HubTimeout(
            f"the Hugging Face Hub at {origin} did not answer in time{doing} ({what}). {advice}",
            endpoint=origin,
        )
    detail = str(exc) or type(exc).__name__
    return HubUnreachable(
        f"the Hugging Face Hub at {origin} is unreachable{doing}: {detail}. {advice}", endpoint=origin
    )


class _FailFastTransport(httpx2.BaseTransport):
    """huggingface_hub's transport with bounded timeouts, whose connection failures end the call.

    huggingface_hub retries a failed connection five times with backoff (23 s against a closed
    port) and sets no timeout at all: a connect error, or no response within the timeouts, raises
    the studio's :class:`HubUnreachable` / :class:`HubTimeout` here, which it does not retry."""

    def __init__(self) -> None:
        self.inner = httpx2.HTTPTransport()

    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        timeout = dict(request.extensions.get("timeout") or {})
        for key in ("connect", "read", "write", "pool"):
            most = CONNECT_TIMEOUT if key == "connect" else READ_TIMEOUT
            value = timeout.get(key)
            timeout[key] = most if value is None else min(value, most)
        request.extensions["timeout"] = timeout
        try:
            return self.inner.handle_request(request)
        except (httpx2.ConnectError, httpx2.TimeoutException) as exc:  # no answer, or none in time
            raise unreachable(f"{request.url.scheme}://{request.url.netloc.decode()}", exc) from exc

    def close(self) -> None:
        self.inner.close()


def _session() -> httpx2.Client:
    return httpx2.Client(
        transport=_FailFastTransport(),
        event_hooks={"request": [hf_request_event_hook]},
        follow_redirects=True,
        timeout=httpx2.Timeout(READ_TIMEOUT, connect=CONNECT_TIMEOUT),
    )


_installed = threading.Lock()
_session_set = False


def install_session() -> None:
    """Make huggingface_hub use :func:`_session` in this process (once)."""
    global _session_set
    with _installed:
        if not _session_set:
            set_client_factory(_session)
            _session_set = True


@contextmanager
def hub_errors(repo: str) -> Iterator[None]:
    """Convert huggingface_hub's exceptions to the studio's, with what to do about them."""
    try:
        yield
    except (httpx2.TransportError, httpx.TransportError) as exc:  # after huggingface_hub's retries
        raise unreachable(hub_endpoint(), exc) from exc
    except GatedRepoError as exc:
        raise AuthRequired(
            f"{repo} is gated: accept its terms at {hub_endpoint()}/{repo} while logged in, then set "
            "HF_TOKEN to a token of that account"
        ) from exc
    except RepositoryNotFoundError as exc:
        raise NotFound(
            f"repository {repo} not found (or private: set HF_TOKEN to a token with access)"
        ) from exc
    except EntryNotFoundError as exc:
        raise NotFound(f"{repo}: file not found: {exc}") from exc
    except HfHubHTTPError as exc:
        raise RemoteError(f"{repo}: {exc}") from exc


class HubClient:
    def __init__(self, endpoint: str | None = None, token: str | None = None) -> None:
        self.endpoint = (endpoint or hub_endpoint()).rstrip("/")
        self.token = token if token is not None else hub_token()
        if self.token:
            check_token(self.token, "the Hugging Face token")
        install_session()
        self.api = HfApi(endpoint=self.endpoint, token=self.token or False)

    def search(
        self,
        query: str = "",
        sort: str = "downloads",
        limit: int = 20,
        author: str | None = None,
        fmt: str = "gguf",
    ) -> list[dict[str, Any]]:
        """Repos holding ``fmt`` weights: ``gguf`` files, or ``safetensors`` (transformers
        checkpoints: the Hub's ``safetensors`` filter)."""
        if sort not in SORTS:
            raise InvalidInput(f"sort {sort!r}: choose from {', '.join(SORTS)}")
        if fmt not in FORMATS:
            raise InvalidInput(f"format {fmt!r}: choose from {', '.join(FORMATS)}")
        with hub_errors(query or "search"):
            models = self.api.list_models(
                search=query or None, author=author, filter=fmt, sort=SORTS[sort], limit=limit, full=True
            )
            out = []
            for m in models:
                card = getattr(m, "card_data", None) or {}
                license_ = card.get("license") if isinstance(card, dict) else getattr(card, "license", None)
                safetensors = getattr(m, "safetensors", None)
                out.append(
                    {
                        "id": m.id,
                        "downloads": m.downloads or 0,
                        "likes": m.likes or 0,
                        "tags": list(m.tags or []),
                        "license": license_,
                        "pipeline": m.pipeline_tag,
                        "last_modified": m.last_modified.isoformat() if m.last_modified else None,
                        "parameters": getattr(safetensors, "total", None) if safetensors else None,
                        "gated": bool(getattr(m, "gated", False)),
                        "format": fmt,
                    }
                )
            return out

    def files(self, repo: str, revision: str | None = None) -> tuple[str, list[RepoFile]]:
        """(commit sha, files with sizes and LFS sha256) of a revision.

        The repo id and revision are checked before asking; the commit and every file name the
        Hub answers with are checked before anyone builds a path from them (a hostile endpoint
        may send ``../../x``)."""
        check_repo_id(repo)
        if revision is not None:
            check_revision(revision)
        with hub_errors(repo):
            info = self.api.model_info(repo, revision=revision, files_metadata=True)
        files = [
            RepoFile(
                check_file_name(s.rfilename),
                int(s.size or (s.lfs.size if s.lfs else 0) or 0),
                s.lfs.sha256 if s.lfs else None,
            )
            for s in info.siblings or []
        ]
        sha = check_commit(info.sha, f"commit for {repo}") if info.sha else revision or "main"
        return sha, files

    def url(self, repo: str, path: str, revision: str) -> str:
        return hf_hub_url(repo, path, revision=revision, endpoint=self.endpoint)

    def call(self, repo: str, fn: Callable[[], T]) -> T:
        with hub_errors(repo):
            return fn()
