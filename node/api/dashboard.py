"""The web dashboard: the page at `/` and its files under `/static/` (shipped in the package;
the HLS player is hls.js from npm, copied in by `make vendor`), and the read-only JSON views it
polls under `/v1/` (node.api.views). `dashboard_routes(views)` gives Starlette routes to mount
on the node's app; every view answers GET (and HEAD) only.

The page reads the API token from `/?token=...` once, keeps it in sessionStorage (never in a
cookie, so another site cannot ride on it) and sends it as `Authorization: Bearer` on each
request; the static files carry no secrets and need no token."""

from __future__ import annotations

from pathlib import Path

from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from node.api.views import NodeViews

STATIC = Path(__file__).resolve().parent / "static"
MAX_LOG_LIMIT = 500
# the page loads only its own files; hls.js feeds the <video> through blob: URLs and a worker
CSP = (
    "default-src 'self'; img-src 'self' data:; media-src 'self' blob:; worker-src 'self' blob:; "
    "object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'none'"
)
PAGE_HEADERS = {"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff",
                "Referrer-Policy": "no-referrer", "Cache-Control": "no-store"}  # fmt: skip


def _error(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"error": code, "message": message}, status_code=status)


def dashboard_routes(views: NodeViews) -> list[BaseRoute]:
    async def page(request: Request) -> Response:
        return FileResponse(STATIC / "index.html", headers=PAGE_HEADERS)

    async def network(request: Request) -> Response:
        return JSONResponse(await views.network())

    async def stake(request: Request) -> Response:
        return JSONResponse(await views.stake())

    async def log(request: Request) -> Response:
        query = request.query_params
        limit_text = query.get("limit", "100")
        if not limit_text.isdigit() or not 1 <= int(limit_text) <= MAX_LOG_LIMIT:
            return _error(400, "bad_request", f"limit is a number from 1 to {MAX_LOG_LIMIT}")
        kind, author = query.get("kind", ""), query.get("author", "")
        if len(kind) > 64 or len(author) > 42:
            return _error(400, "bad_request", "kind or author is too long")
        return JSONResponse(await views.log(kind, author, int(limit_text)))

    async def audit(request: Request) -> Response:
        return JSONResponse(await views.audit())

    async def segments(request: Request) -> Response:
        job_id = request.path_params["job_id"]
        found = views.segments(job_id) if len(job_id) <= 64 else None
        if found is None:
            return _error(404, "unknown_job", f"no job {job_id[:64]!r}")
        return JSONResponse(found)

    get = ["GET", "HEAD"]
    return [
        Route("/", page, methods=get),
        Route("/v1/network", network, methods=get),
        Route("/v1/stake", stake, methods=get),
        Route("/v1/log", log, methods=get),
        Route("/v1/audit", audit, methods=get),
        Route("/v1/segments/{job_id}", segments, methods=get),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]
