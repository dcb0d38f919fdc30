"""The Hub through ``huggingface_hub`` (``HF_ENDPOINT`` honoured), its errors mapped once, here."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Literal, TypeVar

from huggingface_hub import HfApi, hf_hub_url
from huggingface_hub.errors import (
    EntryNotFoundError,
    GatedRepoError,
    HfHubHTTPError,
    RepositoryNotFoundError,
)

from llamastudio.errors import AuthRequired, NotFound, RemoteError
from llamastudio.hub.quants import RepoFile

T = TypeVar("T")
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


@contextmanager
def hub_errors(repo: str) -> Iterator[None]:
    """Convert huggingface_hub's exceptions to the studio's, with what to do about them."""
    try:
        yield
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
        self.api = HfApi(endpoint=self.endpoint, token=self.token or False)

    def search(
        self, query: str = "", sort: str = "downloads", limit: int = 20, author: str | None = None
    ) -> list[dict[str, Any]]:
        if sort not in SORTS:
            from llamastudio.errors import InvalidInput

            raise InvalidInput(f"sort {sort!r}: choose from {', '.join(SORTS)}")
        with hub_errors(query or "search"):
            models = self.api.list_models(
                search=query or None, author=author, filter="gguf", sort=SORTS[sort], limit=limit, full=True
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
                    }
                )
            return out

    def files(self, repo: str, revision: str | None = None) -> tuple[str, list[RepoFile]]:
        """(commit sha, files with sizes and LFS sha256) of a revision."""
        with hub_errors(repo):
            info = self.api.model_info(repo, revision=revision, files_metadata=True)
            files = [
                RepoFile(
                    s.rfilename,
                    int(s.size or (s.lfs.size if s.lfs else 0) or 0),
                    s.lfs.sha256 if s.lfs else None,
                )
                for s in info.siblings or []
            ]
            return info.sha or revision or "main", files

    def url(self, repo: str, path: str, revision: str) -> str:
        return hf_hub_url(repo, path, revision=revision, endpoint=self.endpoint)

    def call(self, repo: str, fn: Callable[[], T]) -> T:
        with hub_errors(repo):
            return fn()
