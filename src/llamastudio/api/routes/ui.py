"""The web UI: the built Vue app (``llamastudio/web/dist``, shipped in the package) at ``/``, with
every unknown non-API path answered by ``index.html`` (client-side routes; the app shows its own
"page not found"), and the API reference, Swagger UI at ``/docs`` and ReDoc at ``/redoc``, whose
scripts are served from ``dist/docs-assets/`` (copied from their npm packages by the web build:
``web/docs-assets.ts``), never from a CDN, so both work offline.

Paths are hostile until checked: one with a NUL or other control character, a ``.``/``..``
segment, a backslash, an encoded separator (``%2F``, ``%5C``), or bytes that are not UTF-8 is a
404 in the error shape, never a 500 and never the SPA; a file is served only when its resolved path
(symlinks followed) is inside ``dist``.
"""

from __future__ import annotations

import re
from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse, Response

from llamastudio.errors import NotFound

DIST = Path(__file__).resolve().parents[2] / "web" / "dist"
DOCS_ASSETS = "/docs-assets"  # web/docs-assets.ts writes the files there
TITLE = "llama.cpp Studio API"
# the docs pages load nothing from another host (their inline start-up script and styles, ReDoc's
# search worker from a blob: URL); a browser refuses anything else they would ask for
DOCS_CSP = (
    "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data: blob:; font-src 'self' data:; worker-src 'self' blob:; connect-src 'self'"
)
router = APIRouter(include_in_schema=False)

_MISSING = """<!doctype html><meta charset="utf-8"><title>llama.cpp Studio</title>
<body style="font-family:sans-serif;max-width:40rem;margin:3rem auto">
<h1>llama.cpp Studio</h1><p>The web UI is not built in this installation. Run <code>make run</code>
from a checkout (it builds it), or use the <a href="/docs">REST API</a>.</p></body>"""

_ENCODED_SEPARATOR = re.compile(rb"%(2f|5c|00)", re.IGNORECASE)
_CONTROL = re.compile(r"[\x00-\x1f\x7f\ufffd\\]")  # U+FFFD: bytes that were not UTF-8


def _hostile(path: str, raw_path: bytes) -> bool:
    if _CONTROL.search(path) or _ENCODED_SEPARATOR.search(raw_path):
        return True
    try:
        raw_path.decode("utf-8")
    except UnicodeDecodeError:
        return True
    return any(part in (".", "..") for part in path.split("/"))


def _file(dist: Path, path: str) -> Path | None:
    """``dist/path`` when it is a regular file inside ``dist`` once resolved, else None."""
    try:
        target = (dist / path).resolve()
        return target if target.is_relative_to(dist) and target.is_file() else None
    except (OSError, RuntimeError, ValueError):  # too long, a symlink loop, ...
        return None


@router.get("/docs")
def swagger_ui() -> HTMLResponse:
    """Swagger UI: the operations, with "Try it out" against this studio."""
    page = get_swagger_ui_html(
        openapi_url="/openapi.json",
        title=f"{TITLE} (Swagger UI)",
        swagger_js_url=f"{DOCS_ASSETS}/swagger-ui-bundle.js",
        swagger_css_url=f"{DOCS_ASSETS}/swagger-ui.css",
        swagger_favicon_url=f"{DOCS_ASSETS}/favicon-32x32.png",
    )
    page.headers["Content-Security-Policy"] = DOCS_CSP
    return page


@router.get("/redoc")
def redoc() -> HTMLResponse:
    page = get_redoc_html(
        openapi_url="/openapi.json",
        title=f"{TITLE} (ReDoc)",
        redoc_js_url=f"{DOCS_ASSETS}/redoc.standalone.js",
        redoc_favicon_url=f"{DOCS_ASSETS}/favicon-32x32.png",
        with_google_fonts=False,
    )
    page.headers["Content-Security-Policy"] = DOCS_CSP
    return page


@router.get("/{path:path}")
def ui(path: str, request: Request) -> Response:
    if path.startswith(("api/", "ws")) or path in ("api", "openapi.json"):
        raise NotFound(f"no route /{path}")
    if _hostile(path, request.scope.get("raw_path") or b""):
        raise NotFound("no such page")
    dist = DIST.resolve()
    index = dist / "index.html"
    if not index.is_file():
        return HTMLResponse(_MISSING)
    target = _file(dist, path) if path else None
    if target is not None:
        cache = "public, max-age=31536000, immutable" if "/assets/" in f"/{path}" else "no-cache"
        return FileResponse(target, headers={"Cache-Control": cache})
    return FileResponse(index, headers={"Cache-Control": "no-cache"})
