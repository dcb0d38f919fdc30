"""The web UI: the built Vue app (``llamastudio/web/dist``, shipped in the package) at ``/``, with
every unknown non-API path answered by ``index.html`` (client-side routes)."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse, HTMLResponse, Response

from llamastudio.errors import NotFound

DIST = Path(__file__).resolve().parents[2] / "web" / "dist"
router = APIRouter(include_in_schema=False)

_MISSING = """<!doctype html><meta charset="utf-8"><title>llama.cpp Studio</title>
<body style="font-family:sans-serif;max-width:40rem;margin:3rem auto">
<h1>llama.cpp Studio</h1><p>The web UI is not built in this installation. Run <code>make run</code>
from a checkout (it builds it), or use the <a href="/docs">REST API</a>.</p></body>"""


@router.get("/{path:path}")
def ui(path: str) -> Response:
    if path.startswith(("api/", "ws")) or path in ("api", "openapi.json"):
        raise NotFound(f"no route /{path}")
    index = DIST / "index.html"
    if not index.is_file():
        return HTMLResponse(_MISSING)
    target = (DIST / path).resolve()
    if path and target.is_relative_to(DIST) and target.is_file():
        cache = "public, max-age=31536000, immutable" if "/assets/" in f"/{path}" else "no-cache"
        return FileResponse(target, headers={"Cache-Control": cache})
    return FileResponse(index, headers={"Cache-Control": "no-cache"})
